//! Stripe webhooks end to end: signed payloads built from Stripe's fixtures, over real HTTP to a worker on
//! port 0, with a clock the test moves.

use crate::common::stripe::{Line, Shape, Sub, charge, checkout, event, invoice, payment_intent, price, subscription};
use crate::common::{TestApp, spawn_app};
use crate::common::{at, cr};
use billing_worker::ledger::Op;
use billing_worker::store::{IdempotencyKey, OnMissing, Request, StoreError};
use billing_worker::time::{add_months, parse_rfc3339};
use serde_json::{Value, json};

const DAY: i64 = 86_400;

fn t0() -> i64 {
    (parse_rfc3339("2026-01-15T10:00:00Z").unwrap()).secs()
}

fn basic_price() -> Value {
    price("price_basic_m", Some("basic_monthly"), json!({}), Some("month"))
}
fn pro_price() -> Value {
    price("price_pro_m", Some("pro_monthly"), json!({}), Some("month"))
}

fn sub_event(
    id: &str,
    kind: &str,
    created: i64,
    price: Value,
    anchor: i64,
    period: (i64, i64),
    shape: Shape,
) -> String {
    let s = Sub {
        id: "sub_1",
        customer: "cus_1",
        account: Some("acc_1"),
        price,
        anchor,
        period,
        status: "active",
        trial: None,
        cancel_at_period_end: false,
        ended_at: None,
    };
    event(id, kind, created, subscription(&s, shape))
}

fn paid(id: &str, reason: &str, price: &str, period: (i64, i64), shape: Shape) -> String {
    let line = Line { price, period, proration: false, amount: 999 };
    event(id, "invoice.paid", period.0, invoice(&format!("in_{id}"), "sub_1", "cus_1", reason, &[line], shape))
}

fn month(k: i64) -> i64 {
    add_months(at(t0()), k).secs()
}

/// A Basic monthly subscription anchored at t0, created and its first invoice paid: 20 credits.
async fn start_basic(app: &TestApp, shape: Shape) {
    app.deliver(&sub_event(
        "evt_c",
        "customer.subscription.created",
        t0(),
        basic_price(),
        t0(),
        (t0(), month(1)),
        shape,
    ))
    .await;
    app.deliver(&paid("evt_p0", "subscription_create", "price_basic_m", (t0(), month(1)), shape)).await;
}

async fn debit(app: &TestApp, account: &str, key: &str, credits: i64) {
    let op = Op::Debit { key: key.into(), credits, user_id: Some("u".into()), operation: Some("chat.message".into()) };
    let req = Request {
        account: account.into(),
        op,
        cause: format!("debit:{key}"),
        key: Some(IdempotencyKey { key: key.into(), fingerprint: "x".into() }),
        on_missing: OnMissing::Refuse,
        now: app.clock.now(),
    };
    app.store.execute(req).await.unwrap();
}

async fn basic_monthly_over_13_renewals(backend: &str, shape: Shape) {
    let app = spawn_app(backend, t0()).await;
    app.deliver(&sub_event(
        "evt_c",
        "customer.subscription.created",
        t0(),
        basic_price(),
        t0(),
        (t0(), month(1)),
        shape,
    ))
    .await;
    assert_eq!(app.balance("acc_1").await, 0, "recording the subscription grants nothing");
    app.deliver(&paid("evt_p0", "subscription_create", "price_basic_m", (t0(), month(1)), shape)).await;
    assert_eq!(app.balance("acc_1").await, 20);
    let mut seen = vec![];
    for k in 1..=13 {
        app.clock.set(at(month(k - 1) + 10 * DAY));
        debit(&app, "acc_1", &format!("d{k}"), 5).await;
        app.clock.set(at(month(k) + 60));
        let upd = sub_event(
            &format!("evt_u{k}"),
            "customer.subscription.updated",
            month(k),
            basic_price(),
            t0(),
            (month(k), month(k + 1)),
            shape,
        );
        app.deliver(&upd).await;
        app.deliver(&paid(
            &format!("evt_p{k}"),
            "subscription_cycle",
            "price_basic_m",
            (month(k), month(k + 1)),
            shape,
        ))
        .await;
        seen.push(app.balance("acc_1").await);
    }
    // 15 + 20; 30 + 20; 45 cut to 40 + 20; from then on 55 cut to 40 + 20.
    assert_eq!(seen, vec![35, 50, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60]);
    let v = app.store.account("acc_1", app.clock.now()).await.unwrap();
    assert_eq!((v.plan.as_str(), v.cycle), ("basic", Some((at(month(13)), at(month(14))))));
    app.shutdown().await;
}

