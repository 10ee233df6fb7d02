//! What a decision reads and writes besides accounts, through the batch: inbox rows, Stripe customer links and
//! price objects, which account holds a payment or a subscription, and outgoing events. Reads look at what the
//! batch has not written yet first, so jobs of one batch see each other; writes wait in [`super::pending`].

use super::StoreError;
use super::batch::{Batch, outbox_row};
use super::inbox::{self as rows, InboxRow, InboxStatus};
use super::pending::{Invoice, NewInbox};
use super::request::OnMissing;
use crate::ledger::LotId;
use crate::time::UnixTime;
use sqlx::Row;
use std::collections::HashSet;
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
    pub fn emit(&mut self, kind: &str, account: Option<&str>, data: serde_json::Value, now: UnixTime) {
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
        if let Some((_, to, _)) = self.pending.moves.iter().rev().find(|m| m.2 == customer) {
            return Ok(Some(to.clone()));
        }
        if let Some(a) = self.pending.link(customer) {
            return Ok(Some(a.to_owned()));
        }
        rows::customer_account(self.tx(), customer).await
    }

    /// Where an account's credits are now, following a move in this batch.
    fn followed(&self, account: String) -> String {
        match self.pending.moved_to(&account) {
            Some(to) => to.to_owned(),
            None => account,
        }
    }

    /// Link a Stripe customer to `account` (SPEC §5). A customer linked to nothing is linked; one whose events
    /// went to the account named by its id (the fallback) is linked to `account` instead, and what the fallback
    /// holds moves there (entries on both sides, with `cause`); one linked to another account keeps that link
    /// (the first named account wins).
    pub async fn link_customer(
        &mut self,
        customer: &str,
        account: &str,
        on_missing: OnMissing,
        now: UnixTime,
        cause: &str,
    ) -> Result<(), StoreError> {
        match self.customer_account(customer).await? {
            None => self.pending.links.push((customer.to_owned(), account.to_owned(), now)),
            Some(linked) if linked == account => {}
            Some(linked) if linked == customer => self.move_account(customer, account, on_missing, now, cause).await?,
            Some(_) => {}
        }
        Ok(())
    }

    /// Move what `from` holds (lots, subscriptions, active holds) to `to`, and the customer `from` is named after.
    async fn move_account(
        &mut self,
        from: &str,
        to: &str,
        on_missing: OnMissing,
        now: UnixTime,
        cause: &str,
    ) -> Result<(), StoreError> {
        self.load(to, on_missing, now).await?;
        let from_exists = match self.load(from, OnMissing::Refuse, now).await {
            Ok(()) => true,
            Err(StoreError::UnknownAccount(_)) => false,
            Err(e) => return Err(e),
        };
        if from_exists {
            self.touch_account(from);
            self.touch_account(to);
            let target = &self.slots[to].account;
            let taken: HashSet<String> = target
                .lots
                .iter()
                .map(|l| l.id.to_string())
                .chain(target.subscriptions.iter().map(|s| s.id.clone()))
                .chain(target.holds.iter().map(|h| h.id.to_string()))
                .collect();
            let source = self.slots.get_mut(from).expect("loaded");
            let handed = source.account.hand_over(|id| taken.contains(id), now, cause);
            source.note_change(now);
            let target = self.slots.get_mut(to).expect("loaded");
            target.account.take_over(handed, now, cause);
            target.note_change(now);
        }
        self.pending.moves.push((from.to_owned(), to.to_owned(), from.to_owned()));
        Ok(())
    }

    /// Record that `payment` paid `invoice` (the first link wins).
    pub async fn link_payment(&mut self, payment: &str, invoice: &str, now: UnixTime) -> Result<(), StoreError> {
        if self.invoice_of(payment).await?.is_none() {
            self.pending.invoice_payments.push((payment.to_owned(), invoice.to_owned(), now));
        }
        Ok(())
    }

    /// The invoice a payment paid, if known.
    pub async fn invoice_of(&mut self, payment: &str) -> Result<Option<String>, StoreError> {
        if let Some(i) = self.pending.invoice_of(payment) {
            return Ok(Some(i.to_owned()));
        }
        let q = sqlx::query_scalar("SELECT invoice_id FROM stripe_invoice_payments WHERE payment_id = $1");
        Ok(q.bind(payment).fetch_optional(self.tx()).await?)
    }

    /// Remember a paid invoice (what a refund of it needs).
    pub fn record_invoice(&mut self, invoice: Invoice) {
        self.pending.invoices.push(invoice);
    }

    /// A paid invoice seen before.
    pub async fn invoice(&mut self, id: &str) -> Result<Option<Invoice>, StoreError> {
        if let Some(i) = self.pending.invoice(id) {
            return Ok(Some(i.clone()));
        }
        let q = sqlx::query(
            "SELECT id, subscription_id, account_id, period_start, period_end, seen_at FROM stripe_invoices WHERE id = $1",
        );
        let Some(r) = q.bind(id).fetch_optional(self.tx()).await? else { return Ok(None) };
        let period = match (
            r.try_get::<Option<UnixTime>, _>("period_start")?,
            r.try_get::<Option<UnixTime>, _>("period_end")?,
        ) {
            (Some(s), Some(e)) => Some((s, e)),
            _ => None,
        };
        let account: Option<String> = r.try_get("account_id")?;
        Ok(Some(Invoice {
            id: r.try_get("id")?,
            subscription: r.try_get("subscription_id")?,
            account: account.map(|a| self.followed(a)),
            period,
            seen_at: r.try_get("seen_at")?,
        }))
    }

    /// The lots a subscription granted `account` for cycles starting in `[start, end)` (whatever they have left).
    pub async fn subscription_lots(
        &mut self,
        account: &str,
        sub: &str,
        start: UnixTime,
        end: UnixTime,
    ) -> Result<Vec<LotId>, StoreError> {
        let mut ids: Vec<LotId> = Vec::new();
        if let Some(s) = self.slots.get(account) {
            for l in &s.account.lots {
                if l.subscription_id.as_deref() == Some(sub) && l.cycle_start.is_some_and(|c| c >= start && c < end) {
                    ids.push(l.id.clone());
                }
            }
        }
        let q = sqlx::query_scalar::<_, LotId>(
            "SELECT id FROM lots WHERE account_id = $1 AND subscription_id = $2 AND cycle_start >= $3 AND cycle_start < $4 \
             ORDER BY cycle_start, id",
        );
        for id in q.bind(account).bind(sub).bind(start).bind(end).fetch_all(self.tx()).await? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Remember a Stripe price object (the last one seen wins).
    pub fn record_price(&mut self, id: &str, object: &str, now: UnixTime) {
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
        // Only a package lot is keyed by its payment: the other lots' ids are `signup` or prefixed (`alloc:`,
        // `adjustment:`, `upgrade:`, `hold-return:`), and a payment id is a Stripe id or a command's
        // `payment_ref`, which may not contain ':' nor be `signup` (commands/mod.rs). So the lookup goes
        // through the package lots' unique index on the payment rather than a scan of every lot, and a payment
        // found in no package lot is in no lot at all (what `unbought` records).
        let q = sqlx::query_scalar("SELECT account_id FROM lots WHERE id = $1 AND source = 'package' LIMIT 1");
        let found: Option<String> = q.bind(payment).fetch_optional(self.tx()).await?;
        if found.is_none() {
            // No account has it: granting it need not look for it again.
            self.unbought.insert(payment.to_owned());
        }
        Ok(found.map(|a| self.followed(a)))
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
        let found: Option<String> = q.bind(sub).fetch_optional(self.tx()).await?;
        Ok(found.map(|a| self.followed(a)))
    }
}
