//! Every arrival order ends in the same ledger, also when a customer's events first went to the account named
//! by its id and a later event names the real account (§5), and when a subscription payment is refunded; two
//! instances deciding the same waiting events at once apply each once; a balance is read in one snapshot.

use crate::common::at;
use crate::common::stripe::{Line, Shape, Sub, charge, checkout, event, invoice, payment_intent, price, subscription};
use crate::common::{TestApp, spawn_app, spawn_app_with};

use billing_worker::store::InboxStatus;
use billing_worker::time::{add_months, parse_rfc3339};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn t0() -> i64 {
    (parse_rfc3339("2026-06-01T09:00:00Z").unwrap()).secs()
}

/// A customer's package (first known only by customer), its checkout naming the account, a second package by
/// customer only, a subscription known by customer only, its first invoice (older API shape, naming its
/// payment), and a full refund of that payment.
fn moving_set() -> Vec<String> {
    let basic = price("price_bm", Some("basic_monthly"), json!({}), Some("month"));
    let s = Sub {
        id: "sub_m",
        customer: "cus_m",
        account: None,
        price: basic,
        anchor: t0(),
        period: (t0(), add_months(at(t0()), 1).secs()),
        status: "active",
        trial: None,
        cancel_at_period_end: false,
        ended_at: None,
    };
    let line =
        Line { price: "price_bm", period: (t0(), add_months(at(t0()), 1).secs()), proration: false, amount: 999 };
    let mut inv = invoice("in_m1", "sub_m", "cus_m", "subscription_create", &[line], Shape::Old);
    inv["payment_intent"] = json!("pi_s1");
    let pkg = |n: &str| json!({"credits_package": n});
    vec![
        event("evt_m1", "payment_intent.succeeded", t0(), payment_intent("pi_m1", Some("cus_m"), pkg("credits_100"))),
        event(
            "evt_m2",
            "checkout.session.completed",
            t0() + 1,
            checkout("cs_m1", Some("acc_m"), Some("cus_m"), "pi_m1", pkg("credits_100"), true),
        ),
        event(
            "evt_m3",
            "payment_intent.succeeded",
            t0() + 2,
            payment_intent("pi_m2", Some("cus_m"), pkg("credits_25")),
        ),
        event("evt_m4", "customer.subscription.created", t0() + 3, subscription(&s, Shape::Old)),
        event("evt_m5", "invoice.paid", t0() + 4, inv),
        event("evt_m6", "charge.refunded", t0() + 5, charge("ch_s1", "pi_s1", Some("cus_m"), 999, 999)),
    ]
}

#[derive(Debug, PartialEq)]
struct Ending {
    balance: i64,
    fallback: i64,
    lots: BTreeMap<String, (i64, i64)>,
    subscriptions: Vec<String>,
}

async fn run(backend: &str, events: &[String]) -> Ending {
    let app = spawn_app(backend, t0() + 60).await;
    for e in events {
        app.deliver(e).await;
    }
    let statuses: Vec<(String, InboxStatus)> = app
        .store
        .inbox_list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.event_id, r.status))
        .filter(|(_, s)| *s != InboxStatus::Applied)
        .collect();
    assert!(statuses.is_empty(), "every event ends applied: {statuses:?}");
    let v = app.store.account("acc_m", app.clock.now()).await.unwrap();
    let fallback = app.store.account("cus_m", app.clock.now()).await.map(|v| v.balance).unwrap_or_default();
    let all_lots = sqlx_lots(&app, "acc_m").await;
    app.shutdown().await;
    Ending {
        balance: v.balance.get(),
        fallback: fallback.get(),
        lots: all_lots,
        subscriptions: v.subscriptions.iter().map(|s| s.id.clone()).collect(),
    }
}

/// Every lot of an account, spent or not: (amount, remaining).
async fn sqlx_lots(app: &TestApp, account: &str) -> BTreeMap<String, (i64, i64)> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT id, amount, remaining FROM lots WHERE account_id = $1")
        .bind(account)
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    rows.iter().map(|r| (r.get::<String, _>(0), (r.get::<i64, _>(1), r.get::<i64, _>(2)))).collect()
}

