//! The naive baseline: one PostgreSQL transaction per debit (`UPDATE balance ... WHERE balance >= 1` and an
//! `INSERT` of an entry), driven by `pgbench -c CONNS` on the same server, over 1,000 accounts and on one hot
//! account. Its per-transaction log gives the latencies.

use crate::load::Measured;
use std::path::Path;
use std::process::Command;

const SCRIPT: &str = "BEGIN;
UPDATE naive_accounts SET balance = balance - 1 WHERE id = :a AND balance >= 1;
INSERT INTO naive_entries (account_id, amount) VALUES (:a, -1);
END;
";

fn psql(admin: &Conn, db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-h",
            &admin.host,
            "-p",
            &admin.port,
            "-U",
            &admin.user,
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atqc",
            sql,
        ])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if !out.status.success() {
        return Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Host, port and user of a `postgres://user@host:port/db` URL.
pub struct Conn {
    pub host: String,
    pub port: String,
    pub user: String,
    pub db: String,
}

pub fn parse_url(url: &str) -> Conn {
    let rest = url.trim_start_matches("postgres://").trim_start_matches("postgresql://");
    let (auth, rest) = rest.split_once('@').unwrap_or(("postgres", rest));
    let user = auth.split(':').next().unwrap_or("postgres").to_owned();
    let (hostport, db) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    Conn { host: host.into(), port: port.into(), user, db: db.split('?').next().unwrap_or(db).into() }
}

/// Create the baseline's database with `accounts` rows, each with credits enough for any run.
pub fn prepare(admin: &Conn, accounts: usize) -> Result<String, String> {
    let db = "bw_bench_naive";
    psql(admin, &admin.db, &format!("DROP DATABASE IF EXISTS {db}"))?;
    psql(admin, &admin.db, &format!("CREATE DATABASE {db}"))?;
    psql(
        admin,
        db,
        &format!(
            "CREATE TABLE naive_accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0));
             CREATE TABLE naive_entries (id BIGSERIAL PRIMARY KEY, account_id INT NOT NULL, amount BIGINT NOT NULL,
                 at TIMESTAMPTZ NOT NULL DEFAULT now());
             INSERT INTO naive_accounts SELECT g, 1000000000000 FROM generate_series(1, {accounts}) g;"
        ),
    )?;
    Ok(db.into())
}

/// Run the naive debit with `pgbench` for `secs`: over `accounts` accounts, or on account 1 alone.
pub fn run(admin: &Conn, db: &str, conns: usize, secs: u64, accounts: usize, dir: &Path) -> Result<Measured, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for f in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let _ = std::fs::remove_file(f.path());
    }
    let script = dir.join("naive.sql");
    let pick = if accounts > 1 { format!("\\set a random(1, {accounts})\n") } else { "\\set a 1\n".into() };
    std::fs::write(&script, format!("{pick}{SCRIPT}")).map_err(|e| e.to_string())?;
    let prefix = dir.join("log");
    let out = Command::new("pgbench")
        .args(["-h", &admin.host, "-p", &admin.port, "-U", &admin.user, "-n", "-M", "prepared"])
        .args(["-c", &conns.to_string(), "-j", "2", "-T", &secs.to_string()])
        .arg("-f")
        .arg(&script)
        .arg("-l")
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(db)
        .output()
        .map_err(|e| format!("pgbench (from Debian's postgresql package): {e}"))?;
    if !out.status.success() {
        return Err(format!("pgbench: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("number of failed transactions: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // Per-transaction log lines: client_id transaction_no latency_us script_no epoch_s epoch_us.
    let mut m = Measured { secs: secs as f64, errors: failed, ..Default::default() };
    for f in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        if !f.file_name().to_string_lossy().starts_with("log") {
            continue;
        }
        let text = std::fs::read_to_string(f.path()).map_err(|e| e.to_string())?;
        for line in text.lines() {
            if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse::<u32>().ok()) {
                m.ok += 1;
                m.latencies_us.push(us);
            }
        }
    }
    Ok(m)
}
