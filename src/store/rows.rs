//! What a batch writes, table by table: the rows of every account that changed since it was loaded (only the
//! lots, subscriptions, holds and members that differ from what was loaded, and the new entries), and the rows
//! waiting in [`super::pending`]. One function per table, so a column added to a table in
//! [`super::tables`] is filled in one place.

use super::load::Slot;
use super::pending::{Effect, Invoice, NewInbox, NewOutbox, Pending};
use super::tables::{self as t, Arg, Rows};
use crate::time::UnixTime;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializable")
}

/// The rows of the accounts that changed.
pub(super) struct AccountRows {
    pub lots: Rows,
    pub subs: Rows,
    pub holds: Rows,
    pub members: Rows,
    /// Members removed: (account, user), deleted after the inserts.
    pub gone_members: Vec<(String, String)>,
    pub entries: Rows,
    pub accounts: Rows,
    /// Accounts created in this batch (inserted only if no other writer created them meanwhile).
    pub new_accounts: Rows,
}

/// The rows of every changed account in `slots`, in account order (so concurrent batches lock rows alike).
pub(super) fn accounts(slots: &HashMap<String, Slot>) -> AccountRows {
    let mut out = AccountRows {
        lots: Rows::new(t::LOTS),
        subs: Rows::new(t::SUBS),
        holds: Rows::new(t::HOLDS),
        members: Rows::new(t::MEMBERS),
        gone_members: Vec::new(),
        entries: Rows::new(t::ENTRIES),
        accounts: Rows::new(t::ACCOUNTS),
        new_accounts: Rows::new(t::NEW_ACCOUNTS),
    };
    let mut ids: Vec<&String> = slots.iter().filter(|(_, s)| s.dirty).map(|(id, _)| id).collect();
    ids.sort();
    for id in ids {
        let s = &slots[id];
        lots(id, s, &mut out.lots);
        subscriptions(id, s, &mut out.subs);
        holds(id, s, &mut out.holds);
        members(id, s, &mut out.members, &mut out.gone_members);
        entries(id, s, &mut out.entries);
        let rows = if s.is_new { &mut out.new_accounts } else { &mut out.accounts };
        account(id, s, rows);
    }
    out
}

fn lots(id: &str, s: &Slot, rows: &mut Rows) {
    for lot in s.account.lots.iter().filter(|l| s.base.lots.get(&l.id) != Some(*l)) {
        rows.push(vec![
            Arg::text(id.to_owned()),
            Arg::text(lot.id.clone()),
            Arg::text(lot.source.as_str()),
            Arg::int(lot.amount),
            Arg::int(lot.remaining),
            Arg::int(lot.granted_at),
            Arg::opt_int(lot.expires_at),
            Arg::opt_text(lot.subscription_id.clone()),
            Arg::opt_int(lot.cycle_start),
            Arg::int(lot.clawed),
        ]);
    }
}

fn subscriptions(id: &str, s: &Slot, rows: &mut Rows) {
    for sub in s.account.subscriptions.iter().filter(|x| s.base.subs.get(&x.id) != Some(*x)) {
        rows.push(vec![
            Arg::text(sub.id.clone()),
            Arg::text(id.to_owned()),
            Arg::text(to_json(sub)),
            Arg::int(s.updated_at),
        ]);
    }
}

fn holds(id: &str, s: &Slot, rows: &mut Rows) {
    for h in s.account.holds.iter().filter(|h| s.base.holds.get(&h.id) != Some(*h)) {
        rows.push(vec![
            Arg::text(h.id.clone()),
            Arg::text(id.to_owned()),
            Arg::text(h.status.as_str()),
            Arg::int(h.amount),
            Arg::int(h.deadline),
            Arg::text(to_json(h)),
            Arg::int(h.created_at),
            Arg::int(s.updated_at),
        ]);
    }
}

fn members(id: &str, s: &Slot, rows: &mut Rows, gone: &mut Vec<(String, String)>) {
    let a = &s.account;
    for m in a.members.iter().filter(|m| !s.base.members.contains(m)) {
        rows.push(vec![Arg::text(id.to_owned()), Arg::text(m.clone()), Arg::int(s.updated_at)]);
    }
    for m in s.base.members.iter().filter(|m| !a.members.contains(m)) {
        gone.push((id.to_owned(), m.clone()));
    }
}

fn entries(id: &str, s: &Slot, rows: &mut Rows) {
    for (e, recorded) in &s.entries {
        rows.push(vec![
            Arg::text(id.to_owned()),
            Arg::int(e.at),
            Arg::text(e.kind.as_str()),
            Arg::int(e.amount),
            Arg::opt_text(e.lot_id.clone()),
            Arg::int(e.balance_after),
            Arg::text(e.cause.clone()),
            Arg::opt_text(e.user_id.clone()),
            Arg::opt_text(e.operation.clone()),
            Arg::int(e.shortfall),
            Arg::int(*recorded),
        ]);
    }
}

