//! A closed-loop load driver: `conns` tasks, each sending one request after the other for a fixed time, every
//! latency recorded. Closed-loop like `pgbench -c`, so the worker and the baseline see the same kind of load.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations answered with something other than success, or not answered at all.
    pub errors: u64,
    /// The first few error descriptions, to show what went wrong.
    pub samples: Vec<String>,
    pub secs: f64,
    /// Latency of every successful operation, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 { self.ok as f64 / self.secs } else { 0.0 }
    }

    /// The `q` quantile (0..1) of the latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }
}

pub fn quantile_ms(lat: &[u32], q: f64) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    let mut v = lat.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i] as f64 / 1000.0
}

/// Run `op(task, n)` from `conns` tasks for `secs`. `op` answers `Ok(())` on success or an error description.
pub async fn drive<F, Fut>(conns: usize, secs: f64, op: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..conns {
        let (op, stop) = (op.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut m = Measured::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match op(task, n).await {
                    Ok(()) => {
                        m.ok += 1;
                        m.latencies_us.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Err(e) => {
                        m.errors += 1;
                        if m.samples.len() < 3 {
                            m.samples.push(e);
                        }
                    }
                }
                n += 1;
            }
            m
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Measured::default();
    for t in tasks {
        let m = t.await.expect("load task");
        all.ok += m.ok;
        all.errors += m.errors;
        all.latencies_us.extend(m.latencies_us);
        for s in m.samples {
            if all.samples.len() < 5 {
                all.samples.push(s);
            }
        }
    }
    // Operations still in flight when the time was up finish after it; count the time they took.
    all.secs = started.elapsed().as_secs_f64();
    all
}

/// A small deterministic generator (xorshift), so runs are repeatable without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
