//! The inbox of received events (stored once per source and event id, with their outcome) and the Stripe facts
//! events leave behind: which account a customer belongs to, and the price objects seen.

use super::{Backend, Store, StoreError};
use crate::time::Ts;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

type Tx = Transaction<'static, Any>;

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
    fn parse(s: &str) -> Self {
        match s {
            "applied" => InboxStatus::Applied,
            "ignored" => InboxStatus::Ignored,
            "waiting" => InboxStatus::Waiting,
            "failed" => InboxStatus::Failed,
            _ => InboxStatus::Received,
        }
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
    pub event_created: Ts,
    pub first_seen: Ts,
    pub last_seen: Ts,
}

const COLUMNS: &str = "id, source, event_id, type, payload, status, detail, waiting_for, account_id, attempts, event_created, first_seen, last_seen";

fn row(r: &AnyRow) -> Result<InboxRow, StoreError> {
    Ok(InboxRow {
        id: r.try_get(0)?,
        source: r.try_get(1)?,
        event_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        payload: r.try_get(4)?,
        status: InboxStatus::parse(&r.try_get::<String, _>(5)?),
        detail: r.try_get(6)?,
        waiting_for: r.try_get(7)?,
        account_id: r.try_get(8)?,
        attempts: r.try_get(9)?,
        event_created: r.try_get(10)?,
        first_seen: r.try_get(11)?,
        last_seen: r.try_get(12)?,
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
    pub since: Option<Ts>,
    pub after_id: i64,
    pub limit: i64,
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
             AND last_seen >= $3 AND id > $4 ORDER BY id LIMIT $5"
        ));
        let rows = sqlx::query(q)
            .bind(f.status.map(InboxStatus::as_str).unwrap_or(""))
            .bind(f.source.as_deref().unwrap_or(""))
            .bind(f.since.unwrap_or(i64::MIN))
            .bind(f.after_id)
            .bind(if f.limit > 0 { f.limit } else { i64::MAX })
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

    /// Store a new event; `None` when it was stored before.
    #[allow(clippy::too_many_arguments)]
    pub async fn inbox_insert(
        &self,
        tx: &mut Tx,
        source: &str,
        event_id: &str,
        kind: &str,
        payload: &str,
        created: Ts,
        status: InboxStatus,
        detail: Option<&str>,
        now: Ts,
    ) -> Result<Option<i64>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO inbox (source, event_id, type, payload, status, detail, event_created, first_seen, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (source, event_id) DO NOTHING RETURNING id",
        )
        .bind(source)
        .bind(event_id)
        .bind(kind)
        .bind(payload)
        .bind(status.as_str())
        .bind(detail)
        .bind(created)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(id)
    }

    /// Lock a row for deciding it again (replay, or a fact that arrived).
    pub async fn inbox_lock(&self, tx: &mut Tx, id: i64) -> Result<Option<InboxRow>, StoreError> {
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
        let q = sql(format!("SELECT {COLUMNS} FROM inbox WHERE id = $1{lock}"));
        sqlx::query(q).bind(id).fetch_optional(&mut **tx).await?.as_ref().map(row).transpose()
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn inbox_set(
        &self,
        tx: &mut Tx,
        id: i64,
        status: InboxStatus,
        detail: Option<&str>,
        waiting_for: Option<&str>,
        account: Option<&str>,
        now: Ts,
        new_attempt: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE inbox SET status = $2, detail = $3, waiting_for = $4, account_id = COALESCE($5, account_id), \
             last_seen = $6, attempts = attempts + $7 WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(detail)
        .bind(waiting_for)
        .bind(account)
        .bind(now)
        .bind(new_attempt as i64)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Note another delivery of a stored event.
    pub async fn inbox_seen(&self, id: i64, now: Ts) -> Result<(), StoreError> {
        sqlx::query("UPDATE inbox SET last_seen = $2 WHERE id = $1").bind(id).bind(now).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn link_customer(&self, tx: &mut Tx, customer: &str, account: &str, now: Ts) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stripe_customers (customer_id, account_id, linked_at) VALUES ($1, $2, $3) ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(customer)
        .bind(account)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn customer_account(&self, tx: &mut Tx, customer: &str) -> Result<Option<String>, StoreError> {
        let q = sqlx::query_scalar("SELECT account_id FROM stripe_customers WHERE customer_id = $1");
        Ok(q.bind(customer).fetch_optional(&mut **tx).await?)
    }

    pub async fn subscription_account(&self, tx: &mut Tx, subscription: &str) -> Result<Option<String>, StoreError> {
        let q =
            sqlx::query_scalar("SELECT account_id FROM subscriptions WHERE id = $1 ORDER BY updated_at DESC LIMIT 1");
        Ok(q.bind(subscription).fetch_optional(&mut **tx).await?)
    }

    /// Whether any account has this subscription (read outside a transaction).
    pub async fn subscription_exists(&self, subscription: &str) -> Result<bool, StoreError> {
        let q = sqlx::query_scalar("SELECT COUNT(*) FROM subscriptions WHERE id = $1");
        let n: i64 = q.bind(subscription).fetch_one(&self.pool).await?;
        Ok(n > 0)
    }

    /// The account holding the lot bought by `payment`.
    pub async fn payment_account(&self, tx: &mut Tx, payment: &str) -> Result<Option<String>, StoreError> {
        let q = sqlx::query_scalar("SELECT account_id FROM lots WHERE id = $1 LIMIT 1");
        Ok(q.bind(payment).fetch_optional(&mut **tx).await?)
    }

    pub async fn record_price(&self, tx: &mut Tx, id: &str, object: &str, now: Ts) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stripe_prices (id, object, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET object = excluded.object, seen_at = excluded.seen_at",
        )
        .bind(id)
        .bind(object)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn price_object(&self, tx: &mut Tx, id: &str) -> Result<Option<String>, StoreError> {
        let q = sqlx::query_scalar("SELECT object FROM stripe_prices WHERE id = $1");
        Ok(q.bind(id).fetch_optional(&mut **tx).await?)
    }
}
