//! Writing a batch: what changed in every account since it was loaded and what waits in [`super::pending`], in
//! one statement on PostgreSQL (data-modifying `WITH` parts, array parameters) and one statement per table on
//! SQLite. New accounts and new inbox rows are inserted only if no other writer stored them meanwhile; if one
//! did, the batch fails as a conflict and is run again, seeing them.

use super::batch::{Batch, Tx};
use super::load::params;
use super::{StoreError, pg};

/// One bound value.
enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
}

use pg::Ty::{Int, Text};

const LOTS: usize = 0;
const SUBS: usize = 1;
const HOLDS: usize = 2;
const MEMBERS: usize = 3;
const ENTRIES: usize = 4;
const ACCOUNTS: usize = 5;
const OUTBOX: usize = 6;
const EFFECTS: usize = 7;
const NEW_ACCOUNTS: usize = 8;
const INBOX: usize = 9;
const LINKS: usize = 10;
const PRICES: usize = 11;
const INVOICES: usize = 12;
const INVOICE_PAYMENTS: usize = 13;

/// Every table a batch writes, in the order of the PostgreSQL statement's parameters.
static TABLES: [pg::Table; 14] = [
    pg::Table {
        insert: "INSERT INTO lots (account_id, id, source, amount, remaining, granted_at, expires_at, subscription_id, cycle_start, clawed)",
        types: &[Text, Text, Text, Int, Int, Int, Int, Text, Int, Int],
        tail: " ON CONFLICT (account_id, id) DO UPDATE SET amount = excluded.amount, remaining = excluded.remaining, \
               expires_at = excluded.expires_at, clawed = excluded.clawed",
        ordered: false,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO subscriptions (id, account_id, state, updated_at)",
        types: &[Text, Text, Text, Int],
        tail: " ON CONFLICT (account_id, id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        ordered: false,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO holds (id, account_id, status, amount, deadline, state, created_at, updated_at)",
        types: &[Text, Text, Text, Int, Int, Text, Int, Int],
        tail: " ON CONFLICT (account_id, id) DO UPDATE SET status = excluded.status, state = excluded.state, \
               updated_at = excluded.updated_at",
        ordered: false,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO members (account_id, user_id, added_at)",
        types: &[Text, Text, Int],
        tail: "",
        ordered: false,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO entries (account_id, at, kind, amount, lot_id, balance_after, cause, user_id, operation, shortfall, recorded_at)",
        types: &[Text, Int, Text, Int, Text, Int, Text, Text, Text, Int, Int],
        tail: "",
        ordered: true,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO accounts (id, balance, signup_granted, next_due_at, created_at, updated_at, version)",
        types: &[Text, Int, Int, Int, Int, Int, Int],
        tail: " ON CONFLICT (id) DO UPDATE SET balance = excluded.balance, signup_granted = excluded.signup_granted, \
               next_due_at = excluded.next_due_at, updated_at = excluded.updated_at, version = excluded.version",
        ordered: false,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO outbox (event_id, account_id, type, payload, created_at)",
        types: &[Text, Text, Text, Text, Int],
        tail: "",
        ordered: true,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO effects (account_id, key, request, response, created_at)",
        types: &[Text, Text, Text, Text, Int],
        tail: "",
        ordered: false,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO accounts (id, balance, signup_granted, next_due_at, created_at, updated_at, version)",
        types: &[Text, Int, Int, Int, Int, Int, Int],
        tail: " ON CONFLICT (id) DO NOTHING",
        ordered: false,
        returning: Some(("a", "CAST(0 AS BIGINT), id, CAST(NULL AS TEXT)")),
    },
    pg::Table {
        insert: "INSERT INTO inbox (source, event_id, type, payload, status, detail, waiting_for, account_id, attempts, \
                 event_created, first_seen, last_seen, next_attempt_at)",
        types: &[Text, Text, Text, Text, Text, Text, Text, Text, Int, Int, Int, Int, Int],
        tail: " ON CONFLICT (source, event_id) DO NOTHING",
        ordered: true,
        returning: Some(("i", "id, source, event_id")),
    },
    pg::Table {
        insert: "INSERT INTO stripe_customers (customer_id, account_id, linked_at)",
        types: &[Text, Text, Int],
        tail: " ON CONFLICT (customer_id) DO NOTHING",
        ordered: false,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO stripe_prices (id, object, seen_at)",
        types: &[Text, Text, Int],
        tail: " ON CONFLICT (id) DO UPDATE SET object = excluded.object, seen_at = excluded.seen_at",
        ordered: false,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO stripe_invoices (id, subscription_id, account_id, period_start, period_end, seen_at)",
        types: &[Text, Text, Text, Int, Int, Int],
        tail: " ON CONFLICT (id) DO UPDATE SET subscription_id = excluded.subscription_id, \
               account_id = excluded.account_id, period_start = excluded.period_start, \
               period_end = excluded.period_end, seen_at = excluded.seen_at",
        ordered: false,
        returning: None,
    },
    pg::Table {
        insert: "INSERT INTO stripe_invoice_payments (payment_id, invoice_id, seen_at)",
        types: &[Text, Text, Int],
        tail: " ON CONFLICT (payment_id) DO NOTHING",
        ordered: false,
        returning: None,
    },
];

