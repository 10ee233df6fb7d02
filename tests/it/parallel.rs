//! Group commit and the write path without a global lock: changes of different accounts commit in parallel on
//! two instances, a reader paging the outbox never skips an event committed late, concurrent changes share
//! batches without a refused one failing the others, two instances batching the same accounts do not
//! deadlock, and a key revoked on one instance stops working on the other within seconds.

use crate::common::at;
use crate::common::stripe::{event, payment_intent};
use crate::common::{TestApp, spawn_app, spawn_app_with};
use billing_worker::ledger::{Op, Source};
use billing_worker::store::{OnMissing, Request, Store, StoreError};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn t0() -> i64 {
    (billing_worker::time::parse_rfc3339("2026-03-01T00:00:00Z").unwrap()).secs()
}

fn debit_body(key: &str) -> Value {
    json!({"operation": "chat.message", "quantity": 1, "user_id": "u1", "idempotency_key": key})
}

/// A second worker on the database of `first`.
async fn beside(first: &TestApp) -> TestApp {
    spawn_app_with("postgres", t0(), &[("DATABASE_URL", first.db_url.as_str())]).await
}

/// POST a debit from a task of its own (the call outlives the borrow of the app).
fn debit_in_background(app: &TestApp, key: &str, account: &str, body: Value) -> tokio::task::JoinHandle<u16> {
    let (client, url, key) = (app.client.clone(), format!("{}/v1/accounts/{account}/debits", app.base), key.to_owned());
    tokio::spawn(async move { client.post(url).bearer_auth(key).json(&body).send().await.unwrap().status().as_u16() })
}

