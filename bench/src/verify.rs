//! The ledger check after a run: every acknowledged debit, webhook, hold and command is there exactly once,
//! and every balance equals the sum of its entries and of its lots.

use crate::scenarios::Acked;
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// Problems found; empty when the ledger is right.
pub async fn check(db_url: &str, acked: &Acked) -> Result<Vec<String>, String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(2).connect(db_url).await.map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    let q = |sql: &'static str| sqlx::query(sql);

    // Debits: one idempotency record per acknowledged key, and one debit entry of one credit per key.
    let rows = q("SELECT account_id, key FROM effects WHERE key LIKE 'debit:%'")
        .fetch_all(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let stored: HashSet<(String, String)> = rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1).trim_start_matches("debit:").to_owned()))
        .collect();
    let missing = acked.debits.iter().filter(|d| !stored.contains(*d)).count();
    if missing > 0 {
        problems.push(format!("{missing} acknowledged debits are not in the ledger"));
    }
    let rows = q("SELECT cause, COUNT(*), CAST(SUM(amount) AS BIGINT) FROM entries WHERE kind = 'debit' AND cause LIKE 'debit:%' GROUP BY cause")
        .fetch_all(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let mut debit_entries: HashMap<String, (i64, i64)> = HashMap::new();
    for r in &rows {
        debit_entries.insert(r.get::<String, _>(0), (r.get::<i64, _>(1), r.get::<i64, _>(2)));
    }
    let twice = debit_entries.values().filter(|(n, sum)| *n != 1 || *sum != -1).count();
    if twice > 0 {
        problems.push(format!("{twice} debits were applied more or less than once"));
    }
    let without_entry = acked.debits.iter().filter(|(_, k)| !debit_entries.contains_key(&format!("debit:{k}"))).count();
    if without_entry > 0 {
        problems.push(format!("{without_entry} acknowledged debits have no ledger entry"));
    }

    // Webhooks: each event applied once, each payment one package lot of 25 credits.
    let rows = q("SELECT event_id, status FROM inbox WHERE source = 'stripe'")
        .fetch_all(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let inbox: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let rows = q("SELECT id, account_id, amount FROM lots WHERE source = 'package'")
        .fetch_all(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let lots: HashMap<String, (String, i64)> = rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
    let bad = acked
        .webhooks
        .iter()
        .filter(|(ev, pi, acct)| {
            inbox.get(ev).map(String::as_str) != Some("applied") || lots.get(pi) != Some(&(acct.clone(), 25))
        })
        .count();
    if bad > 0 {
        problems.push(format!("{bad} acknowledged webhooks are not applied exactly once"));
    }

    // Holds: captured.
    let rows = q("SELECT id, status FROM holds").fetch_all(&pool).await.map_err(|e| e.to_string())?;
    let holds: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let bad = acked.holds.iter().filter(|h| holds.get(*h).map(String::as_str) != Some("captured")).count();
    if bad > 0 {
        problems.push(format!("{bad} captured holds are not captured in the ledger"));
    }

    // Commands: applied once, one lot per payment_ref.
    let rows = q("SELECT event_id, status FROM inbox WHERE source = 'queue' AND event_id LIKE 'bench-cmd-%'")
        .fetch_all(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let cmds: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let bad = acked.commands.iter().filter(|c| cmds.get(*c).map(String::as_str) != Some("applied")).count();
    if bad > 0 {
        problems.push(format!("{bad} confirmed commands are not applied"));
    }
    let cmd_lots = lots.keys().filter(|l| l.starts_with("pay_bench_")).count();
    if cmd_lots != cmds.values().filter(|s| *s == "applied").count() {
        problems.push(format!("{cmd_lots} command lots for {} applied commands", cmds.len()));
    }

    // Every balance equals the sum of its entries and of what remains in its lots.
    let row = q("SELECT COUNT(*) FROM accounts a WHERE a.balance <> COALESCE((SELECT SUM(amount) FROM entries e WHERE e.account_id = a.id), 0) \
                 OR a.balance <> COALESCE((SELECT SUM(remaining) FROM lots l WHERE l.account_id = a.id), 0)")
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let off: i64 = row.get(0);
    if off > 0 {
        problems.push(format!("{off} accounts whose balance is not the sum of their entries and lots"));
    }
    pool.close().await;
    Ok(problems)
}