#[tokio::test]
async fn basic_monthly_over_13_renewals_sqlite() {
    basic_monthly_over_13_renewals("sqlite", Shape::New).await;
}
#[tokio::test]
async fn basic_monthly_over_13_renewals_postgres() {
    basic_monthly_over_13_renewals("postgres", Shape::New).await;
}
#[tokio::test]
async fn basic_monthly_over_13_renewals_old_api_shape() {
    basic_monthly_over_13_renewals("sqlite", Shape::Old).await;
}

#[tokio::test]
async fn yearly_pro_events_three_months_late_allocate_every_month() {
    let late = month(3) + 2 * DAY;
    let app = spawn_app("sqlite", late).await;
    let pro_y = price("price_pro_y", Some("pro_yearly"), json!({}), Some("year"));
    app.deliver(&sub_event(
        "evt_c",
        "customer.subscription.created",
        t0(),
        pro_y,
        t0(),
        (t0(), add_months(at(t0()), 12).secs()),
        Shape::New,
    ))
    .await;
    app.deliver(&paid(
        "evt_p",
        "subscription_create",
        "price_pro_y",
        (t0(), add_months(at(t0()), 12).secs()),
        Shape::New,
    ))
    .await;
    // 50, 100, 150 cut to the cap of 100, + 50.
    assert_eq!(app.balance("acc_1").await, 150);
    let entries = app.store.entries("acc_1", 0, 100).await.unwrap();
    let grants: Vec<String> = entries.iter().filter(|e| e.kind == "grant").filter_map(|e| e.lot_id.clone()).collect();
    let months: Vec<String> = (0..4).map(|k| format!("alloc:sub_1:{}", month(k))).collect();
    assert_eq!(grants, months, "one allocation for each month in between");
    assert_eq!(entries.iter().filter(|e| e.kind == "expire").map(|e| e.amount).sum::<i64>(), -50);
    app.clock.set(at(month(5) + 1));
    assert_eq!(app.balance("acc_1").await, 150, "and on, every month of the paid year");
    app.shutdown().await;
}

#[tokio::test]
async fn upgrade_basic_to_pro_mid_cycle() {
    let app = spawn_app("sqlite", t0()).await;
    start_basic(&app, Shape::New).await;
    let mid = t0() + 10 * DAY;
    app.clock.set(at(mid));
    app.deliver(&sub_event(
        "evt_u",
        "customer.subscription.updated",
        mid,
        pro_price(),
        t0(),
        (t0(), month(1)),
        Shape::New,
    ))
    .await;
    assert_eq!(app.balance("acc_1").await, 20, "the plan change alone grants nothing");
    let lines = [
        Line { price: "price_basic_m", period: (mid, month(1)), proration: true, amount: -666 },
        Line { price: "price_pro_m", period: (mid, month(1)), proration: true, amount: 1333 },
    ];
    let up = event(
        "evt_up",
        "invoice.paid",
        mid,
        invoice("in_up", "sub_1", "cus_1", "subscription_update", &lines, Shape::New),
    );
    app.deliver(&up).await;
    assert_eq!(app.balance("acc_1").await, 50, "20 + the difference of 30");
    app.deliver(&up).await;
    assert_eq!(app.balance("acc_1").await, 50);
    app.clock.set(at(month(1)));
    app.deliver(&paid("evt_p1", "subscription_cycle", "price_pro_m", (month(1), month(2)), Shape::New)).await;
    let v = app.store.account("acc_1", at(month(1))).await.unwrap();
    assert_eq!((v.plan.as_str(), v.balance), ("pro", cr(100)));
    app.shutdown().await;
}

