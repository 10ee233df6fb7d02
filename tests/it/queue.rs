//! Commands over the real RabbitMQ (127.0.0.1:5672) and events out of it. Each test has its own queue prefix.

use crate::common::amqp::*;
use crate::common::{TestApp, spawn_app_with};

use billing_worker::store::{InboxFilter, InboxStatus};
use billing_worker::time::parse_rfc3339;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;
use std::time::Duration;

fn t0() -> i64 {
    (parse_rfc3339("2026-09-01T00:00:00Z").unwrap()).secs()
}

async fn status_of(app: &TestApp, id: &str) -> Option<InboxStatus> {
    app.store.inbox_find("queue", id).await.unwrap().map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_type_is_applied_from_the_queue() {
    let p = prefix();
    let app = app("sqlite", &p, t0()).await;
    ready(&app).await;
    let (_c, ch) = channel().await;
    let payload = crate::common::stripe::event(
        "evt_q",
        "checkout.session.completed",
        t0(),
        crate::common::stripe::checkout(
            "cs_q",
            Some("acc"),
            None,
            "pi_q",
            json!({"credits_package": "credits_100"}),
            true,
        ),
    );
    let sig = crate::common::stripe::signature(crate::common::SECRET, t0(), &payload);
    for cmd in [
        json!({"type": "account.created", "id": "q1", "account_id": "acc"}),
        json!({"type": "package.purchased", "id": "q2", "account_id": "acc", "package": "credits_25"}),
        json!({"type": "credits.adjusted", "id": "q3", "account_id": "acc", "credits": 10, "reason": "promo"}),
        json!({"type": "usage.recorded", "id": "q4", "account_id": "acc", "user_id": "u", "operation": "image.4k"}),
        json!({"type": "cycle.ended", "id": "q5", "account_id": "acc"}),
        json!({"type": "stripe.event", "id": "q6", "payload": payload, "signature": sig}),
    ] {
        publish(&ch, &p, cmd.to_string().as_bytes()).await;
    }
    eventually("all six applied", 20, || async {
        status_of(&app, "q5").await == Some(InboxStatus::Applied) && balance(&app, "acc").await == Some(137)
    })
    .await;
    assert_eq!(app.store.inbox_find("stripe", "evt_q").await.unwrap().unwrap().status, InboxStatus::Applied);
    app.shutdown().await;
    cleanup(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_five_times_has_one_effect_and_bad_ones_are_parked() {
    let p = prefix();
    let app = app("sqlite", &p, t0()).await;
    ready(&app).await;
    let (_c, ch) = channel().await;
    publish(&ch, &p, json!({"type": "account.created", "id": "a1", "account_id": "acc"}).to_string().as_bytes()).await;
    let buy =
        json!({"type": "package.purchased", "id": "buy", "account_id": "acc", "package": "credits_100"}).to_string();
    for _ in 0..5 {
        publish(&ch, &p, buy.as_bytes()).await;
    }
    publish(&ch, &p, b"{not json").await;
    publish(&ch, &p, json!({"type": "account.renamed", "id": "u1", "account_id": "acc"}).to_string().as_bytes()).await;
    publish(
        &ch,
        &p,
        json!({"type": "package.purchased", "id": "after", "account_id": "acc", "package": "credits_25"})
            .to_string()
            .as_bytes(),
    )
    .await;
    eventually("the command after the bad ones", 20, || async {
        status_of(&app, "after").await == Some(InboxStatus::Applied)
    })
    .await;
    assert_eq!(balance(&app, "acc").await, Some(5 + 100 + 25), "one effect for five copies; nothing from the bad ones");
    // Parked with their reason, and kept as failed events.
    let mut reasons = vec![];
    while let Some(m) =
        ch.basic_get(format!("{p}.commands.dead").as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap()
    {
        let h = m.delivery.properties.headers().clone().unwrap();
        match h.inner().get("x-park-reason") {
            Some(AMQPValue::LongString(r)) => reasons.push(r.to_string()),
            other => panic!("no reason header: {other:?}"),
        }
    }
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    // Settled by their own tasks, so in either order.
    assert!(reasons.iter().any(|r| r.contains("not JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("unknown command type")), "{reasons:?}");
    let failed =
        app.store.inbox_list(&InboxFilter { status: Some(InboxStatus::Failed), ..Default::default() }).await.unwrap();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().any(|r| r.kind == "account.renamed" && r.event_id.starts_with("msg_")), "known by its hash");
    app.shutdown().await;
    cleanup(&p).await;
}

/// Create `acc` (5 credits), hold its row in a long transaction, and publish a purchase of 25 credits for it.
async fn buy_while_locked(app: &TestApp, ch: &lapin::Channel, p: &str) -> sqlx::Transaction<'static, sqlx::Any> {
    publish(ch, p, json!({"type": "account.created", "id": "a1", "account_id": "acc"}).to_string().as_bytes()).await;
    eventually("account", 20, || async { balance(app, "acc").await == Some(5) }).await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.db_url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM accounts WHERE id = 'acc' FOR UPDATE").execute(&mut *tx).await.unwrap();
    let buy = json!({"type": "package.purchased", "id": "buy", "account_id": "acc", "package": "credits_25"});
    publish(ch, p, buy.to_string().as_bytes()).await;
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_a_locked_account_is_retried_not_lost() {
    let p = prefix();
    let app = app("postgres", &p, t0()).await;
    ready(&app).await;
    let (_c, ch) = channel().await;
    let tx = buy_while_locked(&app, &ch, &p).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(status_of(&app, "buy").await, None, "not applied while the account is locked");
    tx.commit().await.unwrap();
    eventually("the retried command", 20, || async { status_of(&app, "buy").await == Some(InboxStatus::Applied) })
        .await;
    assert_eq!(balance(&app, "acc").await, Some(30));
    app.shutdown().await;
    cleanup(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_between_commit_and_ack_gets_it_again_with_one_effect() {
    let p = prefix();
    let app = app("sqlite", &p, t0()).await;
    ready(&app).await;
    let (_c, ch) = channel().await;
    publish(&ch, &p, json!({"type": "account.created", "id": "a1", "account_id": "acc"}).to_string().as_bytes()).await;
    eventually("account", 20, || async { balance(&app, "acc").await == Some(5) }).await;
    let broker = app.broker.clone().unwrap();
    broker.crash_before_ack.store(true, std::sync::atomic::Ordering::SeqCst);
    publish(
        &ch,
        &p,
        json!({"type": "package.purchased", "id": "buy", "account_id": "acc", "package": "credits_100"})
            .to_string()
            .as_bytes(),
    )
    .await;
    publish(
        &ch,
        &p,
        json!({"type": "credits.adjusted", "id": "after", "account_id": "acc", "credits": 1, "reason": "marker"})
            .to_string()
            .as_bytes(),
    )
    .await;
    eventually("the crash, the redelivery and the next command", 30, || async {
        status_of(&app, "after").await == Some(InboxStatus::Applied)
    })
    .await;
    assert!(!broker.crash_before_ack.load(std::sync::atomic::Ordering::SeqCst), "the crash happened");
    assert_eq!(balance(&app, "acc").await, Some(106), "applied once although delivered twice");
    // The deliveries in flight when the connection dropped come back and are acked as duplicates.
    eventually("every delivery acked in the end", 30, || async {
        let q = ch
            .queue_declare(
                format!("{p}.commands").as_str().into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        q.message_count() == 0
    })
    .await;
    assert_eq!(balance(&app, "acc").await, Some(106), "still applied once");
    app.shutdown().await;
    cleanup(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_an_external_consumer_in_order_for_each_account() {
    let p = prefix();
    let app = app("sqlite", &p, t0()).await;
    ready(&app).await;
    let (_c, ch) = channel().await;
    let queue = event_queue(&ch, &p).await;
    for a in 0..3 {
        publish(
            &ch,
            &p,
            json!({"type": "account.created", "id": format!("a{a}"), "account_id": format!("acc{a}")})
                .to_string()
                .as_bytes(),
        )
        .await;
    }
    // Five credits each: five usages deplete an account, then grants top it up again.
    for i in 0..15 {
        let cmd = json!({"type": "usage.recorded", "id": format!("u{i}"), "account_id": format!("acc{}", i % 3), "user_id": "u", "operation": "chat.message"});
        publish(&ch, &p, cmd.to_string().as_bytes()).await;
    }
    for i in 0..30 {
        let grant = json!({"type": "credits.adjusted", "id": format!("g{i}"), "account_id": format!("acc{}", i % 3), "credits": 1, "reason": "r"});
        publish(&ch, &p, grant.to_string().as_bytes()).await;
    }
    eventually("all published", 30, || async {
        app.store.outbox_unpublished(1).await.unwrap().is_empty() && status_of(&app, "g29").await.is_some()
    })
    .await;
    let mut seen = vec![];
    drain(&queue, &mut seen, Duration::from_millis(500)).await;
    let outbox = app.store.outbox_page(0, 10_000).await.unwrap();
    assert!(outbox.iter().any(|r| r.kind == "balance.depleted"), "balance events are published too");
    for a in 0..3 {
        let acc = format!("acc{a}");
        let expected: Vec<&str> = outbox
            .iter()
            .filter(|r| r.account_id.as_deref() == Some(acc.as_str()))
            .map(|r| r.event_id.as_str())
            .collect();
        let got: Vec<&str> = seen.iter().filter(|(x, _)| *x == acc).map(|(_, id)| id.as_str()).collect();
        assert_eq!(got, expected, "{acc}: every event, in the order written");
    }
    app.shutdown().await;
    cleanup(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_keeps_failing_is_parked_and_dlq_requeue_brings_it_back() {
    let p = prefix();
    let app = app("postgres", &p, t0()).await;
    ready(&app).await;
    let (_c, ch) = channel().await;
    let tx = buy_while_locked(&app, &ch, &p).await;
    // Two retries (300 ms, 600 ms) while the lock is held, then parked.
    eventually("parked", 30, || async { status_of(&app, "buy").await == Some(InboxStatus::Failed) }).await;
    let dead = format!("{p}.commands.dead");
    // The failed record is written before the parked copy is confirmed: wait for the copy.
    eventually("the parked message", 10, || async {
        let q = ch
            .queue_declare(dead.as_str().into(), QueueDeclareOptions::default().passive(), FieldTable::default())
            .await
            .unwrap();
        q.message_count() == 1
    })
    .await;
    tx.commit().await.unwrap();
    // The operator requeues; the command applies once (the failed record is replaced by the applied one).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_billing-worker"))
        .args(["dlq", "requeue"])
        .env_clear()
        .env("AMQP_URL", AMQP)
        .env("BILLING_AMQP_PREFIX", &p)
        .env("BILLING_RETRY_DELAYS_MS", "300,600")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 message(s) moved"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("requeued 1/1"), "progress is shown");
    eventually("applied after requeue", 20, || async { balance(&app, "acc").await == Some(30) }).await;
    app.shutdown().await;
    cleanup(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_publish_each_event_once_in_order() {
    let p = prefix();
    let first = app("postgres", &p, t0()).await;
    ready(&first).await;
    // A second worker on the same database and the same queues.
    let extra = [
        ("AMQP_URL", AMQP),
        ("BILLING_AMQP_PREFIX", p.as_str()),
        ("BILLING_RETRY_DELAYS_MS", "300,600"),
        ("DATABASE_URL", first.db_url.as_str()),
    ];
    let second = spawn_app_with("postgres", t0(), &extra).await;
    ready(&second).await;
    let (_c, ch) = channel().await;
    let queue = event_queue(&ch, &p).await;
    for a in 0..4 {
        publish(
            &ch,
            &p,
            json!({"type": "account.created", "id": format!("a{a}"), "account_id": format!("acc{a}")})
                .to_string()
                .as_bytes(),
        )
        .await;
    }
    for i in 0..200 {
        let cmd = json!({"type": "credits.adjusted", "id": format!("g{i}"), "account_id": format!("acc{}", i % 4), "credits": 1 + (i % 3), "reason": "r"});
        publish(&ch, &p, cmd.to_string().as_bytes()).await;
    }
    eventually("all applied and published", 60, || async {
        status_of(&first, "g199").await.is_some() && first.store.outbox_unpublished(1).await.unwrap().is_empty()
    })
    .await;
    let mut seen = vec![];
    drain(&queue, &mut seen, Duration::from_millis(800)).await;
    let outbox = first.store.outbox_page(0, 10_000).await.unwrap();
    let ids: Vec<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (outbox.len(), outbox.len()), "each event published once");
    for a in 0..4 {
        let acc = format!("acc{a}");
        let expected: Vec<&str> = outbox
            .iter()
            .filter(|r| r.account_id.as_deref() == Some(acc.as_str()))
            .map(|r| r.event_id.as_str())
            .collect();
        let got: Vec<&str> = seen.iter().filter(|(x, _)| *x == acc).map(|(_, id)| id.as_str()).collect();
        assert_eq!(got, expected, "{acc} in order");
    }
    let total: i64 = (0..200).map(|i| 1 + (i % 3) as i64).sum::<i64>() + 4 * 5;
    let mut sum = 0;
    for a in 0..4 {
        sum += balance(&first, &format!("acc{a}")).await.unwrap();
    }
    assert_eq!(sum, total, "every command applied once across the two instances");
    second.shutdown().await;
    first.shutdown().await;
    cleanup(&p).await;
}
