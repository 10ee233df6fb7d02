//! The Stripe API side, against a local fake of the few endpoints the worker calls: line items of a checkout
//! without package metadata, a subscription an invoice names, and `stripe backfill`; and the operator
//! commands (`failed list`, `replay`, `keys`, bad settings), run as the real binary.

use crate::common::spawn_app_with;
use crate::common::stripe::{Line, Shape, Sub, charge, checkout, event, invoice, price, subscription};
use crate::common::{at, cr};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};

use billing_worker::time::{add_months, parse_rfc3339};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;

const KEY: &str = "sk_test_fake";

fn t0() -> i64 {
    (parse_rfc3339("2026-06-01T00:00:00Z").unwrap()).secs()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {KEY}"))
}

fn the_subscription() -> Value {
    let s = Sub {
        id: "sub_api",
        customer: "cus_api",
        account: Some("acc_api"),
        price: price("price_api", Some("business_monthly"), json!({}), Some("month")),
        anchor: t0(),
        period: (t0(), add_months(at(t0()), 1).secs()),
        status: "active",
        trial: None,
        cancel_at_period_end: false,
        ended_at: None,
    };
    subscription(&s, Shape::New)
}

/// Events "Stripe could not deliver": a package purchase and a subscription with its paid invoice.
fn undelivered() -> Vec<Value> {
    let cs = checkout("cs_bf", Some("acc_bf"), None, "pi_bf", json!({"credits_package": "credits_25"}), true);
    let line =
        Line { price: "price_api", period: (t0(), add_months(at(t0()), 1).secs()), proration: false, amount: 4999 };
    let inv = invoice("in_bf", "sub_api", "cus_api", "subscription_create", &[line], Shape::New);
    // Newest first, as the Events API lists them.
    [
        event("evt_bf3", "invoice.paid", t0() + 2, inv),
        event("evt_bf2", "customer.subscription.created", t0() + 1, the_subscription()),
        event("evt_bf1", "checkout.session.completed", t0(), cs),
    ]
    .iter()
    .map(|s| serde_json::from_str(s).unwrap())
    .collect()
}