#[tokio::test]
async fn cancellation_keeps_credits_to_the_end_of_the_paid_cycle() {
    let app = spawn_app("sqlite", t0()).await;
    start_basic(&app, Shape::New).await;
    let pi = payment_intent("pi_pkg", Some("cus_1"), json!({"credits_package": "credits_25", "account_id": "acc_1"}));
    app.deliver(&event("evt_pi", "payment_intent.succeeded", t0() + 60, pi)).await;
    let ended = t0() + 5 * DAY;
    app.clock.set(at(ended));
    let s = Sub {
        id: "sub_1",
        customer: "cus_1",
        account: Some("acc_1"),
        price: basic_price(),
        anchor: t0(),
        period: (t0(), month(1)),
        status: "canceled",
        trial: None,
        cancel_at_period_end: false,
        ended_at: Some(ended),
    };
    app.deliver(&event("evt_d", "customer.subscription.deleted", ended, subscription(&s, Shape::New))).await;
    let v = app.store.account("acc_1", at(ended)).await.unwrap();
    assert_eq!((v.plan.as_str(), v.balance, v.expiring_at_cycle_end), ("free", cr(45), cr(20)));
    app.clock.set(at(month(1)));
    assert_eq!(app.balance("acc_1").await, 25, "subscription credits expired; the package stays");
    app.shutdown().await;
}

#[tokio::test]
async fn package_through_checkout_then_fully_refunded_after_half_was_spent() {
    let app = spawn_app("sqlite", t0()).await;
    let cs = checkout("cs_1", Some("acc_9"), Some("cus_9"), "pi_9", json!({"credits_package": "credits_100"}), true);
    app.deliver(&event("evt_cs", "checkout.session.completed", t0(), cs)).await;
    assert_eq!(app.balance("acc_9").await, 100);
    debit(&app, "acc_9", "half", 50).await;
    app.deliver(&event("evt_rf", "charge.refunded", t0() + 100, charge("ch_9", "pi_9", Some("cus_9"), 1000, 1000)))
        .await;
    assert_eq!(app.balance("acc_9").await, 0);
    let entries = app.store.entries("acc_9", 0, 100).await.unwrap();
    let clawed: i64 = entries.iter().filter(|e| e.kind == "clawback").map(|e| e.amount).sum();
    let shortfall: i64 = entries.iter().filter(|e| e.kind == "shortfall").map(|e| e.shortfall).sum();
    assert_eq!((clawed, shortfall), (-50, 50));
    app.shutdown().await;
}

#[tokio::test]
async fn a_trial_grants_its_allocation_once_its_zero_invoice_is_paid() {
    let app = spawn_app("sqlite", t0()).await;
    let anchor = t0() + 14 * DAY;
    let s = Sub {
        id: "sub_1",
        customer: "cus_1",
        account: Some("acc_1"),
        price: basic_price(),
        anchor,
        period: (t0(), anchor),
        status: "trialing",
        trial: Some((t0(), anchor)),
        cancel_at_period_end: false,
        ended_at: None,
    };
    app.deliver(&event("evt_c", "customer.subscription.created", t0(), subscription(&s, Shape::New))).await;
    let line = Line { price: "price_basic_m", period: (t0(), anchor), proration: false, amount: 0 };
    app.deliver(&event(
        "evt_p0",
        "invoice.paid",
        t0(),
        invoice("in_0", "sub_1", "cus_1", "subscription_create", &[line], Shape::New),
    ))
    .await;
    assert_eq!(app.balance("acc_1").await, 20);
    app.clock.set(at(anchor));
    app.deliver(&paid(
        "evt_p1",
        "subscription_cycle",
        "price_basic_m",
        (anchor, add_months(at(anchor), 1).secs()),
        Shape::New,
    ))
    .await;
    assert_eq!(app.balance("acc_1").await, 40);
    app.shutdown().await;
}

