//! The one path every change to an account takes: lock the account, load its open state, apply the rules,
//! write back what changed with the new entries and the idempotency key, commit.

use super::{Backend, Store, StoreError};
use crate::ledger::{Account, Applied, Check, Hold, HoldStatus, Lot, Op, Source, Subscription, Ts};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use std::collections::HashMap;

/// A change to apply to one account.
#[derive(Debug, Clone)]
pub struct Request {
    pub account: String,
    pub op: Op,
    /// Recorded on every entry the change makes: `event:..`, `command:..`, `debit:..`.
    pub cause: String,
    /// The idempotency key and a fingerprint of the request it belongs to (a repeat with the same fingerprint
    /// gets the first answer, with another one a conflict).
    pub key: Option<(String, String)>,
    /// Create the account when it does not exist (Stripe events, `account.created`); else it is an error.
    pub create: bool,
    pub now: Ts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied(Applied),
    /// The key was seen before with the same request: the first answer.
    Duplicate(Applied),
}

impl Outcome {
    pub fn applied(&self) -> &Applied {
        match self {
            Outcome::Applied(a) | Outcome::Duplicate(a) => a,
        }
    }
}

/// Loaded state plus a copy to diff against.
struct Loaded {
    account: Account,
    lots: HashMap<String, Lot>,
    subs: HashMap<String, Subscription>,
    holds: HashMap<String, Hold>,
    members: Vec<String>,
}

impl Store {
    /// Apply `req` in one transaction, serialized with every other change to the account.
    pub async fn execute(&self, req: Request) -> Result<Outcome, StoreError> {
        self.execute_checked(req, &|_| Ok(())).await
    }

    /// [`Store::execute`] refused by `check` on the account as loaded and brought up to date (a repeat of an
    /// idempotency key gets its first answer before any check).
    #[tracing::instrument(skip_all, fields(account = %req.account, cause = %req.cause))]
    pub async fn execute_checked(&self, req: Request, check: Check<'_>) -> Result<Outcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let result = self.execute_in_checked(&mut tx, req, check).await;
        match &result {
            // A refusal by the rules still keeps the due work found on the way: it was owed anyway.
            Ok(_) | Err(StoreError::Rule(_)) => tx.commit().await?,
            Err(_) => tx.rollback().await?,
        }
        result
    }

    /// Apply `req` inside the caller's write transaction (from [`Store::begin_write`]), so it commits together
    /// with whatever else the caller writes (the inbox row of the event that caused it).
    pub async fn execute_in(&self, tx: &mut Transaction<'static, Any>, req: Request) -> Result<Outcome, StoreError> {
        self.execute_in_checked(tx, req, &|_| Ok(())).await
    }

