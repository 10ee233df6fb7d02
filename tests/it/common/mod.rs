//! Test setup shared by the integration tests: a fresh database per test on SQLite (a temp file) or PostgreSQL
//! (a new database on the server of `TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! A missing PostgreSQL fails the test: CI must not pass by skipping.
#![allow(dead_code)]

use billing_worker::store::Store;
use sqlx::Connection;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A small seeded generator (xorshift), so a run that fails can be repeated with its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

pub fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A URL for a new, empty database of the given backend.
pub async fn fresh_url(backend: &str) -> String {
    match backend {
        "sqlite" => {
            let dir = std::env::temp_dir().join("billing-worker-tests");
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite:{}", dir.join(format!("t_{}.db", unique())).display())
        }
        "postgres" => {
            sqlx::any::install_default_drivers();
            let admin = admin_url();
            let mut conn = sqlx::AnyConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is required for these tests ({admin}): {e}"));
            let name = format!("bw_test_{}", unique());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
            let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
            format!("{base}/{name}")
        }
        other => panic!("unknown backend {other}"),
    }
}

pub async fn fresh_store(backend: &str) -> Store {
    Store::open(&fresh_url(backend).await).await.unwrap()
}

/// Generate each listed async test fn (taking a `Store`) once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::common::fresh_store("sqlite").await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::common::fresh_store("postgres").await).await
                }
            }
        )*
    };
}

pub mod amqp;
pub mod proc;
pub mod stripe;

use billing_worker::clock::Clock;
use billing_worker::config::Config;
use billing_worker::serve::{Running, start};

use std::collections::HashMap;

pub const SECRET: &str = "whsec_test_secret";

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap()
}

/// A worker serving on 127.0.0.1 (port 0) with a fresh database and a clock the test moves.
pub struct TestApp {
    /// The broker side when AMQP_URL was given.
    pub broker: Option<billing_worker::queue::Broker>,
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Clock,
    pub store: Store,
    pub db_url: String,
    running: Option<Running>,
}

pub async fn spawn_app(backend: &str, t0: i64) -> TestApp {
    spawn_app_with(backend, t0, &[]).await
}

/// `extra` environment variables override the defaults (a catalog file, the API base, ...).
pub async fn spawn_app_with(backend: &str, t0: i64, extra: &[(&str, &str)]) -> TestApp {
    if std::env::var("BW_TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt().with_test_writer().with_max_level(tracing::Level::DEBUG).try_init();
    }
    let db_url = match extra.iter().find(|(k, _)| *k == "DATABASE_URL") {
        Some((_, url)) => url.to_string(), // a second worker on an existing database
        None => fresh_url(backend).await,
    };
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("DATABASE_URL".into(), db_url.clone());
    vars.insert("BILLING_LISTEN".into(), "127.0.0.1:0".into());
    vars.insert("STRIPE_WEBHOOK_SECRET".into(), format!("whsec_old_one,{SECRET}"));
    vars.insert("BILLING_TICK_SECS".into(), "3600".into());
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let clock = Clock::manual(at(t0));
    let running = start(config, clock.clone()).await.unwrap();
    TestApp {
        broker: running.broker.clone(),
        base: format!("http://{}", running.addr),
        client: client(),
        clock,
        store: running.state.store.clone(),
        db_url,
        running: Some(running),
    }
}

impl TestApp {
    /// POST a webhook body signed now with the test secret.
    pub async fn webhook(&self, body: &str) -> reqwest::Response {
        let sig = stripe::signature(SECRET, self.clock.now().secs(), body);
        self.webhook_raw(body.as_bytes().to_vec(), Some(&sig)).await
    }

    pub async fn webhook_raw(&self, body: Vec<u8>, signature: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/webhooks/stripe", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            req = req.header("Stripe-Signature", s);
        }
        req.send().await.unwrap()
    }

    /// POST and expect 200 with the given inbox status.
    pub async fn deliver(&self, body: &str) -> serde_json::Value {
        let resp = self.webhook(body).await;
        let status = resp.status();
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{json}");
        json
    }

    pub async fn balance(&self, account: &str) -> i64 {
        (self.store.account(account, self.clock.now()).await.unwrap().balance).get()
    }

    /// The worker's state (its intake, commander, store).
    pub fn state(&self) -> &billing_worker::http::AppState {
        &self.running.as_ref().expect("running").state
    }

    /// Decide again the waiting events due by the app's clock (what the periodic tick does).
    pub async fn retry_due(&self) -> usize {
        let s = self.state();
        billing_worker::retry::due(&s.intake, &s.commander, self.clock.now()).await.unwrap()
    }

    /// The running server, taken to be stopped by the test itself.
    pub fn take_running(&mut self) -> billing_worker::serve::Running {
        self.running.take().expect("running")
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

impl TestApp {
    /// A fresh API key of `scope` ("service" or "admin").
    pub async fn key(&self, scope: &str) -> String {
        let scope = billing_worker::store::Scope::parse(scope).unwrap();
        self.store.create_key("test", scope, self.clock.now()).await.unwrap().0
    }

    /// Call the API; returns the status and the JSON body (Null when not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// Create an account through the command API (free plan, 5 signup credits).
    pub async fn account(&self, admin: &str, account: &str) {
        let cmd =
            serde_json::json!({"type": "account.created", "id": format!("create-{account}"), "account_id": account});
        let (s, b) = self.call("POST", "/v1/commands", Some(admin), Some(cmd)).await;
        assert_eq!(s, 200, "{b}");
    }

    /// Give an account `credits` through an admin adjustment.
    pub async fn grant(&self, admin: &str, account: &str, credits: i64) {
        let body = serde_json::json!({"credits": credits, "reason": "test", "idempotency_key": format!("grant-{account}-{credits}-{}", self.clock.now().secs())});
        let (s, b) =
            self.call("POST", &format!("/v1/admin/accounts/{account}/adjustments"), Some(admin), Some(body)).await;
        assert_eq!(s, 201, "{b}");
    }
}

/// An instant by its seconds.
pub fn at(secs: i64) -> billing_worker::time::UnixTime {
    billing_worker::time::UnixTime::from_secs(secs)
}

/// A count of credits.
pub fn cr(n: i64) -> billing_worker::ledger::Credits {
    billing_worker::ledger::Credits::new(n).unwrap()
}