fn shuffled(events: &[String], seed: u64) -> Vec<String> {
    let mut x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let mut v = events.to_vec();
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

#[tokio::test]
async fn every_order_of_a_customer_found_late_ends_alike() {
    let set = moving_set();
    let expected = run("sqlite", &set).await;
    assert_eq!(
        (expected.balance, expected.fallback, expected.subscriptions.clone()),
        (100 + 25, 0, vec!["sub_m".to_owned()]),
        "both packages and the subscription on the named account; its refunded allocation taken back"
    );
    for seed in 1..=24 {
        assert_eq!(run("sqlite", &shuffled(&set, seed)).await, expected, "seed {seed}");
    }
    // The reverse order: everything to the named account from the start, nothing to move.
    let reversed: Vec<String> = set.iter().rev().cloned().collect();
    assert_eq!(run("sqlite", &reversed).await, expected);
}

#[tokio::test]
async fn every_order_of_a_customer_found_late_ends_alike_on_postgres() {
    let set = moving_set();
    let expected = run("postgres", &set).await;
    for seed in 40..=44 {
        assert_eq!(run("postgres", &shuffled(&set, seed)).await, expected, "seed {seed}");
    }
}

async fn moves_are_entries_on_both_sides(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let admin = app.key("admin").await;
    let pi = payment_intent("pi_z", Some("cus_z"), json!({"credits_package": "credits_100"}));
    app.deliver(&event("evt_z", "payment_intent.succeeded", t0(), pi)).await;
    assert_eq!(app.balance("cus_z").await, 100);
    let created = json!({"type": "account.created", "id": "c_z", "account_id": "acc_z", "stripe_customer_id": "cus_z"});
    let (s, r) = app.call("POST", "/v1/commands", Some(&admin), Some(created)).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!((app.balance("acc_z").await, app.balance("cus_z").await), (5 + 100, 0), "moved; signup for acc_z");
    for (account, sign) in [("cus_z", -1), ("acc_z", 1)] {
        let moved: Vec<_> =
            app.store.entries(account, 0, 100).await.unwrap().into_iter().filter(|e| e.kind == "transfer").collect();
        assert_eq!(moved.len(), 1, "{account}");
        assert_eq!((moved[0].amount, moved[0].cause.as_str()), (sign * 100, "command:c_z"), "{account}");
    }
    // Later events of the customer go to the linked account.
    let pi = payment_intent("pi_z2", Some("cus_z"), json!({"credits_package": "credits_25"}));
    app.deliver(&event("evt_z2", "payment_intent.succeeded", t0() + 1, pi)).await;
    assert_eq!(app.balance("acc_z").await, 130);
    // A refund of the first package finds its lot where it moved.
    app.deliver(&event("evt_z3", "charge.refunded", t0() + 2, charge("ch_z", "pi_z", Some("cus_z"), 1000, 1000))).await;
    assert_eq!(app.balance("acc_z").await, 30);
    app.shutdown().await;
}

#[tokio::test]
async fn moves_are_entries_on_both_sides_sqlite() {
    moves_are_entries_on_both_sides("sqlite").await
}

#[tokio::test]
async fn moves_are_entries_on_both_sides_postgres() {
    moves_are_entries_on_both_sides("postgres").await
}

/// Refunds of subscription payments in the newer API shape: the link comes with `invoice_payment.paid`.
async fn a_subscription_refund_in_the_basil_shape(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let basic = price("price_bb", Some("basic_monthly"), json!({}), Some("month"));
    let s = Sub {
        id: "sub_b",
        customer: "cus_b",
        account: Some("acc_b"),
        price: basic,
        anchor: t0(),
        period: (t0(), add_months(at(t0()), 1).secs()),
        status: "active",
        trial: None,
        cancel_at_period_end: false,
        ended_at: None,
    };
    app.deliver(&event("evt_b1", "customer.subscription.created", t0(), subscription(&s, Shape::New))).await;
    let line =
        Line { price: "price_bb", period: (t0(), add_months(at(t0()), 1).secs()), proration: false, amount: 1000 };
    let inv = invoice("in_b1", "sub_b", "cus_b", "subscription_create", &[line], Shape::New);
    app.deliver(&event("evt_b2", "invoice.paid", t0(), inv)).await;
    assert_eq!(app.balance("acc_b").await, 20);
    // The refund comes first: it waits for the link.
    let r = app
        .deliver(&event("evt_b3", "charge.refunded", t0() + 5, charge("ch_b", "pi_b", Some("cus_b"), 1000, 500)))
        .await;
    assert_eq!(r["status"], "waiting", "{r}");
    let ip = json!({"id": "inpay_b", "object": "invoice_payment", "invoice": "in_b1",
                    "payment": {"type": "payment_intent", "payment_intent": "pi_b"}, "status": "paid"});
    let r = app.deliver(&event("evt_b4", "invoice_payment.paid", t0() + 6, ip)).await;
    assert_eq!(r["status"], "ignored", "it records a link, no credits: {r}");
    assert_eq!(app.balance("acc_b").await, 10, "half the allocation taken back");
    let r = app.store.inbox_find("stripe", "evt_b3").await.unwrap().unwrap();
    assert_eq!(r.status, InboxStatus::Applied);
    app.shutdown().await;
}

#[tokio::test]
async fn a_subscription_refund_in_the_basil_shape_sqlite() {
    a_subscription_refund_in_the_basil_shape("sqlite").await
}

#[tokio::test]
async fn a_subscription_refund_in_the_basil_shape_postgres() {
    a_subscription_refund_in_the_basil_shape("postgres").await
}

/// Two instances deciding the same waiting events at once (a fact arriving, replays, the retry schedule):
/// each applies once, none is marked failed, no `event.failed` goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_decisions_of_one_stored_event_apply_it_once() {
    let a = spawn_app("postgres", t0()).await;
    let b = spawn_app_with("postgres", t0(), &[("DATABASE_URL", a.db_url.as_str())]).await;
    let admin = a.key("admin").await;
    const N: usize = 12;
    let basic = price("price_bc", Some("basic_monthly"), json!({}), Some("month"));
    let period = (t0(), add_months(at(t0()), 1).secs());
    for i in 0..N {
        let line = Line { price: "price_bc", period, proration: false, amount: 999 };
        let inv =
            invoice(&format!("in_c{i}"), &format!("sub_c{i}"), "cus_c", "subscription_create", &[line], Shape::New);
        assert_eq!(a.deliver(&event(&format!("evt_i{i}"), "invoice.paid", t0(), inv)).await["status"], "waiting");
    }
    let mut tasks = Vec::new();
    for i in 0..N {
        let (id, account) = (format!("sub_c{i}"), format!("acc_c{i}"));
        let sub = Sub {
            id: &id,
            customer: "cus_c",
            account: Some(&account),
            price: basic.clone(),
            anchor: t0(),
            period,
            status: "active",
            trial: None,
            cancel_at_period_end: false,
            ended_at: None,
        };
        let s = event(&format!("evt_s{i}"), "customer.subscription.created", t0(), subscription(&sub, Shape::New));
        let (client, url) = (a.client.clone(), format!("{}/webhooks/stripe", a.base));
        let sig = crate::common::stripe::signature(crate::common::SECRET, t0(), &s);
        tasks.push(tokio::spawn(async move {
            client.post(url).header("Stripe-Signature", sig).body(s).send().await.unwrap().status().as_u16()
        }));
        let (client, url, key) =
            (b.client.clone(), format!("{}/v1/admin/failed-events/evt_i{i}/replay", b.base), admin.clone());
        tasks.push(tokio::spawn(
            async move { client.post(url).bearer_auth(key).send().await.unwrap().status().as_u16() },
        ));
    }
    b.clock.set(at(t0() + 120));
    let retried = b.retry_due();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    retried.await;
    // Whatever is still waiting (a replay that came before its subscription) is decided once more.
    a.clock.set(at(t0() + 600));
    a.retry_due().await;
    for i in 0..N {
        let r = a.store.inbox_find("stripe", &format!("evt_i{i}")).await.unwrap().unwrap();
        assert_eq!(r.status, InboxStatus::Applied, "evt_i{i}: {:?}", r.detail);
        assert_eq!(a.balance(&format!("acc_c{i}")).await, 20, "acc_c{i}: allocated once");
    }
    let (_, events) = a.call("GET", "/v1/events?limit=1000", Some(&admin), None).await;
    let failed = events["events"].as_array().unwrap().iter().filter(|e| e["type"] == "event.failed").count();
    assert_eq!(failed, 0, "no spurious event.failed");
    b.shutdown().await;
    a.shutdown().await;
}

