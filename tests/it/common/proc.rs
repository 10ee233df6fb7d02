//! The worker as a process, for the tests about processes (SIGTERM, SIGKILL, restarts): the real binary on a
//! database and the broker, its log kept in a file, and a check of the ledger it leaves.
#![allow(dead_code)]

use sqlx::Row;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_billing-worker")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

/// A folder for this test's logs, kept after the test so a failure can be read.
pub fn log_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("billing-worker-tests").join(format!("{test}_{}", super::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A new admin key on the database of `db_url` (this also creates its tables).
pub fn admin_key(db_url: &str) -> String {
    let out = Command::new(bin())
        .args(["keys", "create", "--scope", "admin", "--name", "test"])
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "keys create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub struct Proc {
    pub base: String,
    child: Child,
}

impl Proc {
    /// Start `serve` on 127.0.0.1:`port` with exactly `env` (and PATH), appending its log to `log`.
    pub fn spawn(port: u16, env: &[(&str, &str)], log: &Path) -> Proc {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BILLING_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc { base: format!("http://127.0.0.1:{port}"), child: cmd.spawn().unwrap() }
    }

    /// Wait until `/readyz` says the database (and, when `broker`, the broker) is up.
    pub async fn ready(&self, broker: bool) {
        let client = super::client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if body["database"] == "up" && (!broker || body["broker"] == "up") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the worker at {} did not become ready", self.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (`TERM`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([format!("-{sig}"), self.pid().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -{sig}");
    }

    /// The exit status, once the process ended, waiting at most `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, as a crash or the OOM killer would, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What is wrong with the ledger at `db_url`: a debit applied more than once (the tests debit one credit at a
/// time, so a debit is one entry), a balance that is not the sum
/// of its entries or of what remains in its lots. Empty when it is right.
pub async fn ledger_problems(db_url: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(db_url).await.unwrap();
    let mut problems = vec![];
    let twice: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT cause FROM entries WHERE kind = 'debit' GROUP BY account_id, cause \
         HAVING COUNT(*) > 1) t",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    if twice > 0 {
        problems.push(format!("{twice} debits applied more than once"));
    }
    pool.close().await;
    let off = unbalanced(db_url).await;
    if !off.is_empty() {
        problems.push(format!("{} balances are not the sum of their entries and lots", off.len()));
    }
    problems
}

/// Accounts whose balance is below zero, or not the sum of their entries and of what their lots have left.
pub async fn unbalanced(db_url: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(db_url).await.unwrap();
    let off = sqlx::query_scalar(
        "SELECT a.id FROM accounts a WHERE a.balance <> COALESCE((SELECT SUM(amount) FROM entries e \
         WHERE e.account_id = a.id), 0) OR a.balance <> COALESCE((SELECT SUM(remaining) FROM lots l \
         WHERE l.account_id = a.id), 0) OR a.balance < 0",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    off
}

/// Rows of a one-column query, as text.
pub async fn strings(db_url: &str, sql: &'static str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(db_url).await.unwrap();
    let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}
