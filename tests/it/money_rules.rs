//! The money rules that gave wrong credits in edge cases (issue 9), each on SQLite and PostgreSQL: signup for
//! Stripe-first accounts, holds across a cycle close, usage of the current second, the plan by subscription
//! status, statuses in event order, commands for accounts not created yet, prices seen by failed events, bad
//! input alike on both backends, prorated first periods, and bounded waiting.

use crate::common::stripe::{Line, Shape, Sub, event, invoice, payment_intent, price, subscription};
use crate::common::{TestApp, spawn_app, spawn_app_with};
use crate::common::{at, cr};
use billing_worker::ledger::{Op, PlanTerms};
use billing_worker::store::{InboxStatus, OnMissing, Request};
use billing_worker::time::{add_months, parse_rfc3339};
use serde_json::{Value, json};

fn t0() -> i64 {
    (parse_rfc3339("2026-05-10T12:00:00Z").unwrap()).secs()
}

fn cmd(kind: &str, id: &str, fields: Value) -> Value {
    let mut v = json!({"type": kind, "id": id});
    v.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    v
}

async fn command(app: &TestApp, admin: &str, c: Value) -> (u16, Value) {
    app.call("POST", "/v1/commands", Some(admin), Some(c)).await
}

fn sub_event(id: &str, kind: &str, created: i64, s: &Sub) -> String {
    event(id, kind, created, subscription(s, Shape::New))
}

fn sub_of<'a>(id: &'a str, account: &'a str, price: Value, status: &'a str) -> Sub<'a> {
    Sub {
        id,
        customer: "cus_r",
        account: Some(account),
        price,
        anchor: t0(),
        period: (t0(), add_months(at(t0()), 1).secs()),
        status,
        trial: None,
        cancel_at_period_end: false,
        ended_at: None,
    }
}

async fn status_of(app: &TestApp, source: &str, event_id: &str) -> (InboxStatus, Option<String>) {
    let r = app.store.inbox_find(source, event_id).await.unwrap().unwrap_or_else(|| panic!("{event_id} stored"));
    (r.status, r.detail)
}

/// Rule 10: an account that first appeared through a Stripe event never gets signup credits.
async fn a_stripe_first_account_never_gets_signup_credits(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let admin = app.key("admin").await;
    let pi = payment_intent("pi_sf", Some("cus_sf"), json!({"credits_package": "credits_25"}));
    app.deliver(&event("evt_sf", "payment_intent.succeeded", t0(), pi)).await;
    assert_eq!(app.balance("cus_sf").await, 25, "the account named by the customer id, no signup");
    let (s, r) = command(&app, &admin, cmd("account.created", "c_sf", json!({"account_id": "cus_sf"}))).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("applied")), "{r}");
    assert_eq!(app.balance("cus_sf").await, 25, "account.created later grants nothing");
    app.shutdown().await;
}

/// Rules 4 and 12: a hold across a close changes nothing the close keeps.
async fn a_hold_across_a_cycle_close_keeps_only_what_the_close_keeps(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let req =
        |op: Op, on_missing, now| Request { account: "acc".into(), op, cause: "t".into(), key: None, on_missing, now };
    let basic = PlanTerms { plan: "basic".into(), monthly: cr(20), cap: cr(40) };
    let close = add_months(at(t0()), 3);
    let sub = Op::Subscribe { id: "sub".into(), anchor: at(t0()), terms: basic };
    app.store.execute(req(sub, OnMissing::Create, at(t0()))).await.unwrap();
    let paid = Op::Paid { subscription: "sub".into(), start: at(t0()), end: close };
    app.store.execute(req(paid, OnMissing::Refuse, at(t0()))).await.unwrap();
    assert_eq!(app.store.account("acc", close - 10).await.unwrap().balance, 60);
    let hold = Op::HoldCreate { id: "h".into(), credits: 20, deadline: close + 600, user_id: None, operation: None };
    app.store.execute(req(hold, OnMissing::Refuse, close - 5)).await.unwrap();
    app.store.execute(req(Op::HoldRelease { id: "h".into() }, OnMissing::Refuse, close + 5)).await.unwrap();
    assert_eq!(app.store.account("acc", close + 5).await.unwrap().balance, 40, "as without the hold");
    // A capture of less than held after the close: what is given back is what survived the cut.
    let hold = Op::HoldCreate {
        id: "h2".into(),
        credits: 40,
        deadline: add_months(at(t0()), 4) + 600,
        user_id: None,
        operation: None,
    };
    let close2 = add_months(at(t0()), 4);
    let paid = Op::Paid { subscription: "sub".into(), start: close, end: add_months(at(t0()), 5) };
    app.store.execute(req(paid, OnMissing::Refuse, close + 6)).await.unwrap();
    assert_eq!(app.store.account("acc", close2 - 10).await.unwrap().balance, 60);
    app.store.execute(req(hold, OnMissing::Refuse, close2 - 5)).await.unwrap();
    let capture = Op::HoldCapture { id: "h2".into(), credits: 10 };
    app.store.execute(req(capture, OnMissing::Refuse, close2 + 5)).await.unwrap();
    // 60 at the close is 20 over the cap: 20 unheld expire; 10 of the 40 held are spent, 30 come back.
    let v = app.store.account("acc", close2 + 5).await.unwrap();
    assert_eq!(v.balance, 30 + 20, "30 given back, and the next cycle's 20");
    app.shutdown().await;
}

