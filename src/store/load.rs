//! Loading accounts into a batch: locked in one statement in one order (so batches on different lanes and
//! instances cannot deadlock on them), with their open lots, subscriptions, active holds and members read for
//! all of them at once; or taken from the lane's memory when their version shows nobody changed them since.

use super::Tx;
use super::pending::Effect;
use super::{Backend, StoreError, pg};
use crate::ledger::{Account, Entry, Hold, HoldId, HoldStatus, Lot, LotId, Source, Subscription};
use crate::time::UnixTime;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::{HashMap, HashSet};

/// An account as loaded (`base`) and as changed so far (`account`), with the entries not yet written.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub account: Account,
    pub base: Base,
    pub entries: Vec<(Entry, UnixTime)>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// The account row's version as loaded: every write of the account's rows bumps it.
    pub version: i64,
    pub dirty: bool,
    /// Created in this batch: not in the database yet.
    pub is_new: bool,
    /// Lots and holds (`hold:ID`) looked up by id, found or not (valid while the version is).
    pub probed: HashSet<String>,
}

/// The rows of an account as they are in the database.
#[derive(Debug, Clone, Default)]
pub(crate) struct Base {
    pub next_due: Option<UnixTime>,
    pub lots: HashMap<LotId, Lot>,
    pub subs: HashMap<String, Subscription>,
    pub holds: HashMap<HoldId, Hold>,
    pub members: Vec<String>,
}

impl Slot {
    /// An account created now (written with the batch).
    pub fn new_account(account: Account, now: UnixTime) -> Slot {
        Slot {
            account,
            base: Base::default(),
            entries: Vec::new(),
            created_at: now,
            updated_at: now,
            version: 0,
            dirty: true,
            is_new: true,
            probed: HashSet::new(),
        }
    }

    /// Take the entries the rules just produced, to be written with the batch.
    pub fn note_change(&mut self, now: UnixTime) {
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

    /// After a flush: the database now holds what the account holds, at the next version.
    pub fn rebase(&mut self) {
        let a = &mut self.account;
        // Lots emptied and holds settled stay in the database; memory keeps what the next change may touch.
        let active: HashSet<LotId> = a
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Active)
            .flat_map(|h| h.taken.iter().map(|(l, _)| l.clone()))
            .collect();
        a.lots.retain(|l| !l.remaining.is_zero() || active.contains(&l.id));
        a.holds.retain(|h| h.status == HoldStatus::Active);
        self.base = Base {
            next_due: a.next_due(),
            lots: a.lots.iter().map(|l| (l.id.clone(), l.clone())).collect(),
            subs: a.subscriptions.iter().map(|s| (s.id.clone(), s.clone())).collect(),
            holds: a.holds.iter().map(|h| (h.id.clone(), h.clone())).collect(),
            members: a.members.clone(),
        };
        self.entries.clear();
        self.probed.clear();
        self.version += 1;
        self.dirty = false;
        self.is_new = false;
    }
}

/// Accounts a lane keeps between batches, by id, valid while their row's version is unchanged.
#[derive(Debug, Default)]
pub(crate) struct AccountCache {
    slots: HashMap<String, Slot>,
}

/// Accounts kept in memory per lane at most (a few KiB each).
const CACHE_MAX: usize = 4096;

impl AccountCache {
    fn take(&mut self, id: &str, version: i64) -> Option<Slot> {
        let slot = self.slots.remove(id)?;
        (slot.version == version).then_some(slot)
    }

    /// Whether the lane holds `id` in memory (valid or not: an optimistic batch checks it as it writes).
    pub fn holds(&self, id: &str) -> bool {
        self.slots.contains_key(id)
    }

    /// The account as the lane last wrote it, whatever its version now.
    pub fn take_any(&mut self, id: &str) -> Option<Slot> {
        self.slots.remove(id)
    }

