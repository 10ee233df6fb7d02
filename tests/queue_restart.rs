//! A broker restart in the middle of 5,000 commands. In its own test binary because it stops the RabbitMQ app,
//! which would disturb queue tests running beside it.

#[path = "it/common/mod.rs"]
mod common;

use billing_worker::store::{InboxFilter, InboxStatus};
use billing_worker::time::parse_rfc3339;
use common::amqp::*;
use lapin::BasicProperties;
use lapin::options::*;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

fn t0() -> i64 {
    (parse_rfc3339("2026-09-01T00:00:00Z").unwrap()).secs()
}

fn rabbitmqctl(args: &[&str]) {
    let out =
        std::process::Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl is required for this test");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_in_the_middle_of_5000_commands_loses_and_repeats_nothing() {
    let p = prefix();
    // A small prefetch keeps the worker from applying all 5,000 in the second or two `rabbitmqctl` takes to stop
    // the broker, so the restart lands in the middle (asserted below), with commands in flight whose acks the
    // stop loses (redelivered after it, and counted as duplicates below).
    let app = app_with("sqlite", &p, t0(), &[("BILLING_AMQP_PREFETCH", "16")]).await;
    ready(&app).await;
    let (c, ch) = channel().await;
    let queue = event_queue(&ch, &p).await;
    const ACCOUNTS: usize = 20;
    const N: usize = 5000;
    for a in 0..ACCOUNTS {
        publish(
            &ch,
            &p,
            json!({"type": "account.created", "id": format!("a{a}"), "account_id": format!("acc{a}")})
                .to_string()
                .as_bytes(),
        )
        .await;
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
    eventually("/readyz says the broker is down (and stays 200: HTTP works without it)", 60, || async {
        let (status, body) = app.call("GET", "/readyz", None, None).await;
        status == 200 && body["broker"] == "down" && body["database"] == "up"
    })
    .await;
    let mid = applied().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    eventually("every command applied", 240, || async { applied().await == N + 2 * ACCOUNTS }).await;
    assert!(mid < N + 2 * ACCOUNTS, "the restart came in the middle ({mid} applied by then)");
    // Commands in flight at the stop came again after it, and were recognized (the balances below show they
    // were not applied twice).
    let metrics = billing_worker::metrics::global().render(&[]);
    assert!(
        metrics.lines().any(|l| l.starts_with("billing_commands_total{outcome=\"duplicate\"}")),
        "some commands were delivered again after the restart: {metrics}"
    );
    for a in 0..ACCOUNTS {
        assert_eq!(
            balance(&app, &format!("acc{a}")).await,
            Some(5 + 1000 - (N / ACCOUNTS) as i64),
            "acc{a}: signup, the package, and each usage debited once"
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
    cleanup(&p).await;
}
