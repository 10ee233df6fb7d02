//! Storage of the ledger on SQLite (the embedded default) or PostgreSQL (several instances side by side).
//!
//! Why one code path for both: both backends must behave the same and pass the same tests, so every query is
//! written once against sqlx's `Any` driver with portable SQL (`$n` parameters, `ON CONFLICT`, `RETURNING`,
//! BIGINT seconds, JSON as TEXT). The two differ only in how an account is serialized: PostgreSQL locks the
//! account row (`FOR UPDATE`), SQLite takes the write lock at `BEGIN IMMEDIATE` so concurrent writers wait.

mod account;
mod inbox;
mod keys;
mod migrate;
mod outbox;
mod read;
mod usage;

pub use account::{Outcome, Request};
pub use inbox::{InboxFilter, InboxRow, InboxStatus};
pub use keys::{KeyInfo, Scope};
pub use outbox::{Lease, OutboxRow};
pub use read::{AccountView, EntryRow};
pub use usage::{GroupBy, UsageRow};

use crate::ledger::RuleError;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, Transaction};
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
}

/// A handle to the ledger database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// `balance.low` is sent when a balance falls under this.
    low_balance: i64,
    /// How long a change waits for a locked account before giving up (a transient failure, retried).
    lock_timeout_ms: u64,
}

impl Store {
    /// Connect without migrating. A SQLite file is created with its folder when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or_else(|| StoreError::BadUrl(url.into()))?;
        let (url, max) = match backend {
            Backend::Sqlite => (sqlite_url(url)?, 8),
            Backend::Postgres => (url.to_owned(), 16),
        };
        let mut opts = AnyPoolOptions::new().max_connections(max).acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; FULL sync makes a commit survive power loss;
                    // the busy timeout makes a second writer wait for the lock instead of failing.
                    sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(&url).await?;
        Ok(Store { pool, backend, low_balance: 10, lock_timeout_ms: 30_000 })
    }

    /// Connect and apply pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Send `balance.low` when a balance falls under `n`.
    pub fn with_low_balance(mut self, n: i64) -> Self {
        self.low_balance = n;
        self
    }

    /// Give up on a locked account after `ms` (PostgreSQL `lock_timeout`).
    pub fn with_lock_timeout(mut self, ms: u64) -> Self {
        self.lock_timeout_ms = ms;
        self
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

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction: on SQLite it holds the database write lock from its first statement.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let sql = format!("SET LOCAL lock_timeout = '{}ms'", self.lock_timeout_ms);
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
                tx
            }
        })
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
