//! Commands through `POST /v1/commands` on SQLite with no broker: each type applied, repeats applied once, bad
//! messages refused with a reason and nothing applied (the same checks the queue tests make on RabbitMQ).

use crate::common::at;
use crate::common::stripe::{checkout, event, signature};
use crate::common::{SECRET, TestApp, spawn_app};

use billing_worker::time::parse_rfc3339;
use serde_json::{Value, json};

fn t0() -> i64 {
    (parse_rfc3339("2026-08-01T00:00:00Z").unwrap()).secs()
}

async fn send(app: &TestApp, key: &str, cmd: Value) -> (u16, Value) {
    app.call("POST", "/v1/commands", Some(key), Some(cmd)).await
}

#[tokio::test]
async fn each_command_type_is_applied() {
    let app = spawn_app("sqlite", t0()).await;
    let admin = app.key("admin").await;
    let (s, r) = send(
        &app,
        &admin,
        json!({"type": "account.created", "id": "c1", "account_id": "acc", "stripe_customer_id": "cus_a"}),
    )
    .await;
    assert_eq!((s, r["status"].as_str(), r["balance"].as_i64()), (200, Some("applied"), Some(5)));
    let (_, r) = send(&app, &admin, json!({"type": "package.purchased", "id": "c2", "account_id": "acc", "package": "credits_25", "quantity": 2, "payment_ref": "pi_q"})).await;
    assert_eq!(r["balance"].as_i64(), Some(55));
    let (_, r) = send(&app, &admin, json!({"type": "credits.adjusted", "id": "c3", "account_id": "acc", "credits": -10, "reason": "goodwill reversal"})).await;
    assert_eq!((r["credits"].as_i64(), r["balance"].as_i64()), (Some(-10), Some(45)));
    let (_, r) = send(&app, &admin, json!({"type": "usage.recorded", "id": "c4", "account_id": "acc", "user_id": "u", "operation": "image.4k", "quantity": 2})).await;
    assert_eq!(r["balance"].as_i64(), Some(39));
    let (s, r) = send(
        &app,
        &admin,
        json!({"type": "cycle.ended", "id": "c5", "account_id": "acc", "at": "2026-08-01T00:00:00Z"}),
    )
    .await;
    assert_eq!((s, r["status"].as_str()), (200, Some("applied")));
    // A Stripe event carried by a command, signed like a webhook; the customer link from c1 finds the account.
    let cs = checkout("cs_c", None, Some("cus_a"), "pi_c", json!({"credits_package": "credits_100"}), true);
    let payload = event("evt_cmd", "checkout.session.completed", t0(), cs);
    let sig = signature(SECRET, t0() - 86_400, &payload);
    let (s, r) =
        send(&app, &admin, json!({"type": "stripe.event", "id": "c6", "payload": payload, "signature": sig})).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("applied")), "{r}");
    assert_eq!(app.balance("acc").await, 139);
    // The same Stripe event by webhook is the same event: not applied again.
    assert_eq!(app.deliver(&payload).await["duplicate"], json!(true));
    assert_eq!(app.balance("acc").await, 139);
    let entries = app.store.entries("acc", 0, 100).await.unwrap();
    assert!(
        entries.iter().any(|e| e.cause.starts_with("command:c3 (goodwill reversal)")),
        "the reason is in the ledger"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_same_command_five_times_has_one_effect() {
    let app = spawn_app("sqlite", t0()).await;
    let admin = app.key("admin").await;
    app.account(&admin, "acc").await;
    let cmd = json!({"type": "package.purchased", "id": "buy-1", "account_id": "acc", "package": "credits_100"});
    let mut dup = vec![];
    for _ in 0..5 {
        let (s, r) = send(&app, &admin, cmd.clone()).await;
        assert_eq!(s, 200);
        dup.push(r["duplicate"].as_bool().unwrap());
    }
    assert_eq!(dup, vec![false, true, true, true, true]);
    assert_eq!(app.balance("acc").await, 105);
    // Another command naming the same payment grants nothing either.
    send(&app, &admin, json!({"type": "package.purchased", "id": "buy-2", "account_id": "acc", "package": "credits_100", "payment_ref": "pi_x"})).await;
    send(&app, &admin, json!({"type": "package.purchased", "id": "buy-3", "account_id": "acc", "package": "credits_100", "payment_ref": "pi_x"})).await;
    assert_eq!(app.balance("acc").await, 205);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_commands_are_refused_with_a_reason_and_change_nothing() {
    let app = spawn_app("sqlite", t0()).await;
    let admin = app.key("admin").await;
    app.account(&admin, "acc").await;
    for (cmd, code, says) in [
        (
            json!({"type": "account.deleted", "id": "x1", "account_id": "acc"}),
            "invalid_request",
            "unknown command type",
        ),
        (json!({"id": "x2", "account_id": "acc"}), "invalid_request", "type is required"),
        (
            json!({"type": "package.purchased", "id": "x3", "account_id": "acc", "package": "credits_25", "quantity": 0}),
            "invalid_request",
            "quantity",
        ),
        (
            json!({"type": "credits.adjusted", "id": "x4", "account_id": "acc", "credits": 5}),
            "invalid_request",
            "reason is required",
        ),
        (json!("just a string"), "invalid_request", "JSON object"),
    ] {
        let (s, r) = send(&app, &admin, cmd.clone()).await;
        assert_eq!((s, r["error"]["code"].as_str()), (400, Some(code)), "{cmd}");
        assert!(r["error"]["message"].as_str().unwrap().contains(says), "{cmd}: {r}");
    }
    // Refused for good once parsed: kept as failed events, nothing applied.
    let payload = event(
        "evt_forged",
        "checkout.session.completed",
        t0(),
        checkout("cs_f", Some("acc"), None, "pi_f", json!({"credits_package": "credits_500"}), true),
    );
    let forged = signature("whsec_attacker", t0(), &payload);
    for cmd in [
        json!({"type": "stripe.event", "id": "f1", "payload": payload, "signature": forged}),
        json!({"type": "usage.recorded", "id": "f2", "account_id": "acc", "user_id": "u", "operation": "image.8k", "quantity": 5}),
        json!({"type": "usage.recorded", "id": "f4", "account_id": "acc", "user_id": "u", "operation": "teleport"}),
    ] {
        let (s, r) = send(&app, &admin, cmd.clone()).await;
        assert_eq!((s, r["error"]["code"].as_str()), (422, Some("command_failed")), "{cmd}: {r}");
    }
    // For an account that does not exist: kept waiting for its account.created, not failed, nothing created.
    let cmd = json!({"type": "usage.recorded", "id": "f3", "account_id": "nobody", "user_id": "u", "operation": "chat.message"});
    let (s, r) = send(&app, &admin, cmd).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("waiting")), "{r}");
    assert!(r["detail"].as_str().unwrap().starts_with("unknown_account"), "{r}");
    let (s, _) = app.call("GET", "/v1/accounts/nobody/balance", Some(&admin), None).await;
    assert_eq!(s, 404);
    assert_eq!(app.balance("acc").await, 5);
    let (_, failed) = app.call("GET", "/v1/admin/failed-events?source=queue", Some(&admin), None).await;
    let ids: Vec<&str> = failed["items"].as_array().unwrap().iter().map(|i| i["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["f1", "f2", "f4", "f3"]);
    // The commands after them still apply; and a failed usage replays once credits are there.
    app.grant(&admin, "acc", 20).await;
    let (_, r) = app.call("POST", "/v1/admin/failed-events/f2/replay", Some(&admin), None).await;
    assert_eq!(r["outcome"], "applied");
    assert_eq!(app.balance("acc").await, 5);
    let (_, r) = app.call("POST", "/v1/admin/failed-events/f2/replay", Some(&admin), None).await;
    assert_eq!(r["outcome"], "already_applied");
    app.shutdown().await;
}

#[tokio::test]
async fn unsigned_stripe_events_are_refused_when_signatures_are_required() {
    let app = crate::common::spawn_app_with("sqlite", t0(), &[("BILLING_QUEUE_REQUIRE_SIGNATURE", "true")]).await;
    let admin = app.key("admin").await;
    let payload = event(
        "evt_u",
        "checkout.session.completed",
        t0(),
        checkout("cs_u", Some("acc"), None, "pi_u", json!({"credits_package": "credits_100"}), true),
    );
    let (s, r) = send(&app, &admin, json!({"type": "stripe.event", "id": "s1", "payload": payload})).await;
    assert_eq!((s, r["error"]["code"].as_str()), (422, Some("command_failed")));
    assert!(r["error"]["message"].as_str().unwrap().contains("without a signature"));
    assert!(app.store.account("acc", at(t0())).await.is_err());
    let sig = signature(SECRET, t0(), &payload);
    let (s, r) =
        send(&app, &admin, json!({"type": "stripe.event", "id": "s2", "payload": payload, "signature": sig})).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("applied")));
    assert_eq!(app.balance("acc").await, 100);
    app.shutdown().await;
}
