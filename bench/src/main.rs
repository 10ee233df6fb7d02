//! The throughput benchmark of billing-worker (see `bench/README.md`).
//!
//! Why a benchmark of its own and not a timed test: speed depends on the machine, so it is measured side by side
//! with a naive baseline on the same PostgreSQL in the same run, printed next to it, and recorded; CI builds it
//! but does not judge it. Each run also checks the ledger it leaves behind, so a fast wrong worker cannot pass.

mod load;
mod naive;
mod report;
mod scenarios;
mod verify;
mod worker;

use report::{Row, Who};
use scenarios::Ctx;
use serde_json::json;
use std::path::{Path, PathBuf};
use worker::{RssSampler, Worker};

struct Opts {
    secs: u64,
    conns: usize,
    accounts: u64,
    worker: PathBuf,
    pg: String,
    amqp: String,
    out: PathBuf,
    backends: Vec<String>,
    scenarios: Vec<String>,
    naive: bool,
    /// Another worker binary, measured in the same rounds, alternating with `worker`.
    compare: Option<PathBuf>,
    rounds: usize,
}

const USAGE: &str = "billing-bench [--secs 10] [--conns 16] [--accounts 1000] [--worker PATH] [--pg URL] [--amqp URL]
              [--backends postgres,sqlite] [--scenarios ping,debits,hot,webhooks,holds,queue] [--no-naive] [--out FILE]
              [--compare OTHER_WORKER] [--rounds 1]";

fn opts() -> Result<Opts, String> {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.to_path_buf())).unwrap_or_default();
    let mut o = Opts {
        secs: 10,
        conns: 16,
        accounts: 1000,
        worker: exe_dir.join("billing-worker"),
        pg: "postgres://postgres@127.0.0.1:5432/test".into(),
        amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        out: PathBuf::from("bench/results/latest.json"),
        backends: vec!["postgres".into(), "sqlite".into()],
        scenarios: ["ping", "debits", "hot", "webhooks", "holds", "queue"].map(String::from).to_vec(),
        naive: true,
        compare: None,
        rounds: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{a}: expected a number, got {v:?}"));
        match a.as_str() {
            "--secs" => o.secs = num(val()?)?,
            "--conns" => o.conns = num(val()?)? as usize,
            "--accounts" => o.accounts = num(val()?)?,
            "--worker" => o.worker = val()?.into(),
            "--pg" => o.pg = val()?,
            "--amqp" => o.amqp = val()?,
            "--out" => o.out = val()?.into(),
            "--backends" => o.backends = val()?.split(',').map(String::from).collect(),
            "--scenarios" => o.scenarios = val()?.split(',').map(String::from).collect(),
            "--no-naive" => o.naive = false,
            "--compare" => o.compare = Some(val()?.into()),
            "--rounds" => o.rounds = num(val()?)? as usize,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.secs == 0 || o.conns == 0 || o.accounts == 0 || o.rounds == 0 {
        return Err("--secs, --conns, --accounts and --rounds must be above 0".into());
    }
    Ok(o)
}

async fn fresh_db(backend: &str, pg: &str, dir: &std::path::Path) -> Result<String, String> {
    match backend {
        "sqlite" => {
            let f = dir.join("bench.db");
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", f.display()));
            }
            Ok(format!("sqlite:{}", f.display()))
        }
        "postgres" => {
            let c = naive::parse_url(pg);
            let db = "bw_bench_worker";
            for sql in [format!("DROP DATABASE IF EXISTS {db}"), format!("CREATE DATABASE {db}")] {
                let s = std::process::Command::new("psql")
                    .args(["-h", &c.host, "-p", &c.port, "-U", &c.user, "-d", &c.db, "-qc", &sql])
                    .status()
                    .map_err(|e| e.to_string())?;
                if !s.success() {
                    return Err(format!("psql: {sql} failed"));
                }
            }
            Ok(format!("postgres://{}@{}:{}/{db}", c.user, c.host, c.port))
        }
        other => Err(format!("unknown backend {other}")),
    }
}

