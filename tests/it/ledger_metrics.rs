//! The ledger's metrics count what was committed, once: a batch found stale and run again with locks, or a
//! change taken back, counts nothing twice. Measured on the worker binary (its own registry), with the test
//! changing the account behind the worker's memory through a store of its own, as another instance would.

use crate::common::proc::{Proc, admin_key, free_port, log_dir};
use crate::common::{at, fresh_url};
use billing_worker::ledger::{Op, Source};
use billing_worker::store::{OnMissing, Request, Store};

async fn metric(base: &str, line_start: &str) -> Option<f64> {
    let text = crate::common::client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_counted_once_when_a_stale_batch_runs_again() {
    let db = fresh_url("postgres").await;
    let admin = admin_key(&db);
    let w = Proc::spawn(free_port(), &[("DATABASE_URL", db.as_str())], &log_dir("ledger_metrics").join("w.log"));
    w.ready(false).await;
    let http = crate::common::client();
    let debit = |key: &str| {
        let body =
            serde_json::json!({"operation": "chat.message", "quantity": 1, "user_id": "u", "idempotency_key": key});
        http.post(format!("{}/v1/accounts/acc/debits", w.base)).bearer_auth(&admin).json(&body).send()
    };
    let cmd = serde_json::json!({"type": "account.created", "id": "c1", "account_id": "acc"});
    let r = http.post(format!("{}/v1/commands", w.base)).bearer_auth(&admin).json(&cmd).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(debit("d1").await.unwrap().status(), 201);
    // Another writer grants behind the worker's memory of acc.
    let other = Store::connect(&db).await.unwrap();
    let now = at(billing_worker::time::now().secs());
    let op = Op::Grant { lot_id: "g-other".into(), source: Source::Adjustment, credits: 100 };
    let req = Request { account: "acc".into(), op, cause: "t".into(), key: None, on_missing: OnMissing::Refuse, now };
    other.execute(req).await.unwrap();
    other.close().await;
    // This debit is tried without locks, found stale, and applied with locks: one debit entry, not two.
    assert_eq!(debit("d2").await.unwrap().status(), 201);
    assert_eq!(metric(&w.base, "billing_write_optimistic_batches_total{outcome=\"stale\"}").await, Some(1.0));
    assert_eq!(metric(&w.base, "billing_ledger_entries_total{kind=\"debit\"}").await, Some(2.0));
    let removed = metric(&w.base, "billing_credits_removed_total{kind=\"debit\"}").await;
    let cost: f64 = removed.expect("debited credits are counted");
    let spent: i64 =
        sqlx::query_scalar::<_, i64>("SELECT CAST(-SUM(amount) AS BIGINT) FROM entries WHERE kind = 'debit'")
            .fetch_one(&sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&db).await.unwrap())
            .await
            .unwrap();
    assert_eq!(cost, spent as f64, "the credits counted are the credits the entries took");
}
