//! The inbox of received events (stored once per source and event id, with their outcome) and the Stripe facts
//! events leave behind: which account a customer belongs to, and the price objects seen. The protocol around it
//! (store, decide, record) is [`crate::inbox`].

use super::Tx;
use super::{Backend, Store, StoreError};
use crate::time::UnixTime;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    /// Stored, not yet decided (only inside the transaction that decides it).
    Received,
    Applied,
    Ignored,
    /// Needs a fact not yet known; applied when it arrives.
    Waiting,
    /// Failed for good; kept for replay.
    Failed,
}

impl InboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Received => "received",
            InboxStatus::Applied => "applied",
            InboxStatus::Ignored => "ignored",
            InboxStatus::Waiting => "waiting",
            InboxStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "applied" => InboxStatus::Applied,
            "ignored" => InboxStatus::Ignored,
            "waiting" => InboxStatus::Waiting,
            "failed" => InboxStatus::Failed,
            _ => InboxStatus::Received,
        }
    }

    /// Applied and ignored events are decided for good: deciding them again changes nothing.
    pub fn is_final(self) -> bool {
        matches!(self, InboxStatus::Applied | InboxStatus::Ignored)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InboxRow {
    pub id: i64,
    pub source: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip)]
    pub payload: String,
    pub status: InboxStatus,
    /// The error, the reason it was ignored, or what it waits for.
    pub detail: Option<String>,
    pub waiting_for: Option<String>,
    pub account_id: Option<String>,
    pub attempts: i64,
    pub event_created: UnixTime,
    pub first_seen: UnixTime,
    pub last_seen: UnixTime,
    /// When a waiting row is tried again.
    pub next_attempt_at: Option<UnixTime>,
}

const COLUMNS: &str = "id, source, event_id, type, payload, status, detail, waiting_for, account_id, attempts, \
                       event_created, first_seen, last_seen, next_attempt_at";

fn row(r: &AnyRow) -> Result<InboxRow, StoreError> {
    Ok(InboxRow {
        id: r.try_get("id")?,
        source: r.try_get("source")?,
        event_id: r.try_get("event_id")?,
        kind: r.try_get("type")?,
        payload: r.try_get("payload")?,
        status: InboxStatus::parse(&r.try_get::<String, _>("status")?),
        detail: r.try_get("detail")?,
        waiting_for: r.try_get("waiting_for")?,
        account_id: r.try_get("account_id")?,
        attempts: r.try_get("attempts")?,
        event_created: r.try_get("event_created")?,
        first_seen: r.try_get("first_seen")?,
        last_seen: r.try_get("last_seen")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
    })
}

fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

/// Filter for listing the inbox.
#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    pub status: Option<InboxStatus>,
    pub source: Option<String>,
    /// The event's type (`invoice.paid`, `package.purchased`).
    pub kind: Option<String>,
    /// Last seen at or after `since`, and at or before `until`.
    pub since: Option<UnixTime>,
    pub until: Option<UnixTime>,
    /// Without a status: only failed and waiting rows.
    pub problems_only: bool,
    /// Only rows whose detail starts with this (`parked: `).
    pub detail_prefix: Option<String>,
    /// Newest first (then `after_id` is not used for paging).
    pub newest_first: bool,
    pub after_id: i64,
    pub limit: i64,
}

/// The outcome to record on a row.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub status: InboxStatus,
    pub detail: Option<&'a str>,
    pub waiting_for: Option<&'a str>,
    pub account: Option<&'a str>,
    pub next_attempt_at: Option<UnixTime>,
    /// Count this decision as another attempt (a re-decision).
    pub again: bool,
    pub now: UnixTime,
}

impl Store {
    /// The inbox row of `source`/`event_id`.
    pub async fn inbox_find(&self, source: &str, event_id: &str) -> Result<Option<InboxRow>, StoreError> {
        let q = sql(format!("SELECT {COLUMNS} FROM inbox WHERE source = $1 AND event_id = $2"));
        sqlx::query(q).bind(source).bind(event_id).fetch_optional(&self.pool).await?.as_ref().map(row).transpose()
    }

