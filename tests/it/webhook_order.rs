//! Stripe does not keep order: a subscription's events delivered in many seeded random orders end in the same
//! ledger as the in-order run.

use crate::common::Rng;
use crate::common::at;
use crate::common::spawn_app;
use crate::common::stripe::{Line, Shape, Sub, charge, checkout, event, invoice, price, subscription};

use billing_worker::time::{add_months, parse_rfc3339};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const DAY: i64 = 86_400;

fn t0() -> i64 {
    (parse_rfc3339("2026-04-30T08:00:00Z").unwrap()).secs()
}
fn month(k: i64) -> i64 {
    add_months(at(t0()), k).secs()
}

fn sub(kind: &str, id: &str, created: i64, price: Value, period: (i64, i64)) -> String {
    let s = Sub {
        id: "sub_o",
        customer: "cus_o",
        account: Some("acc_o"),
        price,
        anchor: t0(),
        period,
        status: "active",
        trial: None,
        cancel_at_period_end: false,
        ended_at: None,
    };
    event(id, kind, created, subscription(&s, Shape::New))
}

fn paid(id: &str, reason: &str, lines: &[Line], created: i64) -> String {
    event(id, "invoice.paid", created, invoice(&format!("in_{id}"), "sub_o", "cus_o", reason, lines, Shape::New))
}

fn basic() -> Value {
    price("price_b", Some("basic_monthly"), json!({}), Some("month"))
}
fn pro() -> Value {
    price("price_p", Some("pro_monthly"), json!({}), Some("month"))
}

/// created, invoice.paid, updated (the renewal's new period), the renewal's invoice, a package, a refund.
fn full_set() -> Vec<String> {
    let line = |p: &'static str, period| Line { price: p, period, proration: false, amount: 999 };
    vec![
        sub("customer.subscription.created", "evt_1", t0(), basic(), (t0(), month(1))),
        paid("evt_2", "subscription_create", &[line("price_b", (t0(), month(1)))], t0()),
        sub("customer.subscription.updated", "evt_3", month(1), basic(), (month(1), month(2))),
        paid("evt_4", "subscription_cycle", &[line("price_b", (month(1), month(2)))], month(1)),
        event(
            "evt_5",
            "checkout.session.completed",
            t0() + 2 * DAY,
            checkout("cs_o", Some("acc_o"), Some("cus_o"), "pi_o", json!({"credits_package": "credits_100"}), true),
        ),
        event("evt_6", "charge.refunded", t0() + 3 * DAY, charge("ch_o", "pi_o", Some("cus_o"), 1000, 500)),
    ]
}

/// The same with an upgrade to pro in the first cycle.
fn set_with_upgrade() -> Vec<String> {
    let mut set = full_set();
    let mid = t0() + 9 * DAY;
    set.push(sub("customer.subscription.updated", "evt_7", mid, pro(), (t0(), month(1))));
    let lines = [
        Line { price: "price_b", period: (mid, month(1)), proration: true, amount: -600 },
        Line { price: "price_p", period: (mid, month(1)), proration: true, amount: 1200 },
    ];
    set.push(paid("evt_8", "subscription_update", &lines, mid));
    // The renewal then carries the pro price.
    set[2] = sub("customer.subscription.updated", "evt_3", month(1), pro(), (month(1), month(2)));
    set
}

#[derive(Debug, PartialEq)]
struct Ledger {
    balance: i64,
    plan: String,
    lots: BTreeMap<String, (i64, i64)>,
    by_source: BTreeMap<String, i64>,
    entries: Vec<(String, i64, Option<String>)>,
}

async fn run(backend: &str, events: &[String]) -> Ledger {
    let app = spawn_app(backend, month(1) + 5 * DAY).await;
    for e in events {
        app.deliver(e).await;
    }
    let v = app.store.account("acc_o", app.clock.now()).await.unwrap();
    let mut entries: Vec<_> =
        app.store.entries("acc_o", 0, 1000).await.unwrap().into_iter().map(|e| (e.kind, e.amount, e.lot_id)).collect();
    entries.sort();
    let mut by_source = BTreeMap::new();
    for l in &v.lots {
        *by_source.entry(l.source.as_str().to_string()).or_insert(0) += l.remaining.get();
    }
    let waiting = app
        .store
        .inbox_list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.status.as_str() != "applied")
        .count();
    assert_eq!(waiting, 0, "every event ends applied");
    app.shutdown().await;
    Ledger {
        balance: v.balance.get(),
        plan: v.plan,
        lots: v.lots.iter().map(|l| (l.id.to_string(), (l.amount.get(), l.remaining.get()))).collect(),
        by_source,
        entries,
    }
}

fn shuffled(events: &[String], seed: u64) -> Vec<String> {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let mut v = events.to_vec();
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

#[tokio::test]
async fn every_order_of_the_full_event_set_ends_in_the_same_ledger() {
    let set = full_set();
    let expected = run("sqlite", &set).await;
    assert_eq!(expected.balance, 20 + 20 + 50, "two allocations, and the package less the half refunded");
    for seed in 1..=30 {
        let got = run("sqlite", &shuffled(&set, seed)).await;
        assert_eq!(got, expected, "seed {seed}");
    }
    // Every event delivered twice (and again in another order): one effect each.
    let twice: Vec<String> = set.iter().chain(shuffled(&set, 7).iter()).cloned().collect();
    assert_eq!(run("sqlite", &twice).await, expected);
}

#[tokio::test]
async fn every_order_ends_in_the_same_ledger_on_postgres() {
    let set = full_set();
    let expected = run("postgres", &set).await;
    for seed in 100..=105 {
        assert_eq!(run("postgres", &shuffled(&set, seed)).await, expected, "seed {seed}");
    }
}

#[tokio::test]
async fn with_an_upgrade_every_order_ends_with_the_same_credits() {
    let set = set_with_upgrade();
    let expected = run("sqlite", &set).await;
    assert_eq!((expected.balance, expected.plan.as_str()), (20 + 30 + 50 + 50, "pro"));
    for seed in 1..=30 {
        let got = run("sqlite", &shuffled(&set, seed)).await;
        // How the credits are split into lots may differ (one allocation of 50, or 20 and a top-up of 30);
        // what the customer has, and from which source, does not.
        assert_eq!(
            (got.balance, &got.plan, &got.by_source),
            (expected.balance, &expected.plan, &expected.by_source),
            "seed {seed}"
        );
    }
}
