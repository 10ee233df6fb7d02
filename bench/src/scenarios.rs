//! The workloads, each driven for a fixed time against a running worker: debits over many accounts and on one
//! hot account, distinct signed webhooks (package purchases), holds with capture, and `package.purchased`
//! commands through RabbitMQ. Each keeps what was acknowledged, for the ledger check afterwards.

use crate::load::{Measured, Rng, drive};
use crate::worker::{SECRET, Worker};
use futures_lite::StreamExt;
use hmac::{Hmac, Mac};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the worker acknowledged, to find in its ledger afterwards.
#[derive(Debug, Default)]
pub struct Acked {
    /// (account, idempotency key) of every debit answered 201.
    pub debits: Vec<(String, String)>,
    /// (event id, payment intent id, account) of every webhook answered 200.
    pub webhooks: Vec<(String, String, String)>,
    /// Hold ids captured.
    pub holds: Vec<String>,
    /// Command ids published with a broker confirm.
    pub commands: Vec<String>,
}

pub fn account(i: u64) -> String {
    format!("acct_{i:05}")
}

pub const HOT: &str = "acct_hot";

pub struct Ctx {
    pub client: reqwest::Client,
    pub worker: Arc<WorkerInfo>,
    pub acked: Arc<Mutex<Acked>>,
}

pub struct WorkerInfo {
    pub base: String,
    pub key: String,
    pub prefix: String,
}

impl Ctx {
    pub fn new(w: &Worker, conns: usize) -> Ctx {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(conns * 2)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let worker = Arc::new(WorkerInfo { base: w.base.clone(), key: w.admin_key.clone(), prefix: w.prefix.clone() });
        Ctx { client, worker, acked: Default::default() }
    }
}

