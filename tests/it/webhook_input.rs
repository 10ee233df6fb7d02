//! Bad webhook input: each gets its answer, and nothing reaches the ledger.

use crate::common::at;
use crate::common::stripe::{checkout, event, signature};
use crate::common::{SECRET, TestApp, spawn_app, spawn_app_with};

use billing_worker::store::{InboxFilter, InboxStatus};
use billing_worker::stripe::Intake;
use billing_worker::time::parse_rfc3339;
use serde_json::{Value, json};
use std::sync::Arc;

fn t0() -> i64 {
    (parse_rfc3339("2026-03-01T00:00:00Z").unwrap()).secs()
}

fn package_event(id: &str) -> String {
    let cs = checkout("cs_1", Some("acc_1"), None, "pi_1", json!({"credits_package": "credits_100"}), true);
    event(id, "checkout.session.completed", t0(), cs)
}

async fn send(app: &TestApp, body: Vec<u8>, sig: Option<&str>) -> (u16, Value) {
    let r = app.webhook_raw(body, sig).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn nothing_stored(app: &TestApp) {
    assert!(app.store.inbox_list(&InboxFilter::default()).await.unwrap().is_empty(), "no event was stored");
    assert!(app.store.account("acc_1", at(t0())).await.is_err(), "no account was created");
}

#[tokio::test]
async fn bad_signatures_and_bodies_are_refused_and_change_nothing() {
    let app = spawn_app("sqlite", t0()).await;
    let body = package_event("evt_1");
    let good = signature(SECRET, t0(), &body);
    // (what, body, signature header, status, error code)
    type Case<'a> = (&'a str, Vec<u8>, Option<String>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no header", body.clone().into_bytes(), None, 400, "bad_signature"),
        ("wrong secret", body.clone().into_bytes(), Some(signature("whsec_wrong", t0(), &body)), 400, "bad_signature"),
        (
            "stale timestamp",
            body.clone().into_bytes(),
            Some(signature(SECRET, t0() - 301, &body)),
            400,
            "bad_signature",
        ),
        (
            "tampered body",
            body.replace("credits_100", "credits_500").into_bytes(),
            Some(good.clone()),
            400,
            "bad_signature",
        ),
        ("malformed header", body.clone().into_bytes(), Some("v1=,t=yesterday".into()), 400, "bad_signature"),
        ("only v0", body.clone().into_bytes(), Some(good.replace("v1=", "v0=")), 400, "bad_signature"),
        (
            "not JSON",
            b"certainly not json".to_vec(),
            Some(signature(SECRET, t0(), "certainly not json")),
            400,
            "bad_payload",
        ),
        (
            "JSON but not an event",
            b"{\"hello\":1}".to_vec(),
            Some(signature(SECRET, t0(), "{\"hello\":1}")),
            400,
            "bad_payload",
        ),
    ];
    for (name, body, sig, status, code) in cases {
        let (got, json) = send(&app, body, sig.as_deref()).await;
        assert_eq!((got, json["error"]["code"].as_str()), (status, Some(code)), "{name}: {json}");
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}: a message says why");
    }
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 << 20));
    let (got, json) = send(&app, huge.clone().into_bytes(), Some(&signature(SECRET, t0(), &huge))).await;
    assert_eq!((got, json["error"]["code"].as_str()), (413, Some("payload_too_large")));
    nothing_stored(&app).await;
    // The same event, well signed, goes through: the refusals above were about the input alone.
    let (got, _) = send(&app, body.clone().into_bytes(), Some(&good)).await;
    assert_eq!(got, 200);
    assert_eq!(app.balance("acc_1").await, 100);
    app.shutdown().await;
}

