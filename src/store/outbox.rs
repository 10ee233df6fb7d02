//! The outbox: outgoing events written in the batch of the change that caused them, read in id order by the
//! publisher, and by position by `GET /v1/events`.
//!
//! Why two orders and no lock: writes to different accounts commit in parallel, so ids do not commit in order.
//! The publisher does not need them to: it sends what is unpublished, in id order, and one account's events
//! have increasing ids (they are written under the account's lock). A reader paging with a cursor needs a
//! position that never appears behind it, so a position is given to each row after its commit, by one
//! sequencer at a time, in id order: a reader never passes a row still in flight.

use super::Step;
use super::writer::{BoxFuture, Plan};
use super::{Backend, Batch, Store, StoreError};
use crate::time::UnixTime;
use sqlx::Any;
use sqlx::Row;
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    /// Position for readers paging by cursor (0 until the sequencer gave it one).
    pub pos: i64,
    pub event_id: String,
    pub account_id: Option<String>,
    pub kind: String,
    pub payload: String,
    pub created_at: UnixTime,
    pub published_at: Option<UnixTime>,
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
const SEQUENCER_LOCK: i64 = 0x0062_696c_6c73_6571;

fn row(r: &AnyRow) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        id: r.try_get("id")?,
        pos: r.try_get::<Option<i64>, _>("pos")?.unwrap_or(0),
        event_id: r.try_get("event_id")?,
        account_id: r.try_get("account_id")?,
        kind: r.try_get("type")?,
        payload: r.try_get("payload")?,
        created_at: r.try_get("created_at")?,
        published_at: r.try_get("published_at")?,
    })
}

const COLUMNS: &str = "id, pos, event_id, account_id, type, payload, created_at, published_at";

/// Number committed rows without a position, in id order, after the highest position (at most 5,000 a call).
const SEQUENCE: &str = "UPDATE outbox SET pos = n.base + n.rn FROM \
     (SELECT u.id, ROW_NUMBER() OVER (ORDER BY u.id) AS rn, b.base FROM \
        (SELECT id FROM outbox WHERE pos IS NULL ORDER BY id LIMIT 5000) u, \
        (SELECT COALESCE(MAX(pos), 0) AS base FROM outbox) b) n \
     WHERE outbox.id = n.id";

impl Store {
    /// Events with a position above `after`, in position order (published or not). Rows committed since the
    /// last call are given their positions first.
    pub async fn outbox_page(&self, after: i64, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        self.outbox_sequence().await?;
        let q = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM outbox WHERE pos > $1 ORDER BY pos LIMIT $2"));
        let rows = sqlx::query(q).bind(after).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(row).collect()
    }

    /// Give committed rows their positions. On PostgreSQL one instance at a time does it (a transaction-scoped
    /// advisory lock; another caller finds it taken and skips); on SQLite the writer does it.
    pub async fn outbox_sequence(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(SEQUENCER_LOCK)
                    .fetch_one(&mut *tx)
                    .await?;
                if got {
                    sqlx::query(SEQUENCE).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Backend::Sqlite => {
                let plan = Plan::default();
                self.submit(plan, |b: &mut Batch| -> BoxFuture<'_, _> {
                    Box::pin(async move {
                        sqlx::query(SEQUENCE).execute(b.tx()).await?;
                        Ok(((), Step::Keep))
                    })
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The oldest events not yet published.
    pub async fn outbox_unpublished(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1"
        ));
        let rows = sqlx::query(q).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(row).collect()
    }

    /// Mark rows published. On PostgreSQL one statement of its own: only the publisher changes a row after its
    /// insert (the sequencer sets another column under its own row lock), so it needs no lane of the writer,
    /// whose batches it would otherwise delay. On SQLite through the writer, so it does not contend with it.
    pub async fn outbox_mark_published(&self, ids: &[i64], now: UnixTime) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        if self.backend == Backend::Postgres {
            sqlx::query("UPDATE outbox SET published_at = $1 WHERE id = ANY($2::bigint[])")
                .bind(now)
                .bind(super::pg::int_array(ids.iter().map(|id| Some(*id))))
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        let ids = std::sync::Arc::new(ids.to_vec());
        self.submit(Plan::default(), move |b: &mut Batch| -> BoxFuture<'_, _> {
            let ids = ids.clone();
            Box::pin(async move {
                for chunk in ids.chunks(1000) {
                    let sql = format!(
                        "UPDATE outbox SET published_at = $1 WHERE id IN ({})",
                        super::load::params(2, chunk.len())
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false).bind(now);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    q.execute(b.tx()).await?;
                }
                Ok(((), Step::Keep))
            })
        })
        .await
    }

    /// Seconds since the oldest unpublished event was written (0 when none).
    pub async fn outbox_lag(&self, now: UnixTime) -> Result<i64, StoreError> {
        Ok(self.outbox_backlog(now).await?.0)
    }

    /// The outbox's backlog: the age in seconds of its oldest unpublished event (0 when none), and how many
    /// events wait to be published.
    pub async fn outbox_backlog(&self, now: UnixTime) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query("SELECT MIN(created_at) AS oldest, COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        let oldest: Option<UnixTime> = row.try_get("oldest")?;
        Ok((oldest.map(|t| (now - t).max(0)).unwrap_or(0), row.try_get("n")?))
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
