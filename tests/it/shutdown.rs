//! The shutdown sequence as an operator sees it: on SIGTERM `/readyz` turns 503 first, the requests in flight
//! are answered, the consumer leaves unacked what it has not committed, and the process exits within
//! `BILLING_SHUTDOWN_SECS`; nothing acknowledged is lost and nothing is applied twice.

use crate::common::amqp::{AMQP, channel, cleanup, drain, event_queue, prefix};
use crate::common::proc::{Proc, admin_key, free_port, ledger_problems, log_dir, strings};
use crate::common::{client, fresh_url, spawn_app};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request in flight when the stop begins is answered, and the stop waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_is_answered_before_the_stop_ends() {
    let mut app = spawn_app("sqlite", 1_780_000_000).await;
    let admin = app.key("admin").await;
    app.account(&admin, "acc").await;
    let before = app.balance("acc").await;
    app.store.pause_commits_of("acc");
    let debit = {
        let (base, admin) = (app.base.clone(), admin.clone());
        tokio::spawn(async move {
            let body = json!({"operation": "chat.message", "quantity": 1, "user_id": "u", "idempotency_key": "late"});
            let r = client()
                .post(format!("{base}/v1/accounts/acc/debits"))
                .bearer_auth(admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = app.take_running();
    let stop = tokio::spawn(running.stop(Duration::ZERO));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stop.is_finished(), "the stop waits for the request in flight");
    app.store.resume_commits();
    assert_eq!(debit.await.unwrap(), 201, "the request in flight is answered");
    tokio::time::timeout(Duration::from_secs(10), stop).await.expect("the stop ends").unwrap();
    assert_eq!(app.balance("acc").await, before - 1, "the debit is in the ledger");
    assert!(client().get(format!("{}/healthz", app.base)).send().await.is_err(), "no longer accepting");
}

/// Debits over HTTP and commands through RabbitMQ run while the worker gets SIGTERM. It turns not ready,
/// answers what it took, exits 0 within the deadline, and after a restart every acknowledged debit and every
/// confirmed command is in the ledger exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_and_exits_within_the_deadline() {
    const ACCOUNTS: usize = 10;
    let db = fresh_url("postgres").await;
    let p = prefix();
    let admin = admin_key(&db);
    let logs = log_dir("sigterm");
    let port = free_port();
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("AMQP_URL", AMQP),
        ("BILLING_AMQP_PREFIX", p.as_str()),
        ("BILLING_RETRY_DELAYS_MS", "300,600"),
        ("BILLING_SHUTDOWN_SECS", "10"),
        ("BILLING_SHUTDOWN_DELAY_SECS", "3"),
        ("BILLING_REQUEST_TIMEOUT_SECS", "5"),
    ];
    let (_events_conn, events_ch) = channel().await;
    let events = event_queue(&events_ch, &p).await;
    let mut w = Proc::spawn(port, &env, &logs.join("worker.log"));
    w.ready(true).await;
    let http = client();
    for a in 0..ACCOUNTS {
        let cmd = json!({"type": "account.created", "id": format!("create-{a}"), "account_id": format!("acc{a}")});
        let r = http.post(format!("{}/v1/commands", w.base)).bearer_auth(&admin).json(&cmd).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let grant = json!({"credits": 1_000_000, "reason": "test", "idempotency_key": format!("grant-{a}")});
        let url = format!("{}/v1/admin/accounts/acc{a}/adjustments", w.base);
        assert_eq!(http.post(url).bearer_auth(&admin).json(&grant).send().await.unwrap().status(), 201);
    }

    let done = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, String, Instant)>>> = Arc::default();
    let mut clients = vec![];
    for c in 0..8 {
        let (base, admin, done, acked) = (w.base.clone(), admin.clone(), done.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            for i in 0.. {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let (acc, key) = (format!("acc{}", (c + i) % ACCOUNTS), format!("c{c}-{i}"));
                let body = json!({"operation": "chat.message", "quantity": 1, "user_id": "u", "idempotency_key": key});
                let url = format!("{base}/v1/accounts/{acc}/debits");
                match http.post(url).bearer_auth(&admin).json(&body).send().await {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push((acc, key, Instant::now())),
                    Ok(r) if r.status() == 503 => tokio::time::sleep(Duration::from_millis(5)).await,
                    Ok(r) => panic!("debit answered {}", r.status()),
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await, // refused: the worker stopped
                }
            }
        }));
    }
    // Commands published (and confirmed by the broker) all along, before and during the shutdown.
    let published: Arc<Mutex<Vec<String>>> = Arc::default();
    let publisher = {
        let (p, done, published) = (p.clone(), done.clone(), published.clone());
        tokio::spawn(async move {
            let (conn, ch) = channel().await;
            for i in 0.. {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("cmd-{i}");
                let cmd = json!({"type": "usage.recorded", "id": id, "account_id": format!("acc{}", i % ACCOUNTS), "user_id": "u", "operation": "chat.message"});
                let queue = format!("{p}.commands");
                let props = BasicProperties::default().with_delivery_mode(2);
                let body = cmd.to_string();
                let c = ch.basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    props,
                );
                if c.await.unwrap().await.unwrap().is_ack() {
                    published.lock().unwrap().push(id);
                }
            }
            let _ = conn.close(200, "bye".into()).await;
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_term = acked.lock().unwrap().len();
    assert!(before_term > 0, "the load is running");

    w.signal("TERM");
    let term = Instant::now();
    // The signal takes a moment to arrive; within the delay `/readyz` says 503 while the worker still serves.
    let not_ready = loop {
        let r = http.get(format!("{}/readyz", w.base)).send().await.expect("still serving during the delay");
        if r.status() == 503 {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        assert!(term.elapsed() < Duration::from_millis(2500), "not ready within the delay");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((not_ready["shutting_down"].as_bool(), not_ready["database"].as_str()), (Some(true), Some("up")));
    let status = w.exited(Duration::from_secs(12)).await.expect("exits within BILLING_SHUTDOWN_SECS");
    let took = term.elapsed();
    assert!(status.success(), "a clean exit: {status:?}");
    assert!(took <= Duration::from_secs(11), "exited after {took:?}");
    done.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    publisher.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let during_delay = acked.iter().filter(|(_, _, at)| *at > term + Duration::from_millis(500)).count();
    assert!(during_delay > 0, "debits were still answered during the delay");

    // Back up: the commands the first run left with the broker are applied now.
    let w = Proc::spawn(port, &env, &logs.join("worker-2.log"));
    w.ready(true).await;
    let published = published.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = strings(&db, "SELECT event_id FROM inbox WHERE source = 'queue' AND status = 'applied'").await;
        if applied.len() >= published.len() {
            let applied: std::collections::HashSet<_> = applied.into_iter().collect();
            let missing = published.iter().filter(|id| !applied.contains(*id)).count();
            assert_eq!(missing, 0, "every confirmed command is applied");
            break;
        }
        assert!(Instant::now() < deadline, "{} of {} commands applied", applied.len(), published.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keys: std::collections::HashSet<String> =
        strings(&db, "SELECT key FROM effects WHERE key LIKE 'debit:%'").await.into_iter().collect();
    let lost = acked.iter().filter(|(_, k, _)| !keys.contains(&format!("debit:{k}"))).count();
    assert_eq!(lost, 0, "every acknowledged debit is in the ledger");
    assert_eq!(ledger_problems(&db).await, Vec::<String>::new());
    // Every event of the outbox reached the exchange, and none twice: the stopping publisher finished its batch.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !strings(&db, "SELECT event_id FROM outbox WHERE published_at IS NULL LIMIT 1").await.is_empty() {
        assert!(Instant::now() < deadline, "the outbox drains");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seen = vec![];
    drain(&events, &mut seen, Duration::from_secs(2)).await;
    let mut arrivals = std::collections::HashMap::<String, usize>::new();
    for (_, id) in seen {
        *arrivals.entry(id).or_default() += 1;
    }
    let outbox = strings(&db, "SELECT event_id FROM outbox").await;
    assert!(outbox.iter().all(|id| arrivals.contains_key(id)), "every outbox event was published");
    assert_eq!(arrivals.values().filter(|n| **n > 1).count(), 0, "no event published twice by a clean stop");
    drop(w);
    cleanup(&p).await;
}
