//! Storage of the ledger on SQLite (the embedded default) or PostgreSQL (several instances side by side).
//!
//! Why one code path for both: both backends must behave the same and pass the same tests, so every query is
//! written once against sqlx's `Any` driver with portable SQL (`$n` parameters, `ON CONFLICT`, `RETURNING`,
//! BIGINT seconds, JSON as TEXT). Every write goes through the group-commit [`writer`]; the backends differ only
//! in how a batch holds its accounts: PostgreSQL locks the account rows (`FOR UPDATE`, sorted), SQLite has one
//! writer that takes the write lock at `BEGIN IMMEDIATE`.

mod account;
mod batch;
mod codec;
mod facts;
mod flush;
pub mod inbox;
mod keys;
mod load;
mod lookup;
mod migrate;
mod moves;
mod outbox;
mod pending;
mod pg;
mod read;
mod request;
mod rows;
pub mod sessions;
mod tables;
mod usage;
pub mod writer;

pub use batch::{Batch, Step};
pub use facts::Seen;
pub use inbox::{InboxFilter, InboxRow, InboxStatus};
pub use keys::{KEY_TTL, KeyInfo, Scope, constant_time_eq, random_hex};
pub use outbox::{Lease, OutboxRow};
pub use pending::{Invoice as InvoiceFact, NewInbox};
pub use read::{AccountView, EntryRow};
pub use request::{Guard, IdempotencyKey, OnMissing, Outcome, Request};
pub use usage::{GroupBy, UsageRow};
pub use writer::{BoxFuture, Plan, WriterConfig};

/// A PostgreSQL URL with TLS only when asked for: without an `sslmode` it gets `sslmode=disable`, not sqlx's
/// `prefer`. Measured with the benchmark, `prefer` (TLS on a server that offers it) cut distinct webhooks from
/// about 1,700/s to 350/s with a p99 of 100 ms on the local server; TLS is for `sslmode=require` or `verify-full`.
fn pg_url(url: &str) -> String {
    let has_mode = url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("sslmode=")));
    match (has_mode, url.contains('?')) {
        (true, _) => url.to_owned(),
        (false, true) => format!("{url}&sslmode=disable"),
        (false, false) => format!("{url}?sslmode=disable"),
    }
}

/// The connection a batch (or a read) runs its statements on.
pub type Tx = sqlx::AnyConnection;

use crate::ledger::RuleError;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("unknown account {0}")]
    UnknownAccount(String),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("idempotency key {0} was already used with a different request")]
    KeyConflict(String),
    #[error("stored state is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: expected sqlite:PATH or postgres://...")]
    BadUrl(String),
    #[error("cannot create the folder of the SQLite file {path}: {source}")]
    Folder { path: String, source: std::io::Error },
    #[error("the store is shutting down")]
    Closed,
    /// Another writer wrote the same new row first (an account, an inbox row): the batch is run again.
    #[error("written concurrently: {0}")]
    Conflict(String),
}

impl StoreError {
    /// The SQLSTATE of a database error (`40P01`, `55P03`, ...).
    pub fn db_code(&self) -> Option<String> {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
            _ => None,
        }
    }

    /// A failure of the database or of the writer (retry later), not an answer about the request.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Db(_) | StoreError::Closed | StoreError::Conflict(_))
    }
}

/// How the store writes: see [`WriterConfig`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `balance.low` is sent when a balance falls under this.
    pub low_balance: i64,
    /// How long a change waits for a locked account before giving up (a transient failure, retried).
    pub lock_timeout_ms: u64,
    /// Writer lanes on PostgreSQL (SQLite has one writer).
    pub lanes: usize,
    pub max_batch: usize,
    pub gather: Duration,
    /// PostgreSQL: batches of changes to accounts the lane holds in memory are written without taking locks
    /// first, checked by version as they are written ([`writer`]).
    pub optimistic: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            low_balance: 10,
            lock_timeout_ms: 30_000,
            lanes: 2,
            max_batch: 256,
            gather: Duration::from_millis(1),
            optimistic: true,
        }
    }
}

/// A handle to the ledger database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    writer: Arc<writer::Writer>,
    keys: Arc<keys::KeyCache>,
}

/// Statements whose text depends on a row count (SQLite's `VALUES` and `IN` lists, and the lookup of idempotency
/// keys a job makes on either backend) are kept prepared on their connection for up to this many rows: a batch's
/// usual sizes are then parsed once per connection, not once per batch (`bench/README.md` measured it), while
/// the rare big batch (a queue backlog) is prepared for that one use, so the cached statements stay small.
pub(crate) const PREPARED_ROWS: usize = 32;

