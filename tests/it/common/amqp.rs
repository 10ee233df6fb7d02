//! RabbitMQ helpers for the queue tests: a worker wired to the broker with its own queue prefix, a confirmed
//! publisher, and a consumer of the events exchange.
#![allow(dead_code)]

use super::{TestApp, spawn_app_with};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;
use std::time::{Duration, Instant};

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn prefix() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t{}_{}", std::process::id(), n % 1_000_000_000)
}

pub async fn app(backend: &str, prefix: &str, t0: i64) -> TestApp {
    app_with(backend, prefix, t0, &[]).await
}

/// [`app`] with more settings.
pub async fn app_with(backend: &str, prefix: &str, t0: i64, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("AMQP_URL", AMQP),
        ("BILLING_AMQP_PREFIX", prefix),
        ("BILLING_RETRY_DELAYS_MS", "300,600"),
        ("BILLING_LOCK_TIMEOUT_MS", "300"),
    ];
    env.extend_from_slice(extra);
    spawn_app_with(backend, t0, &env).await
}

pub async fn channel() -> (Connection, Channel) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("RabbitMQ is required on 127.0.0.1:5672");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    (conn, ch)
}

/// Wait until the worker has declared its queues (its consumer is up).
pub async fn ready(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.call("GET", "/readyz", None, None).await.1["broker"] != "up" {
        assert!(Instant::now() < deadline, "the worker did not connect to RabbitMQ");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn publish(ch: &Channel, prefix: &str, body: &[u8]) {
    let c = ch
        .basic_publish(
            "".into(),
            format!("{prefix}.commands").as_str().into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(c.is_ack());
}

pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, secs: u64, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn balance(app: &TestApp, account: &str) -> Option<i64> {
    app.store.account(account, app.clock.now()).await.ok().map(|v| v.balance.get())
}

/// Bind a durable queue to the events exchange and collect (account, event id) in arrival order.
pub async fn event_queue(ch: &Channel, p: &str) -> String {
    let name = format!("{p}.test-events");
    let args = FieldTable::default();
    ch.exchange_declare(
        format!("{p}.events").as_str().into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args).await.unwrap();
    ch.queue_bind(
        name.as_str().into(),
        format!("{p}.events").as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    name
}

pub async fn drain(queue: &str, seen: &mut Vec<(String, String)>, quiet: Duration) {
    let (_c, ch) = channel().await;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(quiet, consumer.next()).await {
        let v: Value = serde_json::from_slice(&d.data).unwrap();
        seen.push((v["account"].as_str().unwrap_or("").to_owned(), v["id"].as_str().unwrap().to_owned()));
    }
}

/// Delete what a test declared under `prefix`, so test runs do not pile up queues on the shared broker.
pub async fn cleanup(prefix: &str) {
    let Ok(conn) = Connection::connect(AMQP, ConnectionProperties::default()).await else { return };
    let Ok(ch) = conn.create_channel().await else { return };
    for q in ["commands", "commands.dead", "commands.retry.300ms", "commands.retry.600ms", "test-events"] {
        let _ = ch.queue_delete(format!("{prefix}.{q}").as_str().into(), QueueDeleteOptions::default()).await;
    }
    let _ = ch.exchange_delete(format!("{prefix}.events").as_str().into(), ExchangeDeleteOptions::default()).await;
    let _ = conn.close(200, "bye".into()).await;
}
