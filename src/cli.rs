//! The command line (SPEC §8). `serve` is the default; every command has `--help`.

use crate::BoxError;
use crate::config::Config;
use crate::store::Store;
use crate::time::UnixTime;
use crate::time::{format_rfc3339, now};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "billing-worker",
    version,
    about = "Prepaid credit ledger: Stripe webhooks and commands in, ledger entries out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the worker until Ctrl-C or SIGTERM (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Apply due cycle work (closes, allocations, expiries, hold deadlines) for all accounts, then exit.
    Tick,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect accounts.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Events that failed for good or wait for a fact.
    Failed {
        #[command(subcommand)]
        command: FailedCommand,
    },
    /// Decide stored events again: one by id (or event id), or all failed and waiting ones.
    Replay {
        /// The inbox id or the event id.
        id: Option<String>,
        /// Replay every failed or waiting event.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// With --all: only events seen at or after this time (RFC 3339, a date, or unix seconds).
        #[arg(long, requires = "all", value_parser = parse_time)]
        since: Option<UnixTime>,
        /// With --all: only events from this source.
        #[arg(long, requires = "all", value_parser = ["stripe", "queue"])]
        source: Option<String>,
    },
    /// API keys for the HTTP API.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The parking queue of commands that could not apply (needs AMQP_URL).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Talk to the Stripe API (needs STRIPE_API_KEY).
    Stripe {
        #[command(subcommand)]
        command: StripeCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum FailedCommand {
    /// List failed and waiting events with their errors.
    List {
        #[arg(long, value_parser = ["stripe", "queue"])]
        source: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a key and print it alone on stdout (only its hash is stored: it cannot be shown again).
    Create {
        #[arg(long, value_parser = ["service", "admin"])]
        scope: String,
        #[arg(long)]
        name: String,
    },
    /// List keys (id, name, scope, created, revoked).
    List,
    /// Revoke a key by its id.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Move parked messages back to the command queue, with progress.
    Requeue {
        /// At most this many; default all.
        #[arg(long)]
        limit: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum StripeCommand {
    /// Fetch the events Stripe could not deliver since a time and apply them.
    Backfill {
        /// RFC 3339 time, a date, or unix seconds.
        #[arg(long, value_parser = parse_time)]
        since: UnixTime,
    },
}

fn parse_time(s: &str) -> Result<UnixTime, String> {
    crate::time::parse_rfc3339(s)
        .ok_or_else(|| format!("{s:?} is not a time: use RFC 3339 (2026-01-31T12:00:00Z), a date, or unix seconds"))
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration and print the catalog the worker would use.
    Check,
}

#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// Plan, balance, lots, current cycle and the last entries of an account.
    Show {
        account: String,
        /// How many of the latest entries to print.
        #[arg(long, default_value_t = 20)]
        entries: i64,
    },
}

/// Parse the arguments, run the command, and return the process exit code.
pub async fn run() -> i32 {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    match dispatch(cli.command.unwrap_or(Command::Serve), config).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn dispatch(command: Command, config: Config) -> Result<(), BoxError> {
    match command {
        Command::Serve => crate::serve::run(config).await,
        Command::Migrate => {
            let store = Store::connect(&config.database_url).await?;
            let n = store.migrate().await?;
            println!("{n} migration(s) applied to {}", crate::config::redact(&config.database_url));
            Ok(())
        }
        Command::Tick => {
            let store = crate::startup::open_store(&config).await?;
            let n = store.tick(now()).await?;
            println!("due work applied to {n} account(s)");
            Ok(())
        }
        Command::Failed { command: FailedCommand::List { source } } => {
            crate::cli_ops::failed_list(&config, source).await
        }
        Command::Replay { id: Some(id), all: false, .. } => crate::cli_ops::replay_one(&config, &id).await,
        Command::Replay { all: true, since, source, .. } => crate::cli_ops::replay_all(&config, since, source).await,
        Command::Replay { .. } => Err("name an event to replay, or --all".into()),
        Command::Stripe { command: StripeCommand::Backfill { since } } => {
            crate::cli_ops::backfill(&config, since).await
        }
        Command::Keys { command } => keys(&config, command).await,
        Command::Dlq { command: DlqCommand::Requeue { limit } } => {
            let url = config.amqp_url.as_deref().ok_or("AMQP_URL: required for dlq requeue")?;
            let names = crate::queue::Names::new(&config.amqp_prefix, &config.retry_delays_ms);
            let mut progress: Option<crate::cli_ops::Progress> = None;
            let n = crate::queue::dlq::requeue(url, &names, limit, |done, total| {
                progress.get_or_insert_with(|| crate::cli_ops::Progress::new("requeued", total as usize)).step();
                let _ = done;
            })
            .await?;
            if let Some(p) = progress {
                p.finish();
            }
            println!("{n} message(s) moved from {} to {}", names.dead, names.commands);
            Ok(())
        }
        Command::Config { command: ConfigCommand::Check } => {
            println!("# catalog: {}", config.catalog_source);
            println!("# database: {}", crate::config::redact(&config.database_url));
            println!(
                "# broker: {}",
                config.amqp_url.as_deref().map(crate::config::redact).unwrap_or_else(|| "none".into())
            );
            println!("# webhook secrets: {}", config.webhook_secrets.len());
            print!("{}", toml::to_string(&config.catalog)?);
            Ok(())
        }
        Command::Accounts { command: AccountsCommand::Show { account, entries } } => {
            let store = crate::startup::open_store(&config).await?;
            let v = store.account(&account, now()).await?;
            println!("account  {}", v.account);
            println!("plan     {}", v.plan);
            println!("balance  {}  (held {})", v.balance, v.held);
            if let Some((s, e)) = v.cycle {
                println!(
                    "cycle    {} .. {}  (expiring at its end: {})",
                    format_rfc3339(s),
                    format_rfc3339(e),
                    v.expiring_at_cycle_end
                );
            }
            println!("lots");
            for l in &v.lots {
                let exp = l.expires_at.map(format_rfc3339).unwrap_or_else(|| "never".into());
                println!(
                    "  {:<40} {:<12} {:>6} of {:>6}  expires {exp}",
                    l.id,
                    l.source.as_str(),
                    l.remaining,
                    l.amount
                );
            }
            println!("entries");
            for e in store.last_entries(&account, entries).await? {
                println!(
                    "  #{:<6} {} {:<9} {:>6} -> {:>6}  {}{}",
                    e.id,
                    format_rfc3339(e.at),
                    e.kind,
                    e.amount,
                    e.balance_after,
                    e.cause,
                    e.lot_id.map(|l| format!("  [{l}]")).unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

async fn keys(config: &Config, command: KeysCommand) -> Result<(), BoxError> {
    let store = crate::startup::open_store(config).await?;
    match command {
        KeysCommand::Create { scope, name } => {
            let scope = crate::store::Scope::parse(&scope).ok_or("--scope: service or admin")?;
            if name.trim().is_empty() {
                return Err("--name must not be empty".into());
            }
            let (key, id) = store.create_key(name.trim(), scope, now()).await?;
            eprintln!("key {id} ({}) created; it is shown once", scope.as_str());
            println!("{key}");
        }
        KeysCommand::List => {
            for k in store.list_keys().await? {
                let revoked =
                    k.revoked_at.map(|t| format!("revoked {}", format_rfc3339(t))).unwrap_or_else(|| "active".into());
                println!(
                    "{:<18} {:<8} {:<24} created {}  {revoked}",
                    k.id,
                    k.scope.as_str(),
                    k.name,
                    format_rfc3339(k.created_at)
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke_key(&id, now()).await? {
                return Err(format!("no key {id}").into());
            }
            println!("key {id} revoked");
        }
    }
    Ok(())
}
