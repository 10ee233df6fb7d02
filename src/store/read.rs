//! Reads: an account's state and its ledger entries. A read first applies the due work of the account, so it
//! reflects every cycle close, allocation and expiry due by the time of the read.

use super::load::load_accounts;
use super::{Backend, Request, Store, StoreError};
use crate::ledger::{Credits, Hold, Lot, Op, Subscription, UnixTime};
use serde::Serialize;
use sqlx::Row;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountView {
    pub account: String,
    pub plan: String,
    pub balance: Credits,
    pub held: Credits,
    pub lots: Vec<Lot>,
    pub cycle: Option<(UnixTime, UnixTime)>,
    pub expiring_at_cycle_end: Credits,
    pub subscriptions: Vec<Subscription>,
    pub holds: Vec<Hold>,
    pub members: Vec<String>,
    pub stripe_customer_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EntryRow {
    pub id: i64,
    pub at: UnixTime,
    pub kind: String,
    pub amount: i64,
    pub lot_id: Option<String>,
    pub balance_after: i64,
    pub cause: String,
    pub user_id: Option<String>,
    pub operation: Option<String>,
    pub shortfall: i64,
}

impl Store {
    /// The account as of `now` (due work applied first), read in one snapshot: `balance` is always the sum of
    /// the `lots` shown, also while changes commit.
    pub async fn account(&self, id: &str, now: UnixTime) -> Result<AccountView, StoreError> {
        let (view, due) = self.read_account(id).await?;
        if due.is_none_or(|t| t > now) {
            return Ok(view);
        }
        let req = Request {
            account: id.into(),
            op: Op::Tick,
            cause: "read".into(),
            key: None,
            on_missing: crate::store::OnMissing::Refuse,
            now,
        };
        self.execute(req).await?;
        Ok(self.read_account(id).await?.0)
    }

    /// The account as stored, and when it next has due work.
    async fn read_account(&self, id: &str) -> Result<(AccountView, Option<UnixTime>), StoreError> {
        let mut tx = match self.backend {
            Backend::Postgres => self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?,
            Backend::Sqlite => self.pool.begin().await?,
        };
        let (mut slots, _) =
            load_accounts(&mut tx, self.backend, std::slice::from_ref(&id.to_owned()), false, &[], None).await?;
        let slot = slots.remove(id).ok_or_else(|| StoreError::UnknownAccount(id.into()))?;
        let customer: Option<String> = sqlx::query_scalar(
            "SELECT customer_id FROM stripe_customers WHERE account_id = $1 ORDER BY linked_at, customer_id LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut a = slot.account;
        // Lots kept only because a hold took from them are not shown: they have nothing left.
        a.lots.retain(|l| !l.remaining.is_zero());
        let view = AccountView {
            account: id.into(),
            plan: a.plan(),
            balance: a.balance,
            held: a.held(),
            cycle: a.cycle(),
            expiring_at_cycle_end: a.expiring_at_cycle_end(),
            lots: a.lots,
            subscriptions: a.subscriptions,
            holds: a.holds,
            members: a.members,
            stripe_customer_id: customer,
        };
        Ok((view, slot.base.next_due))
    }

    /// Entries of an account with id above `after`, oldest first, at most `limit`.
    pub async fn entries(&self, account: &str, after: i64, limit: i64) -> Result<Vec<EntryRow>, StoreError> {
        self.query_entries("WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3", account, after, limit).await
    }

    /// The newest `n` entries, oldest first.
    pub async fn last_entries(&self, account: &str, n: i64) -> Result<Vec<EntryRow>, StoreError> {
        let mut rows =
            self.query_entries("WHERE account_id = $1 AND id > $2 ORDER BY id DESC LIMIT $3", account, 0, n).await?;
        rows.reverse();
        Ok(rows)
    }

    async fn query_entries(
        &self,
        tail: &'static str,
        account: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EntryRow>, StoreError> {
        let sql = format!(
            "SELECT id, at, kind, amount, lot_id, balance_after, cause, user_id, operation, shortfall FROM entries {tail}"
        );
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(account).bind(after).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(entry_row).collect()
    }
}

impl Store {
    /// A hold and its account, by hold id.
    pub async fn hold(&self, id: &str) -> Result<Option<(String, Hold)>, StoreError> {
        let row = sqlx::query("SELECT account_id, state FROM holds WHERE id = $1 ORDER BY created_at LIMIT 1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let hold =
            serde_json::from_str(&r.try_get::<String, _>("state")?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some((r.try_get("account_id")?, hold)))
    }

    /// A page of entries with id above `after`, `since <= at < until`, oldest first.
    pub async fn entries_page(
        &self,
        account: &str,
        after: i64,
        since: UnixTime,
        until: UnixTime,
        limit: i64,
    ) -> Result<Vec<EntryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, amount, lot_id, balance_after, cause, user_id, operation, shortfall FROM entries \
             WHERE account_id = $1 AND id > $2 AND at >= $3 AND at < $4 ORDER BY id LIMIT $5",
        )
        .bind(account)
        .bind(after)
        .bind(since)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_row).collect()
    }
}

fn entry_row(r: &sqlx::any::AnyRow) -> Result<EntryRow, StoreError> {
    Ok(EntryRow {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        amount: r.try_get("amount")?,
        lot_id: r.try_get("lot_id")?,
        balance_after: r.try_get("balance_after")?,
        cause: r.try_get("cause")?,
        user_id: r.try_get("user_id")?,
        operation: r.try_get("operation")?,
        shortfall: r.try_get("shortfall")?,
    })
}