impl Store {
    /// Connect without migrating. A SQLite file is created with its folder when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Connect with `opts` and apply pending migrations.
    pub async fn open_with(url: &str, opts: StoreOptions) -> Result<Self, StoreError> {
        let store = Self::connect_with(url, opts).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connect without migrating, writing with `opts`.
    pub async fn connect_with(url: &str, opts: StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or_else(|| StoreError::BadUrl(url.into()))?;
        let (url, max) = match backend {
            Backend::Sqlite => (sqlite_url(url)?, 8),
            Backend::Postgres => (pg_url(url), 16),
        };
        // No ping before each use: a broken connection shows on its first statement, which fails as transient.
        let mut pool_opts = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false);
        if backend == Backend::Sqlite {
            pool_opts = pool_opts.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; FULL sync makes a commit survive power loss;
                    // the busy timeout makes a second writer wait for the lock instead of failing.
                    sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            });
        } else {
            let lock_timeout = opts.lock_timeout_ms;
            pool_opts = pool_opts.after_connect(move |conn, _| {
                Box::pin(async move {
                    // A change waits this long for a locked account, then fails as transient (retried). Set once
                    // per connection rather than per transaction: a round trip less for every batch.
                    // Every statement is prepared once per connection and looks rows up by key: planned once
                    // (a generic plan) rather than again at every execution, and never as a table scan, which
                    // statistics of a table that grew since they were taken could make look cheap. No JIT: it
                    // compiles for tens of milliseconds to save microseconds on such statements.
                    let sql = format!(
                        "SET lock_timeout = '{lock_timeout}ms'; SET plan_cache_mode = force_generic_plan; \
                         SET enable_seqscan = off; SET jit = off"
                    );
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(conn).await?;
                    Ok(())
                })
            });
        }
        let lanes = if backend == Backend::Sqlite { 1 } else { opts.lanes.max(1) };
        // The writer lanes get their own connections (one each), opened on the writer's thread when first used.
        let write_pool = pool_opts.clone().max_connections(lanes as u32).connect_lazy(&url)?;
        let pool = pool_opts.connect(&url).await?;
        let config = WriterConfig {
            lanes: opts.lanes,
            max_batch: opts.max_batch,
            gather: opts.gather,
            lock_timeout_ms: opts.lock_timeout_ms,
            low_balance: opts.low_balance,
            optimistic: opts.optimistic,
        };
        let writer = Arc::new(writer::Writer::start(write_pool, backend, config));
        Ok(Store { pool, backend, writer, keys: Arc::new(keys::KeyCache::default()) })
    }

    /// Connect and apply pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Finish the writes queued, then close the connections.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Hand a job to the writer (see [`writer::Writer::submit`]).
    pub fn submit<T, F>(
        &self,
        plan: Plan,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: for<'a> FnMut(&'a mut Batch) -> BoxFuture<'a, Result<(T, Step), StoreError>> + Send + 'static,
    {
        self.writer.submit(plan, f)
    }

    /// Batches committed and the changes in them, since the store was opened.
    pub fn write_stats(&self) -> (u64, u64) {
        let s = &self.writer.stats;
        (s.batches.load(std::sync::atomic::Ordering::Relaxed), s.jobs.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Batches tried optimistically (without locks, checked by version) and those of them found stale by the
    /// version check and run again with locks, since the store was opened.
    pub fn optimistic_stats(&self) -> (u64, u64) {
        let s = &self.writer.stats;
        (s.optimistic.load(std::sync::atomic::Ordering::Relaxed), s.stale.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Test hook: batches that change `account` wait before their commit until the returned notify is notified.
    pub fn pause_commits_of(&self, account: &str) -> Arc<tokio::sync::Notify> {
        let n = Arc::new(tokio::sync::Notify::new());
        *self.writer.pause.lock().expect("pause") = Some((account.to_owned(), n.clone()));
        n
    }

    /// Undo [`Store::pause_commits_of`].
    pub fn resume_commits(&self) {
        if let Some((_, n)) = self.writer.pause.lock().expect("pause").take() {
            n.notify_waiters();
            n.notify_one();
        }
    }
}

/// `sqlite:PATH[?opts]` with the folder of PATH created and `mode=rwc` so the file is created too.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::BadUrl(url.into()));
    }
    if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder { path: path.into(), source })?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".into()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

#[cfg(test)]
mod url_tests {
    use super::pg_url;

    #[test]
    fn tls_only_when_the_url_asks() {
        assert_eq!(pg_url("postgres://u@h/db"), "postgres://u@h/db?sslmode=disable");
        assert_eq!(
            pg_url("postgres://u@h/db?application_name=x"),
            "postgres://u@h/db?application_name=x&sslmode=disable"
        );
        assert_eq!(pg_url("postgres://u@h/db?sslmode=require"), "postgres://u@h/db?sslmode=require");
        assert_eq!(pg_url("postgres://u@h/db?a=1&sslmode=verify-full"), "postgres://u@h/db?a=1&sslmode=verify-full");
    }
}
