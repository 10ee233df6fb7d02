//! What a batch will write besides its accounts: inbox rows, Stripe customer links and prices, outbox rows and
//! idempotency keys. Kept in memory until the batch is written, so taking back a job (or a decision that
//! failed) is truncating a few lists, and the whole batch is written with a few statements.

use super::batch::{Effect, NewOutbox};
use super::inbox::InboxStatus;
use crate::time::Ts;
use std::sync::{Arc, OnceLock};

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
    pub created: Ts,
    pub now: Ts,
    pub next_attempt_at: Option<Ts>,
    /// Gets the row's id once it is written.
    pub id: Arc<OnceLock<i64>>,
}

/// The lists, in the order they are written.
#[derive(Debug, Default)]
pub struct Pending {
    pub outbox: Vec<NewOutbox>,
    /// (account, key, answer, time).
    pub effects: Vec<(String, String, Effect, Ts)>,
    pub inbox: Vec<NewInbox>,
    /// Stripe customer → account (the first link wins).
    pub links: Vec<(String, String, Ts)>,
    /// Stripe price objects seen (the last one wins).
    pub prices: Vec<(String, String, Ts)>,
}

/// How long each list was: taking back to a mark truncates them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark([usize; 5]);

impl Pending {
    pub fn mark(&self) -> Mark {
        Mark([self.outbox.len(), self.effects.len(), self.inbox.len(), self.links.len(), self.prices.len()])
    }

    pub fn back_to(&mut self, m: Mark) {
        self.outbox.truncate(m.0[0]);
        self.effects.truncate(m.0[1]);
        self.inbox.truncate(m.0[2]);
        self.links.truncate(m.0[3]);
        self.prices.truncate(m.0[4]);
    }

    /// The inbox row of `source`/`event_id` added in this batch.
    pub fn inbox_row(&self, source: &str, event_id: &str) -> Option<&NewInbox> {
        self.inbox.iter().rev().find(|r| r.source == source && r.event_id == event_id)
    }

    pub fn link(&self, customer: &str) -> Option<&str> {
        self.links.iter().find(|(c, _, _)| c == customer).map(|(_, a, _)| a.as_str())
    }

    pub fn price(&self, id: &str) -> Option<&str> {
        self.prices.iter().rev().find(|(p, _, _)| p == id).map(|(_, o, _)| o.as_str())
    }
}
