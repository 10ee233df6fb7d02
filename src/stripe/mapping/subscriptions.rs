//! Subscriptions and their invoices: snapshots of what Stripe says a subscription is (ordered by event time),
//! paid periods that grant allocations, upgrades, failed payments.

use super::{Fail, Handled, Mapper, Prefetched, cause, parse, unmapped};
use crate::ledger::{Op, Snapshot, UnixTime};
use crate::store::{Batch, InvoiceFact, OnMissing};
use crate::stripe::event::{Envelope, Invoice, Price, SubscriptionObject, meta};
use crate::stripe::prices;

/// Orders subscription snapshots: later events win; at the same second, created < updated < deleted.
pub(super) fn version(env: &Envelope) -> i64 {
    let rank = match env.kind.as_str() {
        "customer.subscription.created" => 0,
        "customer.subscription.updated" => 1,
        _ => 2,
    };
    env.created.secs().saturating_mul(4).saturating_add(rank)
}

impl Mapper<'_> {
    pub(super) async fn subscription(
        &self,
        b: &mut Batch,
        env: &Envelope,
        sub: &SubscriptionObject,
        version: i64,
        deleted: bool,
    ) -> Result<Handled, Fail> {
        let facts = vec![format!("subscription:{}", sub.id)];
        // Every price it carries is remembered, whatever the event comes to: an invoice naming only the price
        // id can then be mapped, or fail, instead of waiting for it forever.
        for price in sub.items().iter().filter_map(|i| i.price.as_ref()) {
            let object = serde_json::to_string(&raw_price(env, &price.id)).unwrap_or_default();
            b.record_price(&price.id, &object, self.now);
            self.learn(format!("price:{}", price.id));
        }
        let priced: Vec<&Price> = sub.items().iter().filter_map(|i| i.price.as_ref()).collect();
        let first = priced.first().ok_or_else(|| Fail::Permanent(format!("subscription {} has no price", sub.id)))?;
        // The item whose price maps to a plan decides (add-ons and metered items do not).
        let (price, terms) = priced
            .iter()
            .find_map(|p| prices::plan_terms(self.catalog, p).map(|t| (*p, t)))
            .ok_or_else(|| Fail::Permanent(format!("price {} maps to no plan in the catalog", first.id)))?;
        let known = b.subscription_account(&sub.id).await?;
        let explicit = meta(&sub.metadata, "account_id").or(known);
        let customer = sub.customer.as_ref().map(|c| c.0.as_str());
        let Some(account) = self.resolve(b, env, explicit, customer).await? else {
            return Err(Fail::Permanent(format!("subscription {} names no account and no customer", sub.id)));
        };
        let period = sub.period();
        let anchor = sub.billing_cycle_anchor.or(period.map(|p| p.0)).or(sub.start_date);
        let anchor = anchor.ok_or_else(|| Fail::Permanent(format!("subscription {} has no billing anchor", sub.id)))?;
        for t in [Some(anchor), sub.trial_start, sub.ended_at, sub.canceled_at, Some(env.created)].into_iter().flatten()
        {
            if !crate::time::plausible(t) {
                return Err(Fail::Permanent(format!(
                    "subscription {}: timestamp {} is out of range",
                    sub.id,
                    t.secs()
                )));
            }
        }
        // A first cycle before the anchor: a trial, or a prorated first period when the anchor lies ahead of the
        // start (both paid by the first invoice, then allocated like any cycle).
        let start =
            [sub.trial_start, sub.start_date].into_iter().flatten().filter(|t| *t < anchor).min().unwrap_or(anchor);
        let interval = price.recurring.as_ref().and_then(|r| r.interval.clone()).unwrap_or_default();
        let snap = Snapshot {
            id: sub.id.clone(),
            start,
            anchor,
            terms,
            status: sub.status.clone().unwrap_or_default(),
            interval,
            cancel_at_period_end: sub.cancel_at_period_end.unwrap_or(false),
            version,
            at: env.created,
        };
        let mut ops = vec![Op::Snapshot(snap)];
        if deleted {
            let at = sub.ended_at.or(sub.canceled_at).unwrap_or(env.created);
            ops.push(Op::Cancel { subscription: sub.id.clone(), at });
        }
        self.apply(b, env, &account, ops).await?;
        Ok(Handled::Applied { account, facts })
    }

    /// The account of a subscription we know, or the subscription fetched from the API, or a wait.
    async fn subscription_account(
        &self,
        b: &mut Batch,
        env: &Envelope,
        sub: &str,
        pre: &Prefetched,
    ) -> Result<Result<String, Handled>, Fail> {
        if let Some(a) = b.subscription_account(sub).await? {
            return Ok(Ok(a));
        }
        if let Some(fetched) = pre.subscription.as_ref().filter(|s| s.id == sub) {
            // Fetched from the API: apply it as a snapshot older than any event about it.
            if let Handled::Applied { account, .. } = self.subscription(b, env, fetched, i64::MIN + 1, false).await? {
                return Ok(Ok(account));
            }
        }
        Ok(Err(Handled::Waiting(format!("subscription:{sub}"))))
    }

    pub(super) async fn invoice_paid(&self, b: &mut Batch, env: &Envelope, pre: &Prefetched) -> Result<Handled, Fail> {
        let inv: Invoice = parse(env, "invoice")?;
        if let Some(pi) = inv.payment_intent.as_ref() {
            // Older API versions name the payment on the invoice: a refund of it finds the invoice.
            b.link_payment(&pi.0, &inv.id, self.now).await?;
            self.learn(format!("payment:{}", pi.0));
        }
        self.learn(format!("invoice:{}", inv.id));
        let Some(sub) = inv.subscription_id() else {
            b.record_invoice(InvoiceFact {
                id: inv.id.clone(),
                subscription: None,
                account: None,
                period: None,
                seen_at: self.now,
            });
            return Ok(Handled::Ignored("invoice of no subscription".into()));
        };
        let account = match self.subscription_account(b, env, &sub, pre).await? {
            Ok(a) => a,
            Err(wait) => return Ok(wait),
        };
        if let Some(c) = inv.customer.as_ref() {
            b.link_customer(&c.0, &account, OnMissing::CreateFromStripe, self.now, &cause(env)).await?;
        }
        let reason = inv.billing_reason.as_deref().unwrap_or("");
        // The billing period the invoice pays: its non-proration lines (a renewal, a start, or a switch to
        // another interval that starts a new period).
        let periods: Vec<(UnixTime, UnixTime)> =
            inv.lines().iter().filter(|l| !l.is_proration()).filter_map(|l| l.period()).collect();
        let paid = match (periods.iter().map(|p| p.0).min(), periods.iter().map(|p| p.1).max()) {
            (Some(s), Some(e)) if e > s => Some((s, e)),
            _ if reason == "subscription_update" => None,
            _ => match (inv.period_start, inv.period_end) {
                (Some(s), Some(e)) if e > s => Some((s, e)),
                _ => return Err(Fail::Permanent(format!("invoice {} has no billing period", inv.id))),
            },
        };
        let mut ops = Vec::new();
        if reason == "subscription_update" {
            // The upgrade: the plan of the line that charges for the new price.
            let line = inv.lines().iter().filter(|l| l.price_id().is_some()).max_by_key(|l| l.amount.unwrap_or(0));
            let Some(price_id) = line.and_then(|l| l.price_id()) else {
                return Err(Fail::Permanent(format!("upgrade invoice {} has no priced line", inv.id)));
            };
            let terms = match prices::plan_terms_by_id(self.catalog, &price_id) {
                Some(t) => t,
                None => match b.price_object(&price_id).await? {
                    None => match line.and_then(|l| l.price_object()) {
                        Some(p) => prices::plan_terms(self.catalog, &p).ok_or_else(|| unmapped(&price_id))?,
                        None => return Ok(Handled::Waiting(format!("price:{price_id}"))),
                    },
                    Some(text) => {
                        let p: Price = serde_json::from_str(&text).map_err(|e| Fail::Permanent(e.to_string()))?;
                        prices::plan_terms(self.catalog, &p).ok_or_else(|| unmapped(&price_id))?
                    }
                },
            };
            // The upgrade happened where its proration starts.
            let at = inv.lines().iter().filter_map(|l| l.period()).map(|p| p.0).min().unwrap_or(env.created);
            if !crate::time::plausible(at) {
                return Err(Fail::Permanent(format!("invoice {}: time {} is out of range", inv.id, at.secs())));
            }
            ops.push(Op::Upgrade { subscription: sub.clone(), terms, at });
        }
        if let Some((start, end)) = paid {
            if !crate::time::plausible(start) || !crate::time::plausible(end) {
                return Err(Fail::Permanent(format!(
                    "invoice {}: period {}..{} is out of range",
                    inv.id,
                    start.secs(),
                    end.secs()
                )));
            }
            ops.push(Op::Paid { subscription: sub.clone(), start, end });
        }
        self.apply(b, env, &account, ops).await?;
        b.record_invoice(InvoiceFact {
            id: inv.id.clone(),
            subscription: Some(sub.clone()),
            account: Some(account.clone()),
            period: paid,
            seen_at: self.now,
        });
        Ok(Handled::Applied { account, facts: vec![] })
    }

    pub(super) async fn invoice_failed(
        &self,
        b: &mut Batch,
        env: &Envelope,
        pre: &Prefetched,
    ) -> Result<Handled, Fail> {
        let inv: Invoice = parse(env, "invoice")?;
        let Some(sub) = inv.subscription_id() else {
            return Ok(Handled::Ignored("invoice of no subscription".into()));
        };
        let account = match self.subscription_account(b, env, &sub, pre).await? {
            Ok(a) => a,
            Err(wait) => return Ok(wait),
        };
        // Ordered like the subscription's snapshots: a newer status learned from a later event stands.
        let version = Some(env.created.secs().saturating_mul(4).saturating_add(1));
        let op = Op::SubscriptionStatus { subscription: sub, status: "past_due".into(), version };
        self.apply(b, env, &account, vec![op]).await?;
        Ok(Handled::Applied { account, facts: vec![] })
    }
}

/// The raw JSON of the price with `id` in the event, to keep every field (metadata, product) for later mapping.
fn raw_price(env: &Envelope, id: &str) -> serde_json::Value {
    let items = env.data.object.get("items").and_then(|i| i.get("data")).and_then(|d| d.as_array());
    items
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("price"))
        .find(|p| p.get("id").and_then(|v| v.as_str()) == Some(id))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}