    /// Keep the accounts of a committed batch.
    pub fn keep(&mut self, slots: impl IntoIterator<Item = (String, Slot)>) {
        for (id, slot) in slots {
            debug_assert!(!slot.dirty, "kept before it was written");
            if self.slots.len() >= CACHE_MAX {
                // Forget half, whichever: the next batch of each reloads it.
                let drop: Vec<String> = self.slots.keys().step_by(2).cloned().collect();
                for d in drop {
                    self.slots.remove(&d);
                }
            }
            self.slots.insert(id, slot);
        }
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
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() <= super::PREPARED_ROWS);
        for id in chunk {
            q = q.bind(id);
        }
        out.extend(q.fetch_all(&mut *tx).await?);
    }
    Ok(out)
}

/// Lock the existing accounts of `ids` (sorted, one statement) and load them.
pub(crate) async fn lock_and_load(
    tx: &mut Tx,
    backend: Backend,
    ids: &[String],
) -> Result<HashMap<String, Slot>, StoreError> {
    Ok(load_accounts(tx, backend, ids, backend == Backend::Postgres, &[], None).await?.0)
}

type Loaded = (HashMap<String, Slot>, HashMap<(String, String), Effect>);

fn slot_of_head(r: &AnyRow) -> Result<(String, Slot), StoreError> {
    let id: String = r.try_get("id")?;
    let mut account = Account::new(id.clone());
    account.balance = r.try_get("balance")?;
    account.signup_granted = r.try_get::<i64, _>("signup_granted")? != 0;
    let slot = Slot {
        account,
        base: Base { next_due: r.try_get("next_due_at")?, ..Default::default() },
        entries: Vec::new(),
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        version: r.try_get("version")?,
        dirty: false,
        is_new: false,
        probed: HashSet::new(),
    };
    Ok((id, slot))
}

fn effect_of(r: &AnyRow) -> Result<((String, String), Effect), StoreError> {
    Ok((
        (r.try_get("account_id")?, r.try_get("key")?),
        Effect { request: r.try_get("request")?, response: r.try_get("response")? },
    ))
}

