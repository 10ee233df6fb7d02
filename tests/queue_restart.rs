//! A broker restart in the middle of 5,000 commands. In its own test binary because it stops the RabbitMQ app,
//! which would disturb queue tests running beside it.

mod common;

use billing_worker::ledger::Ts;
use billing_worker::store::{InboxFilter, InboxStatus};
use billing_worker::time::parse_rfc3339;
use common::{TestApp, spawn_app_with};
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn t0() -> Ts {
    parse_rfc3339("2026-09-01T00:00:00Z").unwrap()
}

fn prefix() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t{}_{}", std::process::id(), n % 1_000_000_000)
}

async fn app(backend: &str, prefix: &str) -> TestApp {
    spawn_app_with(
        backend,
        t0(),
        &[
            ("AMQP_URL", AMQP),
            ("BILLING_AMQP_PREFIX", prefix),
            ("BILLING_RETRY_DELAYS_MS", "300,600"),
            ("BILLING_LOCK_TIMEOUT_MS", "300"),
        ],
    )
    .await
}

async fn channel() -> (Connection, Channel) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("RabbitMQ is required on 127.0.0.1:5672");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    (conn, ch)
}

/// Wait until the worker has declared its queues (its consumer is up).
async fn ready(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.call("GET", "/readyz", None, None).await.1["broker"] != "up" {
        assert!(Instant::now() < deadline, "the worker did not connect to RabbitMQ");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(ch: &Channel, prefix: &str, body: &[u8]) {
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

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, secs: u64, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn balance(app: &TestApp, account: &str) -> Option<i64> {
    app.store.account(account, app.clock.now()).await.ok().map(|v| v.balance)
}

/// Bind a durable queue to the events exchange and collect (account, event id) in arrival order.
async fn event_queue(ch: &Channel, p: &str) -> String {
    let name = format!("{p}.test-events");
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
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

async fn drain(queue: &str, seen: &mut Vec<(String, String)>, quiet: Duration) {
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

fn rabbitmqctl(args: &[&str]) {
    let out =
        std::process::Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl is required for this test");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_in_the_middle_of_5000_commands_loses_and_repeats_nothing() {
    let p = prefix();
    let app = app("sqlite", &p).await;
    ready(&app).await;
    let (c, ch) = channel().await;
    let queue = event_queue(&ch, &p).await;
    const ACCOUNTS: usize = 20;
    const N: usize = 5000;
    for a in 0..ACCOUNTS {
        publish(&ch, &p, json!({"type": "package.purchased", "id": format!("p{a}"), "account_id": format!("acc{a}"), "package": "credits_500", "quantity": 2}).to_string().as_bytes()).await;
    }
    // Publish everything first (confirmed, so durable in the quorum queue), in chunks to bound memory.
    let mut confirms = vec![];
    for i in 0..N {
        let cmd = json!({"type": "usage.recorded", "id": format!("u{i}"), "account_id": format!("acc{}", i % ACCOUNTS), "user_id": "u", "operation": "chat.message"});
        let props = BasicProperties::default().with_delivery_mode(2);
        confirms.push(
            ch.basic_publish(
                "".into(),
                format!("{p}.commands").as_str().into(),
                BasicPublishOptions::default(),
                cmd.to_string().as_bytes(),
                props,
            )
            .await
            .unwrap(),
        );
        if confirms.len() == 500 {
            for c in confirms.drain(..) {
                assert!(c.await.unwrap().is_ack());
            }
        }
    }
    for c in confirms.drain(..) {
        assert!(c.await.unwrap().is_ack());
    }
    drop(ch);
    let _ = c.close(200, "bye".into()).await;
    let applied = || async {
        let rows = app
            .store
            .inbox_list(&InboxFilter {
                status: Some(InboxStatus::Applied),
                source: Some("queue".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        rows.len()
    };
    eventually("some commands applied", 60, || async { applied().await > 500 }).await;
    // Whatever happens next, the broker is started again for the tests after this one.
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            let _ = std::process::Command::new("rabbitmqctl").arg("start_app").output();
        }
    }
    let _restart = Restart;
    rabbitmqctl(&["stop_app"]);
    eventually("/readyz says the broker is down", 60, || async {
        app.call("GET", "/readyz", None, None).await.0 == 503
    })
    .await;
    let mid = applied().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    eventually("every command applied", 240, || async { applied().await == N + ACCOUNTS }).await;
    assert!(mid < N + ACCOUNTS, "the restart came in the middle ({mid} applied by then)");
    for a in 0..ACCOUNTS {
        assert_eq!(
            balance(&app, &format!("acc{a}")).await,
            Some(1000 - (N / ACCOUNTS) as i64),
            "acc{a}: each usage debited once"
        );
    }
    eventually("the outbox published", 120, || async { app.store.outbox_unpublished(1).await.unwrap().is_empty() })
        .await;
    let mut seen = vec![];
    drain(&queue, &mut seen, Duration::from_secs(2)).await;
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (_, id) in &seen {
        *by_id.entry(id.clone()).or_default() += 1;
    }
    let outbox = app.store.outbox_page(0, 1_000_000).await.unwrap();
    let missing: Vec<&str> =
        outbox.iter().filter(|r| !by_id.contains_key(&r.event_id)).map(|r| r.event_id.as_str()).collect();
    assert!(missing.is_empty(), "{} of {} events never arrived", missing.len(), outbox.len());
    assert_eq!(app.call("GET", "/readyz", None, None).await.0, 200);
    app.shutdown().await;
}