/// The rows to write to one table, row after row.
struct Rows {
    table: &'static pg::Table,
    args: Vec<Arg>,
}

impl Rows {
    fn new(table: usize) -> Self {
        Rows { table: &TABLES[table], args: Vec::new() }
    }

    fn cols(&self) -> usize {
        self.table.types.len()
    }

    fn rows(&self) -> usize {
        self.args.len() / self.cols()
    }

    fn push(&mut self, row: Vec<Arg>) {
        debug_assert_eq!(row.len(), self.cols());
        self.args.extend(row);
    }

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
            let mut sql = Rows { table: self.table, args: Vec::new() }.values_sql(chunk.len() / cols);
            if let Some((tag, cols)) = self.table.returning {
                sql.push_str(&format!(" RETURNING CAST('{tag}' AS TEXT) AS t, {cols}"));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
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

/// A row an insert gave back: `a` and the id of a new account, `i` and an inbox row's id, source and event id.
type Returned = (String, i64, Option<String>, Option<String>);

fn returned(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Returned>, StoreError> {
    use sqlx::Row;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).collect()
}

/// Write every table: on PostgreSQL with one prepared statement for the whole batch; on SQLite (in process)
/// one `VALUES` statement per table with rows, in table order (new accounts before the rows that refer to them).
async fn run_all(tx: &mut Tx, postgres: bool, mut all: Vec<Rows>) -> Result<Vec<Returned>, StoreError> {
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
    if mask == 0 {
        return Ok(Vec::new());
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(pg::write_statement(&TABLES, mask)));
    for r in all.iter().filter(|r| !r.args.is_empty()) {
        for array in r.arrays() {
            q = q.bind(array);
        }
    }
    returned(q.fetch_all(&mut *tx).await?)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializable")
}

/// Write every change of `b` and start over from what is now stored.
pub(crate) async fn write(b: &mut Batch) -> Result<(), StoreError> {
    let mut lots = Rows::new(LOTS);
    let mut subs = Rows::new(SUBS);
    let mut holds = Rows::new(HOLDS);
    let mut members = Rows::new(MEMBERS);
    let mut gone_members: Vec<(String, String)> = Vec::new();
    let mut entries = Rows::new(ENTRIES);
    let mut accounts = Rows::new(ACCOUNTS);
    let mut new_accounts = Rows::new(NEW_ACCOUNTS);
    let mut ids: Vec<&String> = b.slots.iter().filter(|(_, s)| s.dirty).map(|(id, _)| id).collect();
    ids.sort();
    for id in ids {
        let s = &b.slots[id];
        let a = &s.account;
        let now = s.updated_at;
        for lot in a.lots.iter().filter(|l| s.base.lots.get(&l.id) != Some(*l)) {
            lots.push(vec![
                Arg::Text(id.clone()),
                Arg::Text(lot.id.clone()),
                Arg::Text(lot.source.as_str().into()),
                Arg::Int(lot.amount),
                Arg::Int(lot.remaining),
                Arg::Int(lot.granted_at),
                Arg::OptInt(lot.expires_at),
                Arg::OptText(lot.subscription_id.clone()),
                Arg::OptInt(lot.cycle_start),
                Arg::Int(lot.clawed),
            ]);
        }
        for sub in a.subscriptions.iter().filter(|x| s.base.subs.get(&x.id) != Some(*x)) {
            subs.push(vec![Arg::Text(sub.id.clone()), Arg::Text(id.clone()), Arg::Text(to_json(sub)), Arg::Int(now)]);
        }
        for h in a.holds.iter().filter(|h| s.base.holds.get(&h.id) != Some(*h)) {
            holds.push(vec![
                Arg::Text(h.id.clone()),
                Arg::Text(id.clone()),
                Arg::Text(h.status.as_str().into()),
                Arg::Int(h.amount),
                Arg::Int(h.deadline),
                Arg::Text(to_json(h)),
                Arg::Int(h.created_at),
                Arg::Int(now),
            ]);
        }
        for m in a.members.iter().filter(|m| !s.base.members.contains(m)) {
            members.push(vec![Arg::Text(id.clone()), Arg::Text(m.clone()), Arg::Int(now)]);
        }
        for m in s.base.members.iter().filter(|m| !a.members.contains(m)) {
            gone_members.push((id.clone(), m.clone()));
        }
        for (e, recorded) in &s.entries {
            entries.push(vec![
                Arg::Text(id.clone()),
                Arg::Int(e.at),
                Arg::Text(e.kind.as_str().into()),
                Arg::Int(e.amount),
                Arg::OptText(e.lot_id.clone()),
                Arg::Int(e.balance_after),
                Arg::Text(e.cause.clone()),
                Arg::OptText(e.user_id.clone()),
                Arg::OptText(e.operation.clone()),
                Arg::Int(e.shortfall),
                Arg::Int(*recorded),
            ]);
        }
        let row = vec![
            Arg::Text(id.clone()),
            Arg::Int(a.balance),
            Arg::Int(a.signup_granted as i64),
            Arg::OptInt(a.next_due()),
            Arg::Int(s.created_at),
            Arg::Int(now),
            Arg::Int(s.version + 1),
        ];
        if s.is_new {
            new_accounts.push(row);
        } else {
            accounts.push(row);
        }
    }
    let pending = std::mem::take(&mut b.pending);
    let mut outbox = Rows::new(OUTBOX);
    for o in pending.outbox {
        outbox.push(vec![
            Arg::Text(o.event_id),
            Arg::OptText(o.account),
            Arg::Text(o.kind),
            Arg::Text(o.payload),
            Arg::Int(o.created_at),
        ]);
    }
    let mut effects = Rows::new(EFFECTS);
    for (account, key, e, now) in pending.effects {
        effects.push(vec![
            Arg::Text(account),
            Arg::Text(key),
            Arg::OptText(e.request),
            Arg::Text(e.response),
            Arg::Int(now),
        ]);
    }
    let mut inbox = Rows::new(INBOX);
    let mut cells = std::collections::HashMap::new();
    for r in &pending.inbox {
        inbox.push(vec![
            Arg::Text(r.source.clone()),
            Arg::Text(r.event_id.clone()),
            Arg::Text(r.kind.clone()),
            Arg::Text(r.payload.clone()),
            Arg::Text(r.status.as_str().into()),
            Arg::OptText(r.detail.clone()),
            Arg::OptText(r.waiting_for.clone()),
            Arg::OptText(r.account.clone()),
            Arg::Int(1),
            Arg::Int(r.created),
            Arg::Int(r.now),
            Arg::Int(r.now),
            Arg::OptInt(r.next_attempt_at),
        ]);
        cells.insert((r.source.clone(), r.event_id.clone()), r.id.clone());
    }
    let mut links = Rows::new(LINKS);
    for (customer, account, now) in pending.links {
        links.push(vec![Arg::Text(customer), Arg::Text(account), Arg::Int(now)]);
    }
    // The last object seen of each price (one row per price in one statement).
    let mut prices = Rows::new(PRICES);
    let mut last: Vec<(String, String, i64)> = Vec::new();
    for p in pending.prices.into_iter().rev() {
        if !last.iter().any(|(id, _, _)| *id == p.0) {
            last.push(p);
        }
    }
    for (id, object, now) in last {
        prices.push(vec![Arg::Text(id), Arg::Text(object), Arg::Int(now)]);
    }
    let mut invoices = Rows::new(INVOICES);
    let mut seen_invoices: Vec<&str> = Vec::new();
    for i in pending.invoices.iter().rev() {
        if seen_invoices.contains(&i.id.as_str()) {
            continue;
        }
        seen_invoices.push(&i.id);
        invoices.push(vec![
            Arg::Text(i.id.clone()),
            Arg::OptText(i.subscription.clone()),
            Arg::OptText(i.account.clone()),
            Arg::OptInt(i.period.map(|p| p.0)),
            Arg::OptInt(i.period.map(|p| p.1)),
            Arg::Int(i.seen_at),
        ]);
    }
    let mut invoice_payments = Rows::new(INVOICE_PAYMENTS);
    for (payment, invoice, now) in &pending.invoice_payments {
        invoice_payments.push(vec![Arg::Text(payment.clone()), Arg::Text(invoice.clone()), Arg::Int(*now)]);
    }
    let expect_new = new_accounts.rows();
    let expect_inbox = inbox.rows();
    let postgres = b.backend() == super::Backend::Postgres;
    let tx = b.tx();
    let mut got = Vec::new();
    if !pending.moves.is_empty() {
        // Moves go to accounts that may be new: those are written first, then the moves, then the rest.
        let new = std::mem::replace(&mut new_accounts, Rows::new(NEW_ACCOUNTS));
        got.extend(new.run(tx).await?);
        for (from, to, customer) in &pending.moves {
            super::moves::move_rows(tx, from, to, customer).await?;
        }
    }
    let all = vec![
        lots,
        subs,
        holds,
        members,
        entries,
        accounts,
        outbox,
        effects,
        new_accounts,
        inbox,
        links,
        prices,
        invoices,
        invoice_payments,
    ];
    got.extend(run_all(tx, postgres, all).await?);
    let created = got.iter().filter(|r| r.0 == "a").count();
    if created != expect_new {
        return Err(StoreError::Conflict(format!("{} of {expect_new} new accounts existed", expect_new - created)));
    }
    let mut stored = 0;
    for (_, id, source, event) in got.into_iter().filter(|r| r.0 == "i") {
        if let (Some(source), Some(event)) = (source, event)
            && let Some(cell) = cells.get(&(source, event))
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
    for (account, user) in gone_members {
        sqlx::query("DELETE FROM members WHERE account_id = $1 AND user_id = $2")
            .bind(account)
            .bind(user)
            .execute(&mut *tx)
            .await?;
    }
    for s in b.slots.values_mut().filter(|s| s.dirty) {
        s.rebase();
    }
    Ok(())
}