/// Start `path` on a fresh database of `backend`, seed it, run every scenario, stop it and check its ledger.
async fn measure(
    o: &Opts,
    who: Who,
    round: usize,
    path: &Path,
    backend: &str,
    naive: (Option<f64>, Option<f64>),
    dir: &Path,
) -> Result<(Vec<Row>, Vec<String>), String> {
    let secs = o.secs as f64;
    let db_url = fresh_db(backend, &o.pg, dir).await?;
    let amqp = o.scenarios.iter().any(|s| s == "queue").then_some(o.amqp.as_str());
    eprintln!("{backend}: starting {} on {db_url}", path.display());
    let log = dir.join(format!("{}-{backend}-round{round}.log", who.name()));
    let w = Worker::start(path, &db_url, amqp, &log).await?;
    let rss = RssSampler::start(w.pid().ok_or("worker has no pid")?);
    let ctx = Ctx::new(&w, o.conns);
    eprintln!("{backend}: seeding {} accounts", o.accounts);
    scenarios::seed(&ctx, o.accounts).await?;
    rss.take_peak_mib();
    let mut rows = Vec::new();
    for s in &o.scenarios {
        eprintln!("{backend}: {s} for {}s", o.secs);
        let (work, m, baseline) = match s.as_str() {
            "debits" => (
                "debits over HTTP, 1,000 accounts",
                scenarios::debits(&ctx, "spread", Some(o.accounts), o.conns, secs).await,
                naive.0,
            ),
            "hot" => (
                "debits over HTTP, one hot account",
                scenarios::debits(&ctx, "hot", None, o.conns, secs).await,
                naive.1,
            ),
            "webhooks" => {
                ("distinct signed webhooks", scenarios::webhooks(&ctx, o.accounts, o.conns, secs).await, None)
            }
            "holds" => ("holds with capture", scenarios::holds(&ctx, o.accounts, o.conns, secs).await, None),
            "queue" => {
                ("package.purchased via RabbitMQ", scenarios::queue(&ctx, &o.amqp, o.accounts, secs).await, None)
            }
            "ping" => ("GET /healthz (HTTP ceiling)", scenarios::ping(&ctx, o.conns, secs).await, None),
            other => return Err(format!("unknown scenario {other}")),
        };
        let rss_mib = Some(rss.take_peak_mib());
        rows.push(Row { who, round, work: work.into(), backend: backend.into(), m, rss_mib, baseline });
    }
    rss.stop();
    let acked = std::mem::take(&mut *ctx.acked.lock().unwrap());
    let prefix = w.prefix.clone();
    w.stop().await;
    if amqp.is_some() {
        scenarios::remove_topology(&o.amqp, &prefix).await;
    }
    let problems = verify::check(&db_url, &acked).await?;
    eprintln!(
        "{backend}: ledger check over {} debits, {} webhooks, {} holds, {} commands: {}",
        acked.debits.len(),
        acked.webhooks.len(),
        acked.holds.len(),
        acked.commands.len(),
        if problems.is_empty() { "ok".to_owned() } else { problems.join("; ") }
    );
    let name = path.display();
    Ok((rows, problems.into_iter().map(|p| format!("{backend} ({name}): {p}")).collect()))
}

async fn run() -> Result<bool, String> {
    let o = opts()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    for w in std::iter::once(&o.worker).chain(o.compare.iter()) {
        if !w.exists() {
            return Err(format!("{} not found: build it with `cargo build --release` (or pass --worker)", w.display()));
        }
    }
    let dir = std::env::temp_dir().join(format!("billing-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut rows: Vec<Row> = Vec::new();
    let mut problems_all = Vec::new();
    for round in 0..o.rounds {
        if o.rounds > 1 {
            eprintln!("round {} of {}", round + 1, o.rounds);
        }
        let (mut naive_spread, mut naive_hot) = (None, None);
        if o.naive {
            let admin = naive::parse_url(&o.pg);
            eprintln!(
                "naive baseline: pgbench -c {} for {}s, {} accounts and one hot account",
                o.conns, o.secs, o.accounts
            );
            let db = naive::prepare(&admin, o.accounts as usize)?;
            for (work, n) in
                [("naive debits, 1,000 accounts", o.accounts as usize), ("naive debits, one hot account", 1)]
            {
                let m = naive::run(&admin, &db, o.conns, o.secs, n, &dir.join("pgbench"))?;
                if n > 1 {
                    naive_spread = Some(m.rate());
                } else {
                    naive_hot = Some(m.rate());
                }
                let backend = "postgres".into();
                rows.push(Row { who: Who::Naive, round, work: work.into(), backend, m, rss_mib: None, baseline: None });
            }
        }
        // The compared worker goes first in every other round, so a drift of the machine weighs on both alike.
        let mut workers = vec![(Who::Worker, &o.worker)];
        if let Some(c) = &o.compare {
            workers.push((Who::Compare, c));
            if round % 2 == 1 {
                workers.reverse();
            }
        }
        for backend in &o.backends {
            for (who, path) in &workers {
                let (r, p) = measure(&o, *who, round, path, backend, (naive_spread, naive_hot), &dir).await?;
                rows.extend(r);
                problems_all.extend(p);
            }
        }
    }
    report::print_table(&rows, o.rounds, o.compare.is_some());
    let unexpected: u64 = rows.iter().map(|r| r.m.errors).sum();
    let report = json!({
        "at": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "secs_per_run": o.secs, "connections": o.conns, "accounts": o.accounts, "rounds": o.rounds,
        "worker": o.worker.display().to_string(),
        "compare": o.compare.as_ref().map(|c| c.display().to_string()),
        "summary": report::summary_json(&rows),
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "ledger_problems": problems_all,
    });
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&report).unwrap()).map_err(|e| e.to_string())?;
    println!("\nwritten to {}", o.out.display());
    if !problems_all.is_empty() || unexpected > 0 {
        println!("ledger problems or unexpected errors: see above");
        return Ok(false);
    }
    println!("ledger check: ok");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(true)
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("billing-bench: {e}");
            std::process::exit(2);
        }
    }
}
