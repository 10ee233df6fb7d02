//! What a decision reads and writes besides accounts, through the batch: inbox rows, Stripe customer links and
//! price objects, which account holds a payment or a subscription, and outgoing events. Reads look at what the
//! batch has not written yet first, so jobs of one batch see each other; writes wait in [`super::pending`].

use super::StoreError;
use super::batch::{Batch, outbox_row};
use super::inbox::{self as rows, InboxRow, InboxStatus};
use super::pending::NewInbox;
use crate::time::Ts;
use std::sync::{Arc, OnceLock};

/// An inbox row as a batch sees it: stored before, or added by an earlier job of the batch.
#[derive(Debug, Clone)]
pub enum Seen {
    Stored(InboxRow),
    /// Added in this batch: its status and detail, and its id once written.
    Added {
        status: InboxStatus,
        detail: Option<String>,
        id: Arc<OnceLock<i64>>,
    },
}

impl Batch {
    /// Write an outgoing event with the batch (for events not caused by a change to an account).
    pub fn emit(&mut self, kind: &str, account: Option<&str>, data: serde_json::Value, now: Ts) {
        self.pending.outbox.push(outbox_row(kind, account, data, now));
    }

    /// The inbox row of `source`/`event_id`, if there is one.
    pub async fn inbox_row(&mut self, source: &str, event_id: &str) -> Result<Option<Seen>, StoreError> {
        if let Some(r) = self.pending.inbox_row(source, event_id) {
            return Ok(Some(Seen::Added { status: r.status, detail: r.detail.clone(), id: r.id.clone() }));
        }
        let key = (source.to_owned(), event_id.to_owned());
        if let Some(found) = self.inbox.get(&key) {
            return Ok(found.clone().map(Seen::Stored));
        }
        let found = rows::find(self.tx(), source, event_id).await?;
        self.inbox.insert(key, found.clone());
        Ok(found.map(Seen::Stored))
    }

    /// Store a new event with its outcome (written with the batch); its id comes with the commit.
    pub fn inbox_add(&mut self, row: NewInbox) -> Arc<OnceLock<i64>> {
        let id = row.id.clone();
        self.pending.inbox.push(row);
        id
    }

    /// The account a Stripe customer is linked to.
    pub async fn customer_account(&mut self, customer: &str) -> Result<Option<String>, StoreError> {
        if let Some(a) = self.pending.link(customer) {
            return Ok(Some(a.to_owned()));
        }
        rows::customer_account(self.tx(), customer).await
    }

    /// Link a Stripe customer to an account (the first link wins).
    pub async fn link_customer(&mut self, customer: &str, account: &str, now: Ts) -> Result<(), StoreError> {
        if self.customer_account(customer).await?.is_none() {
            self.pending.links.push((customer.to_owned(), account.to_owned(), now));
        }
        Ok(())
    }

    /// Remember a Stripe price object (the last one seen wins).
    pub fn record_price(&mut self, id: &str, object: &str, now: Ts) {
        self.pending.prices.push((id.to_owned(), object.to_owned(), now));
    }

    /// A Stripe price object seen before.
    pub async fn price_object(&mut self, id: &str) -> Result<Option<String>, StoreError> {
        if let Some(o) = self.pending.price(id) {
            return Ok(Some(o.to_owned()));
        }
        rows::price_object(self.tx(), id).await
    }

    /// The account that holds the lot bought by `payment`, looking at changes not yet written first.
    pub async fn payment_account(&mut self, payment: &str) -> Result<Option<String>, StoreError> {
        let mut ids: Vec<&String> = self
            .slots
            .iter()
            .filter(|(_, s)| s.account.lots.iter().any(|l| l.id == payment))
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        if let Some(id) = ids.first() {
            return Ok(Some((*id).clone()));
        }
        if self.unbought.contains(payment) {
            return Ok(None);
        }
        let q = sqlx::query_scalar("SELECT account_id FROM lots WHERE id = $1 LIMIT 1");
        let found: Option<String> = q.bind(payment).fetch_optional(self.tx()).await?;
        if found.is_none() {
            // No account has it: granting it need not look for it again.
            self.unbought.insert(payment.to_owned());
        }
        Ok(found)
    }

    /// The account that holds subscription `sub`, looking at changes not yet written first.
    pub async fn subscription_account(&mut self, sub: &str) -> Result<Option<String>, StoreError> {
        let mut ids: Vec<&String> = self
            .slots
            .iter()
            .filter(|(_, s)| s.account.subscriptions.iter().any(|x| x.id == sub))
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        if let Some(id) = ids.first() {
            return Ok(Some((*id).clone()));
        }
        let q =
            sqlx::query_scalar("SELECT account_id FROM subscriptions WHERE id = $1 ORDER BY updated_at DESC LIMIT 1");
        Ok(q.bind(sub).fetch_optional(self.tx()).await?)
    }
}
