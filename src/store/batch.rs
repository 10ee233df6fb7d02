//! One write transaction shared by the jobs of a batch: the accounts they change, locked and loaded once, the
//! changes applied in memory by the credit rules, and every row written at the end with a few multi-row
//! statements ([`super::flush`]).
//!
//! Why in memory: a debit refused by the rules must not undo the others, and a savepoint per change would
//! cost two round trips; the rules already leave an account untouched when they refuse. New accounts, inbox
//! rows, Stripe facts and outbox rows wait in memory too ([`Pending`]), so taking back a job or a decision
//! that failed ([`Batch::mark`], [`Batch::undo`]) is restoring a journal. A job that must write rows directly
//! opens a real savepoint ([`Batch::savepoint`]).

use super::load::{self, AccountCache, Slot};
use super::pending::{self, Effect, NewOutbox, Pending};
use super::request::{Guard, OnMissing, Outcome, Request};
use super::{Backend, StoreError, Tx};
use crate::ledger::{Account, Op, Subscription};
use crate::time::UnixTime;
use sqlx::Any;
use sqlx::pool::PoolConnection;
use std::collections::{HashMap, HashSet};

/// How a job ended: keep what it did, or take it back (its savepoint and its changes to loaded accounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Keep,
    Undo,
}

/// What was changed since a mark or savepoint, to take back.
struct Journal {
    /// A savepoint in the database too (its rows written directly are taken back with it).
    sql: bool,
    slots: HashMap<String, Option<Slot>>,
    effects: Vec<(String, String)>,
    pending: pending::Mark,
}

pub struct Batch {
    conn: PoolConnection<Any>,
    backend: Backend,
    low_balance: i64,
    pub(crate) slots: HashMap<String, Slot>,
    /// Accounts looked up in this batch and not found.
    absent: HashSet<String>,
    effects: HashMap<(String, String), Effect>,
    /// Keys looked up in this batch (found or not).
    probed_keys: HashSet<(String, String)>,
    /// Payments known to have bought no lot in any account.
    pub(crate) unbought: HashSet<String>,
    /// Inbox rows stored before this batch, looked up by (source, event id).
    pub(crate) inbox: HashMap<(String, String), Option<super::InboxRow>>,
    pub(crate) pending: Pending,
    /// One journal per open mark or savepoint, innermost last.
    journals: Vec<Journal>,
    /// No transaction is open and no account locked: the accounts come from the lane's memory, and the write
    /// statement checks their versions and commits ([`super::writer`]).
    optimistic: bool,
    /// The entries written by [`Batch::flush`] (kind, amount), counted in the metrics once committed: a batch
    /// run again, or a job taken back, counts nothing twice.
    written: Vec<(&'static str, i64)>,
}

fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn random_event_id() -> String {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b).expect("the OS random source");
    format!("ev_{}", hex::encode(b))
}

/// What of a subscription makes `subscription.changed`.
type Mark = (String, crate::ledger::PlanTerms, String, Option<UnixTime>, bool);

fn sub_marks(subs: &[Subscription]) -> Vec<Mark> {
    subs.iter().map(|s| (s.id.clone(), s.terms.clone(), s.status.clone(), s.ends_at, s.finished)).collect()
}

impl Batch {
    /// Open the batch's transaction on the lane's connection.
    /// An optimistic batch (PostgreSQL) opens none.
    pub(crate) async fn begin(
        backend: Backend,
        low_balance: i64,
        mut conn: PoolConnection<Any>,
        optimistic: bool,
    ) -> Result<Batch, (StoreError, Option<PoolConnection<Any>>)> {
        debug_assert!(!optimistic || backend == Backend::Postgres, "SQLite batches hold the one writer's lock");
        let begin = match backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        if !optimistic && let Err(e) = sqlx::raw_sql(begin).execute(&mut *conn).await {
            return Err((e.into(), None));
        }
        Ok(Batch {
            conn,
            backend,
            low_balance,
            slots: HashMap::new(),
            absent: HashSet::new(),
            effects: HashMap::new(),
            probed_keys: HashSet::new(),
            unbought: HashSet::new(),
            inbox: HashMap::new(),
            pending: Pending::default(),
            journals: Vec::new(),
            optimistic,
            written: Vec::new(),
        })
    }