/// The usage report of the default period includes a debit made this very second.
async fn usage_includes_the_current_second(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let (admin, svc) = (app.key("admin").await, app.key("service").await);
    let terms = PlanTerms { plan: "business".into(), monthly: cr(150), cap: cr(300) };
    let sub = Op::Subscribe { id: "sub_b".into(), anchor: at(t0()), terms };
    let req = Request {
        account: "biz".into(),
        op: sub,
        cause: "t".into(),
        key: None,
        on_missing: OnMissing::Create,
        now: at(t0()),
    };
    app.store.execute(req).await.unwrap();
    app.grant(&admin, "biz", 10).await;
    let debit = json!({"operation": "chat.message", "quantity": 3, "user_id": "u", "idempotency_key": "now"});
    assert_eq!(app.call("POST", "/v1/accounts/biz/debits", Some(&svc), Some(debit)).await.0, 201);
    let (s, b) = app.call("GET", "/v1/accounts/biz/usage", Some(&svc), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rows"], json!([{"key": "chat.message", "credits": 3, "count": 1}]), "{b}");
    let csv = app
        .client
        .get(format!("{}/v1/accounts/biz/usage", app.base))
        .bearer_auth(&svc)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, "key,credits,count\nchat.message,3,1\n");
    app.shutdown().await;
}

/// Rule 7: `active`, `trialing` and `past_due` keep the plan; the other statuses give the free plan.
async fn the_plan_follows_the_subscription_status(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let (admin, svc) = (app.key("admin").await, app.key("service").await);
    let business = price("price_biz", Some("business_monthly"), json!({}), Some("month"));
    let mut created = t0();
    for (status, entitled) in [("active", true), ("unpaid", false), ("past_due", true), ("incomplete_expired", false)] {
        created += 10;
        let s = sub_of("sub_st", "acc_st", business.clone(), status);
        app.deliver(&sub_event(&format!("evt_{status}"), "customer.subscription.updated", created, &s)).await;
        app.grant(&admin, "acc_st", 10).await;
        let debit = json!({"operation": "image.8k", "quantity": 1, "user_id": "u", "idempotency_key": status});
        let (s, b) = app.call("POST", "/v1/accounts/acc_st/debits", Some(&svc), Some(debit)).await;
        let expected = if entitled { 201 } else { 403 };
        assert_eq!(s, expected, "{status}: {b}");
        let (_, ent) = app.call("GET", "/v1/accounts/acc_st/entitlements", Some(&svc), None).await;
        assert_eq!(ent["plan"], if entitled { "business" } else { "free" }, "{status}");
    }
    app.shutdown().await;
}

/// A payment failure older than the latest subscription fact does not overwrite its status.
async fn a_payment_failure_does_not_overwrite_a_newer_status(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let basic = price("price_bs", Some("basic_monthly"), json!({}), Some("month"));
    let s = sub_of("sub_pf", "acc_pf", basic, "active");
    app.deliver(&sub_event("evt_u2", "customer.subscription.updated", t0() + 100, &s)).await;
    let line =
        Line { price: "price_bs", period: (t0(), add_months(at(t0()), 1).secs()), proration: false, amount: 999 };
    let inv = invoice("in_pf", "sub_pf", "cus_r", "subscription_cycle", &[line], Shape::New);
    app.deliver(&event("evt_pf", "invoice.payment_failed", t0() + 50, inv.clone())).await;
    let status = |app: &TestApp| {
        let store = app.store.clone();
        async move { store.account("acc_pf", at(t0() + 200)).await.unwrap().subscriptions[0].status.clone() }
    };
    assert_eq!(status(&app).await, "active", "the failure came before the update that said active");
    app.deliver(&event("evt_pf2", "invoice.payment_failed", t0() + 150, inv)).await;
    assert_eq!(status(&app).await, "past_due", "a newer failure applies");
    app.shutdown().await;
}