/// Load the existing accounts of `ids`, locking their rows (in id order) when `lock`, and the stored answers
/// of idempotency keys `keys`. An account whose version matches the one in `cache` is taken from there.
///
/// On PostgreSQL the lock and the keys are one statement, and the rest of the accounts not in memory a second
/// one, whose snapshot is taken after the locks are held (so it sees what the previous holder committed). The
/// keys are read in the first statement's snapshot, which may predate a key committed by another instance
/// while this one waited for the lock: the key's primary key then fails the batch, which is run again, seeing
/// it (a batch of one job too).
pub(crate) async fn load_accounts(
    tx: &mut Tx,
    backend: Backend,
    ids: &[String],
    lock: bool,
    keys: &[(String, String)],
    mut cache: Option<&mut AccountCache>,
) -> Result<Loaded, StoreError> {
    let postgres = backend == Backend::Postgres;
    let mut effects = HashMap::new();
    let mut slots: HashMap<String, Slot> = HashMap::with_capacity(ids.len());
    if postgres {
        let sql = if lock { pg::LOCK } else { pg::HEADS };
        let q = sqlx::query(sql)
            .bind(pg::text_array(ids.iter().map(|s| Some(s.as_str()))))
            .bind(pg::text_array(keys.iter().map(|(a, _)| Some(a.as_str()))))
            .bind(pg::text_array(keys.iter().map(|(_, k)| Some(k.as_str()))));
        for r in q.fetch_all(&mut *tx).await? {
            if r.try_get::<i64, _>("k").map(|k| k as i32).or_else(|_| r.try_get::<i32, _>("k"))? == 1 {
                let (k, e) = effect_of(&r)?;
                effects.insert(k, e);
            } else {
                let (id, slot) = slot_of_head(&r)?;
                slots.insert(id, slot);
            }
        }
    } else {
        let head =
            "SELECT id, balance, signup_granted, next_due_at, created_at, updated_at, version FROM accounts WHERE id";
        for r in rows_for(tx, head, ids, " ORDER BY id").await? {
            let (id, slot) = slot_of_head(&r)?;
            slots.insert(id, slot);
        }
        if !slots.is_empty() {
            effects = self::effects(tx, keys).await?;
        }
    }
    // Accounts unchanged since this lane last wrote them come from memory.
    let mut missing: Vec<String> = Vec::new();
    for (id, slot) in slots.iter_mut() {
        match cache.as_deref_mut().and_then(|c| c.take(id, slot.version)) {
            Some(kept) => *slot = kept,
            None => missing.push(id.clone()),
        }
    }
    if missing.is_empty() {
        return Ok((slots, effects));
    }
    missing.sort();
    let mut rows = Vec::new();
    if postgres {
        let q = sqlx::query(pg::LOAD).bind(pg::text_array(missing.iter().map(|s| Some(s.as_str()))));
        rows = q.fetch_all(&mut *tx).await?;
    } else {
        for chunk in missing.chunks(500) {
            let p = params(1, chunk.len());
            // Kinds: 0 lot, 1 subscription, 2 active hold, 3 member; ordered as each is read.
            let sql = format!(
                "SELECT 0 AS k, account_id, id, source, amount, remaining, granted_at, expires_at, subscription_id, \
                 cycle_start, clawed, NULL AS state FROM lots WHERE account_id IN ({p}) AND remaining > 0 \
                 UNION ALL SELECT 1, account_id, id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, state \
                 FROM subscriptions WHERE account_id IN ({p}) \
                 UNION ALL SELECT 2, account_id, id, NULL, NULL, NULL, created_at, NULL, NULL, NULL, NULL, state \
                 FROM holds WHERE status = 'active' AND account_id IN ({p}) \
                 UNION ALL SELECT 3, account_id, user_id, NULL, NULL, NULL, added_at, NULL, NULL, NULL, NULL, NULL \
                 FROM members WHERE account_id IN ({p}) ORDER BY 1, 7, 3"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() <= super::PREPARED_ROWS);
            for id in chunk {
                q = q.bind(id);
            }
            rows.extend(q.fetch_all(&mut *tx).await?);
        }
    }
    for r in rows {
        let account: String = r.try_get("account_id")?;
        let kind: i32 = r.try_get::<i64, _>("k").map(|k| k as i32).or_else(|_| r.try_get::<i32, _>("k"))?;
        let slot = slots.get_mut(&account).expect("loaded");
        match kind {
            0 => slot.add_loaded_lot(lot_from_row(&r)?),
            1 => {
                let s: Subscription = json(&r.try_get::<String, _>("state")?)?;
                slot.base.subs.insert(s.id.clone(), s.clone());
                slot.account.subscriptions.push(s);
            }
            2 => slot.add_loaded_hold(json(&r.try_get::<String, _>("state")?)?),
            _ => {
                let user: String = r.try_get("id")?;
                slot.base.members.push(user.clone());
                slot.account.members.push(user);
            }
        }
    }
    // Lots an active hold took from but that have nothing left: the release gives credits back there.
    let mut wanted: Vec<(String, LotId)> = Vec::new();
    for id in &missing {
        let slot = &slots[id];
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
    Ok((slots, effects))
}

/// One lot by id, whatever it has left.
pub(crate) async fn lot(tx: &mut Tx, account: &str, id: &str) -> Result<Option<Lot>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {LOT_COLUMNS} FROM lots WHERE account_id = $1 AND id = $2"));
    let row = sqlx::query(sql).bind(account).bind(id).fetch_optional(&mut *tx).await?;
    row.as_ref().map(lot_from_row).transpose()
}

/// One hold by id, whatever its status.
pub(crate) async fn hold(tx: &mut Tx, account: &str, id: &str) -> Result<Option<Hold>, StoreError> {
    let q = sqlx::query_scalar::<_, String>("SELECT state FROM holds WHERE account_id = $1 AND id = $2");
    match q.bind(account).bind(id).fetch_optional(&mut *tx).await? {
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
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() <= super::PREPARED_ROWS);
        for (a, k) in chunk {
            q = q.bind(a).bind(k);
        }
        for r in q.fetch_all(&mut *tx).await? {
            let (k, e) = effect_of(&r)?;
            out.insert(k, e);
        }
    }
    Ok(out)
}
