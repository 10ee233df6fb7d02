//! TLS to PostgreSQL: `sslmode=require` encrypts the worker's connections (the local server has SSL on), and
//! `sslmode=verify-full` refuses a server whose certificate no trusted authority signed, saying so.

use crate::common::{fresh_url, spawn_app_with};
use sqlx::Connection;

#[tokio::test]
async fn postgres_connections_use_tls_when_required() {
    let url = fresh_url("postgres").await;
    let db = url.rsplit('/').next().unwrap().to_owned();
    let tls = format!("{url}?sslmode=require");
    let app = spawn_app_with("postgres", 1_780_000_000, &[("DATABASE_URL", &tls)]).await;
    let admin = app.key("admin").await;
    app.account(&admin, "acc").await;
    assert!(app.balance("acc").await >= 0);
    let mut conn = sqlx::AnyConnection::connect(&crate::common::admin_url()).await.unwrap();
    let (all, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = $1",
    )
    .bind(&db)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(all > 0 && encrypted == all, "{encrypted} of {all} connections to {db} use TLS");
    app.shutdown().await;
}

#[test]
fn verify_full_refuses_an_untrusted_certificate() {
    let url = format!("{}?sslmode=verify-full", crate::common::admin_url());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_billing-worker"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("BILLING_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "the refusal names the certificate: {err}");
}