/// Commands never create accounts: they wait for account.created, then apply by themselves.
async fn a_command_for_an_unknown_account_waits_for_its_creation(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let admin = app.key("admin").await;
    let buy = cmd("package.purchased", "buy_w", json!({"account_id": "acc_w", "package": "credits_100"}));
    let (s, r) = command(&app, &admin, buy).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("waiting")), "{r}");
    assert_eq!(app.call("GET", "/v1/accounts/acc_w/balance", Some(&admin), None).await.0, 404, "not created");
    let (_, list) = app.call("GET", "/v1/admin/failed-events?source=queue", Some(&admin), None).await;
    let item = list["items"].as_array().unwrap().iter().find(|i| i["event_id"] == "buy_w").cloned().unwrap();
    assert_eq!(item["status"], "waiting");
    assert!(item["error"].as_str().unwrap().starts_with("unknown_account"), "{item}");
    let (s, _) = command(&app, &admin, cmd("account.created", "c_w", json!({"account_id": "acc_w"}))).await;
    assert_eq!(s, 200);
    assert_eq!(app.balance("acc_w").await, 5 + 100, "signup, then the purchase that waited");
    assert_eq!(status_of(&app, "queue", "buy_w").await.0, InboxStatus::Applied);
    app.shutdown().await;
}

/// A price seen by a subscription event that failed is kept: an upgrade invoice waiting for it fails (kept for
/// replay) instead of waiting forever. And the item whose price maps to a plan decides.
async fn a_price_seen_by_a_failed_event_is_still_known(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let basic = price("price_bk", Some("basic_monthly"), json!({}), Some("month"));
    let addon = price("price_addon", None, json!({}), Some("month"));
    // Two items, the add-on first: the plan comes from the item that maps to one.
    let mut s = subscription(&sub_of("sub_px", "acc_px", basic, "active"), Shape::New);
    let item = s["items"]["data"][0].clone();
    let mut first = item.clone();
    first["price"] = addon;
    s["items"]["data"] = json!([first, item]);
    let r = app.deliver(&event("evt_px1", "customer.subscription.created", t0(), s.clone())).await;
    assert_eq!(r["status"], "applied", "{r}");
    assert_eq!(app.store.account("acc_px", at(t0())).await.unwrap().plan, "basic");
    // An upgrade invoice for a price nobody told about yet waits for it.
    let mid = t0() + 86_400;
    let lines =
        [Line { price: "price_mystery", period: (mid, add_months(at(t0()), 1).secs()), proration: true, amount: 500 }];
    let up = invoice("in_up", "sub_px", "cus_r", "subscription_update", &lines, Shape::New);
    let r = app.deliver(&event("evt_up", "invoice.paid", mid, up)).await;
    assert_eq!(r["status"], "waiting", "{r}");
    // The update that carries it fails (the price maps to nothing), but the price is now known.
    let mystery = price("price_mystery", None, json!({}), Some("month"));
    let mut s2 = s.clone();
    s2["items"]["data"] =
        json!([{"price": mystery, "current_period_start": t0(), "current_period_end": add_months(at(t0()), 1).secs()}]);
    let r = app.deliver(&event("evt_px2", "customer.subscription.updated", mid, s2)).await;
    assert_eq!(r["status"], "failed", "{r}");
    let (status, detail) = status_of(&app, "stripe", "evt_up").await;
    assert_eq!(status, InboxStatus::Failed, "no longer waiting: {detail:?}");
    assert!(detail.unwrap().contains("price_mystery"));
    app.shutdown().await;
}

