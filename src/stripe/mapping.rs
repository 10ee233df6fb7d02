//! From a Stripe event to ledger ops (the table of SPEC §5), resolving the account and waiting for facts that
//! have not arrived yet. Runs inside the batch that also records the event's outcome.

use super::event::{Charge, CheckoutSession, Envelope, Invoice, PaymentIntent, Price, SubscriptionObject, meta};
use super::prices;
use crate::catalog::Catalog;
use crate::inbox::Decision;
use crate::ledger::{Op, RuleError, Snapshot, Source, Ts};
use crate::store::{Batch, OnMissing, Request, StoreError};
use serde::de::DeserializeOwned;

/// What an event came to.
#[derive(Debug)]
pub enum Handled {
    Applied {
        account: String,
        facts: Vec<String>,
    },
    Ignored(String),
    /// Waits for this fact (`subscription:ID`, `price:ID`, `payment:ID`).
    Waiting(String),
}

#[derive(Debug)]
pub enum Fail {
    /// Will not work however often it is tried: kept as failed, for replay once the cause is fixed.
    Permanent(String),
    /// The rules need a fact not known yet (`subscription:ID`, `payment:ID`): kept as waiting.
    Wait(String),
    /// The database failed: nothing is kept, the sender retries.
    Store(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// Facts fetched from the Stripe API before the transaction (only with `STRIPE_API_KEY`).
#[derive(Debug, Default, Clone)]
pub struct Prefetched {
    /// Line items of a checkout session: price and quantity.
    pub line_items: Option<Vec<(Price, i64)>>,
    /// The subscription an invoice names, when it is not known yet.
    pub subscription: Option<SubscriptionObject>,
}

pub struct Mapper<'a> {
    pub catalog: &'a Catalog,
    pub now: Ts,
}

fn parse<T: DeserializeOwned>(env: &Envelope, what: &str) -> Result<T, Fail> {
    serde_json::from_value(env.data.object.clone())
        .map_err(|e| Fail::Permanent(format!("malformed {what} object: {e}")))
}

/// Orders subscription snapshots: later events win; at the same second, created < updated < deleted.
fn version(env: &Envelope) -> i64 {
    let rank = match env.kind.as_str() {
        "customer.subscription.created" => 0,
        "customer.subscription.updated" => 1,
        _ => 2,
    };
    env.created.saturating_mul(4).saturating_add(rank)
}

impl Mapper<'_> {
    /// Decide `env`: applied, ignored, waiting, failed; an error is transient (the database).
    pub async fn decide(&self, b: &mut Batch, env: &Envelope, pre: &Prefetched) -> Result<Decision, StoreError> {
        Ok(match self.handle(b, env, pre).await {
            Ok(Handled::Applied { account, facts }) => Decision::Applied { account, facts, applied: None },
            Ok(Handled::Ignored(why)) => Decision::Ignored(why),
            Ok(Handled::Waiting(fact)) | Err(Fail::Wait(fact)) => {
                Decision::Waiting { reason: format!("waiting for {fact}"), fact }
            }
            Err(Fail::Permanent(e)) => Decision::Failed(e),
            Err(Fail::Store(e)) if e.is_transient() => return Err(e),
            Err(Fail::Store(e)) => Decision::Failed(e.to_string()),
        })
    }

