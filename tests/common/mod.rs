//! Test setup shared by the integration tests: a fresh database per test on SQLite (a temp file) or PostgreSQL
//! (a new database on the server of `TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! A missing PostgreSQL fails the test: CI must not pass by skipping.
#![allow(dead_code)]

use billing_worker::store::Store;
use sqlx::Connection;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A URL for a new, empty database of the given backend.
pub async fn fresh_url(backend: &str) -> String {
    match backend {
        "sqlite" => {
            let dir = std::env::temp_dir().join("billing-worker-tests");
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite:{}", dir.join(format!("t_{}.db", unique())).display())
        }
        "postgres" => {
            sqlx::any::install_default_drivers();
            let admin = admin_url();
            let mut conn = sqlx::AnyConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is required for these tests ({admin}): {e}"));
            let name = format!("bw_test_{}", unique());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
            let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
            format!("{base}/{name}")
        }
        other => panic!("unknown backend {other}"),
    }
}

pub async fn fresh_store(backend: &str) -> Store {
    Store::open(&fresh_url(backend).await).await.unwrap()
}

/// Generate each listed async test fn (taking a `Store`) once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::common::fresh_store("sqlite").await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::common::fresh_store("postgres").await).await
                }
            }
        )*
    };
}