    /// The row named by its numeric id or by its event id.
    pub async fn inbox_get(&self, id_or_event: &str) -> Result<Option<InboxRow>, StoreError> {
        if let Ok(id) = id_or_event.parse::<i64>() {
            let q = sql(format!("SELECT {COLUMNS} FROM inbox WHERE id = $1"));
            if let Some(r) = sqlx::query(q).bind(id).fetch_optional(&self.pool).await? {
                return row(&r).map(Some);
            }
        }
        let q = sql(format!("SELECT {COLUMNS} FROM inbox WHERE event_id = $1 ORDER BY id LIMIT 1"));
        sqlx::query(q).bind(id_or_event).fetch_optional(&self.pool).await?.as_ref().map(row).transpose()
    }

    pub async fn inbox_list(&self, f: &InboxFilter) -> Result<Vec<InboxRow>, StoreError> {
        let q = sql(format!(
            "SELECT {COLUMNS} FROM inbox WHERE ($1 = '' OR status = $1) AND ($2 = '' OR source = $2) \
             AND last_seen >= $3 AND id > $4 AND ($6 = '' OR type = $6) AND last_seen <= $7 \
             AND ($8 = 0 OR status IN ('failed', 'waiting')) AND ($9 = '' OR detail LIKE $9 || '%') \
             ORDER BY id {} LIMIT $5",
            if f.newest_first { "DESC" } else { "ASC" }
        ));
        let rows = sqlx::query(q)
            .bind(f.status.map(InboxStatus::as_str).unwrap_or(""))
            .bind(f.source.as_deref().unwrap_or(""))
            .bind(f.since.unwrap_or(UnixTime::MIN))
            .bind(f.after_id)
            .bind(if f.limit > 0 { f.limit } else { i64::MAX })
            .bind(f.kind.as_deref().unwrap_or(""))
            .bind(f.until.unwrap_or(UnixTime::MAX))
            .bind(i64::from(f.problems_only))
            .bind(f.detail_prefix.as_deref().unwrap_or(""))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row).collect()
    }

    /// Ids of waiting rows that wait for one of `facts`.
    pub async fn inbox_waiting_for(&self, facts: &[String]) -> Result<Vec<i64>, StoreError> {
        let mut ids = Vec::new();
        for fact in facts {
            let q =
                sqlx::query_scalar("SELECT id FROM inbox WHERE status = 'waiting' AND waiting_for = $1 ORDER BY id");
            let found: Vec<i64> = q.bind(fact).fetch_all(&self.pool).await?;
            ids.extend(found);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Up to `limit` waiting rows due to be tried again by `now`, oldest due first.
    pub async fn inbox_due(&self, now: UnixTime, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let q = sqlx::query(
            "SELECT id, source FROM inbox WHERE status = 'waiting' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, id LIMIT $2",
        );
        let rows = q.bind(now).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("source")?))).collect()
    }

    /// How many rows have each status (for metrics and the console).
    pub async fn inbox_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM inbox GROUP BY status").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("status")?, r.try_get("n")?))).collect()
    }
}

/// The row of `source`/`event_id` as this transaction sees it.
pub async fn find(tx: &mut Tx, source: &str, event_id: &str) -> Result<Option<InboxRow>, StoreError> {
    let q = sql(format!("SELECT {COLUMNS} FROM inbox WHERE source = $1 AND event_id = $2"));
    sqlx::query(q).bind(source).bind(event_id).fetch_optional(&mut *tx).await?.as_ref().map(row).transpose()
}

