//! The outbox: outgoing events written in the transaction of the change that caused them, read in id order by
//! the publisher (and by `GET /v1/events` without a broker).

use super::{Backend, Store, StoreError};
use crate::time::{Ts, format_rfc3339};
use serde_json::{Value, json};
use sqlx::pool::PoolConnection;
use sqlx::{Any, Row, Transaction};

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub account_id: Option<String>,
    pub kind: String,
    pub payload: String,
    pub created_at: Ts,
    pub published_at: Option<Ts>,
}

/// Held while this process is the one publisher (PostgreSQL: a session advisory lock on this connection).
pub struct Lease {
    conn: Option<PoolConnection<Any>>,
}

impl Lease {
    /// Whether the lease still holds: its connection (and so its lock) is alive.
    pub async fn alive(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(c) => sqlx::query("SELECT 1").execute(&mut **c).await.is_ok(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Close the connection rather than return it to the pool still holding the lock.
        if let Some(c) = self.conn.take() {
            drop(c.detach());
        }
    }
}

const LEASE_ID: i64 = 0x0062_696c_6c6f_7574;
const OUTBOX_ORDER_LOCK: i64 = 0x0062_696c_6c6f_7264;

fn random_id() -> String {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b).expect("the OS random source");
    format!("ev_{}", hex::encode(b))
}

fn row(r: &sqlx::any::AnyRow) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        id: r.try_get(0)?,
        event_id: r.try_get(1)?,
        account_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        payload: r.try_get(4)?,
        created_at: r.try_get(5)?,
        published_at: r.try_get(6)?,
    })
}

const COLUMNS: &str = "id, event_id, account_id, type, payload, created_at, published_at";

impl Store {
    /// Write an outgoing event in `tx`. The payload carries its unique id, type, account and time.
    pub async fn outbox_insert(
        &self,
        tx: &mut Transaction<'static, Any>,
        kind: &str,
        account: Option<&str>,
        data: Value,
        now: Ts,
    ) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            // Commit outbox rows in id order across transactions, so a reader paging by id (`GET /v1/events`)
            // never sees a later id before an earlier one commits. Held until this transaction ends.
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(OUTBOX_ORDER_LOCK).execute(&mut **tx).await?;
        }
        let event_id = random_id();
        let mut payload = json!({"id": event_id, "type": kind, "account": account, "at": format_rfc3339(now)});
        if let (Some(p), Value::Object(d)) = (payload.as_object_mut(), data) {
            p.extend(d);
        }
        sqlx::query("INSERT INTO outbox (event_id, account_id, type, payload, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&event_id)
            .bind(account)
            .bind(kind)
            .bind(payload.to_string())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Events with id above `after`, oldest first (published or not).
    pub async fn outbox_page(&self, after: i64, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let q = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM outbox WHERE id > $1 ORDER BY id LIMIT $2"));
        let rows = sqlx::query(q).bind(after).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(row).collect()
    }

    /// The oldest events not yet published.
    pub async fn outbox_unpublished(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1"
        ));
        let rows = sqlx::query(q).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(row).collect()
    }

    pub async fn outbox_mark_published(&self, ids: &[i64], now: Ts) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query("UPDATE outbox SET published_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Seconds since the oldest unpublished event was written (0 when none).
    pub async fn outbox_lag(&self, now: Ts) -> Result<i64, StoreError> {
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(created_at) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(oldest.map(|t| (now - t).max(0)).unwrap_or(0))
    }

    /// Become the publisher, if no other instance is. SQLite serves one instance: always granted.
    pub async fn publisher_lease(&self) -> Result<Option<Lease>, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(Lease { conn: None }));
        }
        let mut conn = self.pool.acquire().await?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEASE_ID).fetch_one(&mut *conn).await?;
        Ok(got.then_some(Lease { conn: Some(conn) }))
    }
}