async fn fake_stripe() -> String {
    let app = Router::new()
        .route(
            "/v1/checkout/sessions/{id}/line_items",
            get(|h: HeaderMap, Path(id): Path<String>| async move {
                if !authorized(&h) {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"error": {"message": "bad key"}})));
                }
                let p = price("price_pkg500", Some("credits_500"), json!({}), None);
                let items = if id == "cs_items" { json!([{"price": p, "quantity": 2}]) } else { json!([]) };
                (StatusCode::OK, Json(json!({"object": "list", "data": items, "has_more": false})))
            }),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(|h: HeaderMap, Path(id): Path<String>| async move {
                if !authorized(&h) || id != "sub_api" {
                    return (StatusCode::NOT_FOUND, Json(json!({"error": {"message": "no such subscription"}})));
                }
                (StatusCode::OK, Json(the_subscription()))
            }),
        )
        .route(
            "/v1/invoice_payments",
            get(|h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                if !authorized(&h) || q.get("payment[type]").map(String::as_str) != Some("payment_intent") {
                    return (StatusCode::BAD_REQUEST, Json(json!({"error": {"message": "unexpected request"}})));
                }
                let data = match q.get("payment[payment_intent]").map(String::as_str) {
                    Some("pi_sub_api") => json!([{"id": "inpay_1", "object": "invoice_payment", "invoice": "in_api",
                                                  "payment": {"type": "payment_intent", "payment_intent": "pi_sub_api"}}]),
                    _ => json!([]),
                };
                (StatusCode::OK, Json(json!({"object": "list", "data": data, "has_more": false})))
            }),
        )
        .route(
            "/v1/events",
            get(|h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                if !authorized(&h) || q.get("delivery_success").map(String::as_str) != Some("false") {
                    return (StatusCode::BAD_REQUEST, Json(json!({"error": {"message": "unexpected request"}})));
                }
                // Two pages of at most two events, to exercise paging.
                let all = undelivered();
                let start = match q.get("starting_after") {
                    Some(after) => all.iter().position(|e| e["id"] == json!(after)).map(|i| i + 1).unwrap_or(all.len()),
                    None => 0,
                };
                let page: Vec<Value> = all.iter().skip(start).take(2).cloned().collect();
                let has_more = start + page.len() < all.len();
                (StatusCode::OK, Json(json!({"object": "list", "data": page, "has_more": has_more})))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn checkout_line_items_and_missing_subscriptions_are_fetched_from_the_api() {
    let base = fake_stripe().await;
    let app = spawn_app_with("sqlite", t0(), &[("STRIPE_API_KEY", KEY), ("STRIPE_API_BASE", &base)]).await;
    let cs = checkout("cs_items", Some("acc_li"), None, "pi_li", json!({}), true);
    let r = app.deliver(&event("evt_li", "checkout.session.completed", t0(), cs)).await;
    assert_eq!(r["status"], "applied", "{r}");
    assert_eq!(app.balance("acc_li").await, 1000, "2 x credits_500 from the fetched line items");
    // An invoice whose subscription event has not come: the subscription is fetched instead of waiting.
    let line =
        Line { price: "price_api", period: (t0(), add_months(at(t0()), 1).secs()), proration: false, amount: 4999 };
    let inv = invoice("in_api", "sub_api", "cus_api", "subscription_create", &[line], Shape::New);
    let r = app.deliver(&event("evt_inv", "invoice.paid", t0(), inv)).await;
    assert_eq!(r["status"], "applied", "{r}");
    assert_eq!(app.balance("acc_api").await, 150);
    // A refund of that invoice's payment: the API tells which invoice it paid.
    let r = app
        .deliver(&event("evt_rf", "charge.refunded", t0() + 9, charge("ch_api", "pi_sub_api", None, 4999, 4999)))
        .await;
    assert_eq!(r["status"], "applied", "{r}");
    assert_eq!(app.balance("acc_api").await, 0, "the cycle's allocation taken back");
    // A refund of a payment that paid no invoice and bought no package: ignored, with the reason, not waiting.
    let r =
        app.deliver(&event("evt_rx", "charge.refunded", t0() + 9, charge("ch_x", "pi_other", None, 500, 500))).await;
    assert_eq!(r["status"], "ignored", "{r}");
    assert!(r["detail"].as_str().unwrap().contains("paid no invoice"), "{r}");
    app.shutdown().await;
}

#[tokio::test]
async fn without_an_api_key_a_checkout_without_package_fails_for_replay() {
    let app = spawn_app_with("sqlite", t0(), &[]).await;
    let cs = checkout("cs_items", Some("acc_li"), None, "pi_li", json!({}), true);
    let r = app.deliver(&event("evt_li", "checkout.session.completed", t0(), cs)).await;
    assert_eq!(r["status"], "failed");
    assert!(r["detail"].as_str().unwrap().contains("STRIPE_API_KEY"), "{r}");
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\nbilling_events_failed 1\n"), "the failed event shows for its alert: {metrics}");
    app.shutdown().await;
}

fn bin(db: &str, extra: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_billing-worker"));
    cmd.args(args).env_clear().env("DATABASE_URL", db).env("RUST_LOG", "error");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn backfill_applies_undelivered_events_once() {
    let base: &'static str = Box::leak(fake_stripe().await.into_boxed_str());
    let db = crate::common::fresh_url("sqlite").await;
    let env = [("STRIPE_API_KEY", KEY), ("STRIPE_API_BASE", base)];
    let (ok, out, err) = tokio::task::spawn_blocking({
        let db = db.clone();
        move || bin(&db, &env, &["stripe", "backfill", "--since", "2026-05-01"])
    })
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains("3 events from Stripe: 3 applied"), "{out}");
    assert!(err.contains("backfilled 3/3"), "progress is shown: {err}");
    let store = billing_worker::store::Store::open(&db).await.unwrap();
    assert_eq!(store.account("acc_bf", at(t0() + 10)).await.unwrap().balance, 25);
    assert_eq!(store.account("acc_api", at(t0() + 10)).await.unwrap().balance, 150);
    let (ok, out, _) = tokio::task::spawn_blocking({
        let db = db.clone();
        move || bin(&db, &env, &["stripe", "backfill", "--since", "2026-05-01"])
    })
    .await
    .unwrap();
    assert!(ok && out.contains("3 already_applied"), "{out}");
    assert_eq!(store.account("acc_api", at(t0() + 10)).await.unwrap().balance, 150);
    // Without a key the command says what is missing.
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || bin(&db, &[], &["stripe", "backfill", "--since", "2026-05-01"]))
            .await
            .unwrap();
    assert!(!ok && err.contains("STRIPE_API_KEY"), "{err}");
}

#[tokio::test]
async fn failed_list_and_replay_from_the_command_line() {
    let app = spawn_app_with("sqlite", t0(), &[]).await;
    let cs = checkout("cs_x", Some("acc_x"), None, "pi_x", json!({"credits_package": "credits_42"}), true);
    app.deliver(&event("evt_unknown_pkg", "checkout.session.completed", t0(), cs)).await;
    let db = app.db_url.clone();
    let (ok, out, _) = bin(&db, &[], &["failed", "list"]);
    assert!(ok && out.contains("evt_unknown_pkg") && out.contains("unknown package"), "{out}");
    let (ok, out, _) = bin(&db, &[], &["replay", "evt_unknown_pkg"]);
    assert!(ok && out.contains("failed: unknown package"), "still failing without the package: {out}");
    let dir = std::env::temp_dir().join(format!("bw-cat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let catalog = dir.join("catalog.toml");
    std::fs::write(&catalog, "[packages.credits_42]\ncredits = 42\n").unwrap();
    let (ok, out, err) =
        bin(&db, &[("BILLING_CONFIG", catalog.to_str().unwrap())], &["replay", "--all", "--since", "2026-01-01"]);
    assert!(ok && out.contains("1 replayed: 1 applied"), "{out}{err}");
    assert_eq!(app.balance("acc_x").await, 42);
    let (ok, out, _) = bin(&db, &[], &["replay", "evt_unknown_pkg"]);
    assert!(ok && out.contains("already_applied"), "{out}");
    let (ok, out, _) = bin(&db, &[], &["failed", "list"]);
    assert!(ok && out.contains("no failed or waiting events"), "{out}");
    let (ok, _, err) = bin(&db, &[], &["replay", "evt_nope"]);
    assert!(!ok && err.contains("no stored event evt_nope"), "{err}");
    app.shutdown().await;
}

#[tokio::test]
async fn keys_from_the_command_line() {
    let db = crate::common::fresh_url("sqlite").await;
    let (ok, key, err) = bin(&db, &[], &["keys", "create", "--scope", "service", "--name", "image-tool"]);
    assert!(ok, "{err}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("bwk_") && !key.contains(char::is_whitespace), "the key alone on stdout: {key:?}");
    let store = billing_worker::store::Store::open(&db).await.unwrap();
    assert_eq!(store.authenticate(&key).await.unwrap(), Some(billing_worker::store::Scope::Service));
    let (ok, list, _) = bin(&db, &[], &["keys", "list"]);
    assert!(ok && list.contains("image-tool") && list.contains("service") && list.contains("active"), "{list}");
    assert!(!list.contains(&key[20..]), "the secret is not shown again");
    let id = key.split('_').nth(1).unwrap();
    let (ok, out, _) = bin(&db, &[], &["keys", "revoke", id]);
    assert!(ok && out.contains("revoked"), "{out}");
    // Another process revoked it: keys are trusted from memory for a moment, so it stops working within that.
    let revoked_at = std::time::Instant::now();
    while store.authenticate(&key).await.unwrap().is_some() {
        assert!(
            revoked_at.elapsed() <= billing_worker::store::KEY_TTL + std::time::Duration::from_secs(1),
            "still accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (ok, _, err) = bin(&db, &[], &["keys", "create", "--scope", "root", "--name", "x"]);
    assert!(!ok && err.contains("root"), "{err}");
    let (ok, _, err) = bin(&db, &[], &["keys", "revoke", "nope"]);
    assert!(!ok && err.contains("no key nope"), "{err}");
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_naming_it() {
    let db = crate::common::fresh_url("sqlite").await;
    let (ok, _, err) = bin(&db, &[("BILLING_LISTEN", "not-an-address")], &["serve"]);
    assert!(!ok && err.contains("BILLING_LISTEN"), "{err}");
    let (ok, _, err) = bin("mysql://nope", &[], &["migrate"]);
    assert!(!ok && err.contains("DATABASE_URL"), "{err}");
    let (ok, out, _) = bin(&db, &[], &["config", "check"]);
    assert!(ok && out.contains("[plans.pro]") && out.contains("monthly_credits = 50"), "{out}");
}

#[tokio::test]
async fn accounts_show_and_tick_from_the_command_line() {
    let db = crate::common::fresh_url("sqlite").await;
    let store = billing_worker::store::Store::open(&db).await.unwrap();
    let now = billing_worker::time::now();
    let anchor = now - 40 * 86_400;
    let terms = billing_worker::ledger::PlanTerms { plan: "basic".into(), monthly: cr(20), cap: cr(40) };
    for op in [
        billing_worker::ledger::Op::Subscribe { id: "sub_cli".into(), anchor, terms },
        billing_worker::ledger::Op::Paid { subscription: "sub_cli".into(), start: anchor, end: add_months(anchor, 12) },
    ] {
        let req = billing_worker::store::Request {
            account: "acc_cli".into(),
            op,
            cause: "test".into(),
            key: None,
            on_missing: billing_worker::store::OnMissing::Create,
            now: anchor,
        };
        store.execute(req).await.unwrap();
    }
    // A month has passed since: tick applies the second allocation.
    let (ok, out, err) = bin(&db, &[], &["tick"]);
    assert!(ok && out.contains("due work applied to 1 account(s)"), "{out}{err}");
    let (ok, out, _) = bin(&db, &[], &["accounts", "show", "acc_cli"]);
    assert!(ok, "{out}");
    assert!(out.contains("plan     basic") && out.contains("balance  40"), "{out}");
    assert!(
        out.contains(&format!("alloc:sub_cli:{}", anchor.secs())) && out.contains("grant"),
        "lots and entries are listed: {out}"
    );
    let (ok, _, err) = bin(&db, &[], &["accounts", "show", "nobody"]);
    assert!(!ok && err.contains("unknown account nobody"), "{err}");
}
