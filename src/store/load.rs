//! Loading accounts into a batch: locked in one statement in one order (so batches on different lanes and
//! instances cannot deadlock on them), with their open lots, subscriptions, active holds and members read for
//! all of them at once.

use super::batch::{Effect, Tx};
use super::{Backend, StoreError};
use crate::ledger::{Account, Entry, Hold, HoldStatus, Lot, Source, Subscription};
use crate::time::Ts;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::{HashMap, HashSet};

/// An account as loaded (`base`) and as changed so far (`account`), with the entries not yet written.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub account: Account,
    pub base: Base,
    pub entries: Vec<(Entry, Ts)>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub dirty: bool,
    /// Lots and holds (`hold:ID`) looked up by id in this batch, found or not.
    pub probed: HashSet<String>,
}

/// The rows of an account as they are in the database.
#[derive(Debug, Clone, Default)]
pub(crate) struct Base {
    pub next_due: Option<Ts>,
    pub lots: HashMap<String, Lot>,
    pub subs: HashMap<String, Subscription>,
    pub holds: HashMap<String, Hold>,
    pub members: Vec<String>,
}

impl Slot {
    /// Take the entries the rules just produced, to be written with the batch.
    pub fn note_change(&mut self, now: Ts) {
        self.entries.extend(self.account.entries.drain(..).map(|e| (e, now)));
        self.updated_at = now;
        self.dirty = true;
    }

    pub fn add_loaded_lot(&mut self, lot: Lot) {
        self.base.lots.insert(lot.id.clone(), lot.clone());
        self.account.lots.push(lot);
    }

    pub fn add_loaded_hold(&mut self, hold: Hold) {
        self.base.holds.insert(hold.id.clone(), hold.clone());
        self.account.holds.push(hold);
    }

    /// After a flush: the database now holds what the account holds.
    pub fn rebase(&mut self) {
        let a = &self.account;
        self.base = Base {
            next_due: a.next_due(),
            lots: a.lots.iter().map(|l| (l.id.clone(), l.clone())).collect(),
            subs: a.subscriptions.iter().map(|s| (s.id.clone(), s.clone())).collect(),
            holds: a.holds.iter().map(|h| (h.id.clone(), h.clone())).collect(),
            members: a.members.clone(),
        };
        self.entries.clear();
        self.dirty = false;
    }
}

/// `$from, $from+1, ...` for `n` parameters.
pub(crate) fn params(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

pub(crate) const LOT_COLUMNS: &str =
    "id, source, amount, remaining, granted_at, expires_at, subscription_id, cycle_start, clawed";

pub(crate) fn lot_from_row(r: &AnyRow) -> Result<Lot, StoreError> {
    let source: String = r.try_get("source")?;
    Ok(Lot {
        id: r.try_get("id")?,
        source: Source::parse(&source).ok_or_else(|| StoreError::Corrupt(format!("lot source {source}")))?,
        amount: r.try_get("amount")?,
        remaining: r.try_get("remaining")?,
        granted_at: r.try_get("granted_at")?,
        expires_at: r.try_get("expires_at")?,
        subscription_id: r.try_get("subscription_id")?,
        cycle_start: r.try_get("cycle_start")?,
        clawed: r.try_get("clawed")?,
    })
}

fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Rows of `sql_head` + ` IN (...)` + `sql_tail` for `ids`, in chunks.
async fn rows_for(tx: &mut Tx, head: &str, ids: &[String], tail: &str) -> Result<Vec<AnyRow>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let sql = format!("{head} IN ({}){tail}", params(1, chunk.len()));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for id in chunk {
            q = q.bind(id);
        }
        out.extend(q.fetch_all(&mut **tx).await?);
    }
    Ok(out)
}

/// Lock the existing accounts of `ids` (sorted, one statement) and load them.
pub(crate) async fn lock_and_load(
    tx: &mut Tx,
    backend: Backend,
    ids: &[String],
) -> Result<HashMap<String, Slot>, StoreError> {
    load_accounts(tx, ids, backend == Backend::Postgres).await
}

