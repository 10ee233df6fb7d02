//! The operator commands around events: list failed events, replay them, backfill from Stripe's Events API.
//! Long runs print their progress on stderr.

use crate::BoxError;
use crate::config::Config;
use crate::inbox::Receipt;
use crate::store::{InboxFilter, InboxStatus, Store};
use crate::stripe::Intake;
use crate::stripe::api::StripeApi;
use crate::stripe::event::parse_envelope;
use crate::time::{UnixTime, format_rfc3339, now};
use std::io::Write;

/// Progress on stderr: a line that rewrites itself on a terminal, a line every 10% otherwise.
pub struct Progress {
    total: usize,
    done: usize,
    label: &'static str,
    tty: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: usize) -> Self {
        Progress { total, done: 0, label, tty: std::io::IsTerminal::is_terminal(&std::io::stderr()) }
    }

    pub fn step(&mut self) {
        self.done += 1;
        let tenth = (self.total / 10).max(1);
        if self.tty {
            eprint!("\r{} {}/{}", self.label, self.done, self.total);
            let _ = std::io::stderr().flush();
        } else if self.done.is_multiple_of(tenth) || self.done == self.total {
            eprintln!("{} {}/{}", self.label, self.done, self.total);
        }
    }

    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

pub fn intake(config: &Config, store: Store) -> Result<Intake, BoxError> {
    Ok(crate::startup::services(config, store)?.intake)
}

/// What a replay came to.
pub struct Replayed {
    pub status: InboxStatus,
    pub detail: Option<String>,
    pub duplicate: bool,
}

impl From<Receipt> for Replayed {
    fn from(r: Receipt) -> Self {
        Replayed { status: r.status, detail: r.detail, duplicate: r.duplicate }
    }
}

/// Replay one inbox row with the intake (Stripe events) or the commander (queue commands).
async fn replay_row(config: &Config, store: &Store, id: i64, source: &str) -> Result<Replayed, BoxError> {
    let crate::startup::Services { intake, commander, .. } = crate::startup::services(config, store.clone())?;
    if source == crate::commands::SOURCE {
        let o = commander.replay(id, now()).await?;
        return Ok(Replayed { status: o.status, detail: o.detail, duplicate: o.duplicate });
    }
    Ok(intake.replay(id, now()).await?.into())
}

pub async fn failed_list(config: &Config, source: Option<String>) -> Result<(), BoxError> {
    let store = crate::startup::open_store(config).await?;
    let mut shown = 0;
    for status in [InboxStatus::Failed, InboxStatus::Waiting] {
        let rows = store
            .inbox_list(&InboxFilter { status: Some(status), source: source.clone(), ..Default::default() })
            .await?;
        for r in rows {
            println!(
                "{:<6} {:<7} {:<8} {:<32} {:<36} attempts {:<3} last {}  {}",
                r.id,
                r.source,
                r.status.as_str(),
                r.event_id,
                r.kind,
                r.attempts,
                format_rfc3339(r.last_seen),
                r.detail.unwrap_or_default()
            );
            shown += 1;
        }
    }
    if shown == 0 {
        println!("no failed or waiting events");
    }
    Ok(())
}

fn describe(d: &Replayed) -> String {
    let outcome = match (d.duplicate, d.status) {
        (true, InboxStatus::Applied | InboxStatus::Ignored) => "already_applied",
        (_, InboxStatus::Applied) => "applied",
        (_, InboxStatus::Ignored) => "ignored",
        (_, InboxStatus::Waiting) => "waiting",
        _ => "failed",
    };
    match &d.detail {
        Some(detail) if outcome != "applied" => format!("{outcome}: {detail}"),
        _ => outcome.to_owned(),
    }
}

pub async fn replay_one(config: &Config, id: &str) -> Result<(), BoxError> {
    let store = crate::startup::open_store(config).await?;
    let row = store.inbox_get(id).await?.ok_or_else(|| format!("no stored event {id}"))?;
    let d = replay_row(config, &store, row.id, &row.source).await?;
    println!("{} {}: {}", row.id, row.event_id, describe(&d));
    Ok(())
}

pub async fn replay_all(config: &Config, since: Option<UnixTime>, source: Option<String>) -> Result<(), BoxError> {
    let store = crate::startup::open_store(config).await?;
    let mut rows = Vec::new();
    for status in [InboxStatus::Failed, InboxStatus::Waiting] {
        rows.extend(
            store
                .inbox_list(&InboxFilter { status: Some(status), source: source.clone(), since, ..Default::default() })
                .await?,
        );
    }
    rows.sort_by_key(|r| r.id);
    let mut progress = Progress::new("replayed", rows.len());
    let (mut applied, mut still) = (0, 0);
    for r in &rows {
        let d = replay_row(config, &store, r.id, &r.source).await?;
        if d.status == InboxStatus::Applied {
            applied += 1;
        } else {
            still += 1;
        }
        progress.step();
    }
    progress.finish();
    println!("{} replayed: {applied} applied, {still} still failed or waiting", rows.len());
    Ok(())
}

/// Fetch the events Stripe could not deliver since `since` and apply them as if they had come by webhook.
pub async fn backfill(config: &Config, since: UnixTime) -> Result<(), BoxError> {
    let key = config.stripe_api_key.as_deref().ok_or("STRIPE_API_KEY: required for stripe backfill")?;
    let api = StripeApi::new(&config.stripe_api_base, key)?;
    let store = crate::startup::open_store(config).await?;
    let intake = intake(config, store)?;
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = api.undelivered_events(since, after.as_deref()).await?;
        after = page.data.last().and_then(|e| e.get("id")).and_then(|v| v.as_str()).map(str::to_owned);
        events.extend(page.data);
        if !page.has_more || after.is_none() {
            break;
        }
    }
    // The Events API lists newest first; apply oldest first.
    events.sort_by_key(|e| e.get("created").and_then(|c| c.as_i64()).unwrap_or(0));
    let mut progress = Progress::new("backfilled", events.len());
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for e in &events {
        let text = serde_json::to_string(e)?;
        let outcome = match parse_envelope(text.as_bytes()) {
            Ok(env) => {
                describe(&intake.receive(&env, &text, now()).await?.into()).split(':').next().unwrap_or("").to_owned()
            }
            Err(_) => "unreadable".to_owned(),
        };
        *counts.entry(outcome).or_default() += 1;
        progress.step();
    }
    progress.finish();
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "{} events from Stripe: {}",
        events.len(),
        if summary.is_empty() { "none".into() } else { summary.join(", ") }
    );
    Ok(())
}