#[tokio::test]
async fn webhooks_without_a_configured_secret_are_refused_with_503() {
    let app = spawn_app_with("sqlite", t0(), &[("STRIPE_WEBHOOK_SECRET", "")]).await;
    let body = package_event("evt_1");
    let (got, json) = send(&app, body.clone().into_bytes(), Some(&signature(SECRET, t0(), &body))).await;
    assert_eq!((got, json["error"]["code"].as_str()), (503, Some("webhooks_disabled")));
    nothing_stored(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_known_event_with_missing_fields_is_kept_as_failed_and_changes_no_credits() {
    let app = spawn_app("sqlite", t0()).await;
    let body = event("evt_bad", "charge.refunded", t0(), json!({"id": "ch_1", "object": "charge"}));
    let r = app.deliver(&body).await;
    assert_eq!(r["status"], "failed");
    assert!(r["detail"].as_str().unwrap().contains("malformed charge"), "{r}");
    let failed =
        app.store.inbox_list(&InboxFilter { status: Some(InboxStatus::Failed), ..Default::default() }).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(app.store.account("acc_1", at(t0())).await.is_err());
    app.shutdown().await;
}

#[tokio::test]
async fn an_unknown_price_fails_and_grants_after_the_catalog_learns_it() {
    let app = spawn_app("sqlite", t0()).await;
    let cs = checkout("cs_9", Some("acc_1"), None, "pi_9", json!({"credits_package": "credits_1000"}), true);
    let r = app.deliver(&event("evt_pkg", "checkout.session.completed", t0(), cs)).await;
    assert_eq!(r["status"], "failed", "{r}");
    // Other events are not blocked by it.
    app.deliver(&package_event("evt_other")).await;
    assert_eq!(app.balance("acc_1").await, 100);
    // The operator adds the package and replays.
    let catalog = billing_worker::catalog::Catalog::with_overlay("[packages.credits_1000]\ncredits = 1000\n").unwrap();
    let intake = Intake::new(app.store.clone(), Arc::new(catalog), None, 259_200);
    let row = app.store.inbox_find("stripe", "evt_pkg").await.unwrap().unwrap();
    let d = intake.replay(row.id, at(t0() + 60)).await.unwrap();
    assert_eq!(d.status, InboxStatus::Applied);
    assert_eq!(app.balance("acc_1").await, 1100);
    let again = intake.replay(row.id, at(t0() + 120)).await.unwrap();
    assert!(again.duplicate && again.status == InboxStatus::Applied, "replaying an applied event changes nothing");
    assert_eq!(app.balance("acc_1").await, 1100);
    let row = app.store.inbox_find("stripe", "evt_pkg").await.unwrap().unwrap();
    assert_eq!(row.attempts, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn an_invoice_for_an_unknown_subscription_waits_for_it() {
    let app = spawn_app("sqlite", t0()).await;
    let line = crate::common::stripe::Line {
        price: "price_new",
        period: (t0(), t0() + 2_678_400),
        proration: false,
        amount: 999,
    };
    let inv = crate::common::stripe::invoice(
        "in_1",
        "sub_w",
        "cus_w",
        "subscription_create",
        &[line],
        crate::common::stripe::Shape::New,
    );
    let r = app.deliver(&event("evt_inv", "invoice.paid", t0(), inv)).await;
    assert_eq!((r["status"].as_str(), r["detail"].as_str()), (Some("waiting"), Some("waiting for subscription:sub_w")));
    let price = crate::common::stripe::price("price_new", None, json!({"credits_plan": "basic"}), Some("month"));
    let s = crate::common::stripe::Sub {
        id: "sub_w",
        customer: "cus_w",
        account: None,
        price,
        anchor: t0(),
        period: (t0(), t0() + 2_678_400),
        status: "active",
        trial: None,
        cancel_at_period_end: false,
        ended_at: None,
    };
    app.deliver(&event(
        "evt_sub",
        "customer.subscription.created",
        t0(),
        crate::common::stripe::subscription(&s, crate::common::stripe::Shape::New),
    ))
    .await;
    // The account is named by the customer id; the waiting invoice was applied when the subscription arrived.
    assert_eq!(app.balance("cus_w").await, 20);
    let row = app.store.inbox_find("stripe", "evt_inv").await.unwrap().unwrap();
    assert_eq!(row.status, InboxStatus::Applied);
    app.shutdown().await;
}