/// Bad input is answered alike on both backends: a NUL inside a Stripe string is a failed event, 200.
async fn a_nul_inside_a_stripe_string_is_a_failed_event(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let pi = payment_intent("pi_nul", None, json!({"credits_package": "credits_25", "account_id": "acc\u{0}x"}));
    let body = event("evt_nul", "payment_intent.succeeded", t0(), pi);
    assert!(body.contains("\\u0000"));
    let r = app.deliver(&body).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(r["detail"].as_str().unwrap().starts_with("bad_payload"), "{r}");
    // Delivered again: the stored outcome, 200.
    assert_eq!(app.deliver(&body).await["duplicate"], true);
    // An account id PostgreSQL could not index (SQLite could): refused alike.
    let long = "a".repeat(3000);
    let pi = payment_intent("pi_long", None, json!({"credits_package": "credits_25", "account_id": long}));
    let r = app.deliver(&event("evt_long", "payment_intent.succeeded", t0(), pi)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(r["detail"].as_str().unwrap().starts_with("bad_payload"), "{r}");
    app.shutdown().await;
}

/// A first period before a billing anchor that lies ahead (prorated, no trial) is allocated when paid.
async fn a_prorated_first_period_is_allocated(backend: &str) {
    let app = spawn_app(backend, t0()).await;
    let basic = price("price_bp", Some("basic_monthly"), json!({}), Some("month"));
    let anchor = t0() + 10 * 86_400;
    let mut s = sub_of("sub_fp", "acc_fp", basic, "active");
    s.anchor = anchor;
    s.period = (t0(), anchor);
    let mut o = subscription(&s, Shape::New);
    o["start_date"] = json!(t0());
    app.deliver(&event("evt_fp1", "customer.subscription.created", t0(), o)).await;
    let line = Line { price: "price_bp", period: (t0(), anchor), proration: false, amount: 333 };
    let inv = invoice("in_fp", "sub_fp", "cus_r", "subscription_create", &[line], Shape::New);
    app.deliver(&event("evt_fp2", "invoice.paid", t0(), inv)).await;
    assert_eq!(app.balance("acc_fp").await, 20, "the first, short period brings its allocation");
    let line =
        Line { price: "price_bp", period: (anchor, add_months(at(anchor), 1).secs()), proration: false, amount: 999 };
    let inv = invoice("in_fp2", "sub_fp", "cus_r", "subscription_cycle", &[line], Shape::New);
    app.clock.set(at(anchor + 60));
    app.deliver(&event("evt_fp3", "invoice.paid", anchor, inv)).await;
    assert_eq!(app.balance("acc_fp").await, 40, "then every month from the anchor");
    app.shutdown().await;
}

/// Waiting is bounded: retried on a schedule, and failed (kept for replay) after the horizon.
async fn waiting_ends_at_the_horizon(backend: &str) {
    let app = spawn_app_with(backend, t0(), &[("BILLING_WAIT_HORIZON_SECS", "3600")]).await;
    let admin = app.key("admin").await;
    let line = Line { price: "price_x", period: (t0(), add_months(at(t0()), 1).secs()), proration: false, amount: 999 };
    let inv = invoice("in_nosub", "sub_never", "cus_n", "subscription_create", &[line], Shape::New);
    assert_eq!(app.deliver(&event("evt_ns", "invoice.paid", t0(), inv)).await["status"], "waiting");
    let buy = cmd("package.purchased", "buy_never", json!({"account_id": "acc_never", "package": "credits_25"}));
    assert_eq!(command(&app, &admin, buy).await.1["status"], "waiting");
    // Not due yet: not tried again.
    app.clock.set(at(t0() + 30));
    assert_eq!(app.retry_due().await, 0);
    assert_eq!(app.store.inbox_find("stripe", "evt_ns").await.unwrap().unwrap().attempts, 1);
    // Due: tried again, still waiting, the next try later.
    app.clock.set(at(t0() + 61));
    app.retry_due().await;
    let row = app.store.inbox_find("stripe", "evt_ns").await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts), (InboxStatus::Waiting, 2));
    assert!(row.next_attempt_at.unwrap() > at(t0() + 61 + 60), "the delay grows");
    // Past the horizon: failed, with the reason, and event.failed goes out.
    app.clock.set(at(t0() + 4_000));
    app.retry_due().await;
    for (source, id) in [("stripe", "evt_ns"), ("queue", "buy_never")] {
        let (status, detail) = status_of(&app, source, id).await;
        assert_eq!(status, InboxStatus::Failed, "{id}");
        assert!(detail.unwrap().contains("BILLING_WAIT_HORIZON_SECS"), "{id}");
    }
    let (_, events) = app.call("GET", "/v1/events?limit=1000", Some(&admin), None).await;
    let failed: Vec<&Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["type"] == "event.failed").collect();
    assert_eq!(failed.len(), 2);
    app.shutdown().await;
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name("sqlite").await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name("postgres").await
                }
            }
        )*
    };
}

both!(
    a_stripe_first_account_never_gets_signup_credits,
    a_hold_across_a_cycle_close_keeps_only_what_the_close_keeps,
    usage_includes_the_current_second,
    the_plan_follows_the_subscription_status,
    a_payment_failure_does_not_overwrite_a_newer_status,
    a_command_for_an_unknown_account_waits_for_its_creation,
    a_price_seen_by_a_failed_event_is_still_known,
    a_nul_inside_a_stripe_string_is_a_failed_event,
    a_prorated_first_period_is_allocated,
    waiting_ends_at_the_horizon,
);