#[tokio::test]
async fn a_failed_payment_grants_nothing_and_paying_later_grants_it() {
    let app = spawn_app("sqlite", t0()).await;
    start_basic(&app, Shape::New).await;
    app.clock.set(at(month(1) + 60));
    let line = Line { price: "price_basic_m", period: (month(1), month(2)), proration: false, amount: 999 };
    let failed = invoice("in_f", "sub_1", "cus_1", "subscription_cycle", &[line], Shape::New);
    app.deliver(&event("evt_f", "invoice.payment_failed", month(1), failed)).await;
    let v = app.store.account("acc_1", app.clock.now()).await.unwrap();
    assert_eq!((v.balance, v.subscriptions[0].status.as_str()), (cr(20), "past_due"));
    app.clock.set(at(month(1) + 3 * DAY));
    app.deliver(&paid("evt_p1", "subscription_cycle", "price_basic_m", (month(1), month(2)), Shape::New)).await;
    assert_eq!(app.balance("acc_1").await, 40);
    app.shutdown().await;
}

async fn every_event_once(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let cs = checkout("cs_1", Some("acc_2"), None, "pi_2", json!({"credits_package": "credits_100"}), true);
    let body = event("evt_dup", "checkout.session.completed", t0(), cs);
    let first = app.deliver(&body).await;
    let again = app.deliver(&body).await;
    assert_eq!((first["duplicate"].as_bool(), again["duplicate"].as_bool()), (Some(false), Some(true)));
    assert_eq!(app.balance("acc_2").await, 100);
    // The same payment told again by another event (payment_intent.succeeded) grants nothing more.
    let pi = payment_intent("pi_2", None, json!({"credits_package": "credits_100", "account_id": "acc_2"}));
    app.deliver(&event("evt_pi2", "payment_intent.succeeded", t0(), pi)).await;
    assert_eq!(app.balance("acc_2").await, 100);
    // Twenty concurrent deliveries of a new event: one effect.
    let cs = checkout("cs_3", Some("acc_2"), None, "pi_3", json!({"credits_package": "credits_25"}), true);
    let body = event("evt_conc", "checkout.session.completed", t0(), cs);
    let mut tasks = vec![];
    for _ in 0..20 {
        let (client, base, body) = (app.client.clone(), app.base.clone(), body.clone());
        let sig = crate::common::stripe::signature(crate::common::SECRET, t0(), &body);
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{base}/webhooks/stripe"))
                .header("Stripe-Signature", sig)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        let (status, json) = t.await.unwrap();
        assert_eq!(status, 200, "{json}");
        if json["duplicate"] == json!(false) {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one delivery applied it");
    assert_eq!(app.balance("acc_2").await, 125);
    let rows = app.store.inbox_list(&Default::default()).await.unwrap();
    assert_eq!(rows.iter().filter(|r| r.event_id == "evt_conc").count(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn every_event_applies_once_sqlite() {
    every_event_once("sqlite").await;
}
#[tokio::test]
async fn every_event_applies_once_postgres() {
    every_event_once("postgres").await;
}

#[tokio::test]
async fn unknown_store_account_is_an_error_not_a_creation() {
    let app = spawn_app("sqlite", t0()).await;
    let op = Op::Debit { key: "k".into(), credits: 1, user_id: None, operation: None };
    let r = app
        .store
        .execute(Request {
            account: "nobody".into(),
            op,
            cause: "t".into(),
            key: None,
            on_missing: OnMissing::Refuse,
            now: at(t0()),
        })
        .await;
    assert!(matches!(r, Err(StoreError::UnknownAccount(_))));
    app.shutdown().await;
}

#[tokio::test]
async fn one_payment_told_by_two_events_resolved_to_two_accounts_grants_once() {
    let app = spawn_app("sqlite", t0()).await;
    // The payment intent names no account and its customer is not linked yet: the account is the customer's id.
    let pi = payment_intent("pi_twice", Some("cus_new"), json!({"credits_package": "credits_100"}));
    app.deliver(&event("evt_pi", "payment_intent.succeeded", t0(), pi)).await;
    // The checkout of the same payment names an account of its own.
    let cs = checkout(
        "cs_twice",
        Some("acct_42"),
        Some("cus_new"),
        "pi_twice",
        json!({"credits_package": "credits_100"}),
        true,
    );
    app.deliver(&event("evt_cs", "checkout.session.completed", t0() + 1, cs)).await;
    let cus = app.balance("cus_new").await;
    let acct = app.store.account("acct_42", at(t0() + 2)).await.map(|v| v.balance.get()).unwrap_or(0);
    assert_eq!(cus + acct, 100, "granted once in all");
    app.shutdown().await;
}
