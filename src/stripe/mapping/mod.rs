//! From a Stripe event to ledger ops (the table of SPEC §5), resolving the account and waiting for facts that
//! have not arrived yet. Runs inside the batch that also records the event's outcome; subscriptions and
//! invoices in [`subscriptions`], one-off payments and refunds in [`payments`].

mod payments;
mod subscriptions;

use super::event::{Envelope, Price, SubscriptionObject, has_nul, long_id};
use crate::catalog::Catalog;
use crate::inbox::Decision;
use crate::ledger::{Op, RuleError, UnixTime};
use crate::store::{Batch, OnMissing, Request, StoreError};
use serde::de::DeserializeOwned;
use std::sync::Mutex;

/// What an event came to.
#[derive(Debug)]
pub enum Handled {
    Applied {
        account: String,
        facts: Vec<String>,
    },
    Ignored(String),
    /// Waits for this fact (`subscription:ID`, `price:ID`, `payment:ID`, `invoice:ID`).
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
    /// The invoice a refunded payment paid: `Some(None)` when the API says it paid none.
    pub invoice_of_payment: Option<Option<String>>,
}

pub struct Mapper<'a> {
    pub catalog: &'a Catalog,
    pub now: UnixTime,
    /// Facts learned whatever the event comes to (a price seen by a subscription event that fails).
    learned: Mutex<Vec<String>>,
}

fn parse<T: DeserializeOwned>(env: &Envelope, what: &str) -> Result<T, Fail> {
    serde_json::from_value(env.data.object.clone())
        .map_err(|e| Fail::Permanent(format!("malformed {what} object: {e}")))
}

impl<'a> Mapper<'a> {
    pub fn new(catalog: &'a Catalog, now: UnixTime) -> Self {
        Mapper { catalog, now, learned: Mutex::new(Vec::new()) }
    }

    fn learn(&self, fact: String) {
        self.learned.lock().expect("learned facts").push(fact);
    }

    /// Decide `env`: applied, ignored, waiting, failed; an error is transient (the database).
    pub async fn decide(&self, b: &mut Batch, env: &Envelope, pre: &Prefetched) -> Result<Decision, StoreError> {
        if has_nul(&env.data.object) {
            // PostgreSQL text cannot hold it; both backends refuse it alike, as a failed event (answered 200).
            return Ok(Decision::Failed {
                reason: "bad_payload: a string in the event contains NUL (\\u0000)".into(),
                facts: vec![],
            });
        }
        if let Some(field) = long_id(&env.data.object) {
            return Ok(Decision::Failed {
                reason: format!("bad_payload: {field} is longer than 255 characters"),
                facts: vec![],
            });
        }
        let handled = self.handle(b, env, pre).await;
        let learned = std::mem::take(&mut *self.learned.lock().expect("learned facts"));
        Ok(match handled {
            Ok(Handled::Applied { account, mut facts }) => {
                facts.extend(learned);
                Decision::Applied { account, facts, applied: None }
            }
            Ok(Handled::Ignored(why)) => Decision::Ignored { reason: why, facts: learned },
            Ok(Handled::Waiting(fact)) | Err(Fail::Wait(fact)) => {
                Decision::Waiting { reason: format!("waiting for {fact}"), fact }
            }
            Err(Fail::Permanent(e)) => Decision::Failed { reason: e, facts: learned },
            Err(Fail::Store(e)) if e.is_transient() => return Err(e),
            Err(Fail::Store(e)) => Decision::Failed { reason: e.to_string(), facts: learned },
        })
    }

    async fn handle(&self, b: &mut Batch, env: &Envelope, pre: &Prefetched) -> Result<Handled, Fail> {
        match env.kind.as_str() {
            "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
                let sub: SubscriptionObject = parse(env, "subscription")?;
                let deleted = env.kind == "customer.subscription.deleted";
                self.subscription(b, env, &sub, subscriptions::version(env), deleted).await
            }
            "invoice.paid" => self.invoice_paid(b, env, pre).await,
            "invoice.payment_failed" => self.invoice_failed(b, env, pre).await,
            "invoice_payment.paid" => self.invoice_payment(b, env).await,
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                self.checkout(b, env, pre).await
            }
            "payment_intent.succeeded" => self.payment_intent(b, env).await,
            "charge.refunded" => self.refund(b, env, pre).await,
            other => Ok(Handled::Ignored(format!("event type {other} does not change credits"))),
        }
    }

    /// The account of an event (SPEC §5): the one it names, else the one its customer is linked to, else one
    /// named by the customer id. Links the customer to it; when the customer's events went to the account named
    /// by its id so far, what that account holds moves to the named one.
    async fn resolve(
        &self,
        b: &mut Batch,
        env: &Envelope,
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
            b.link_customer(c, a, OnMissing::CreateFromStripe, self.now, &cause(env)).await?;
        }
        Ok(account)
    }

    async fn apply(&self, b: &mut Batch, env: &Envelope, account: &str, ops: Vec<Op>) -> Result<(), Fail> {
        let op = if ops.len() == 1 { ops.into_iter().next().unwrap() } else { Op::Batch { ops } };
        let req = Request {
            account: account.into(),
            op,
            cause: cause(env),
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
}

fn cause(env: &Envelope) -> String {
    format!("event:{}", env.id)
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