    async fn handle(&self, b: &mut Batch, env: &Envelope, pre: &Prefetched) -> Result<Handled, Fail> {
        match env.kind.as_str() {
            "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
                let sub: SubscriptionObject = parse(env, "subscription")?;
                let deleted = env.kind == "customer.subscription.deleted";
                self.subscription(b, env, &sub, version(env), deleted).await
            }
            "invoice.paid" => self.invoice_paid(b, env, pre).await,
            "invoice.payment_failed" => self.invoice_failed(b, env, pre).await,
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                self.checkout(b, env, pre).await
            }
            "payment_intent.succeeded" => self.payment_intent(b, env).await,
            "charge.refunded" => self.refund(b, env).await,
            other => Ok(Handled::Ignored(format!("event type {other} does not change credits"))),
        }
    }

    /// The account of an event (SPEC §5), linking the customer to it.
    async fn resolve(
        &self,
        b: &mut Batch,
        explicit: Option<String>,
        customer: Option<&str>,
    ) -> Result<Option<String>, Fail> {
        let mut account = explicit;
        if account.is_none()
            && let Some(c) = customer
        {
            account = Some(b.customer_account(c).await?.unwrap_or_else(|| c.to_owned()));
        }
        if let (Some(a), Some(c)) = (&account, customer) {
            b.link_customer(c, a, self.now).await?;
        }
        Ok(account)
    }

    async fn apply(&self, b: &mut Batch, env: &Envelope, account: &str, ops: Vec<Op>) -> Result<(), Fail> {
        let op = if ops.len() == 1 { ops.into_iter().next().unwrap() } else { Op::Batch { ops } };
        let req = Request {
            account: account.into(),
            op,
            cause: format!("event:{}", env.id),
            key: None,
            on_missing: OnMissing::CreateFromStripe,
            now: self.now,
        };
        match b.apply(&req, None).await {
            Ok(_) => Ok(()),
            Err(StoreError::Rule(RuleError::UnknownSubscription(s))) => Err(Fail::Wait(format!("subscription:{s}"))),
            Err(StoreError::Rule(RuleError::UnknownPayment(p))) => Err(Fail::Wait(format!("payment:{p}"))),
            Err(StoreError::Rule(e)) => Err(Fail::Permanent(e.to_string())),
            Err(e) => Err(Fail::Store(e)),
        }
    }

    async fn subscription(
        &self,
        b: &mut Batch,
        env: &Envelope,
        sub: &SubscriptionObject,
        version: i64,
        deleted: bool,
    ) -> Result<Handled, Fail> {
        let mut facts = vec![format!("subscription:{}", sub.id)];
        for price in sub.items().iter().filter_map(|i| i.price.as_ref()) {
            let object = serde_json::to_string(&raw_price(env, &price.id)).unwrap_or_default();
            b.record_price(&price.id, &object, self.now);
            facts.push(format!("price:{}", price.id));
        }
        let price = sub
            .items()
            .iter()
            .find_map(|i| i.price.as_ref())
            .ok_or_else(|| Fail::Permanent(format!("subscription {} has no price", sub.id)))?;
        let terms = prices::plan_terms(self.catalog, price)
            .ok_or_else(|| Fail::Permanent(format!("price {} maps to no plan in the catalog", price.id)))?;
        let known = b.subscription_account(&sub.id).await?;
        let explicit = meta(&sub.metadata, "account_id").or(known);
        let customer = sub.customer.as_ref().map(|c| c.0.as_str());
        let Some(account) = self.resolve(b, explicit, customer).await? else {
            return Err(Fail::Permanent(format!("subscription {} names no account and no customer", sub.id)));
        };
        let period = sub.period();
        let anchor = sub.billing_cycle_anchor.or(period.map(|p| p.0)).or(sub.start_date);
        let anchor = anchor.ok_or_else(|| Fail::Permanent(format!("subscription {} has no billing anchor", sub.id)))?;
        for t in [Some(anchor), sub.trial_start, sub.ended_at, sub.canceled_at, Some(env.created)].into_iter().flatten()
        {
            if !crate::time::plausible(t) {
                return Err(Fail::Permanent(format!("subscription {}: timestamp {t} is out of range", sub.id)));
            }
        }
        let start = sub.trial_start.filter(|t| *t < anchor).unwrap_or(anchor);
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

    async fn invoice_paid(&self, b: &mut Batch, env: &Envelope, pre: &Prefetched) -> Result<Handled, Fail> {
        let inv: Invoice = parse(env, "invoice")?;
        let Some(sub) = inv.subscription_id() else {
            return Ok(Handled::Ignored("invoice of no subscription".into()));
        };
        let account = match self.subscription_account(b, env, &sub, pre).await? {
            Ok(a) => a,
            Err(wait) => return Ok(wait),
        };
        if let Some(c) = inv.customer.as_ref() {
            b.link_customer(&c.0, &account, self.now).await?;
        }
        let reason = inv.billing_reason.as_deref().unwrap_or("");
        // The billing period the invoice pays: its non-proration lines (a renewal, a start, or a switch to
        // another interval that starts a new period).
        let periods: Vec<(Ts, Ts)> =
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
                return Err(Fail::Permanent(format!("invoice {}: time {at} is out of range", inv.id)));
            }
            ops.push(Op::Upgrade { subscription: sub.clone(), terms, at });
        }
        if let Some((start, end)) = paid {
            if !crate::time::plausible(start) || !crate::time::plausible(end) {
                return Err(Fail::Permanent(format!("invoice {}: period {start}..{end} is out of range", inv.id)));
            }
            ops.push(Op::Paid { subscription: sub.clone(), start, end });
        }
        self.apply(b, env, &account, ops).await?;
        Ok(Handled::Applied { account, facts: vec![] })
    }

    async fn invoice_failed(&self, b: &mut Batch, env: &Envelope, pre: &Prefetched) -> Result<Handled, Fail> {
        let inv: Invoice = parse(env, "invoice")?;
        let Some(sub) = inv.subscription_id() else {
            return Ok(Handled::Ignored("invoice of no subscription".into()));
        };
        let account = match self.subscription_account(b, env, &sub, pre).await? {
            Ok(a) => a,
            Err(wait) => return Ok(wait),
        };
        self.apply(b, env, &account, vec![Op::SubscriptionStatus { subscription: sub, status: "past_due".into() }])
            .await?;
        Ok(Handled::Applied { account, facts: vec![] })
    }

    async fn checkout(&self, b: &mut Batch, env: &Envelope, pre: &Prefetched) -> Result<Handled, Fail> {
        let s: CheckoutSession = parse(env, "checkout session")?;
        if s.mode.as_deref().is_some_and(|m| m != "payment") {
            return Ok(Handled::Ignored(format!(
                "checkout in {} mode: its subscription events carry the credits",
                s.mode.unwrap_or_default()
            )));
        }
        if s.payment_status.as_deref() != Some("paid") {
            return Ok(Handled::Ignored("checkout not paid yet (async_payment_succeeded will follow)".into()));
        }
        let credits = match meta(&s.metadata, "credits_package") {
            Some(name) => {
                let quantity = quantity(meta(&s.metadata, "quantity"))?;
                let p = self
                    .catalog
                    .packages
                    .get(&name)
                    .ok_or_else(|| Fail::Permanent(format!("unknown package {name:?}")))?;
                p.credits * quantity
            }
            None => match &pre.line_items {
                Some(items) => {
                    let mut total = 0;
                    for (price, qty) in items {
                        let (_, c) = prices::package(self.catalog, price).ok_or_else(|| unmapped(&price.id))?;
                        total += c * qty;
                    }
                    if total == 0 {
                        return Err(Fail::Permanent(format!("checkout {} bought no credit package", s.id)));
                    }
                    total
                }
                None => {
                    return Err(Fail::Permanent(format!(
                        "checkout {} names no credits_package in its metadata, and its line items cannot be fetched without STRIPE_API_KEY",
                        s.id
                    )));
                }
            },
        };
        let explicit = meta(&s.metadata, "account_id").or(s.client_reference_id.clone().filter(|c| !c.is_empty()));
        let customer = s.customer.as_ref().map(|c| c.0.as_str());
        let Some(account) = self.resolve(b, explicit, customer).await? else {
            return Err(Fail::Permanent(format!("checkout {} names no account and no customer", s.id)));
        };
        let payment = s.payment_intent.map(|p| p.0).unwrap_or(s.id);
        // A payment already granted (told by another event, maybe resolved to another account) is not granted
        // again: the grant goes to the account that has it, where it is a no-op.
        let account = b.payment_account(&payment).await?.unwrap_or(account);
        self.apply(b, env, &account, vec![Op::Grant { lot_id: payment.clone(), source: Source::Package, credits }])
            .await?;
        Ok(Handled::Applied { account, facts: vec![format!("payment:{payment}")] })
    }

    async fn payment_intent(&self, b: &mut Batch, env: &Envelope) -> Result<Handled, Fail> {
        let pi: PaymentIntent = parse(env, "payment intent")?;
        let Some(name) = meta(&pi.metadata, "credits_package") else {
            return Ok(Handled::Ignored("payment intent names no credits_package".into()));
        };
        let quantity = quantity(meta(&pi.metadata, "quantity"))?;
        let p = self.catalog.packages.get(&name).ok_or_else(|| Fail::Permanent(format!("unknown package {name:?}")))?;
        let customer = pi.customer.as_ref().map(|c| c.0.as_str());
        let Some(account) = self.resolve(b, meta(&pi.metadata, "account_id"), customer).await? else {
            return Err(Fail::Permanent(format!("payment intent {} names no account and no customer", pi.id)));
        };
        let account = b.payment_account(&pi.id).await?.unwrap_or(account);
        let op = Op::Grant { lot_id: pi.id.clone(), source: Source::Package, credits: p.credits * quantity };
        self.apply(b, env, &account, vec![op]).await?;
        Ok(Handled::Applied { account, facts: vec![format!("payment:{}", pi.id)] })
    }

    async fn refund(&self, b: &mut Batch, env: &Envelope) -> Result<Handled, Fail> {
        let ch: Charge = parse(env, "charge")?;
        let Some(payment) = ch.payment_intent.map(|p| p.0) else {
            return Ok(Handled::Ignored("refunded charge has no payment intent".into()));
        };
        let Some(account) = b.payment_account(&payment).await? else {
            return Ok(Handled::Waiting(format!("payment:{payment}")));
        };
        if let Some(c) = ch.customer.as_ref() {
            b.link_customer(&c.0, &account, self.now).await?;
        }
        let op = Op::Refund { payment, refunded: ch.amount_refunded, total: ch.amount };
        self.apply(b, env, &account, vec![op]).await?;
        Ok(Handled::Applied { account, facts: vec![] })
    }
}

fn unmapped(price: &str) -> Fail {
    Fail::Permanent(format!("price {price} maps to no plan or package in the catalog"))
}

fn quantity(v: Option<String>) -> Result<i64, Fail> {
    match v {
        None => Ok(1),
        Some(q) => q
            .parse::<i64>()
            .ok()
            .filter(|q| (1..=10_000).contains(q))
            .ok_or_else(|| Fail::Permanent(format!("bad quantity {q:?}"))),
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
