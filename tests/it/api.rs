//! The HTTP API over real HTTP: every call with its bad inputs (SPEC §7, §9).

use crate::common::{TestApp, spawn_app};
use crate::common::{at, cr};
use billing_worker::ledger::{Op, PlanTerms};
use billing_worker::store::{OnMissing, Request};
use billing_worker::time::parse_rfc3339;
use serde_json::{Value, json};
use sqlx::Connection;

fn t0() -> i64 {
    (parse_rfc3339("2026-07-01T12:00:00Z").unwrap()).secs()
}

async fn setup() -> (TestApp, String, String) {
    let app = spawn_app("sqlite", t0()).await;
    let admin = app.key("admin").await;
    let service = app.key("service").await;
    (app, admin, service)
}

fn debit(op: &str, qty: i64, user: &str, key: &str) -> Value {
    json!({"operation": op, "quantity": qty, "user_id": user, "idempotency_key": key})
}

/// Put an account on a plan directly (as a paid Stripe subscription would).
async fn on_plan(app: &TestApp, account: &str, plan: &str, monthly: i64) {
    let op = Op::Subscribe {
        id: format!("sub_{account}"),
        anchor: at(t0()),
        terms: PlanTerms { plan: plan.into(), monthly: cr(monthly), cap: cr(monthly * 2) },
    };
    app.store
        .execute(Request {
            account: account.into(),
            op,
            cause: "test".into(),
            key: None,
            on_missing: OnMissing::Create,
            now: at(t0()),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn keys_and_scopes() {
    let (app, admin, service) = setup().await;
    app.account(&admin, "acc").await;
    let path = "/v1/accounts/acc/balance";
    assert_eq!(app.call("GET", path, None, None).await.1["error"]["code"], "unauthorized");
    assert_eq!(app.call("GET", path, Some("bwk_nope_nope"), None).await.0, 401);
    assert_eq!(app.call("GET", path, Some("garbage"), None).await.0, 401);
    let tampered = format!("{}x", &service[..service.len() - 1]);
    assert_eq!(app.call("GET", path, Some(&tampered), None).await.0, 401);
    assert_eq!(app.call("GET", path, Some(&service), None).await.0, 200);
    let adj = json!({"credits": 5, "reason": "r", "idempotency_key": "k"});
    let (s, b) = app.call("POST", "/v1/admin/accounts/acc/adjustments", Some(&service), Some(adj.clone())).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, _) = app
        .call(
            "POST",
            "/v1/commands",
            Some(&service),
            Some(json!({"type": "account.created", "id": "x", "account_id": "y"})),
        )
        .await;
    assert_eq!(s, 403);
    assert!(app.store.account("y", at(t0())).await.is_err(), "a refused call changes nothing");
    // Revoked keys stop working.
    let id = service.split('_').nth(1).unwrap();
    assert!(app.store.revoke_key(id, at(t0())).await.unwrap());
    assert_eq!(app.call("GET", path, Some(&service), None).await.0, 401);
    assert_eq!(app.call("POST", "/v1/admin/accounts/acc/adjustments", Some(&admin), Some(adj)).await.0, 201);
    app.shutdown().await;
}

#[tokio::test]
async fn balance_quote_entitlements_and_catalog() {
    let (app, admin, svc) = setup().await;
    app.account(&admin, "acc").await;
    let (s, b) = app.call("GET", "/v1/accounts/acc/balance", Some(&svc), None).await;
    assert_eq!(s, 200);
    assert_eq!((b["plan"].as_str(), b["balance"].as_i64(), b["held"].as_i64()), (Some("free"), Some(5), Some(0)));
    assert_eq!(b["lots"], json!([{"source": "signup", "remaining": 5, "expires_at": null}]));
    assert_eq!(
        (
            b["affordable"]["chat.message"].as_i64(),
            b["affordable"]["image.1080p"].as_i64(),
            b["affordable"]["image.8k"].as_i64()
        ),
        (Some(5), Some(2), Some(0))
    );
    assert_eq!(
        app.call("GET", "/v1/accounts/ghost/balance", Some(&svc), None).await.1["error"]["code"],
        "unknown_account"
    );
    let (s, b) = app.call("POST", "/v1/quote", Some(&svc), Some(json!({"operation": "image.4k", "quantity": 3}))).await;
    assert_eq!((s, b), (200, json!({"operation": "image.4k", "quantity": 3, "credits": 9})));
    for (body, code) in [
        (json!({"operation": "image.16k"}), "unknown_operation"),
        (json!({"operation": "chat.message", "quantity": 0}), "invalid_quantity"),
        (json!({"operation": "chat.message", "quantity": -2}), "invalid_quantity"),
        (json!({"operation": "chat.message", "quantity": 1_000_000_000_000i64}), "invalid_quantity"),
        (json!({"quantity": 1}), "invalid_request"),
        (json!({"operation": 5}), "invalid_request"),
    ] {
        let (s, b) = app.call("POST", "/v1/quote", Some(&svc), Some(body.clone())).await;
        assert_eq!((s, b["error"]["code"].as_str()), (400, Some(code)), "{body}");
    }
    let r = app
        .client
        .post(format!("{}/v1/quote", app.base))
        .bearer_auth(&svc)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_request");
    let (_, e) = app.call("GET", "/v1/accounts/acc/entitlements", Some(&svc), None).await;
    assert_eq!(
        e,
        json!({"account": "acc", "plan": "free", "seats": 1, "storage_days": 30, "max_resolution": "1080p", "priority": "basic", "analytics": false, "api_access": false})
    );
    let (_, c) = app.call("GET", "/v1/catalog", Some(&svc), None).await;
    assert_eq!((c["plans"]["pro"]["monthly_credits"].as_i64(), c["costs"]["image.8k"].as_i64()), (Some(50), Some(4)));
    app.shutdown().await;
}

#[tokio::test]
async fn debits_with_their_refusals() {
    let (app, admin, svc) = setup().await;
    on_plan(&app, "acc", "basic", 20).await;
    app.grant(&admin, "acc", 10).await;
    let path = "/v1/accounts/acc/debits";
    let (s, first) = app.call("POST", path, Some(&svc), Some(debit("image.1080p", 2, "u1", "k1"))).await;
    assert_eq!((s, first["credits"].as_i64(), first["balance"].as_i64()), (201, Some(4), Some(6)));
    let (s, again) = app.call("POST", path, Some(&svc), Some(debit("image.1080p", 2, "u1", "k1"))).await;
    assert_eq!((s, &again), (201, &first), "a repeated key returns the first answer");
    let (s, b) = app.call("POST", path, Some(&svc), Some(debit("image.720p", 2, "u1", "k1"))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("idempotency_conflict")));
    let (s, b) = app.call("POST", path, Some(&svc), Some(debit("analysis.detailed", 4, "u1", "k2"))).await;
    assert_eq!(
        (s, b["error"]["code"].as_str(), b["error"]["balance"].as_i64(), b["error"]["cost"].as_i64()),
        (402, Some("insufficient_credits"), Some(6), Some(8))
    );
    let (s, b) = app.call("POST", path, Some(&svc), Some(debit("image.8k", 1, "u1", "k3"))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("not_entitled")), "8k is not in Basic");
    for (body, code) in [
        (debit("nope", 1, "u1", "k4"), "unknown_operation"),
        (debit("chat.message", 0, "u1", "k4"), "invalid_quantity"),
        (debit("chat.message", -1, "u1", "k4"), "invalid_quantity"),
        (debit("chat.message", 99_999_999, "u1", "k4"), "invalid_quantity"),
        (json!({"operation": "chat.message", "user_id": "u1"}), "invalid_request"),
        (debit("chat.message", 1, "u1", ""), "invalid_request"),
    ] {
        let (s, b) = app.call("POST", path, Some(&svc), Some(body.clone())).await;
        assert_eq!((s, b["error"]["code"].as_str()), (400, Some(code)), "{body}");
    }
    let (s, b) =
        app.call("POST", "/v1/accounts/ghost/debits", Some(&svc), Some(debit("chat.message", 1, "u1", "k5"))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("unknown_account")));
    assert_eq!(app.balance("acc").await, 6, "none of the refusals changed the balance");
    let (_, ledger) = app.call("GET", "/v1/accounts/acc/ledger", Some(&svc), None).await;
    assert_eq!(ledger["entries"].as_array().unwrap().iter().filter(|e| e["kind"] == "debit").count(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn team_members_up_to_the_seats() {
    let (app, admin, svc) = setup().await;
    on_plan(&app, "team", "pro", 50).await;
    app.grant(&admin, "team", 10).await;
    for u in ["ann", "bob", "cy"] {
        let (s, b) = app.call("POST", "/v1/accounts/team/members", Some(&svc), Some(json!({"user_id": u}))).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = app.call("POST", "/v1/accounts/team/members", Some(&svc), Some(json!({"user_id": "dee"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("seat_limit_reached")), "Pro has 3 seats");
    let (s, b) =
        app.call("POST", "/v1/accounts/team/debits", Some(&svc), Some(debit("chat.message", 1, "dee", "d1"))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("not_a_member")));
    assert_eq!(
        app.call("POST", "/v1/accounts/team/debits", Some(&svc), Some(debit("chat.message", 1, "bob", "d2"))).await.0,
        201
    );
    let (s, m) = app.call("DELETE", "/v1/accounts/team/members/cy", Some(&svc), None).await;
    assert_eq!((s, m["members"].clone(), m["seats"].as_i64()), (200, json!(["ann", "bob"]), Some(3)));
    assert_eq!(app.call("DELETE", "/v1/accounts/team/members/cy", Some(&svc), None).await.0, 404);
    assert_eq!(app.call("POST", "/v1/accounts/team/members", Some(&svc), Some(json!({"user_id": ""}))).await.0, 400);
    app.shutdown().await;
}

async fn concurrent(app: &TestApp, svc: &str, path: &str, make: impl Fn(usize) -> Value) -> (usize, usize) {
    let mut tasks = vec![];
    for i in 0..50 {
        let (client, url, key, body) = (app.client.clone(), format!("{}{path}", app.base), svc.to_owned(), make(i));
        tasks.push(tokio::spawn(async move {
            client.post(url).bearer_auth(key).json(&body).send().await.unwrap().status().as_u16()
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            201 => created += 1,
            402 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (created, refused)
}

async fn fifty_concurrent(backend: &str) {
    let app = crate::common::spawn_app(backend, t0()).await;
    let (admin, svc) = (app.key("admin").await, app.key("service").await);
    on_plan(&app, "acc", "basic", 20).await;
    app.grant(&admin, "acc", 10).await;
    let (created, refused) =
        concurrent(&app, &svc, "/v1/accounts/acc/debits", |i| debit("chat.message", 1, "u", &format!("c{i}"))).await;
    assert_eq!((created, refused), (10, 40));
    assert_eq!(app.balance("acc").await, 0);
    let entries = app.store.entries("acc", 0, 1000).await.unwrap();
    assert_eq!(entries.iter().filter(|e| e.kind == "debit").count(), 10);
    // The same with holds.
    on_plan(&app, "acc2", "basic", 20).await;
    app.grant(&admin, "acc2", 10).await;
    let (created, refused) = concurrent(
        &app,
        &svc,
        "/v1/accounts/acc2/holds",
        |i| json!({"operation": "chat.message", "user_id": "u", "idempotency_key": format!("h{i}")}),
    )
    .await;
    assert_eq!((created, refused), (10, 40));
    let v = app.store.account("acc2", app.clock.now()).await.unwrap();
    assert_eq!((v.balance, v.held), (cr(0), cr(10)));
    app.shutdown().await;
}

#[tokio::test]
async fn fifty_concurrent_debits_and_holds_sqlite() {
    fifty_concurrent("sqlite").await;
}
#[tokio::test]
async fn fifty_concurrent_debits_and_holds_postgres() {
    fifty_concurrent("postgres").await;
}

/// The plan is checked in the change's own transaction, after the first answer of a repeated key: a debit or
/// hold made on Pro and repeated after the plan lapsed gets its first answer; a new one is refused.
#[tokio::test]
async fn a_repeat_after_the_plan_lapsed_gets_its_first_answer() {
    let (app, admin, svc) = setup().await;
    on_plan(&app, "acc", "pro", 50).await;
    app.grant(&admin, "acc", 10).await;
    let (debits, holds) = ("/v1/accounts/acc/debits", "/v1/accounts/acc/holds");
    let hold = |key: &str| json!({"operation": "image.4k", "quantity": 1, "user_id": "u1", "idempotency_key": key});
    let (s, first) = app.call("POST", debits, Some(&svc), Some(debit("image.4k", 1, "u1", "k1"))).await;
    assert_eq!(s, 201, "4k is in Pro: {first}");
    let (s, h) = app.call("POST", holds, Some(&svc), Some(hold("h1"))).await;
    assert_eq!(s, 201, "{h}");
    let cancel = Op::Cancel { subscription: "sub_acc".into(), at: at(t0()) };
    app.store
        .execute(Request {
            account: "acc".into(),
            op: cancel,
            cause: "test".into(),
            key: None,
            on_missing: OnMissing::Refuse,
            now: at(t0()),
        })
        .await
        .unwrap();
    let balance = app.balance("acc").await;
    let (s, again) = app.call("POST", debits, Some(&svc), Some(debit("image.4k", 1, "u1", "k1"))).await;
    assert_eq!((s, &again), (201, &first), "the repeat gets the first answer, not a 403");
    let (s, again) = app.call("POST", holds, Some(&svc), Some(hold("h1"))).await;
    assert_eq!((s, &again["hold_id"]), (201, &h["hold_id"]), "the same hold");
    let (s, b) = app.call("POST", debits, Some(&svc), Some(debit("image.4k", 1, "u1", "k2"))).await;
    assert_eq!(
        (s, b["error"]["code"].as_str(), b["error"]["message"].as_str()),
        (403, Some("not_entitled"), Some("the free plan does not include image.4k"))
    );
    let (s, b) = app.call("POST", holds, Some(&svc), Some(hold("h2"))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("not_entitled")));
    assert_eq!(app.balance("acc").await, balance, "neither the repeats nor the refusals changed the balance");
}

#[tokio::test]
async fn holds_capture_release_and_deadline() {
    let (app, admin, svc) = setup().await;
    on_plan(&app, "acc", "basic", 20).await;
    app.grant(&admin, "acc", 10).await;
    let hold = |key: &str, ttl: i64| json!({"operation": "image.1080p", "quantity": 3, "user_id": "u", "idempotency_key": key, "ttl_secs": ttl});
    let (s, h) = app.call("POST", "/v1/accounts/acc/holds", Some(&svc), Some(hold("h1", 60))).await;
    assert_eq!(
        (s, h["credits"].as_i64(), h["balance"].as_i64(), h["status"].as_str()),
        (201, Some(6), Some(4), Some("active"))
    );
    let id = h["hold_id"].as_str().unwrap().to_owned();
    let (s, again) = app.call("POST", "/v1/accounts/acc/holds", Some(&svc), Some(hold("h1", 60))).await;
    assert_eq!((s, again["hold_id"].as_str()), (201, Some(id.as_str())), "the same key is the same hold");
    assert_eq!(app.balance("acc").await, 4);
    let (s, b) = app.call("POST", &format!("/v1/holds/{id}/capture"), Some(&svc), Some(json!({"credits": 7}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("hold_not_active")), "more than held");
    let (s, c) = app.call("POST", &format!("/v1/holds/{id}/capture"), Some(&svc), Some(json!({"credits": 4}))).await;
    assert_eq!((s, c["status"].as_str(), c["balance"].as_i64()), (200, Some("captured"), Some(6)));
    assert_eq!(app.call("POST", &format!("/v1/holds/{id}/release"), Some(&svc), None).await.0, 409, "already captured");
    let (_, h2) = app.call("POST", "/v1/accounts/acc/holds", Some(&svc), Some(hold("h2", 60))).await;
    let id2 = h2["hold_id"].as_str().unwrap().to_owned();
    let (s, r) = app.call("POST", &format!("/v1/holds/{id2}/release"), Some(&svc), None).await;
    assert_eq!((s, r["status"].as_str(), r["balance"].as_i64()), (200, Some("released"), Some(6)));
    // Not captured before its deadline: released by itself, and spendable again.
    let (_, h3) = app.call("POST", "/v1/accounts/acc/holds", Some(&svc), Some(hold("h3", 60))).await;
    assert_eq!(h3["balance"].as_i64(), Some(0));
    assert_eq!(
        app.call("POST", "/v1/accounts/acc/debits", Some(&svc), Some(debit("chat.message", 1, "u", "late"))).await.0,
        402
    );
    app.clock.set(at(t0() + 61));
    let (s, d) =
        app.call("POST", "/v1/accounts/acc/debits", Some(&svc), Some(debit("chat.message", 1, "u", "late"))).await;
    assert_eq!((s, d["balance"].as_i64()), (201, Some(5)));
    let (_, v) =
        app.call("POST", &format!("/v1/holds/{}/capture", h3["hold_id"].as_str().unwrap()), Some(&svc), None).await;
    assert_eq!(v["error"]["code"], "hold_not_active");
    assert_eq!(
        app.call("POST", "/v1/holds/hold_nope/capture", Some(&svc), None).await.1["error"]["code"],
        "unknown_hold"
    );
    assert_eq!(app.call("POST", "/v1/accounts/acc/holds", Some(&svc), Some(hold("h4", 0))).await.0, 400);
    app.shutdown().await;
}

#[tokio::test]
async fn usage_report_matches_the_debits_in_json_and_csv() {
    let (app, admin, svc) = setup().await;
    on_plan(&app, "biz", "business", 150).await;
    app.grant(&admin, "biz", 100).await;
    let day2 = t0() + 86_400;
    let plan = [
        (t0(), "ann", "image.4k", 2, "a"),
        (t0() + 60, "bob", "chat.message", 5, "b"),
        (day2, "ann", "chat.message", 1, "c"),
        (day2 + 5, "ann", "image.4k", 1, "d"),
    ];
    for (when, user, op, qty, key) in plan {
        app.clock.set(at(when));
        assert_eq!(
            app.call("POST", "/v1/accounts/biz/debits", Some(&svc), Some(debit(op, qty, user, key))).await.0,
            201
        );
    }
    let q = |g: &str| format!("/v1/accounts/biz/usage?from=2026-07-01&to=2026-07-03&group_by={g}");
    let rows = |b: &Value| b["rows"].clone();
    assert_eq!(
        rows(&app.call("GET", &q("operation"), Some(&svc), None).await.1),
        json!([{"key": "chat.message", "credits": 6, "count": 2}, {"key": "image.4k", "credits": 9, "count": 2}])
    );
    assert_eq!(
        rows(&app.call("GET", &q("user"), Some(&svc), None).await.1),
        json!([{"key": "ann", "credits": 10, "count": 3}, {"key": "bob", "credits": 5, "count": 1}])
    );
    assert_eq!(
        rows(&app.call("GET", &q("day"), Some(&svc), None).await.1),
        json!([{"key": "2026-07-01", "credits": 11, "count": 2}, {"key": "2026-07-02", "credits": 4, "count": 2}])
    );
    let csv = app
        .client
        .get(format!("{}{}", app.base, q("user")))
        .bearer_auth(&svc)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(csv.text().await.unwrap(), "key,credits,count\nann,10,3\nbob,5,1\n");
    // Default period: the last 30 days.
    let (_, d) = app.call("GET", "/v1/accounts/biz/usage", Some(&svc), None).await;
    assert_eq!((d["group_by"].as_str(), d["rows"].as_array().unwrap().len()), (Some("operation"), 2));
    assert_eq!(app.call("GET", &q("month"), Some(&svc), None).await.0, 400);
    assert_eq!(app.call("GET", "/v1/accounts/biz/usage?from=yesterday", Some(&svc), None).await.0, 400);
    on_plan(&app, "small", "basic", 20).await;
    let (s, b) = app.call("GET", "/v1/accounts/small/usage", Some(&svc), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("not_entitled")), "usage is for plans with analytics");
    app.shutdown().await;
}

#[tokio::test]
async fn ledger_pages_by_cursor_and_adjustments() {
    let (app, admin, svc) = setup().await;
    app.account(&admin, "acc").await;
    for i in 0..5 {
        app.clock.set(at(t0() + i));
        app.grant(&admin, "acc", 1 + i).await;
    }
    let adj = |credits: i64, key: &str| json!({"credits": credits, "reason": "support", "idempotency_key": key});
    let (s, r) = app.call("POST", "/v1/admin/accounts/acc/adjustments", Some(&admin), Some(adj(-100, "rm"))).await;
    assert_eq!(
        (s, r["credits"].as_i64(), r["balance"].as_i64()),
        (201, Some(-20), Some(0)),
        "removal never below zero"
    );
    let (s, again) = app.call("POST", "/v1/admin/accounts/acc/adjustments", Some(&admin), Some(adj(-100, "rm"))).await;
    assert_eq!((s, again), (201, r));
    assert_eq!(app.call("POST", "/v1/admin/accounts/acc/adjustments", Some(&admin), Some(adj(5, "rm"))).await.0, 409);
    assert_eq!(app.call("POST", "/v1/admin/accounts/acc/adjustments", Some(&admin), Some(adj(0, "zero"))).await.0, 400);
    assert_eq!(app.call("POST", "/v1/admin/accounts/nobody/adjustments", Some(&admin), Some(adj(5, "x"))).await.0, 404);
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/accounts/acc/ledger?limit=3&cursor={c}"),
            None => "/v1/accounts/acc/ledger?limit=3".into(),
        };
        let (s, page) = app.call("GET", &path, Some(&svc), None).await;
        assert_eq!(s, 200);
        seen.extend(page["entries"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let all = app.store.entries("acc", 0, 1000).await.unwrap();
    assert_eq!(seen, all.iter().map(|e| e.id).collect::<Vec<_>>(), "every entry once, in order");
    let (_, since) = app
        .call("GET", "/v1/accounts/acc/ledger?since=2026-07-01T12:00:01Z&until=2026-07-01T12:00:03Z", Some(&svc), None)
        .await;
    assert_eq!(since["entries"].as_array().unwrap().len(), 2);
    for bad in ["?limit=0", "?limit=5000", "?cursor=abc", "?since=someday"] {
        assert_eq!(app.call("GET", &format!("/v1/accounts/acc/ledger{bad}"), Some(&svc), None).await.0, 400, "{bad}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn failed_events_and_replay_over_http() {
    let (app, admin, svc) = setup().await;
    let cmd = json!({"type": "package.purchased", "id": "p1", "account_id": "acc", "package": "credits_7"});
    let (s, b) = app.call("POST", "/v1/commands", Some(&admin), Some(cmd)).await;
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("command_failed")));
    let (s, list) = app.call("GET", "/v1/admin/failed-events?source=queue", Some(&admin), None).await;
    assert_eq!(s, 200);
    let item = &list["items"][0];
    assert_eq!(
        (item["event_id"].as_str(), item["source"].as_str(), item["type"].as_str()),
        (Some("p1"), Some("queue"), Some("package.purchased"))
    );
    assert!(item["error"].as_str().unwrap().contains("unknown package"));
    assert_eq!(
        app.call("GET", "/v1/admin/failed-events?source=stripe", Some(&admin), None).await.1["items"],
        json!([])
    );
    assert_eq!(app.call("GET", "/v1/admin/failed-events?source=mail", Some(&admin), None).await.0, 400);
    assert_eq!(app.call("GET", "/v1/admin/failed-events", Some(&svc), None).await.0, 403);
    let (s, r) = app.call("POST", "/v1/admin/failed-events/p1/replay", Some(&admin), None).await;
    assert_eq!((s, r["outcome"].as_str()), (200, Some("failed")));
    assert_eq!(app.call("POST", "/v1/admin/failed-events/nope/replay", Some(&admin), None).await.0, 404);
    app.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_route_is_served() {
    let (app, _, svc) = setup().await;
    let (s, doc) = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    let mut documented: Vec<(String, String)> = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> =
        billing_worker::http::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    routes.sort();
    assert_eq!(documented, routes);
    for (method, path) in &routes {
        let concrete = path.replace("{account}", "acc").replace("{user}", "u").replace("{id}", "x");
        let (status, body) = app.call(&method.to_uppercase(), &concrete, Some(&svc), None).await;
        assert_ne!(body["error"]["message"], "no such route", "{method} {path} is served");
        assert_ne!(status, 405, "{method} {path} is served with that method");
    }
    // A wrong method gets the JSON error shape too.
    let (s, b) = app.call("DELETE", "/v1/quote", Some(&svc), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (405, Some("method_not_allowed")));
    let (s, b) = app.call("GET", "/v1/accounts/a%00b/balance", Some(&svc), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_request")), "NUL in a path");
    let resp = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("billing_http_requests_total{route=\"/openapi.json\",method=\"GET\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("billing_http_request_duration_seconds_bucket"));
    for line in [
        "billing_outbox_lag_seconds 0",
        "billing_outbox_unpublished ",
        "billing_events_failed 0",
        "billing_events_waiting 0",
        "billing_broker_up 0",
        "billing_broker_configured 0",
        "billing_db_pool_connections{state=\"idle\"}",
        "billing_db_pool_connections{state=\"in_use\"}",
        "billing_build_info{version=\"",
        "# TYPE billing_events_failed gauge",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    app.shutdown().await;
}

/// The OpenAPI document is the contract the tools are built against: it changes only on purpose. To change it,
/// run this test with `BILLING_WRITE_OPENAPI=1` and commit `docs/openapi.json` with the change that needs it.
#[test]
fn the_openapi_document_is_the_one_in_docs() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let now = billing_worker::http::openapi::document().to_pretty_json().unwrap();
    if std::env::var_os("BILLING_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let kept = std::fs::read_to_string(&path).unwrap();
    assert!(kept == now, "the OpenAPI document changed; see docs/openapi.json and this test's comment");
}

/// Readiness follows the database only: without a broker (or with one down) the instance still serves debits,
/// so it stays in service; the body says what the broker does and how far the outbox is behind.
#[tokio::test]
async fn readiness_reports_the_broker_and_the_outbox_lag() {
    let (app, admin, _) = setup().await;
    let (s, body) = app.call("GET", "/readyz", None, None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!((body["database"].as_str(), body["broker"].as_str()), (Some("up"), Some("none")));
    assert_eq!(body["outbox_lag_seconds"], 0.0, "nothing waits to be published yet");
    // A change writes an outbox event; with no broker it stays unpublished and its age shows.
    on_plan(&app, "acc_ready", "basic", 20).await;
    app.grant(&admin, "acc_ready", 10).await;
    app.clock.set(at(t0() + 30));
    let (s, body) = app.call("GET", "/readyz", None, None).await;
    assert_eq!(s, 200, "no broker is no reason to leave the service: {body}");
    assert_eq!(body["outbox_lag_seconds"], 30.0, "{body}");
    app.shutdown().await;
}

/// A database failure answers 503 `unavailable` with a fixed message: the database's own text (table names,
/// SQL) is logged for the operator, never sent to the caller. Nothing was applied, so the retry succeeds.
#[tokio::test]
async fn database_errors_are_not_leaked_to_callers() {
    let app = spawn_app("postgres", t0()).await;
    let (admin, svc) = (app.key("admin").await, app.key("service").await);
    on_plan(&app, "acc", "basic", 20).await;
    app.grant(&admin, "acc", 10).await;
    let mut db = sqlx::AnyConnection::connect(&app.db_url).await.unwrap();
    sqlx::query("ALTER TABLE entries RENAME TO entries_hidden").execute(&mut db).await.unwrap();
    let body = debit("chat.message", 1, "u1", "k-leak");
    let (s, b) = app.call("POST", "/v1/accounts/acc/debits", Some(&svc), Some(body.clone())).await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(b["error"]["code"], "unavailable");
    assert_eq!(b["error"]["message"], "the service is unavailable; try again");
    let text = b.to_string();
    assert!(!text.contains("entries") && !text.contains("relation"), "no database text: {text}");
    sqlx::query("ALTER TABLE entries_hidden RENAME TO entries").execute(&mut db).await.unwrap();
    let (s, b) = app.call("POST", "/v1/accounts/acc/debits", Some(&svc), Some(body)).await;
    assert_eq!((s, b["balance"].as_i64()), (201, Some(9)), "the retry applies once (10 granted, 1 spent): {b}");
    app.shutdown().await;
}
