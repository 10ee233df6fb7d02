//! Configuration from the environment (SPEC §3), read once at start.
//!
//! Why strict: a worker that starts with a mistyped secret or database URL loses events quietly, so every bad
//! value stops the start with a message naming the variable (or the catalog's TOML key).

use crate::catalog::{Catalog, CatalogError};
use std::net::SocketAddr;

pub const DEFAULT_DATABASE_URL: &str = "sqlite:data/billing.db";

/// `Debug` hides the secrets (see its impl): a configuration printed in a log or a panic shows no password,
/// webhook secret or API key.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub amqp_url: Option<String>,
    pub listen: SocketAddr,
    pub catalog: Catalog,
    /// Where the catalog came from, for `config check`.
    pub catalog_source: String,
    pub webhook_secrets: Vec<String>,
    /// Accepted age of a webhook signature in seconds; 0 turns the check off.
    pub webhook_tolerance_secs: u64,
    pub stripe_api_key: Option<String>,
    pub stripe_api_base: String,
    /// How often the server applies due cycle work for all accounts.
    pub tick_interval_secs: u64,
    /// Refuse `stripe.event` commands that carry no signature.
    pub queue_require_signature: bool,
    /// Prefix of the queue and exchange names (`billing` gives `billing.commands`, `billing.events`).
    pub amqp_prefix: String,
    pub amqp_prefetch: u16,
    /// Delays of the retry queues, shortest first; a transient failure past the last one is parked.
    pub retry_delays_ms: Vec<u64>,
    /// `balance.low` is published when a balance falls under this.
    pub balance_low: i64,
    /// How long a change waits for a locked account before it fails as transient (PostgreSQL).
    pub lock_timeout_ms: u64,
    /// A waiting event or command still waiting this long after it was first seen becomes failed.
    pub wait_horizon_secs: u64,
    /// Group commit: writer lanes on PostgreSQL, jobs per batch, and how long a lane waits to fill a batch.
    pub write_lanes: usize,
    pub batch_max: usize,
    pub batch_wait_us: u64,
    /// PostgreSQL: write batches of changes to accounts in memory without locking them first, checked by version
    /// (`BILLING_WRITE_OPTIMISTIC=on|off`).
    pub write_optimistic: bool,
    /// An HTTP request still unanswered after this many seconds gets 503 `unavailable`.
    pub request_timeout_secs: u64,
    /// Whether the operator console is served at `/console` (`BILLING_CONSOLE=on|off`).
    pub console: bool,
    /// How long a SIGTERM may take, from the signal to the exit (`BILLING_SHUTDOWN_SECS`).
    pub shutdown_secs: u64,
    /// How long the worker keeps serving after a SIGTERM with `/readyz` at 503, so load balancers stop sending
    /// before it stops accepting (`BILLING_SHUTDOWN_DELAY_SECS`, within the shutdown deadline).
    pub shutdown_delay_secs: u64,
}

impl Config {
    /// How the store writes.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            low_balance: self.balance_low,
            lock_timeout_ms: self.lock_timeout_ms,
            lanes: self.write_lanes,
            max_batch: self.batch_max,
            gather: std::time::Duration::from_micros(self.batch_wait_us),
            optimistic: self.write_optimistic,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
    #[error("BILLING_CONFIG ({path}): {source}")]
    Catalog { path: String, source: CatalogError },
    #[error("BILLING_CONFIG ({path}): cannot read the file: {source}")]
    CatalogRead { path: String, source: std::io::Error },
}

