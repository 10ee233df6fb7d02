//! The tables a batch writes (their insert statements and column types, in the order of the PostgreSQL
//! statement's parameters) and the rows gathered for each. Kept apart from the running of the statements
//! ([`super::flush`]) and from what fills the rows ([`super::rows`]), so adding a column is one place here and
//! one in `rows.rs`.

use super::pg;
use pg::Ty::{Int, Text};

/// One bound value.
pub(super) enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
}

/// Bound values from the domain types (ids are text; credits and instants integers).
impl Arg {
    pub fn text(v: impl Into<String>) -> Arg {
        Arg::Text(v.into())
    }
    pub fn opt_text<T: Into<String>>(v: Option<T>) -> Arg {
        Arg::OptText(v.map(Into::into))
    }
    pub fn int(v: impl Into<i64>) -> Arg {
        Arg::Int(v.into())
    }
    pub fn opt_int<T: Into<i64>>(v: Option<T>) -> Arg {
        Arg::OptInt(v.map(Into::into))
    }
}

pub(super) const LOTS: usize = 0;
pub(super) const SUBS: usize = 1;
pub(super) const HOLDS: usize = 2;
pub(super) const MEMBERS: usize = 3;
pub(super) const ENTRIES: usize = 4;
pub(super) const ACCOUNTS: usize = 5;
pub(super) const OUTBOX: usize = 6;
pub(super) const EFFECTS: usize = 7;
pub(super) const NEW_ACCOUNTS: usize = 8;
pub(super) const INBOX: usize = 9;
pub(super) const LINKS: usize = 10;
pub(super) const PRICES: usize = 11;
pub(super) const INVOICES: usize = 12;
pub(super) const INVOICE_PAYMENTS: usize = 13;

/// The tables whose rows the write statement's check counts (`pg::write_statement`): the accounts updated (first,
/// so their row locks come before any other), the new accounts and the new inbox rows.
pub(super) const COUNTED: [usize; 3] = [ACCOUNTS, NEW_ACCOUNTS, INBOX];

/// Every table a batch writes, in the order of the PostgreSQL statement's parameters.
pub(super) static TABLES: [pg::Table; 14] = [
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
               next_due_at = excluded.next_due_at, updated_at = excluded.updated_at, version = excluded.version \
               WHERE accounts.version = excluded.version - 1",
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
        returning: Some(("a", "CAST(0 AS BIGINT) AS row_id, id AS a, CAST(NULL AS TEXT) AS b")),
    },
    pg::Table {
        insert: "INSERT INTO inbox (source, event_id, type, payload, status, detail, waiting_for, account_id, attempts, \
                 event_created, first_seen, last_seen, next_attempt_at)",
        types: &[Text, Text, Text, Text, Text, Text, Text, Text, Int, Int, Int, Int, Int],
        tail: " ON CONFLICT (source, event_id) DO NOTHING",
        ordered: true,
        returning: Some(("i", "id AS row_id, source AS a, event_id AS b")),
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
pub(super) struct Rows {
    pub table: &'static pg::Table,
    pub args: Vec<Arg>,
}

impl Rows {
    pub fn new(table: usize) -> Self {
        Rows { table: &TABLES[table], args: Vec::new() }
    }

    pub fn cols(&self) -> usize {
        self.table.types.len()
    }

    pub fn rows(&self) -> usize {
        self.args.len() / self.cols()
    }

    pub fn push(&mut self, row: Vec<Arg>) {
        debug_assert_eq!(row.len(), self.cols());
        self.args.extend(row);
    }
}