    async fn execute_in_checked(
        &self,
        tx: &mut Transaction<'static, Any>,
        req: Request,
        check: Check<'_>,
    ) -> Result<Outcome, StoreError> {
        let now = req.now;
        if req.create {
            sqlx::query(
                "INSERT INTO accounts (id, created_at, updated_at) VALUES ($1, $2, $2) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&req.account)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        let lock = match self.backend {
            Backend::Postgres => "SELECT balance, signup_granted FROM accounts WHERE id = $1 FOR UPDATE",
            Backend::Sqlite => "SELECT balance, signup_granted FROM accounts WHERE id = $1",
        };
        let row = sqlx::query(lock).bind(&req.account).fetch_optional(&mut **tx).await?;
        let Some(row) = row else {
            return Err(StoreError::UnknownAccount(req.account));
        };
        if let Some((key, fp)) = &req.key {
            let seen = sqlx::query("SELECT request, response FROM effects WHERE account_id = $1 AND key = $2")
                .bind(&req.account)
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?;
            if let Some(seen) = seen {
                let request: Option<String> = seen.try_get(0)?;
                if request.as_deref() != Some(fp.as_str()) {
                    return Err(StoreError::KeyConflict(key.clone()));
                }
                let response: String = seen.try_get(1)?;
                return Ok(Outcome::Duplicate(json(&response)?));
            }
        }
        let mut loaded = load(tx, &req.account, row.try_get(0)?, row.try_get::<i64, _>(1)? != 0, &req.op).await?;
        // Counted when written (a rolled-back transaction may count entries that did not stay; the metric is
        // an operational signal, the ledger is the record).
        let m = crate::metrics::global();
        let result = loaded.account.apply_checked(&req.op, now, &req.cause, check);
        save(tx, &loaded, now).await?;
        for e in &loaded.account.entries {
            m.entry(e.kind.as_str(), e.amount);
        }
        // Outgoing events, in the same transaction as the change.
        let before: i64 = row.try_get(0)?;
        let changed: Vec<&crate::ledger::Subscription> = loaded
            .account
            .subscriptions
            .iter()
            .filter(|s| match loaded.subs.get(&s.id) {
                None => true,
                Some(o) => {
                    o.terms != s.terms || o.status != s.status || o.ends_at != s.ends_at || o.finished != s.finished
                }
            })
            .collect();
        for ev in crate::ledger::events::events_of(&loaded.account, before, &changed, self.low_balance) {
            let mut data = ev.data;
            data["cause"] = serde_json::Value::String(req.cause.clone());
            self.outbox_insert(tx, ev.kind, Some(&req.account), data, now).await?;
        }
        let applied = result?;
        if let Some((key, fp)) = &req.key {
            let response = serde_json::to_string(&applied).expect("serializable");
            sqlx::query(
                "INSERT INTO effects (account_id, key, request, response, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&req.account)
            .bind(key)
            .bind(fp)
            .bind(response)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(Outcome::Applied(applied))
    }

    /// Apply due work for every account whose next due time has passed; returns how many were done. An account
    /// that fails is logged and skipped, so one bad account does not hold up the others.
    pub async fn tick(&self, now: Ts) -> Result<usize, StoreError> {
        let mut done = 0;
        let mut skipped: Vec<String> = Vec::new();
        loop {
            let ids: Vec<String> =
                sqlx::query_scalar("SELECT id FROM accounts WHERE next_due_at <= $1 ORDER BY next_due_at LIMIT $2")
                    .bind(now)
                    .bind(200 + skipped.len() as i64)
                    .fetch_all(&self.pool)
                    .await?;
            let ids: Vec<String> = ids.into_iter().filter(|id| !skipped.contains(id)).collect();
            if ids.is_empty() {
                return Ok(done);
            }
            for id in ids {
                let req =
                    Request { account: id.clone(), op: Op::Tick, cause: "tick".into(), key: None, create: false, now };
                match self.execute(req).await {
                    Ok(_) => done += 1,
                    Err(e @ StoreError::Db(_)) if skipped.is_empty() && done == 0 => return Err(e),
                    Err(e) => {
                        tracing::warn!(account = %id, error = %e, "due work failed; skipped until the next tick");
                        skipped.push(id);
                    }
                }
            }
        }
    }
}

const LOT_COLUMNS: &str = "id, source, amount, remaining, granted_at, expires_at, subscription_id, cycle_start, clawed";

fn lot_from_row(r: &AnyRow) -> Result<Lot, StoreError> {
    let source: String = r.try_get(1)?;
    Ok(Lot {
        id: r.try_get(0)?,
        source: Source::parse(&source).ok_or_else(|| StoreError::Corrupt(format!("lot source {source}")))?,
        amount: r.try_get(2)?,
        remaining: r.try_get(3)?,
        granted_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        subscription_id: r.try_get(6)?,
        cycle_start: r.try_get(7)?,
        clawed: r.try_get(8)?,
    })
}

fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) async fn load_members(tx: &mut Transaction<'static, Any>, account: &str) -> Result<Vec<String>, StoreError> {
    let q = sqlx::query_scalar("SELECT user_id FROM members WHERE account_id = $1 ORDER BY added_at, user_id");
    Ok(q.bind(account).fetch_all(&mut **tx).await?)
}

pub(super) async fn load_lots(tx: &mut Transaction<'static, Any>, account: &str) -> Result<Vec<Lot>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {LOT_COLUMNS} FROM lots WHERE account_id = $1 AND remaining > 0 ORDER BY granted_at, id"
    ));
    let rows = sqlx::query(sql).bind(account).fetch_all(&mut **tx).await?;
    rows.iter().map(lot_from_row).collect()
}