fn invalid(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { var, message: message.into() }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Build from any variable lookup (tests pass a map). Empty values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());

        let database_url = get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        crate::store::Backend::of_url(&database_url).ok_or_else(|| {
            invalid("DATABASE_URL", format!("expected sqlite:PATH or postgres://..., got {database_url:?}"))
        })?;

        let amqp_url = get("AMQP_URL");
        if let Some(u) = amqp_url.as_ref().filter(|u| !u.starts_with("amqp://") && !u.starts_with("amqps://")) {
            return Err(invalid("AMQP_URL", format!("expected amqp://... or amqps://..., got {}", redact(u))));
        }

        let listen_text = get("BILLING_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_text.parse().map_err(|_| {
            invalid("BILLING_LISTEN", format!("expected HOST:PORT such as 127.0.0.1:8080, got {listen_text:?}"))
        })?;

        let (catalog, catalog_source) = match get("BILLING_CONFIG") {
            None => (Catalog::builtin(), "built-in".to_owned()),
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| ConfigError::CatalogRead { path: path.clone(), source })?;
                let c = Catalog::with_overlay(&text)
                    .map_err(|source| ConfigError::Catalog { path: path.clone(), source })?;
                (c, path)
            }
        };

        let webhook_secrets: Vec<String> = get("STRIPE_WEBHOOK_SECRET")
            .map(|s| s.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();

        let webhook_tolerance_secs =
            parse_u64(get("STRIPE_WEBHOOK_TOLERANCE_SECS"), "STRIPE_WEBHOOK_TOLERANCE_SECS", 300)?;
        let tick_interval_secs = parse_u64(get("BILLING_TICK_SECS"), "BILLING_TICK_SECS", 60)?;
        if !(1..=86_400).contains(&tick_interval_secs) {
            return Err(invalid("BILLING_TICK_SECS", "must be between 1 and 86400"));
        }

        let stripe_api_base = get("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into());
        if !(stripe_api_base.starts_with("https://") || stripe_api_base.starts_with("http://")) {
            return Err(invalid("STRIPE_API_BASE", format!("expected an http(s) URL, got {stripe_api_base:?}")));
        }

        let queue_require_signature = match get("BILLING_QUEUE_REQUIRE_SIGNATURE").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(invalid(
                    "BILLING_QUEUE_REQUIRE_SIGNATURE",
                    format!("expected true or false, got {other:?}"),
                ));
            }
        };

        let amqp_prefix = get("BILLING_AMQP_PREFIX").unwrap_or_else(|| "billing".into());
        if !amqp_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) || amqp_prefix.len() > 100 {
            return Err(invalid(
                "BILLING_AMQP_PREFIX",
                format!("letters, digits, '.', '_' and '-' only, got {amqp_prefix:?}"),
            ));
        }
        let amqp_prefetch = parse_u64(get("BILLING_AMQP_PREFETCH"), "BILLING_AMQP_PREFETCH", 256)?;
        if !(1..=1000).contains(&amqp_prefetch) {
            return Err(invalid("BILLING_AMQP_PREFETCH", "must be between 1 and 1000"));
        }
        let retry_delays_ms = match get("BILLING_RETRY_DELAYS_MS") {
            None => vec![1_000, 10_000, 60_000, 600_000],
            Some(list) => list
                .split(',')
                .map(|p| p.trim().parse::<u64>().ok().filter(|d| (1..=86_400_000).contains(d)))
                .collect::<Option<Vec<u64>>>()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "BILLING_RETRY_DELAYS_MS",
                        format!("expected comma-separated milliseconds such as 1000,10000, got {list:?}"),
                    )
                })?,
        };
        let balance_low = parse_u64(get("BILLING_BALANCE_LOW"), "BILLING_BALANCE_LOW", 10)? as i64;
        let lock_timeout_ms = parse_u64(get("BILLING_LOCK_TIMEOUT_MS"), "BILLING_LOCK_TIMEOUT_MS", 5_000)?;
        if !(1..=2_147_483_647).contains(&lock_timeout_ms) {
            return Err(invalid("BILLING_LOCK_TIMEOUT_MS", "must be between 1 and 2147483647"));
        }

        let wait_horizon_secs = parse_u64(get("BILLING_WAIT_HORIZON_SECS"), "BILLING_WAIT_HORIZON_SECS", 259_200)?;
        if !(1..=31_536_000).contains(&wait_horizon_secs) {
            return Err(invalid("BILLING_WAIT_HORIZON_SECS", "must be between 1 and 31536000 (a year)"));
        }
        let write_lanes = parse_u64(get("BILLING_WRITE_LANES"), "BILLING_WRITE_LANES", 2)?;
        if !(1..=64).contains(&write_lanes) {
            return Err(invalid("BILLING_WRITE_LANES", "must be between 1 and 64"));
        }
        let batch_max = parse_u64(get("BILLING_BATCH_MAX"), "BILLING_BATCH_MAX", 256)?;
        if !(1..=10_000).contains(&batch_max) {
            return Err(invalid("BILLING_BATCH_MAX", "must be between 1 and 10000"));
        }
        let batch_wait_us = parse_u64(get("BILLING_BATCH_WAIT_US"), "BILLING_BATCH_WAIT_US", 1_000)?;
        if batch_wait_us > 100_000 {
            return Err(invalid("BILLING_BATCH_WAIT_US", "must be at most 100000 (0.1 s)"));
        }
        let request_timeout_secs = parse_u64(get("BILLING_REQUEST_TIMEOUT_SECS"), "BILLING_REQUEST_TIMEOUT_SECS", 15)?;
        if !(1..=3_600).contains(&request_timeout_secs) {
            return Err(invalid("BILLING_REQUEST_TIMEOUT_SECS", "must be between 1 and 3600"));
        }
        let shutdown_secs = parse_u64(get("BILLING_SHUTDOWN_SECS"), "BILLING_SHUTDOWN_SECS", 20)?;
        if !(1..=3_600).contains(&shutdown_secs) {
            return Err(invalid("BILLING_SHUTDOWN_SECS", "must be between 1 and 3600"));
        }
        let shutdown_delay_secs = parse_u64(get("BILLING_SHUTDOWN_DELAY_SECS"), "BILLING_SHUTDOWN_DELAY_SECS", 0)?;
        if shutdown_delay_secs >= shutdown_secs {
            return Err(invalid("BILLING_SHUTDOWN_DELAY_SECS", "must be less than BILLING_SHUTDOWN_SECS"));
        }
        // A drain waits for the requests in flight, which may each take up to their deadline.
        if shutdown_delay_secs + request_timeout_secs >= shutdown_secs {
            return Err(invalid(
                "BILLING_SHUTDOWN_SECS",
                format!(
                    "must be more than BILLING_SHUTDOWN_DELAY_SECS + BILLING_REQUEST_TIMEOUT_SECS \
                     ({shutdown_delay_secs} + {request_timeout_secs}), so requests in flight can finish"
                ),
            ));
        }

        let console = on_off(get("BILLING_CONSOLE"), "BILLING_CONSOLE")?;
        let write_optimistic = on_off(get("BILLING_WRITE_OPTIMISTIC"), "BILLING_WRITE_OPTIMISTIC")?;

        Ok(Config {
            console,
            request_timeout_secs,
            shutdown_secs,
            shutdown_delay_secs,
            wait_horizon_secs,
            write_lanes: write_lanes as usize,
            batch_max: batch_max as usize,
            batch_wait_us,
            write_optimistic,
            amqp_prefix,
            amqp_prefetch: amqp_prefetch as u16,
            retry_delays_ms,
            balance_low,
            lock_timeout_ms,
            queue_require_signature,
            database_url,
            amqp_url,
            listen,
            catalog,
            catalog_source,
            webhook_secrets,
            webhook_tolerance_secs,
            stripe_api_key: get("STRIPE_API_KEY"),
            stripe_api_base: stripe_api_base.trim_end_matches('/').to_owned(),
            tick_interval_secs,
        })
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |n: usize| vec!["***"; n];
        f.debug_struct("Config")
            .field("database_url", &redact(&self.database_url))
            .field("amqp_url", &self.amqp_url.as_deref().map(redact))
            .field("listen", &self.listen)
            .field("catalog_source", &self.catalog_source)
            .field("webhook_secrets", &hidden(self.webhook_secrets.len()))
            .field("webhook_tolerance_secs", &self.webhook_tolerance_secs)
            .field("stripe_api_key", &self.stripe_api_key.as_ref().map(|_| "***"))
            .field("stripe_api_base", &self.stripe_api_base)
            .field("tick_interval_secs", &self.tick_interval_secs)
            .field("queue_require_signature", &self.queue_require_signature)
            .field("amqp_prefix", &self.amqp_prefix)
            .field("amqp_prefetch", &self.amqp_prefetch)
            .field("retry_delays_ms", &self.retry_delays_ms)
            .field("balance_low", &self.balance_low)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .field("wait_horizon_secs", &self.wait_horizon_secs)
            .field("write_lanes", &self.write_lanes)
            .field("write_optimistic", &self.write_optimistic)
            .field("batch_max", &self.batch_max)
            .field("batch_wait_us", &self.batch_wait_us)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("console", &self.console)
            .field("shutdown_secs", &self.shutdown_secs)
            .field("shutdown_delay_secs", &self.shutdown_delay_secs)
            .finish_non_exhaustive()
    }
}

