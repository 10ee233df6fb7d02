//! Schema migrations, embedded in the binary, applied at start and by `billing-worker migrate`.
//!
//! Why our own runner: a dozen lines over `raw_sql` spare the sqlx macro crates' build time, and PostgreSQL
//! instances starting side by side serialize on an advisory lock so a migration runs once.

use super::{Backend, Store, StoreError};

const SQLITE: &[(i64, &str, &str)] = &[
    (1, "ledger", include_str!("../../migrations/sqlite/0001_ledger.sql")),
    (2, "inbox", include_str!("../../migrations/sqlite/0002_inbox.sql")),
    (3, "api", include_str!("../../migrations/sqlite/0003_api.sql")),
    (4, "outbox", include_str!("../../migrations/sqlite/0004_outbox.sql")),
    (5, "payments", include_str!("../../migrations/sqlite/0005_payments.sql")),
    (6, "order_and_waits", include_str!("../../migrations/sqlite/0006_order_and_waits.sql")),
    (7, "invoices", include_str!("../../migrations/sqlite/0007_invoices.sql")),
    (8, "console_sessions", include_str!("../../migrations/sqlite/0008_console_sessions.sql")),
    (9, "fresh_check", include_str!("../../migrations/sqlite/0009_fresh_check.sql")),
];
const POSTGRES: &[(i64, &str, &str)] = &[
    (1, "ledger", include_str!("../../migrations/postgres/0001_ledger.sql")),
    (2, "inbox", include_str!("../../migrations/postgres/0002_inbox.sql")),
    (3, "api", include_str!("../../migrations/postgres/0003_api.sql")),
    (4, "outbox", include_str!("../../migrations/postgres/0004_outbox.sql")),
    (5, "payments", include_str!("../../migrations/postgres/0005_payments.sql")),
    (6, "order_and_waits", include_str!("../../migrations/postgres/0006_order_and_waits.sql")),
    (7, "invoices", include_str!("../../migrations/postgres/0007_invoices.sql")),
    (8, "console_sessions", include_str!("../../migrations/postgres/0008_console_sessions.sql")),
    (9, "fresh_check", include_str!("../../migrations/postgres/0009_fresh_check.sql")),
];

/// Arbitrary constant naming the migration lock.
const LOCK_ID: i64 = 0x0062_696c_6c69_6e67;

impl Store {
    /// Apply the migrations not yet applied; returns how many were.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let list = match self.backend {
            Backend::Sqlite => SQLITE,
            Backend::Postgres => POSTGRES,
        };
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            // Wait as long as another instance migrates (the pool's lock_timeout is for changes to accounts);
            // this connection is closed afterwards rather than returned with the setting changed.
            sqlx::query("SET lock_timeout = 0").execute(&mut *conn).await?;
            sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK_ID).execute(&mut *conn).await?;
        }
        let result = async {
            sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)")
                .execute(&mut *conn)
                .await?;
            let mut applied = 0;
            for (version, name, sql) in list {
                let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *conn)
                    .await?;
                if done.is_some() {
                    continue;
                }
                let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                    .bind(*version)
                    .bind(*name)
                    .bind(crate::time::now())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::info!(version, name, "migration applied");
                applied += 1;
            }
            Ok::<_, StoreError>(applied)
        }
        .await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_ID).execute(&mut *conn).await?;
            drop(conn.detach());
        }
        result
    }
}
