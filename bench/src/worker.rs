//! The worker under test: a release binary started as a child process on a fresh database, with the broker,
//! its resident memory sampled while the load runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub const SECRET: &str = "whsec_bench_secret";

pub struct Worker {
    pub base: String,
    pub prefix: String,
    pub admin_key: String,
    child: Child,
    bin: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

impl Worker {
    pub async fn start(bin: &Path, db_url: &str, amqp: Option<&str>, log: &Path) -> Result<Worker, String> {
        let port = free_port();
        let prefix = format!("bench{}_{}", std::process::id(), port);
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("BILLING_LISTEN", format!("127.0.0.1:{port}"))
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("BILLING_AMQP_PREFIX", &prefix)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).map_err(|e| e.to_string())?)
            .kill_on_drop(true);
        for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("BILLING_BENCH_WORKER_")) {
            // BILLING_BENCH_WORKER_BILLING_AMQP_PREFETCH=64 passes BILLING_AMQP_PREFETCH=64 (tuning runs).
            cmd.env(k.trim_start_matches("BILLING_BENCH_WORKER_"), v);
        }
        if let Some(a) = amqp {
            cmd.env("AMQP_URL", a);
        }
        let child = cmd.spawn().map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if body["database"] == "up" && (amqp.is_none() || body["broker"] == "up") {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(format!("the worker did not become ready; see {}", log.display()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out = Command::new(bin)
            .args(["keys", "create", "--scope", "admin", "--name", "bench"])
            .env("DATABASE_URL", db_url)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("keys create: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let admin_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok(Worker { base, prefix, admin_key, child, bin: bin.into() })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stop with SIGTERM (a clean shutdown), SIGKILL after 30 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        let _ = &self.bin;
    }
}

/// Samples a process's resident set size every 50 ms; `peak_mib` is the largest seen since the last reset.
#[derive(Clone)]
pub struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let s = RssSampler { peak_kib: Arc::new(AtomicU64::new(0)), stop: Arc::new(AtomicBool::new(false)) };
        let me = s.clone();
        tokio::spawn(async move {
            while !me.stop.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    me.peak_kib.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        s
    }

    /// The peak since the last call, in MiB, and start over.
    pub fn take_peak_mib(&self) -> f64 {
        self.peak_kib.swap(0, Ordering::Relaxed) as f64 / 1024.0
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