async fn load(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    balance: i64,
    signup: bool,
    op: &Op,
) -> Result<Loaded, StoreError> {
    let mut account = Account { id: id.to_owned(), balance, signup_granted: signup, ..Default::default() };
    account.lots = load_lots(tx, id).await?;
    let subs = sqlx::query("SELECT state FROM subscriptions WHERE account_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
    for r in subs {
        account.subscriptions.push(json(&r.try_get::<String, _>(0)?)?);
    }
    account.members = load_members(tx, id).await?;
    let holds =
        sqlx::query("SELECT state FROM holds WHERE account_id = $1 AND status = 'active' ORDER BY created_at, id")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
    for r in holds {
        account.holds.push(json(&r.try_get::<String, _>(0)?)?);
    }
    let ops = op.flatten();
    // The holds the op names, whatever their status, so a repeat or a late capture gets the right answer.
    for op in &ops {
        if let Op::HoldCreate { id: hold, .. } | Op::HoldCapture { id: hold, .. } | Op::HoldRelease { id: hold } = op
            && !account.holds.iter().any(|h| &h.id == hold)
        {
            let q = sqlx::query("SELECT state FROM holds WHERE account_id = $1 AND id = $2");
            if let Some(r) = q.bind(id).bind(hold).fetch_optional(&mut **tx).await? {
                account.holds.push(json(&r.try_get::<String, _>(0)?)?);
            }
        }
    }
    // Lots the op or a hold may touch although they have nothing left.
    let active = account.holds.iter().filter(|h| h.status == HoldStatus::Active);
    let mut wanted: Vec<String> = active.flat_map(|h| h.taken.iter().map(|(l, _)| l.clone())).collect();
    for op in &ops {
        match op {
            Op::Grant { lot_id, .. } => wanted.push(lot_id.clone()),
            Op::Refund { payment, .. } => wanted.push(payment.clone()),
            _ => {}
        }
    }
    for lot_id in wanted {
        if account.lots.iter().any(|l| l.id == lot_id) {
            continue;
        }
        let sql = sqlx::AssertSqlSafe(format!("SELECT {LOT_COLUMNS} FROM lots WHERE account_id = $1 AND id = $2"));
        if let Some(r) = sqlx::query(sql).bind(id).bind(&lot_id).fetch_optional(&mut **tx).await? {
            account.lots.push(lot_from_row(&r)?);
        }
    }
    Ok(Loaded {
        lots: account.lots.iter().map(|l| (l.id.clone(), l.clone())).collect(),
        subs: account.subscriptions.iter().map(|s| (s.id.clone(), s.clone())).collect(),
        holds: account.holds.iter().map(|h| (h.id.clone(), h.clone())).collect(),
        members: account.members.clone(),
        account,
    })
}

async fn save(tx: &mut Transaction<'static, Any>, l: &Loaded, now: Ts) -> Result<(), StoreError> {
    let a = &l.account;
    for lot in &a.lots {
        match l.lots.get(&lot.id) {
            Some(old) if old == lot => {}
            Some(_) => {
                sqlx::query("UPDATE lots SET amount = $3, remaining = $4, expires_at = $5, clawed = $6 WHERE account_id = $1 AND id = $2")
                    .bind(&a.id)
                    .bind(&lot.id)
                    .bind(lot.amount)
                    .bind(lot.remaining)
                    .bind(lot.expires_at)
                    .bind(lot.clawed)
                    .execute(&mut **tx)
                    .await?;
            }
            None => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "INSERT INTO lots (account_id, {LOT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ));
                sqlx::query(sql)
                    .bind(&a.id)
                    .bind(&lot.id)
                    .bind(lot.source.as_str())
                    .bind(lot.amount)
                    .bind(lot.remaining)
                    .bind(lot.granted_at)
                    .bind(lot.expires_at)
                    .bind(&lot.subscription_id)
                    .bind(lot.cycle_start)
                    .bind(lot.clawed)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    for s in &a.subscriptions {
        if l.subs.get(&s.id) != Some(s) {
            sqlx::query(
                "INSERT INTO subscriptions (id, account_id, state, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account_id, id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            )
            .bind(&s.id)
            .bind(&a.id)
            .bind(serde_json::to_string(s).expect("serializable"))
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
    }
    for h in &a.holds {
        if l.holds.get(&h.id) != Some(h) {
            let status = match h.status {
                HoldStatus::Active => "active",
                HoldStatus::Captured => "captured",
                HoldStatus::Released => "released",
                HoldStatus::Expired => "expired",
            };
            sqlx::query(
                "INSERT INTO holds (id, account_id, status, amount, deadline, state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (account_id, id) DO UPDATE SET status = excluded.status, state = excluded.state, updated_at = excluded.updated_at",
            )
            .bind(&h.id)
            .bind(&a.id)
            .bind(status)
            .bind(h.amount)
            .bind(h.deadline)
            .bind(serde_json::to_string(h).expect("serializable"))
            .bind(h.created_at)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
    }
    for m in a.members.iter().filter(|m| !l.members.contains(m)) {
        sqlx::query("INSERT INTO members (account_id, user_id, added_at) VALUES ($1, $2, $3)")
            .bind(&a.id)
            .bind(m)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    for m in l.members.iter().filter(|m| !a.members.contains(m)) {
        sqlx::query("DELETE FROM members WHERE account_id = $1 AND user_id = $2")
            .bind(&a.id)
            .bind(m)
            .execute(&mut **tx)
            .await?;
    }
    for e in &a.entries {
        sqlx::query(
            "INSERT INTO entries (account_id, at, kind, amount, lot_id, balance_after, cause, user_id, operation, shortfall, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&a.id)
        .bind(e.at)
        .bind(e.kind.as_str())
        .bind(e.amount)
        .bind(&e.lot_id)
        .bind(e.balance_after)
        .bind(&e.cause)
        .bind(&e.user_id)
        .bind(&e.operation)
        .bind(e.shortfall)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(
        "UPDATE accounts SET balance = $2, signup_granted = $3, next_due_at = $4, updated_at = $5 WHERE id = $1",
    )
    .bind(&a.id)
    .bind(a.balance)
    .bind(a.signup_granted as i64)
    .bind(a.next_due())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