/// A URL with its password hidden, for printing: the one in `user:password@` and a `password=` parameter.
pub fn redact(url: &str) -> String {
    let url = redact_userinfo(url);
    match url.split_once('?') {
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => url,
    }
}

fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A switch that is on unless set to `off`.
fn on_off(v: Option<String>, var: &'static str) -> Result<bool, ConfigError> {
    match v.as_deref().map(str::trim) {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(invalid(var, format!("expected on or off, got {other:?}"))),
    }
}

fn parse_u64(v: Option<String>, var: &'static str, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| invalid(var, format!("expected a whole number, got {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn debug_and_redact_hide_every_secret() {
        let vars: HashMap<&str, &str> = [
            ("DATABASE_URL", "postgres://app:pg-pass-1@db:5432/billing?password=pg-pass-2&sslmode=require"),
            ("AMQP_URL", "amqp://worker:mq-pass@mq:5672/%2f"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_one,whsec_two"),
            ("STRIPE_API_KEY", "sk_live_secret"),
        ]
        .into();
        let c = Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        let shown = format!("{c:?} {c:#?}");
        for secret in ["pg-pass-1", "pg-pass-2", "mq-pass", "whsec_one", "whsec_two", "sk_live_secret"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("postgres://app:***@db:5432/billing?password=***&sslmode=require"), "{shown}");
        assert!(shown.contains("amqp://worker:***@mq:5672/%2f"), "{shown}");
        let vars: HashMap<&str, &str> = [("AMQP_URL", "amqps://worker:mq-pass@mq:5671/%2f")].into();
        let c = Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.amqp_url.as_deref(), Some("amqps://worker:mq-pass@mq:5671/%2f"), "TLS to the broker is taken");
        let vars: HashMap<&str, &str> = [("AMQP_URL", "http://worker:mq-pass@mq/")].into();
        let e = Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert!(e.contains("expected amqp://... or amqps://...") && !e.contains("mq-pass"), "{e}");
        assert_eq!(redact("sqlite:data/billing.db"), "sqlite:data/billing.db");
    }

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_need_no_variables() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.webhook_tolerance_secs, 300);
        assert!(c.webhook_secrets.is_empty() && c.amqp_url.is_none());
        assert_eq!(c.catalog, Catalog::builtin());
    }

    #[test]
    fn rotation_secrets_split_on_commas() {
        let c = cfg(&[("STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b")]).unwrap();
        assert_eq!(c.webhook_secrets, vec!["whsec_a", "whsec_b"]);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, val) in [
            ("DATABASE_URL", "mysql://x"),
            ("AMQP_URL", "http://x"),
            ("BILLING_LISTEN", "eighty"),
            ("STRIPE_WEBHOOK_TOLERANCE_SECS", "-5"),
            ("STRIPE_API_BASE", "ftp://x"),
            ("BILLING_TICK_SECS", "0"),
            ("BILLING_AMQP_PREFIX", "bad prefix"),
            ("BILLING_AMQP_PREFETCH", "0"),
            ("BILLING_RETRY_DELAYS_MS", "1000,soon"),
            ("BILLING_BALANCE_LOW", "-1"),
            ("BILLING_LOCK_TIMEOUT_MS", "0"),
            ("BILLING_REQUEST_TIMEOUT_SECS", "0"),
            ("BILLING_REQUEST_TIMEOUT_SECS", "a minute"),
            ("BILLING_SHUTDOWN_SECS", "0"),
            ("BILLING_CONSOLE", "maybe"),
            ("BILLING_SHUTDOWN_DELAY_SECS", "20"),
            ("BILLING_SHUTDOWN_SECS", "10"),
            ("BILLING_LOCK_TIMEOUT_MS", "99999999999"),
            ("BILLING_TICK_SECS", "999999999999"),
            ("BILLING_QUEUE_REQUIRE_SIGNATURE", "maybe"),
            ("BILLING_WAIT_HORIZON_SECS", "0"),
            ("BILLING_WRITE_LANES", "0"),
            ("BILLING_BATCH_MAX", "100000"),
            ("BILLING_BATCH_WAIT_US", "1000000"),
            ("BILLING_WRITE_OPTIMISTIC", "yes"),
            ("BILLING_CONFIG", "/nonexistent/catalog.toml"),
        ] {
            let e = cfg(&[(var, val)]).unwrap_err().to_string();
            assert!(e.starts_with(var), "{var}={val}: {e}");
        }
    }

    #[test]
    fn bad_catalog_names_file_and_key() {
        let dir = std::env::temp_dir().join(format!("bw-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "[plans.pro]\npriority = \"urgent\"\n").unwrap();
        let e = cfg(&[("BILLING_CONFIG", f.to_str().unwrap())]).unwrap_err().to_string();
        assert!(e.contains("BILLING_CONFIG") && e.contains("plans.pro.priority"), "{e}");
    }
}