    /// The transaction, for jobs that write rows of their own (they run in a savepoint). Not for jobs that may
    /// run optimistically ([`super::writer::Plan::optimistic`]): there is no transaction then.
    pub fn tx(&mut self) -> &mut Tx {
        debug_assert!(!self.optimistic, "an optimistic batch has no transaction");
        &mut self.conn
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Lock and load `accounts` (sorted), look up `keys` and the inbox rows of `events`, before any job runs.
    pub(crate) async fn prelude(
        &mut self,
        accounts: &[String],
        keys: &[(String, String)],
        events: &[(String, String)],
        cache: &mut AccountCache,
    ) -> Result<(), StoreError> {
        if self.optimistic {
            // The accounts as the lane last wrote them; their versions are checked as the batch is written. Keys
            // are taken as unused: a key used before fails the write (its primary key), and the batch is run
            // again with locks, where its first answer is found.
            debug_assert!(events.is_empty(), "an optimistic batch has no inbox rows");
            for a in accounts {
                let slot = cache.take_any(a).ok_or_else(|| StoreError::Conflict(format!("{a} is not in memory")))?;
                self.slots.insert(a.clone(), slot);
            }
            self.probed_keys.extend(keys.iter().cloned());
            return Ok(());
        }
        if !events.is_empty() {
            self.inbox.extend(super::inbox::find_many(&mut self.conn, self.backend, events).await?);
        }
        if accounts.is_empty() {
            return Ok(());
        }
        let lock = self.backend == Backend::Postgres;
        let (slots, effects) =
            load::load_accounts(&mut self.conn, self.backend, accounts, lock, keys, Some(cache)).await?;
        for a in accounts {
            if !slots.contains_key(a) {
                self.absent.insert(a.clone());
            }
        }
        // Keys of accounts that exist were looked up; those of missing accounts are refused before a lookup.
        self.probed_keys.extend(keys.iter().filter(|(a, _)| slots.contains_key(a)).cloned());
        self.effects.extend(effects);
        self.slots.extend(slots);
        Ok(())
    }

    pub(crate) async fn start_job(&mut self, savepoint: bool) -> Result<(), StoreError> {
        self.journals.clear();
        if savepoint {
            self.savepoint().await?;
        }
        Ok(())
    }

    pub(crate) async fn end_job(&mut self, step: Step) -> Result<(), StoreError> {
        if self.journals.is_empty() {
            debug_assert_eq!(step, Step::Keep, "a job without a savepoint cannot be undone");
            return Ok(());
        }
        match step {
            Step::Keep => self.release().await?,
            Step::Undo => self.rollback().await?,
        }
        debug_assert!(self.journals.is_empty(), "a job left a mark or savepoint open");
        Ok(())
    }

    fn open(&mut self, sql: bool) {
        let pending = self.pending.mark();
        self.journals.push(Journal { sql, slots: HashMap::new(), effects: Vec::new(), pending });
    }

    /// Mark what is there now (in memory only): [`Batch::undo`] takes back the changes made since, as long as
    /// they went through the batch (accounts, inbox, Stripe facts, outbox). [`Batch::keep`] keeps them.
    pub fn mark(&mut self) {
        self.open(false);
    }

    /// Open a savepoint: [`Batch::rollback`] also takes back rows written directly since.
    pub async fn savepoint(&mut self) -> Result<(), StoreError> {
        if self.optimistic {
            return Err(StoreError::Conflict("a savepoint needs the batch's transaction".into()));
        }
        let sql = format!("SAVEPOINT sp{}", self.journals.len());
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *self.conn).await?;
        self.open(true);
        Ok(())
    }