/// The account row itself, with its version one up (what the account cache of every lane checks).
fn account(id: &str, s: &Slot, rows: &mut Rows) {
    let a = &s.account;
    rows.push(vec![
        Arg::text(id.to_owned()),
        Arg::int(a.balance),
        Arg::int(a.signup_granted),
        Arg::opt_int(a.next_due()),
        Arg::int(s.created_at),
        Arg::int(s.updated_at),
        Arg::int(s.version + 1),
    ]);
}

/// The rows waiting in a batch's [`Pending`] lists.
pub(super) struct PendingRows {
    pub outbox: Rows,
    pub effects: Rows,
    pub inbox: Rows,
    /// Where each new inbox row's id goes once it is written, by (source, event id).
    pub inbox_ids: HashMap<(String, String), Arc<OnceLock<i64>>>,
    pub links: Rows,
    pub prices: Rows,
    pub invoices: Rows,
    pub invoice_payments: Rows,
    /// Accounts whose rows move to another: (from, to, Stripe customer).
    pub moves: Vec<(String, String, String)>,
}

pub(super) fn pending(p: Pending) -> PendingRows {
    let (inbox, inbox_ids) = inbox(&p.inbox);
    PendingRows {
        outbox: outbox(p.outbox),
        effects: effects(p.effects),
        inbox,
        inbox_ids,
        links: pairs(t::LINKS, p.links),
        prices: prices(p.prices),
        invoices: invoices(&p.invoices),
        invoice_payments: pairs(t::INVOICE_PAYMENTS, p.invoice_payments),
        moves: p.moves,
    }
}

fn outbox(list: Vec<NewOutbox>) -> Rows {
    let mut rows = Rows::new(t::OUTBOX);
    for o in list {
        rows.push(vec![
            Arg::text(o.event_id),
            Arg::opt_text(o.account),
            Arg::text(o.kind),
            Arg::text(o.payload),
            Arg::int(o.created_at),
        ]);
    }
    rows
}

fn effects(list: Vec<(String, String, Effect, UnixTime)>) -> Rows {
    let mut rows = Rows::new(t::EFFECTS);
    for (account, key, e, now) in list {
        rows.push(vec![
            Arg::text(account),
            Arg::text(key),
            Arg::opt_text(e.request),
            Arg::text(e.response),
            Arg::int(now),
        ]);
    }
    rows
}

type InboxIds = HashMap<(String, String), Arc<OnceLock<i64>>>;

fn inbox(list: &[NewInbox]) -> (Rows, InboxIds) {
    let mut rows = Rows::new(t::INBOX);
    let mut ids = HashMap::new();
    for r in list {
        rows.push(vec![
            Arg::text(r.source.clone()),
            Arg::text(r.event_id.clone()),
            Arg::text(r.kind.clone()),
            Arg::text(r.payload.clone()),
            Arg::text(r.status.as_str()),
            Arg::opt_text(r.detail.clone()),
            Arg::opt_text(r.waiting_for.clone()),
            Arg::opt_text(r.account.clone()),
            Arg::int(1),
            Arg::int(r.created),
            Arg::int(r.now),
            Arg::int(r.now),
            Arg::opt_int(r.next_attempt_at),
        ]);
        ids.insert((r.source.clone(), r.event_id.clone()), r.id.clone());
    }
    (rows, ids)
}

/// Rows of (text, text, time): customer links, invoice payments.
fn pairs(table: usize, list: Vec<(String, String, UnixTime)>) -> Rows {
    let mut rows = Rows::new(table);
    for (a, b, now) in list {
        rows.push(vec![Arg::text(a), Arg::text(b), Arg::int(now)]);
    }
    rows
}

/// The last object seen of each price (one row per price in one statement).
fn prices(list: Vec<(String, String, UnixTime)>) -> Rows {
    let mut last: Vec<(String, String, UnixTime)> = Vec::new();
    for p in list.into_iter().rev() {
        if !last.iter().any(|(id, _, _)| *id == p.0) {
            last.push(p);
        }
    }
    pairs(t::PRICES, last)
}

/// The last seen of each invoice.
fn invoices(list: &[Invoice]) -> Rows {
    let mut rows = Rows::new(t::INVOICES);
    let mut seen: Vec<&str> = Vec::new();
    for i in list.iter().rev() {
        if seen.contains(&i.id.as_str()) {
            continue;
        }
        seen.push(&i.id);
        rows.push(vec![
            Arg::text(i.id.clone()),
            Arg::opt_text(i.subscription.clone()),
            Arg::opt_text(i.account.clone()),
            Arg::opt_int(i.period.map(|p| p.0)),
            Arg::opt_int(i.period.map(|p| p.1)),
            Arg::int(i.seen_at),
        ]);
    }
    rows
}