/// A balance read while debits commit is one snapshot: the balance is the sum of the lots it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_balance_is_read_in_one_snapshot_while_debits_commit() {
    let app = spawn_app("postgres", t0()).await;
    let (admin, svc) = (app.key("admin").await, app.key("service").await);
    app.account(&admin, "acc").await;
    for n in [400, 300, 300] {
        app.grant(&admin, "acc", n).await;
    }
    let stop = Instant::now() + Duration::from_secs(2);
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, url, key) = (app.client.clone(), format!("{}/v1/accounts/acc/debits", app.base), svc.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while Instant::now() < stop {
                let body = json!({"operation": "chat.message", "quantity": 1, "user_id": "u", "idempotency_key": format!("w{w}-{i}")});
                client.post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
                i += 1;
            }
        }));
    }
    let mut reads = 0;
    while Instant::now() < stop {
        let (s, b) = app.call("GET", "/v1/accounts/acc/balance", Some(&svc), None).await;
        assert_eq!(s, 200);
        let lots: i64 = b["lots"].as_array().unwrap().iter().map(|l| l["remaining"].as_i64().unwrap()).sum();
        assert_eq!(b["balance"].as_i64().unwrap(), lots, "{b}");
        reads += 1;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(reads > 20, "{reads} reads");
    app.shutdown().await;
}
