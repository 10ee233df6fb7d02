//! What every HTTP answer gets from the middleware: a request id (the caller's or a new one), gzip when asked,
//! and a deadline that answers 503 `unavailable` in the JSON error shape instead of hanging.

use crate::common::spawn_app_with;
use serde_json::json;
use std::time::{Duration, Instant};

fn t0() -> i64 {
    1_780_000_000
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = spawn_app_with("sqlite", t0(), &[]).await;
    let client = reqwest::Client::new();
    let r = client.get(format!("{}/healthz", app.base)).header("x-request-id", "caller-42").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "caller-42", "the caller's id is kept");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = client.get(format!("{}/v1/nowhere", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        seen.push(id);
    }
    assert_ne!(seen[0], seen[1], "a new id per request");
    app.shutdown().await;
}

#[tokio::test]
async fn large_answers_are_gzipped_when_asked() {
    let app = spawn_app_with("sqlite", t0(), &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/openapi.json", app.base);
    let r = client.get(&url).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip stream");
    let plain = client.get(&url).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none(), "not without asking");
    assert!(plain.bytes().await.unwrap().len() > bytes.len() * 3, "and much smaller");
    app.shutdown().await;
}

/// A debit whose commit is held past the deadline answers 503 `unavailable` after about the deadline; the
/// change was queued, so retrying with the same key tells whether it applied, and it is applied once.
#[tokio::test]
async fn a_request_past_its_deadline_answers_503_unavailable() {
    let app = spawn_app_with("sqlite", t0(), &[("BILLING_REQUEST_TIMEOUT_SECS", "1")]).await;
    let admin = app.key("admin").await;
    app.account(&admin, "acc").await;
    app.grant(&admin, "acc", 10).await;
    let before = app.balance("acc").await;
    let hold = app.store.pause_commits_of("acc");
    let body = json!({"operation": "chat.message", "quantity": 1, "user_id": "u", "idempotency_key": "slow-1"});
    let started = Instant::now();
    let (s, b) = app.call("POST", "/v1/accounts/acc/debits", Some(&admin), Some(body.clone())).await;
    let took = started.elapsed();
    assert_eq!(s, 503, "{b}");
    assert_eq!(b, json!({"error": {"code": "unavailable", "message": "no answer within 1 s; try again"}}));
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    drop(hold);
    app.store.resume_commits();
    let (s, b) = app.call("POST", "/v1/accounts/acc/debits", Some(&admin), Some(body)).await;
    assert_eq!((s, b["balance"].as_i64()), (201, Some(before - 1)), "applied once: {b}");
    assert_eq!(app.balance("acc").await, before - 1);
    app.shutdown().await;
}