/// The rows of (source, event id) pairs, `None` for those not stored.
pub async fn find_many(
    tx: &mut Tx,
    backend: Backend,
    events: &[(String, String)],
) -> Result<std::collections::HashMap<(String, String), Option<InboxRow>>, StoreError> {
    let mut out: std::collections::HashMap<(String, String), Option<InboxRow>> =
        events.iter().map(|e| (e.clone(), None)).collect();
    let found = if backend == Backend::Postgres {
        let cols: Vec<String> = COLUMNS.split(", ").map(|c| format!("i.{c}")).collect();
        let q = sql(format!(
            "SELECT {} FROM unnest($1::text[], $2::text[]) AS w(s, e) CROSS JOIN LATERAL \
             (SELECT {COLUMNS} FROM inbox WHERE source = w.s AND event_id = w.e LIMIT 1) i",
            cols.join(", ")
        ));
        sqlx::query(q)
            .bind(super::pg::text_array(events.iter().map(|(s, _)| Some(s.as_str()))))
            .bind(super::pg::text_array(events.iter().map(|(_, e)| Some(e.as_str()))))
            .fetch_all(&mut *tx)
            .await?
    } else {
        let mut rows = Vec::new();
        for chunk in events.chunks(400) {
            let pairs: Vec<String> = (0..chunk.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
            let q = sql(format!("SELECT {COLUMNS} FROM inbox WHERE (source, event_id) IN ({})", pairs.join(", ")));
            let mut q = sqlx::query(q).persistent(chunk.len() <= super::PREPARED_ROWS);
            for (s, e) in chunk {
                q = q.bind(s).bind(e);
            }
            rows.extend(q.fetch_all(&mut *tx).await?);
        }
        rows
    };
    for r in &found {
        let r = row(r)?;
        out.insert((r.source.clone(), r.event_id.clone()), Some(r));
    }
    Ok(out)
}

/// A row by id as this transaction sees it.
pub async fn find_by_id(tx: &mut Tx, id: i64) -> Result<Option<InboxRow>, StoreError> {
    let q = sql(format!("SELECT {COLUMNS} FROM inbox WHERE id = $1"));
    sqlx::query(q).bind(id).fetch_optional(&mut *tx).await?.as_ref().map(row).transpose()
}

/// Lock a row to decide it again; `None` when it does not exist or another transaction holds it (deciding it
/// now: its outcome will be recorded there).
pub async fn lock(tx: &mut Tx, backend: Backend, id: i64) -> Result<Option<InboxRow>, StoreError> {
    let lock = if backend == Backend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let q = sql(format!("SELECT {COLUMNS} FROM inbox WHERE id = $1{lock}"));
    sqlx::query(q).bind(id).fetch_optional(&mut *tx).await?.as_ref().map(row).transpose()
}

/// Record an outcome on row `id` if it is still in status `from` (compare-and-set); false when it is not.
pub async fn record(tx: &mut Tx, id: i64, from: InboxStatus, r: &Record<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE inbox SET status = $3, detail = $4, waiting_for = $5, account_id = COALESCE($6, account_id), \
         last_seen = $7, attempts = attempts + $8, next_attempt_at = $9 WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(r.status.as_str())
    .bind(r.detail)
    .bind(r.waiting_for)
    .bind(r.account)
    .bind(r.now)
    .bind(r.again as i64)
    .bind(r.next_attempt_at)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Note another delivery of a stored event.
pub async fn seen(tx: &mut Tx, id: i64, now: UnixTime) -> Result<(), StoreError> {
    sqlx::query("UPDATE inbox SET last_seen = $2 WHERE id = $1").bind(id).bind(now).execute(&mut *tx).await?;
    Ok(())
}

pub async fn customer_account(tx: &mut Tx, customer: &str) -> Result<Option<String>, StoreError> {
    let q = sqlx::query_scalar("SELECT account_id FROM stripe_customers WHERE customer_id = $1");
    Ok(q.bind(customer).fetch_optional(&mut *tx).await?)
}

pub async fn price_object(tx: &mut Tx, id: &str) -> Result<Option<String>, StoreError> {
    let q = sqlx::query_scalar("SELECT object FROM stripe_prices WHERE id = $1");
    Ok(q.bind(id).fetch_optional(&mut *tx).await?)
}

impl Store {
    /// Whether any account has this subscription (read outside a transaction).
    pub async fn subscription_exists(&self, subscription: &str) -> Result<bool, StoreError> {
        let q = sqlx::query_scalar("SELECT COUNT(*) FROM subscriptions WHERE id = $1");
        let n: i64 = q.bind(subscription).fetch_one(&self.pool).await?;
        Ok(n > 0)
    }

    /// The account a Stripe customer is linked to (read outside a transaction).
    pub async fn customer_link(&self, customer: &str) -> Result<Option<String>, StoreError> {
        let q = sqlx::query_scalar("SELECT account_id FROM stripe_customers WHERE customer_id = $1");
        Ok(q.bind(customer).fetch_optional(&self.pool).await?)
    }
}