async fn events_after(app: &TestApp, key: &str, after: i64) -> Vec<Value> {
    let (s, b) = app.call("GET", &format!("/v1/events?after={after}&limit=1000"), Some(key), None).await;
    assert_eq!(s, 200, "{b}");
    b["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_commit_changes_of_different_accounts_in_parallel() {
    let a = spawn_app("postgres", t0()).await;
    let b = beside(&a).await;
    let admin = a.key("admin").await;
    for acc in ["x", "y"] {
        a.account(&admin, acc).await;
    }
    // x's change is written and held just before its commit, with its outbox row.
    let hold = a.store.pause_commits_of("x");
    let x = debit_in_background(&a, &admin, "x", debit_body("dx"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!x.is_finished(), "x's change waits at its commit");
    // Another account's change on the other instance does not wait for it.
    let started = Instant::now();
    let (s, r) = tokio::time::timeout(
        Duration::from_secs(4),
        b.call("POST", "/v1/accounts/y/debits", Some(&admin), Some(debit_body("dy"))),
    )
    .await
    .expect("y's debit committed while x's commit was held");
    assert_eq!(s, 201, "{r}");
    assert!(started.elapsed() < Duration::from_secs(2), "it did not wait: {:?}", started.elapsed());
    assert!(!x.is_finished(), "x still held");
    a.store.resume_commits();
    drop(hold);
    assert_eq!(x.await.unwrap(), 201);
    assert_eq!((a.balance("x").await, a.balance("y").await), (4, 4));
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_paging_events_never_skips_one_committed_late() {
    let a = spawn_app("postgres", t0()).await;
    let b = beside(&a).await;
    let admin = a.key("admin").await;
    for acc in ["x", "y"] {
        a.account(&admin, acc).await;
    }
    let seen = events_after(&a, &admin, 0).await;
    let c0 = seen.last().unwrap()["cursor"].as_i64().unwrap();
    // x's debit gets the lower outbox id but commits last.
    let _hold = a.store.pause_commits_of("x");
    let x = debit_in_background(&a, &admin, "x", debit_body("dx"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = b.call("POST", "/v1/accounts/y/debits", Some(&admin), Some(debit_body("dy"))).await;
    assert_eq!(s, 201);
    let page = events_after(&b, &admin, c0).await;
    assert!(page.iter().all(|e| e["account"] == "y"), "only what committed: {page:?}");
    assert!(!page.is_empty());
    let c1 = page.last().unwrap()["cursor"].as_i64().unwrap();
    a.store.resume_commits();
    assert_eq!(x.await.unwrap(), 201);
    let page = events_after(&b, &admin, c1).await;
    let kinds: Vec<(&str, &str)> =
        page.iter().map(|e| (e["account"].as_str().unwrap_or(""), e["type"].as_str().unwrap())).collect();
    assert!(kinds.contains(&("x", "credits.debited")), "x's event comes after the cursor, not behind it: {kinds:?}");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_on_one_instance_is_refused_on_the_other_within_seconds() {
    let a = spawn_app("postgres", t0()).await;
    let b = beside(&a).await;
    let admin = a.key("admin").await;
    a.account(&admin, "acc").await;
    let key = a.key("service").await;
    assert_eq!(b.call("GET", "/v1/accounts/acc/balance", Some(&key), None).await.0, 200, "known on b (kept in memory)");
    let id = key.split('_').nth(1).unwrap();
    assert!(a.store.revoke_key(id, at(t0())).await.unwrap());
    assert_eq!(a.call("GET", "/v1/accounts/acc/balance", Some(&key), None).await.0, 401, "at once where revoked");
    let revoked = Instant::now();
    while b.call("GET", "/v1/accounts/acc/balance", Some(&key), None).await.0 != 401 {
        assert!(revoked.elapsed() < billing_worker::store::KEY_TTL + Duration::from_secs(1), "still accepted on b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_batching_the_same_accounts_in_opposite_orders_do_not_deadlock() {
    let a = spawn_app("postgres", t0()).await;
    let b = beside(&a).await;
    let admin = a.key("admin").await;
    let accounts: Vec<String> = (0..8).map(|i| format!("acc{i}")).collect();
    for acc in &accounts {
        a.account(&admin, acc).await;
        a.grant(&admin, acc, 1_000).await;
    }
    let mut tasks = Vec::new();
    for round in 0..40 {
        for (n, app) in [&a, &b].into_iter().enumerate() {
            // One instance walks the accounts up, the other down, so their batches name them in opposite orders.
            let order: Vec<&String> = if n == 0 { accounts.iter().collect() } else { accounts.iter().rev().collect() };
            for acc in order {
                tasks.push(debit_in_background(app, &admin, acc, debit_body(&format!("r{round}-{n}-{acc}"))));
            }
        }
    }
    let mut codes = std::collections::HashMap::new();
    for t in tasks {
        *codes.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        codes,
        std::collections::HashMap::from([(201, 40 * 2 * 8)]),
        "every debit applied, none refused or lost"
    );
    for acc in &accounts {
        assert_eq!(a.balance(acc).await, 5 + 1_000 - 80, "{acc}");
    }
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_account_first_named_by_webhooks_on_two_instances_at_once_is_created_once() {
    let a = spawn_app("postgres", t0()).await;
    let b = beside(&a).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let app = if i % 2 == 0 { &a } else { &b };
        let body = event(
            &format!("evt_{i}"),
            "payment_intent.succeeded",
            t0(),
            payment_intent(&format!("pi_{i}"), None, json!({"account_id": "fresh", "credits_package": "credits_25"})),
        );
        let sig = crate::common::stripe::signature(crate::common::SECRET, t0(), &body);
        let (client, url) = (app.client.clone(), format!("{}/webhooks/stripe", app.base));
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).header("Stripe-Signature", sig).body(body).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }));
    }
    for t in tasks {
        let (s, r) = t.await.unwrap();
        assert_eq!((s, r["status"].as_str()), (200, Some("applied")), "{r}");
    }
    assert_eq!(a.balance("fresh").await, 24 * 25, "each payment once, and no signup credits");
    b.shutdown().await;
    a.shutdown().await;
}

async fn concurrent_changes_share_batches_and_a_refusal_fails_no_other(store: Store) {
    let grant = Op::Grant { lot_id: "g".into(), source: Source::Adjustment, credits: 32 };
    let req = |op: Op, on_missing| Request {
        account: "acc".into(),
        op,
        cause: "t".into(),
        key: None,
        on_missing,
        now: at(t0()),
    };
    store.execute(req(grant, OnMissing::Create)).await.unwrap();
    let (batches_before, jobs_before) = store.write_stats();
    // Queued together: 64 debits of one credit on 32 credits.
    let pending: Vec<_> = (0..64)
        .map(|i| {
            let op = Op::Debit { key: format!("d{i}"), credits: 1, user_id: None, operation: None };
            store.execute(req(op, OnMissing::Refuse))
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for p in pending {
        match p.await {
            Ok(_) => ok += 1,
            Err(StoreError::Rule(billing_worker::ledger::RuleError::Insufficient { .. })) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, refused), (32, 32), "the balance covers 32; the refused ones failed nobody else");
    let (batches, jobs) = store.write_stats();
    assert_eq!(jobs - jobs_before, 64);
    assert!(
        batches - batches_before < 64,
        "changes queued together commit together ({} batches)",
        batches - batches_before
    );
    assert_eq!(store.account("acc", at(t0())).await.unwrap().balance, 0);
    let entries = store.entries("acc", 0, 1000).await.unwrap();
    assert_eq!(entries.iter().filter(|e| e.kind == "debit").count(), 32, "a refused debit leaves no entry");
}

crate::on_both_backends!(concurrent_changes_share_batches_and_a_refusal_fails_no_other);