async fn post(client: &reqwest::Client, w: &WorkerInfo, path: &str, body: &Value) -> Result<(u16, Value), String> {
    let r = client
        .post(format!("{}{path}", w.base))
        .bearer_auth(&w.key)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// Create `n` accounts (and the hot one) through commands, each with credits enough for any run.
pub async fn seed(ctx: &Ctx, n: u64) -> Result<(), String> {
    let mut ids: Vec<String> = (0..n).map(account).collect();
    ids.push(HOT.into());
    let ids = Arc::new(ids);
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (client, w, ids) = (ctx.client.clone(), ctx.worker.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            for a in ids.iter().skip(t).step_by(16) {
                for cmd in [
                    json!({"type": "account.created", "id": format!("seed-{a}"), "account_id": a}),
                    json!({"type": "credits.adjusted", "id": format!("seed-credits-{a}"), "account_id": a,
                           "credits": 1_000_000_000, "reason": "bench"}),
                ] {
                    let (s, b) = post(&client, &w, "/v1/commands", &cmd).await?;
                    if s != 200 {
                        return Err(format!("seeding {a}: {s} {b}"));
                    }
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Debits of one credit, each with its own idempotency key, on a random account of `n` (or the hot one).
pub async fn debits(ctx: &Ctx, name: &'static str, n: Option<u64>, conns: usize, secs: f64) -> Measured {
    let (client, w, acked) = (ctx.client.clone(), ctx.worker.clone(), ctx.acked.clone());
    let rngs: Arc<Vec<Mutex<Rng>>> = Arc::new((0..conns).map(|i| Mutex::new(Rng::new(i as u64 + 1))).collect());
    drive(conns, secs, move |task, i| {
        let (client, w, acked) = (client.clone(), w.clone(), acked.clone());
        let acct = match n {
            Some(n) => account(rngs[task].lock().unwrap().below(n)),
            None => HOT.to_owned(),
        };
        async move {
            let key = format!("{name}-{task}-{i}");
            let body = json!({"operation": "chat.message", "quantity": 1, "user_id": "u1", "idempotency_key": key});
            let (s, b) = post(&client, &w, &format!("/v1/accounts/{acct}/debits"), &body).await?;
            if s != 201 {
                return Err(format!("debit: {s} {b}"));
            }
            acked.lock().unwrap().debits.push((acct, key));
            Ok(())
        }
    })
    .await
}

/// `GET /healthz`: no database, no key; the ceiling of HTTP on this machine with this load generator.
pub async fn ping(ctx: &Ctx, conns: usize, secs: f64) -> Measured {
    let (client, w) = (ctx.client.clone(), ctx.worker.clone());
    drive(conns, secs, move |_, _| {
        let (client, w) = (client.clone(), w.clone());
        async move {
            let r = client.get(format!("{}/healthz", w.base)).send().await.map_err(|e| e.to_string())?;
            if r.status() != 200 {
                return Err(format!("healthz: {}", r.status()));
            }
            r.bytes().await.map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await
}

fn sign(body: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A `payment_intent.succeeded` event in Stripe's own shape (its fixture), buying `credits_25` for `account`.
fn payment_event(fixture: &Value, event: &str, pi: &str, account: &str, now: i64) -> String {
    let mut o = fixture.clone();
    o["id"] = json!(pi);
    o["status"] = json!("succeeded");
    o["metadata"] = json!({"credits_package": "credits_25", "account_id": account});
    json!({"id": event, "object": "event", "api_version": "2025-03-31.basil", "created": now,
           "type": "payment_intent.succeeded", "livemode": false, "pending_webhooks": 1,
           "data": {"object": o}})
    .to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Distinct signed webhooks, each a package purchase for a random account of `n`.
pub async fn webhooks(ctx: &Ctx, n: u64, conns: usize, secs: f64) -> Measured {
    let fixtures: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/stripe-fixtures3.json")).expect("fixtures");
    let fixture = Arc::new(fixtures["resources"]["payment_intent"].clone());
    let (client, w, acked) = (ctx.client.clone(), ctx.worker.clone(), ctx.acked.clone());
    let rngs: Arc<Vec<Mutex<Rng>>> = Arc::new((0..conns).map(|i| Mutex::new(Rng::new(i as u64 + 99))).collect());
    drive(conns, secs, move |task, i| {
        let (client, w, acked, fixture) = (client.clone(), w.clone(), acked.clone(), fixture.clone());
        let acct = account(rngs[task].lock().unwrap().below(n));
        async move {
            let (event, pi) = (format!("evt_bench_{task}_{i}"), format!("pi_bench_{task}_{i}"));
            let t = now();
            let body = payment_event(&fixture, &event, &pi, &acct, t);
            let r = client
                .post(format!("{}/webhooks/stripe", w.base))
                .header("content-type", "application/json")
                .header("Stripe-Signature", sign(&body, t))
                .body(body)
                .send()
                .await
                .map_err(|e| format!("webhook: {e}"))?;
            let s = r.status().as_u16();
            let b: Value = r.json().await.unwrap_or(Value::Null);
            if s != 200 || b["status"] != "applied" {
                return Err(format!("webhook: {s} {b}"));
            }
            acked.lock().unwrap().webhooks.push((event, pi, acct));
            Ok(())
        }
    })
    .await
}

/// A hold of one credit, then its capture: one operation, timed from the hold to the capture's answer.
pub async fn holds(ctx: &Ctx, n: u64, conns: usize, secs: f64) -> Measured {
    let (client, w, acked) = (ctx.client.clone(), ctx.worker.clone(), ctx.acked.clone());
    let rngs: Arc<Vec<Mutex<Rng>>> = Arc::new((0..conns).map(|i| Mutex::new(Rng::new(i as u64 + 7))).collect());
    drive(conns, secs, move |task, i| {
        let (client, w, acked) = (client.clone(), w.clone(), acked.clone());
        let acct = account(rngs[task].lock().unwrap().below(n));
        async move {
            let body = json!({"operation": "chat.message", "quantity": 1, "user_id": "u1",
                              "idempotency_key": format!("hold-{task}-{i}")});
            let (s, b) = post(&client, &w, &format!("/v1/accounts/{acct}/holds"), &body).await?;
            if s != 201 {
                return Err(format!("hold: {s} {b}"));
            }
            let id = b["hold_id"].as_str().unwrap_or_default().to_owned();
            let (s, b) = post(&client, &w, &format!("/v1/holds/{id}/capture"), &json!({})).await?;
            if s != 200 || b["status"] != "captured" {
                return Err(format!("capture: {s} {b}"));
            }
            acked.lock().unwrap().holds.push(id);
            Ok(())
        }
    })
    .await
}

/// `package.purchased` commands published to the command queue for `secs`, with publisher confirms and at most
/// `WINDOW` commands outstanding (published but not yet seen applied), so the rate is what the worker sustains.
/// A command counts as applied when its `credits.granted` event comes back from the events exchange; its latency
/// is that whole round trip (queue, apply, commit, outbox, publish).
pub async fn queue(ctx: &Ctx, amqp: &str, n: u64, secs: f64) -> Measured {
    match queue_inner(ctx, amqp, n, secs).await {
        Ok(m) => m,
        Err(e) => Measured { errors: 1, samples: vec![e], secs, ..Default::default() },
    }
}

const WINDOW: usize = 2000;

async fn queue_inner(ctx: &Ctx, amqp: &str, n: u64, secs: f64) -> Result<Measured, String> {
    let w = &ctx.worker;
    let e = |e: lapin::Error| e.to_string();
    let conn = Connection::connect(amqp, ConnectionProperties::default()).await.map_err(e)?;
    let ch = conn.create_channel().await.map_err(e)?;
    ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(e)?;
    // A queue of our own on the events exchange: each command's credits.granted tells that it was applied.
    let events = conn.create_channel().await.map_err(e)?;
    let q = events
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await
        .map_err(e)?;
    let exchange = format!("{}.events", w.prefix);
    let bind = QueueBindOptions::default();
    events
        .queue_bind(
            q.name().as_str().into(),
            exchange.as_str().into(),
            "credits.granted".into(),
            bind,
            FieldTable::default(),
        )
        .await
        .map_err(e)?;
    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut consumer =
        events.basic_consume(q.name().as_str().into(), "".into(), no_ack, FieldTable::default()).await.map_err(e)?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let started = Instant::now();
    let publisher = {
        let (ch, sent, acked, window) = (ch.clone(), sent.clone(), ctx.acked.clone(), window.clone());
        let queue = format!("{}.commands", w.prefix);
        tokio::spawn(async move {
            let mut rng = Rng::new(4242);
            let mut errors = Vec::new();
            let mut confirms = Vec::new();
            let mut i = 0u64;
            while started.elapsed().as_secs_f64() < secs {
                let Ok(permit) = window.clone().acquire_owned().await else { break };
                permit.forget(); // given back when the command is seen applied
                let id = format!("bench-cmd-{i}");
                let body = json!({"type": "package.purchased", "id": id, "account_id": account(rng.below(n)),
                                  "package": "credits_25", "payment_ref": format!("pay_bench_{i}")});
                let props = BasicProperties::default().with_delivery_mode(2).with_message_id(id.as_str().into());
                sent.lock().unwrap().insert(id.clone(), Instant::now());
                let opts = BasicPublishOptions::default();
                match ch.basic_publish("".into(), queue.as_str().into(), opts, body.to_string().as_bytes(), props).await
                {
                    Ok(c) => confirms.push((id, c)),
                    Err(e) => errors.push(e.to_string()),
                }
                i += 1;
                if confirms.len() >= 200 {
                    for (id, c) in confirms.drain(..) {
                        match c.await {
                            Ok(_) => acked.lock().unwrap().commands.push(id),
                            Err(e) => errors.push(e.to_string()),
                        }
                    }
                }
            }
            for (id, c) in confirms.drain(..) {
                match c.await {
                    Ok(_) => acked.lock().unwrap().commands.push(id),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            errors
        })
    };
    let mut m = Measured::default();
    let mut last = started;
    let mut idle_since = Instant::now();
    loop {
        let done = publisher.is_finished() && sent.lock().unwrap().is_empty();
        if done || idle_since.elapsed() > Duration::from_secs(60) {
            break;
        }
        let d = match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            _ => continue,
        };
        idle_since = Instant::now();
        let v: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
        for cause in v["causes"].as_array().into_iter().flatten() {
            let Some(id) = cause.as_str().and_then(|c| c.strip_prefix("command:")) else { continue };
            if let Some(t) = sent.lock().unwrap().remove(id) {
                m.ok += 1;
                m.latencies_us.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                last = Instant::now();
                window.add_permits(1);
            }
        }
    }
    let errors = publisher.await.map_err(|e| e.to_string())?;
    m.errors = errors.len() as u64;
    m.samples = errors.into_iter().take(3).collect();
    let lost = sent.lock().unwrap().len();
    if lost > 0 {
        m.errors += lost as u64;
        m.samples.push(format!("{lost} commands published but not seen applied within 60 s of the last one"));
    }
    m.secs = (last - started).as_secs_f64();
    let _ = conn.close(200, "bye".into()).await;
    Ok(m)
}

/// Delete the queues and the exchange the worker declared under its prefix.
pub async fn remove_topology(amqp: &str, prefix: &str) {
    let Ok(conn) = Connection::connect(amqp, ConnectionProperties::default()).await else { return };
    let Ok(ch) = conn.create_channel().await else { return };
    let mut queues = vec![format!("{prefix}.commands"), format!("{prefix}.commands.dead")];
    queues.extend([1000, 10000, 60000, 600000].map(|d| format!("{prefix}.commands.retry.{d}ms")));
    for q in queues {
        let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
    }
    let _ = ch.exchange_delete(format!("{prefix}.events").as_str().into(), ExchangeDeleteOptions::default()).await;
    let _ = conn.close(200, "bye".into()).await;
}
