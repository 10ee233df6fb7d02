//! Writing a batch: the rows of [`super::rows`] in one statement on PostgreSQL (data-modifying `WITH` parts,
//! array parameters) and one statement per table on SQLite. New accounts and new inbox rows are inserted only
//! if no other writer stored them meanwhile; if one did, the batch fails as a conflict and is run again, seeing
//! them.

use super::load::{Slot, params};
use super::pending::Pending;
use super::tables::{Arg, COUNTED, NEW_ACCOUNTS, Rows, TABLES};
use super::{Backend, PREPARED_ROWS, StoreError, Tx, pg, rows};
use pg::Ty::{Int, Text};
use std::collections::HashMap;

impl Rows {
    /// The portable statement for `rows` rows: `INSERT ... VALUES (...), (...)`.
    fn values_sql(&self, rows: usize) -> String {
        let cols = self.cols();
        let values: Vec<String> = (0..rows).map(|i| format!("({})", params(1 + i * cols, cols))).collect();
        format!("{} VALUES {}{}", self.table.insert, values.join(", "), self.table.tail)
    }

    /// Write the rows with `VALUES` statements (SQLite); the rows its `RETURNING` gives, tagged.
    async fn run(self, tx: &mut Tx) -> Result<Vec<Returned>, StoreError> {
        let cols = self.cols();
        let mut out = Vec::new();
        // Well under SQLite's 32,766 parameters a statement.
        let per = (30_000 / cols).max(1);
        let mut args = self.args.into_iter().peekable();
        while args.peek().is_some() {
            let chunk: Vec<Arg> = args.by_ref().take(per * cols).collect();
            let rows = chunk.len() / cols;
            let mut sql = Rows { table: self.table, args: Vec::new() }.values_sql(rows);
            if let Some((tag, cols)) = self.table.returning {
                sql.push_str(&format!(" RETURNING CAST('{tag}' AS TEXT) AS t, {cols}"));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(rows <= PREPARED_ROWS);
            for a in chunk {
                q = bind(q, a);
            }
            out.extend(returned(q.fetch_all(&mut *tx).await?)?);
        }
        Ok(out)
    }

    /// The column arrays of the rows (PostgreSQL).
    fn arrays(&self) -> Vec<String> {
        let cols = self.cols();
        (0..cols)
            .map(|c| {
                let column = self.args.iter().skip(c).step_by(cols);
                match self.table.types[c] {
                    Text => pg::text_array(column.map(|a| match a {
                        Arg::Text(v) => Some(v.as_str()),
                        Arg::OptText(v) => v.as_deref(),
                        _ => unreachable!("a text column"),
                    })),
                    Int => pg::int_array(column.map(|a| match a {
                        Arg::Int(v) => Some(*v),
                        Arg::OptInt(v) => *v,
                        _ => unreachable!("an integer column"),
                    })),
                }
            })
            .collect()
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind(q: AnyQuery<'_>, a: Arg) -> AnyQuery<'_> {
    match a {
        Arg::Text(v) => q.bind(v),
        Arg::OptText(v) => q.bind(v),
        Arg::Int(v) => q.bind(v),
        Arg::OptInt(v) => q.bind(v),
    }
}

/// A row an insert gave back (`t`, `row_id`, `a`, `b`): `a`, 0 and a new account's id; `i` and an inbox row's id,
/// source and event id.
type Returned = (String, i64, Option<String>, Option<String>);

fn returned(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Returned>, StoreError> {
    use sqlx::Row;
    rows.iter().map(|r| Ok((r.try_get("t")?, r.try_get("row_id")?, r.try_get("a")?, r.try_get("b")?))).collect()
}

/// What an optimistic batch checks as it writes ([`pg::write_statement`]): the accounts it read and did not
/// change, with the versions it read.
pub(crate) struct Fresh {
    pub ids: Vec<String>,
    pub versions: Vec<i64>,
}

/// Write every table: on PostgreSQL with one prepared statement for the whole batch; on SQLite (in process)
/// one `VALUES` statement per table with rows, in table order (new accounts before the rows that refer to them).
/// With `fresh` (PostgreSQL, no transaction open), the statement also checks that nothing the batch read has
/// changed, and fails whole if something has.
async fn run_all(
    tx: &mut Tx,
    postgres: bool,
    mut all: Vec<Rows>,
    fresh: Option<Fresh>,
    optimistic: bool,
) -> Result<Vec<Returned>, StoreError> {
    if !postgres {
        // New accounts first: SQLite checks foreign keys at each statement.
        let new = all.remove(NEW_ACCOUNTS);
        debug_assert_eq!(all.len(), TABLES.len() - 1);
        let mut out = new.run(tx).await?;
        for r in all.into_iter().filter(|r| !r.args.is_empty()) {
            out.extend(r.run(tx).await?);
        }
        return Ok(out);
    }
    let mask = all.iter().enumerate().filter(|(_, r)| !r.args.is_empty()).fold(0u32, |m, (i, _)| m | 1 << i);
    // A locked batch that writes nothing has nothing to check either (what it read is locked).
    if mask == 0 && !optimistic {
        return Ok(Vec::new());
    }
    let check = fresh.is_some().then_some(&COUNTED[..]);
    let mut q = sqlx::query(sqlx::AssertSqlSafe(pg::write_statement(&TABLES, mask, check)));
    for r in all.iter().filter(|r| !r.args.is_empty()) {
        for array in r.arrays() {
            q = q.bind(array);
        }
    }
    if let Some(f) = fresh {
        let counts = COUNTED.map(|t| Some(all[t].rows() as i64));
        q = q
            .bind(pg::text_array(f.ids.iter().map(|s| Some(s.as_str()))))
            .bind(pg::int_array(f.versions.iter().map(|v| Some(*v))))
            .bind(pg::int_array(counts));
    }
    returned(q.fetch_all(&mut *tx).await?)
}

/// Write every change of the accounts in `slots` and the rows of `pending`, and start the accounts over from
/// what is now stored.
///
/// `optimistic`: no transaction is open and no account is locked (PostgreSQL). The batch is then written by its
/// one statement, which checks every account it read ([`Fresh`]) and commits by itself; a batch that would
/// need more than one statement (moved rows, removed members) fails as a conflict before writing anything, and
/// is run again with locks.
pub(crate) async fn write(
    slots: &mut HashMap<String, Slot>,
    pending: Pending,
    tx: &mut Tx,
    backend: Backend,
    optimistic: bool,
) -> Result<(), StoreError> {
    let mut a = rows::accounts(slots);
    let p = rows::pending(pending);
    if optimistic && (!p.moves.is_empty() || !a.gone_members.is_empty()) {
        return Err(StoreError::Conflict("this batch needs its accounts locked".into()));
    }
    // PostgreSQL checks what the batch read in every batch: an optimistic one depends on it, and in a locked
    // one it cannot fail, unless something other than this code changed a locked account (then the batch
    // fails rather than writing entries beside an account row it did not update).
    let fresh = if backend == Backend::Postgres {
        let mut clean: Vec<(&String, i64)> =
            slots.iter().filter(|(_, s)| !s.dirty && !s.is_new).map(|(id, s)| (id, s.version)).collect();
        clean.sort();
        Some(Fresh {
            ids: clean.iter().map(|(id, _)| (*id).clone()).collect(),
            versions: clean.iter().map(|(_, v)| *v).collect(),
        })
    } else {
        None
    };
    let expect_new = a.new_accounts.rows();
    let expect_inbox = p.inbox.rows();
    let mut got = Vec::new();
    if !p.moves.is_empty() {
        // Moves go to accounts that may be new: those are written first, then the moves, then the rest.
        let new = std::mem::replace(&mut a.new_accounts, Rows::new(NEW_ACCOUNTS));
        got.extend(new.run(tx).await?);
        for (from, to, customer) in &p.moves {
            super::moves::move_rows(tx, from, to, customer).await?;
        }
    }
    let all = vec![
        a.lots,
        a.subs,
        a.holds,
        a.members,
        a.entries,
        a.accounts,
        p.outbox,
        p.effects,
        a.new_accounts,
        p.inbox,
        p.links,
        p.prices,
        p.invoices,
        p.invoice_payments,
    ];
    got.extend(run_all(tx, backend == Backend::Postgres, all, fresh, optimistic).await?);
    let created = got.iter().filter(|r| r.0 == "a").count();
    if created != expect_new {
        return Err(StoreError::Conflict(format!("{} of {expect_new} new accounts existed", expect_new - created)));
    }
    let mut stored = 0;
    for (_, id, source, event) in got.into_iter().filter(|r| r.0 == "i") {
        if let (Some(source), Some(event)) = (source, event)
            && let Some(cell) = p.inbox_ids.get(&(source, event))
        {
            let _ = cell.set(id);
            stored += 1;
        }
    }
    if stored != expect_inbox {
        return Err(StoreError::Conflict(format!(
            "{} of {expect_inbox} events were stored meanwhile",
            expect_inbox - stored
        )));
    }
    for (account, user) in a.gone_members {
        sqlx::query("DELETE FROM members WHERE account_id = $1 AND user_id = $2")
            .bind(account)
            .bind(user)
            .execute(&mut *tx)
            .await?;
    }
    for s in slots.values_mut().filter(|s| s.dirty) {
        s.rebase();
    }
    Ok(())
}
