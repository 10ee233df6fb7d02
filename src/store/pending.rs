//! What a batch will write besides its accounts: inbox rows, Stripe customer links and prices, outbox rows and
//! idempotency keys. Kept in memory until the batch is written, so taking back a job (or a decision that
//! failed) is truncating a few lists, and the whole batch is written with a few statements.

use super::inbox::InboxStatus;
use crate::time::UnixTime;
use std::sync::{Arc, OnceLock};

/// The stored answer of an idempotency key.
#[derive(Debug, Clone)]
pub(crate) struct Effect {
    pub request: Option<String>,
    pub response: String,
}

/// A row for the outbox, written with the batch.
#[derive(Debug, Clone)]
pub(crate) struct NewOutbox {
    pub event_id: String,
    pub account: Option<String>,
    pub kind: String,
    pub payload: String,
    pub created_at: UnixTime,
}

/// An inbox row to insert, with its outcome already decided.
#[derive(Debug, Clone)]
pub struct NewInbox {
    pub source: String,
    pub event_id: String,
    pub kind: String,
    pub payload: String,
    pub status: InboxStatus,
    pub detail: Option<String>,
    pub waiting_for: Option<String>,
    pub account: Option<String>,
    pub created: UnixTime,
    pub now: UnixTime,
    pub next_attempt_at: Option<UnixTime>,
    /// Gets the row's id once it is written.
    pub id: Arc<OnceLock<i64>>,
}

/// The lists, in the order they are written.
#[derive(Debug, Default)]
pub struct Pending {
    pub outbox: Vec<NewOutbox>,
    /// (account, key, answer, time).
    pub effects: Vec<(String, String, Effect, UnixTime)>,
    pub inbox: Vec<NewInbox>,
    /// Stripe customer → account (the first link wins).
    pub links: Vec<(String, String, UnixTime)>,
    /// Stripe price objects seen (the last one wins). Not taken back with a decision: a price seen by an event
    /// that failed is still known.
    pub prices: Vec<(String, String, UnixTime)>,
    /// Subscription invoices paid (the last one seen wins).
    pub invoices: Vec<Invoice>,
    /// Payment → the invoice it paid (the first link wins).
    pub invoice_payments: Vec<(String, String, UnixTime)>,
    /// Accounts whose lots, subscriptions and holds go to another account: (from, to, Stripe customer).
    pub moves: Vec<(String, String, String)>,
}

/// A subscription invoice, as far as refunds care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub id: String,
    /// None: an invoice of no subscription.
    pub subscription: Option<String>,
    pub account: Option<String>,
    pub period: Option<(UnixTime, UnixTime)>,
    pub seen_at: UnixTime,
}

/// How long each list was: taking back to a mark truncates them (prices excepted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark([usize; 7]);

impl Pending {
    pub fn mark(&self) -> Mark {
        Mark([
            self.outbox.len(),
            self.effects.len(),
            self.inbox.len(),
            self.links.len(),
            self.invoices.len(),
            self.invoice_payments.len(),
            self.moves.len(),
        ])
    }

    pub fn back_to(&mut self, m: Mark) {
        self.outbox.truncate(m.0[0]);
        self.effects.truncate(m.0[1]);
        self.inbox.truncate(m.0[2]);
        self.links.truncate(m.0[3]);
        self.invoices.truncate(m.0[4]);
        self.invoice_payments.truncate(m.0[5]);
        self.moves.truncate(m.0[6]);
    }

    /// The inbox row of `source`/`event_id` added in this batch.
    pub fn inbox_row(&self, source: &str, event_id: &str) -> Option<&NewInbox> {
        self.inbox.iter().rev().find(|r| r.source == source && r.event_id == event_id)
    }

    pub fn link(&self, customer: &str) -> Option<&str> {
        self.links.iter().find(|(c, _, _)| c == customer).map(|(_, a, _)| a.as_str())
    }

    pub fn invoice(&self, id: &str) -> Option<&Invoice> {
        self.invoices.iter().rev().find(|i| i.id == id)
    }

    pub fn invoice_of(&self, payment: &str) -> Option<&str> {
        self.invoice_payments.iter().find(|(p, _, _)| p == payment).map(|(_, i, _)| i.as_str())
    }

    /// Where the credits of `account` went in this batch, if they did.
    pub fn moved_to(&self, account: &str) -> Option<&str> {
        self.moves.iter().rev().find(|(from, _, _)| from == account).map(|(_, to, _)| to.as_str())
    }

    pub fn price(&self, id: &str) -> Option<&str> {
        self.prices.iter().rev().find(|(p, _, _)| p == id).map(|(_, o, _)| o.as_str())
    }
}
