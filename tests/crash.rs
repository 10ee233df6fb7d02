//! Three workers on one PostgreSQL and one RabbitMQ, one of them SIGKILLed every few seconds and started again,
//! and PostgreSQL itself restarted in the middle, while clients debit (retrying with the same idempotency key
//! until answered, as the AI tools do), Stripe sends distinct webhooks (retrying until answered, as Stripe does)
//! and commands go through the queue. Afterwards every acknowledged debit, webhook and command is applied
//! exactly once, every balance is the sum of its entries, and every outbox event reached the exchange.
//!
//! Its own test binary: it restarts the shared PostgreSQL server, which would break tests running beside it. It
//! takes about a minute. `CRASH_SEED` repeats a run (the seed is printed).

#[path = "it/common/mod.rs"]
mod common;

use common::amqp::{AMQP, channel, cleanup, drain, event_queue, prefix};
use common::proc::{Proc, admin_key, free_port, ledger_problems, log_dir, strings};
use common::stripe::{event, payment_intent, signature};
use common::{Rng, client, fresh_url};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_crash_test";
const ACCOUNTS: usize = 20;
const WORKERS: usize = 3;
const LOAD: Duration = Duration::from_secs(36);

/// The bases of the workers up now; a client picks one at random and moves on when it is down.
type Bases = Arc<Vec<String>>;

fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("PostgreSQL from Debian's packages (pg_ctlcluster) is required for this test")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .expect("a PostgreSQL cluster");
    let out = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart", "--mode=fast"])
        .output()
        .expect("pg_ctlcluster");
    assert!(out.status.success(), "pg_ctlcluster restart: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_killed_at_random_and_a_database_restart_lose_and_repeat_nothing() {
    let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("CRASH_SEED={seed}");
    let db = fresh_url("postgres").await;
    let p = prefix();
    let admin = admin_key(&db);
    let logs = log_dir("crash");
    println!("worker logs in {}", logs.display());
    let (_events_conn, events_ch) = channel().await;
    let events = event_queue(&events_ch, &p).await;
    let env: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", &db),
        ("AMQP_URL", AMQP),
        ("BILLING_AMQP_PREFIX", &p),
        ("BILLING_RETRY_DELAYS_MS", "300,600"),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("BILLING_TICK_SECS", "1"),
    ];
    let ports: Vec<u16> = (0..WORKERS).map(|_| free_port()).collect();
    let bases: Bases = Arc::new(ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect());
    let mut workers: Vec<Proc> =
        (0..WORKERS).map(|i| Proc::spawn(ports[i], &env, &logs.join(format!("worker{i}.log")))).collect();
    for w in &workers {
        w.ready(true).await;
    }
    let http = client();
    for a in 0..ACCOUNTS {
        let cmd = json!({"type": "account.created", "id": format!("create-{a}"), "account_id": format!("acc{a}")});
        let r = http.post(format!("{}/v1/commands", bases[0])).bearer_auth(&admin).json(&cmd).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let grant = json!({"credits": 1_000_000, "reason": "test", "idempotency_key": format!("grant-{a}")});
        let url = format!("{}/v1/admin/accounts/acc{a}/adjustments", bases[0]);
        assert_eq!(http.post(url).bearer_auth(&admin).json(&grant).send().await.unwrap().status(), 201);
    }

    let done = Arc::new(AtomicBool::new(false));
    let retries = Arc::new(AtomicU64::new(0));
    // Debits: each key retried on any worker until answered 201.
    let debits: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut load = vec![];
    for c in 0..6usize {
        let (bases, admin, done, acked, retries) =
            (bases.clone(), admin.clone(), done.clone(), debits.clone(), retries.clone());
        load.push(tokio::spawn(async move {
            let http = client();
            let mut rng = Rng(seed.wrapping_add(c as u64 * 7919) | 1);
            for i in 0.. {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let (acc, key) = (format!("acc{}", rng.below(ACCOUNTS)), format!("d{c}-{i}"));
                let body = json!({"operation": "chat.message", "quantity": 1, "user_id": "u", "idempotency_key": key});
                loop {
                    let url = format!("{}/v1/accounts/{acc}/debits", bases[rng.below(bases.len())]);
                    let sent = http.post(url).bearer_auth(&admin).json(&body).timeout(Duration::from_secs(10)).send();
                    match sent.await {
                        Ok(r) if r.status() == 201 => break,
                        Ok(r) if r.status() == 503 => {}
                        Ok(r) => panic!("debit {key}: {} {}", r.status(), r.text().await.unwrap_or_default()),
                        Err(_) => {}
                    }
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked.lock().unwrap().push(key);
            }
        }));
    }
    // Webhooks: distinct package purchases, each retried until answered 200 (as Stripe retries).
    let webhooks: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    for c in 0..2usize {
        let (bases, done, acked, retries) = (bases.clone(), done.clone(), webhooks.clone(), retries.clone());
        load.push(tokio::spawn(async move {
            let http = client();
            let mut rng = Rng(seed.wrapping_add(c as u64 * 104_729) | 1);
            for i in 0.. {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let (ev, pi) = (format!("evt_crash_{c}_{i}"), format!("pi_crash_{c}_{i}"));
                let acc = format!("acc{}", rng.below(ACCOUNTS));
                let meta = json!({"credits_package": "credits_25", "account_id": acc});
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                let body = event(&ev, "payment_intent.succeeded", t, payment_intent(&pi, None, meta));
                loop {
                    let url = format!("{}/webhooks/stripe", bases[rng.below(bases.len())]);
                    let sent = http
                        .post(url)
                        .header("content-type", "application/json")
                        .header("Stripe-Signature", signature(SECRET, t, &body))
                        .body(body.clone())
                        .timeout(Duration::from_secs(10))
                        .send();
                    match sent.await {
                        Ok(r) if r.status() == 200 => break,
                        Ok(r) if r.status() == 503 => {}
                        Ok(r) => panic!("webhook {ev}: {} {}", r.status(), r.text().await.unwrap_or_default()),
                        Err(_) => {}
                    }
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked.lock().unwrap().push((ev, pi));
            }
        }));
    }
    // Commands: published with confirms; a confirmed command is the broker's to deliver.
    let commands: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let (p, done, confirmed) = (p.clone(), done.clone(), commands.clone());
        load.push(tokio::spawn(async move {
            let (conn, ch) = channel().await;
            let queue = format!("{p}.commands");
            for i in 0.. {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("cmd-{i}");
                let cmd = json!({"type": "usage.recorded", "id": id, "account_id": format!("acc{}", i % ACCOUNTS), "user_id": "u", "operation": "chat.message"});
                let body = cmd.to_string();
                let props = BasicProperties::default().with_delivery_mode(2);
                let sent = ch.basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    props,
                );
                if sent.await.unwrap().await.unwrap().is_ack() {
                    confirmed.lock().unwrap().push(id);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = conn.close(200, "bye".into()).await;
        }));
    }

    // Chaos: a random worker SIGKILLed every 2-4 s and started again half a second later; PostgreSQL restarted
    // once, a third of the way in, while all three run.
    let start = Instant::now();
    let mut rng = Rng(seed);
    let (mut kills, mut pg_restarted) = (0, false);
    while start.elapsed() < LOAD {
        tokio::time::sleep(Duration::from_millis(2000 + rng.below(2000) as u64)).await;
        if !pg_restarted && start.elapsed() > LOAD / 3 {
            restart_postgres();
            pg_restarted = true;
            // Each of the three recovers by itself, without a restart: a debit on each commits again.
            for (i, w) in workers.iter().enumerate() {
                w.ready(true).await;
                let body = json!({"operation": "chat.message", "quantity": 1, "user_id": "u", "idempotency_key": format!("after-restart-{i}")});
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let url = format!("{}/v1/accounts/acc0/debits", w.base);
                    let status = http.post(url).bearer_auth(&admin).json(&body).send().await.map(|r| r.status());
                    if status.as_ref().is_ok_and(|s| *s == 201) {
                        break;
                    }
                    assert!(Instant::now() < deadline, "worker {i} did not recover: {status:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            continue;
        }
        let i = rng.below(WORKERS);
        workers[i].kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        workers[i] = Proc::spawn(ports[i], &env, &logs.join(format!("worker{i}.log")));
    }
    // Every worker recovers from the database restart by itself (the ones never killed included).
    for w in &workers {
        w.ready(true).await;
    }
    done.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    let (debits, webhooks, commands) =
        (debits.lock().unwrap().clone(), webhooks.lock().unwrap().clone(), commands.lock().unwrap().clone());
    println!(
        "{kills} kills, {} debits, {} webhooks, {} commands acknowledged, {} retries",
        debits.len(),
        webhooks.len(),
        commands.len(),
        retries.load(Ordering::Relaxed)
    );
    assert!(kills >= 4 && pg_restarted, "the chaos ran: {kills} kills");
    assert!(debits.len() > 500 && webhooks.len() > 100 && commands.len() > 500, "the load ran");

    // Every confirmed command applied, once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let applied: HashSet<String> = loop {
        let rows = strings(&db, "SELECT event_id FROM inbox WHERE source = 'queue' AND status = 'applied'").await;
        let rows: HashSet<String> = rows.into_iter().collect();
        if commands.iter().all(|c| rows.contains(c)) {
            break rows;
        }
        assert!(Instant::now() < deadline, "{} of {} commands applied", rows.len(), commands.len());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let causes = strings(&db, "SELECT cause FROM entries WHERE kind = 'debit' AND cause LIKE 'command:cmd-%'").await;
    let mut per_command: HashMap<String, usize> = HashMap::new();
    for c in causes {
        *per_command.entry(c.trim_start_matches("command:").to_owned()).or_default() += 1;
    }
    for c in &commands {
        assert_eq!(per_command.get(c), Some(&1), "command {c} debited once ({} applied)", applied.contains(c));
    }
    // Every acknowledged debit once (ledger_problems finds a second entry for any debit).
    let keys: HashSet<String> =
        strings(&db, "SELECT key FROM effects WHERE key LIKE 'debit:%'").await.into_iter().collect();
    let lost: Vec<&String> = debits.iter().filter(|k| !keys.contains(&format!("debit:{k}"))).collect();
    assert!(lost.is_empty(), "{} acknowledged debits lost, e.g. {:?}", lost.len(), lost.first());
    // Every acknowledged webhook applied, and one package lot per payment.
    let inbox: HashSet<String> =
        strings(&db, "SELECT event_id FROM inbox WHERE source = 'stripe' AND status = 'applied'")
            .await
            .into_iter()
            .collect();
    let lots: Vec<String> = strings(&db, "SELECT id FROM lots WHERE source = 'package'").await;
    let lot_set: HashSet<&String> = lots.iter().collect();
    for (ev, pi) in &webhooks {
        assert!(inbox.contains(ev) && lot_set.contains(pi), "webhook {ev} applied, with its lot {pi}");
    }
    assert_eq!(ledger_problems(&db).await, Vec::<String>::new());
    for i in 0..WORKERS {
        let log = std::fs::read_to_string(logs.join(format!("worker{i}.log"))).unwrap();
        assert!(!log.contains("panicked"), "worker {i} panicked; see {}", logs.display());
    }

    // Every outbox event reached the exchange. An event can arrive twice only when its publisher was killed
    // between the broker's confirm and marking it sent (or lost the database then): consumers dedupe by id.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !strings(&db, "SELECT event_id FROM outbox WHERE published_at IS NULL LIMIT 1").await.is_empty() {
        assert!(Instant::now() < deadline, "the outbox drains");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut seen = vec![];
    drain(&events, &mut seen, Duration::from_secs(2)).await;
    let mut arrivals: HashMap<String, usize> = HashMap::new();
    for (_, id) in &seen {
        *arrivals.entry(id.clone()).or_default() += 1;
    }
    let outbox = strings(&db, "SELECT event_id FROM outbox").await;
    let missing = outbox.iter().filter(|id| !arrivals.contains_key(*id)).count();
    assert_eq!(missing, 0, "{missing} of {} outbox events never reached the exchange", outbox.len());
    let twice = arrivals.values().filter(|n| **n > 1).count();
    println!(
        "{} events published, {twice} of them more than once (after a kill or the database restart)",
        outbox.len()
    );
    let bound = (kills + 1) * 1000; // at most the batch in flight of each publisher that died, and the restart's
    assert!(twice <= bound, "{twice} events published twice: more than crashes explain ({bound})");
    drop(workers);
    cleanup(&p).await;
}