/// Load the existing accounts of `ids`, locking their rows (in id order) when `lock`.
pub(crate) async fn load_accounts(
    tx: &mut Tx,
    ids: &[String],
    lock: bool,
) -> Result<HashMap<String, Slot>, StoreError> {
    let lock = if lock { " ORDER BY id FOR UPDATE" } else { " ORDER BY id" };
    let heads = rows_for(
        tx,
        "SELECT id, balance, signup_granted, next_due_at, created_at, updated_at FROM accounts WHERE id",
        ids,
        lock,
    )
    .await?;
    let mut slots: HashMap<String, Slot> = HashMap::with_capacity(heads.len());
    for r in &heads {
        let id: String = r.try_get("id")?;
        let mut account = Account::new(id.clone());
        account.balance = r.try_get("balance")?;
        account.signup_granted = r.try_get::<i64, _>("signup_granted")? != 0;
        let base = Base { next_due: r.try_get("next_due_at")?, ..Default::default() };
        let slot = Slot {
            account,
            base,
            entries: Vec::new(),
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            dirty: false,
            probed: HashSet::new(),
        };
        slots.insert(id, slot);
    }
    if slots.is_empty() {
        return Ok(slots);
    }
    let found: Vec<String> = {
        let mut v: Vec<String> = slots.keys().cloned().collect();
        v.sort();
        v
    };
    let lots = format!("SELECT account_id, {LOT_COLUMNS} FROM lots WHERE account_id");
    for r in rows_for(tx, &lots, &found, " AND remaining > 0 ORDER BY granted_at, id").await? {
        let account: String = r.try_get("account_id")?;
        slots.get_mut(&account).expect("loaded").add_loaded_lot(lot_from_row(&r)?);
    }
    let subs = "SELECT account_id, id, state FROM subscriptions WHERE account_id";
    for r in rows_for(tx, subs, &found, " ORDER BY id").await? {
        let account: String = r.try_get("account_id")?;
        let s: Subscription = json(&r.try_get::<String, _>("state")?)?;
        let slot = slots.get_mut(&account).expect("loaded");
        slot.base.subs.insert(s.id.clone(), s.clone());
        slot.account.subscriptions.push(s);
    }
    let holds = "SELECT account_id, state FROM holds WHERE status = 'active' AND account_id";
    for r in rows_for(tx, holds, &found, " ORDER BY created_at, id").await? {
        let account: String = r.try_get("account_id")?;
        let h: Hold = json(&r.try_get::<String, _>("state")?)?;
        slots.get_mut(&account).expect("loaded").add_loaded_hold(h);
    }
    let members = "SELECT account_id, user_id FROM members WHERE account_id";
    for r in rows_for(tx, members, &found, " ORDER BY added_at, user_id").await? {
        let account: String = r.try_get("account_id")?;
        let slot = slots.get_mut(&account).expect("loaded");
        let user: String = r.try_get("user_id")?;
        slot.base.members.push(user.clone());
        slot.account.members.push(user);
    }
    // Lots an active hold took from but that have nothing left: the release gives credits back there.
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (id, slot) in &slots {
        for h in slot.account.holds.iter().filter(|h| h.status == HoldStatus::Active) {
            for (lot, _) in &h.taken {
                if !slot.account.lots.iter().any(|l| &l.id == lot) && !wanted.contains(&(id.clone(), lot.clone())) {
                    wanted.push((id.clone(), lot.clone()));
                }
            }
        }
    }
    for (account, lot_id) in wanted {
        if let Some(lot) = lot(tx, &account, &lot_id).await? {
            slots.get_mut(&account).expect("loaded").add_loaded_lot(lot);
        }
    }
    Ok(slots)
}

/// One lot by id, whatever it has left.
pub(crate) async fn lot(tx: &mut Tx, account: &str, id: &str) -> Result<Option<Lot>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {LOT_COLUMNS} FROM lots WHERE account_id = $1 AND id = $2"));
    let row = sqlx::query(sql).bind(account).bind(id).fetch_optional(&mut **tx).await?;
    row.as_ref().map(lot_from_row).transpose()
}

/// One hold by id, whatever its status.
pub(crate) async fn hold(tx: &mut Tx, account: &str, id: &str) -> Result<Option<Hold>, StoreError> {
    let q = sqlx::query_scalar::<_, String>("SELECT state FROM holds WHERE account_id = $1 AND id = $2");
    match q.bind(account).bind(id).fetch_optional(&mut **tx).await? {
        Some(text) => Ok(Some(json(&text)?)),
        None => Ok(None),
    }
}

/// The stored answers of idempotency keys (account, key).
pub(crate) async fn effects(
    tx: &mut Tx,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), Effect>, StoreError> {
    let mut out = HashMap::new();
    for chunk in keys.chunks(400) {
        let pairs: Vec<String> = (0..chunk.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
        let sql = format!(
            "SELECT account_id, key, request, response FROM effects WHERE (account_id, key) IN ({})",
            pairs.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for (a, k) in chunk {
            q = q.bind(a).bind(k);
        }
        for r in q.fetch_all(&mut **tx).await? {
            let id = (r.try_get("account_id")?, r.try_get("key")?);
            out.insert(id, Effect { request: r.try_get("request")?, response: r.try_get("response")? });
        }
    }
    Ok(out)
}