    /// Keep what was done since the last mark or savepoint.
    pub async fn release(&mut self) -> Result<(), StoreError> {
        let top = self.journals.pop().expect("a mark or savepoint is open");
        if top.sql {
            let sql = format!("RELEASE SAVEPOINT sp{}", self.journals.len());
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *self.conn).await?;
        }
        if let Some(parent) = self.journals.last_mut() {
            for (id, before) in top.slots {
                parent.slots.entry(id).or_insert(before);
            }
            parent.effects.extend(top.effects);
        }
        Ok(())
    }

    /// Keep what was done since the last mark (no round trip when it was a mark).
    pub fn keep(&mut self) {
        let top = self.journals.last().expect("a mark is open");
        debug_assert!(!top.sql, "keep() is for marks; release() for savepoints");
        let top = self.journals.pop().expect("a mark is open");
        if let Some(parent) = self.journals.last_mut() {
            for (id, before) in top.slots {
                parent.slots.entry(id).or_insert(before);
            }
            parent.effects.extend(top.effects);
        }
    }

    /// Take back what was done since the last mark or savepoint.
    pub async fn rollback(&mut self) -> Result<(), StoreError> {
        let top = self.journals.pop().expect("a mark or savepoint is open");
        if top.sql {
            let name = format!("sp{}", self.journals.len());
            let conn = &mut *self.conn;
            sqlx::query(sqlx::AssertSqlSafe(format!("ROLLBACK TO SAVEPOINT {name}"))).execute(&mut *conn).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("RELEASE SAVEPOINT {name}"))).execute(&mut *conn).await?;
        }
        self.restore(top);
        Ok(())
    }

    /// Take back what was done since the last mark.
    pub fn undo(&mut self) {
        let top = self.journals.pop().expect("a mark is open");
        debug_assert!(!top.sql, "undo() is for marks; rollback() for savepoints");
        self.restore(top);
    }

    fn restore(&mut self, top: Journal) {
        for (id, before) in top.slots {
            match before {
                Some(slot) => {
                    self.slots.insert(id, slot);
                }
                None => {
                    self.slots.remove(&id);
                }
            }
        }
        for k in top.effects {
            self.effects.remove(&k);
        }
        self.pending.back_to(top.pending);
    }

    /// [`Batch::touch`] for the other parts of the store.
    pub(crate) fn touch_account(&mut self, account: &str) {
        self.touch(account);
    }

    /// Remember an account's state before it is first changed since the last mark or savepoint.
    fn touch(&mut self, account: &str) {
        if let Some(j) = self.journals.last_mut()
            && !j.slots.contains_key(account)
        {
            j.slots.insert(account.to_owned(), self.slots.get(account).cloned());
        }
    }

    /// Whether the batch has loaded `account`.
    pub fn touches(&self, account: &str) -> bool {
        self.slots.contains_key(account)
    }

    /// Make sure `account` is loaded (locking it), creating it when `on_missing` says so. A new account is
    /// written with the batch; if another writer created it meanwhile, the batch fails and is run again.
    pub async fn load(&mut self, account: &str, on_missing: OnMissing, now: UnixTime) -> Result<(), StoreError> {
        if self.slots.contains_key(account) {
            return Ok(());
        }
        if !self.absent.contains(account) {
            let slots = load::lock_and_load(&mut self.conn, self.backend, &[account.to_owned()]).await?;
            if !slots.is_empty() {
                self.touch(account);
                self.slots.extend(slots);
                return Ok(());
            }
            self.absent.insert(account.to_owned());
        }
        if on_missing == OnMissing::Refuse {
            return Err(StoreError::UnknownAccount(account.into()));
        }
        self.touch(account);
        let mut a = Account::new(account);
        a.signup_granted = on_missing == OnMissing::CreateFromStripe;
        self.slots.insert(account.to_owned(), Slot::new_account(a, now));
        Ok(())
    }

    /// The loaded state of an account (after [`Batch::load`] or a change).
    pub fn account(&self, account: &str) -> Option<&Account> {
        self.slots.get(account).map(|s| &s.account)
    }

    async fn effect(&mut self, account: &str, key: &str) -> Result<Option<Effect>, StoreError> {
        let k = (account.to_owned(), key.to_owned());
        if !self.probed_keys.contains(&k) && !self.slots.get(account).is_some_and(|s| s.is_new) {
            let found = load::effects(&mut self.conn, std::slice::from_ref(&k)).await?;
            self.effects.extend(found);
            self.probed_keys.insert(k.clone());
        }
        Ok(self.effects.get(&k).cloned())
    }

    /// Apply `req`, refused by `guard` on the account brought up to date. A repeat of an idempotency key gets
    /// its first answer before any check. A refusal by the rules keeps the due work found on the way (it was
    /// owed anyway) and changes nothing else.
    pub async fn apply(&mut self, req: &Request, guard: Option<&Guard>) -> Result<Outcome, StoreError> {
        self.load(&req.account, req.on_missing, req.now).await?;
        if let Some(k) = &req.key
            && let Some(seen) = self.effect(&req.account, &k.key).await?
        {
            if seen.request.as_deref() != Some(k.fingerprint.as_str()) {
                return Err(StoreError::KeyConflict(k.key.clone()));
            }
            return Ok(Outcome::Duplicate(json(&seen.response)?));
        }
        self.load_named(&req.account, &req.op, req.key.is_some()).await?;
        self.touch(&req.account);
        let low = self.low_balance;
        let slot = self.slots.get_mut(&req.account).expect("loaded above");
        let before = slot.account.balance;
        let marks = sub_marks(&slot.account.subscriptions);
        let result = match guard {
            Some(g) => slot.account.apply_checked(&req.op, req.now, &req.cause, &|a: &Account| g(a)),
            None => slot.account.apply(&req.op, req.now, &req.cause),
        };
        let after = sub_marks(&slot.account.subscriptions);
        let changed: Vec<&Subscription> = slot
            .account
            .subscriptions
            .iter()
            .zip(after.iter())
            .filter(|(_, m)| !marks.contains(m))
            .map(|(s, _)| s)
            .collect();
        for ev in crate::ledger::events::events_of(&slot.account, before, &changed, low) {
            let mut data = ev.data;
            data["cause"] = serde_json::Value::String(req.cause.clone());
            self.pending.outbox.push(outbox_row(ev.kind, Some(&req.account), data, req.now));
        }
        slot.note_change(req.now);
        if self.optimistic && req.key.is_some() && result.is_err() {
            // The key was taken as unused, and a refusal writes no answer whose key could say otherwise: the
            // request may be a repeat whose first answer was applied. The batch runs again with locks, where the
            // key is looked up first.
            return Err(StoreError::Conflict("a keyed request was refused in an optimistic batch".into()));
        }
        let applied = result?;
        if let Some(k) = &req.key {
            let effect = Effect {
                request: Some(k.fingerprint.clone()),
                response: serde_json::to_string(&applied).expect("serializable"),
            };
            let id = (req.account.clone(), k.key.clone());
            self.effects.insert(id.clone(), effect.clone());
            self.pending.effects.push((id.0.clone(), id.1.clone(), effect, req.now));
            if let Some(j) = self.journals.last_mut() {
                j.effects.push(id);
            }
        }
        Ok(Outcome::Applied(applied))
    }

    /// Load the lots and holds `op` names although they may have nothing left or be no longer active (a repeat
    /// grant, a refund of a spent lot, a late capture), so the rules see them.
    async fn load_named(&mut self, account: &str, op: &Op, keyed: bool) -> Result<(), StoreError> {
        for op in op.flatten() {
            match op {
                Op::Grant { lot_id, .. } | Op::Refund { payment: lot_id, .. } => {
                    let slot = self.slots.get_mut(account).expect("loaded");
                    if !slot.is_new
                        && !self.unbought.contains(lot_id.as_str())
                        && !slot.account.lots.iter().any(|l| &l.id == lot_id)
                        && slot.probed.insert(lot_id.to_string())
                        && let Some(lot) = load::lot(&mut self.conn, account, lot_id).await?
                    {
                        self.touch(account);
                        self.slots.get_mut(account).expect("loaded").add_loaded_lot(lot);
                    }
                }
                // A new hold's id comes from its idempotency key, which was just found unused: nothing to load.
                Op::HoldCreate { .. } if keyed => {}
                Op::HoldCreate { id, .. } | Op::HoldCapture { id, .. } | Op::HoldRelease { id } => {
                    let slot = self.slots.get_mut(account).expect("loaded");
                    let hold_key = format!("hold:{id}");
                    if !slot.is_new
                        && !slot.account.holds.iter().any(|h| &h.id == id)
                        && slot.probed.insert(hold_key)
                        && let Some(h) = load::hold(&mut self.conn, account, id).await?
                    {
                        self.touch(account);
                        self.slots.get_mut(account).expect("loaded").add_loaded_hold(h);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Write every change of the batch.
    pub(crate) async fn flush(&mut self) -> Result<(), StoreError> {
        self.written = self
            .slots
            .values()
            .filter(|s| s.dirty)
            .flat_map(|s| s.entries.iter().map(|(e, _)| (e.kind.as_str(), e.amount)))
            .collect();
        let pending = std::mem::take(&mut self.pending);
        super::flush::write(&mut self.slots, pending, &mut self.conn, self.backend, self.optimistic).await
    }

    /// Commit, and keep the accounts (as written) in the lane's memory for its next batches. Gives the
    /// connection back when it can be used again.
    pub(crate) async fn commit(
        mut self,
        cache: &mut AccountCache,
    ) -> (Result<(), StoreError>, Option<PoolConnection<Any>>) {
        // An optimistic batch was committed by its write statement.
        if !self.optimistic
            && let Err(e) = sqlx::raw_sql("COMMIT").execute(&mut *self.conn).await
        {
            // Whether it committed is unknown: the connection is not used again, and the callers are told to retry
            // (every change is idempotent by its keys).
            return (Err(e.into()), None);
        }
        let m = crate::metrics::global();
        for (kind, amount) in self.written {
            m.entry(kind, amount);
        }
        cache.keep(self.slots);
        (Ok(()), Some(self.conn))
    }

    /// Roll back; the connection is given back when that worked.
    pub(crate) async fn abort(mut self) -> Option<PoolConnection<Any>> {
        if self.optimistic {
            return Some(self.conn);
        }
        match sqlx::raw_sql("ROLLBACK").execute(&mut *self.conn).await {
            Ok(_) => Some(self.conn),
            Err(_) => None,
        }
    }
}

pub(crate) fn outbox_row(kind: &str, account: Option<&str>, data: serde_json::Value, now: UnixTime) -> NewOutbox {
    let event_id = random_event_id();
    let mut payload =
        serde_json::json!({"id": event_id, "type": kind, "account": account, "at": crate::time::format_rfc3339(now)});
    if let (Some(p), serde_json::Value::Object(d)) = (payload.as_object_mut(), data) {
        p.extend(d);
    }
    NewOutbox {
        event_id,
        account: account.map(str::to_owned),
        kind: kind.to_owned(),
        payload: payload.to_string(),
        created_at: now,
    }
}
