//! One-off payments and refunds: package purchases (checkout sessions, payment intents), refunds of packages
//! and of subscription invoices, and the link between a payment and the invoice it paid.

use super::{Fail, Handled, Mapper, Prefetched, cause, parse, quantity, unmapped};
use crate::ledger::{Op, Source};
use crate::store::{Batch, OnMissing};
use crate::stripe::event::{Charge, CheckoutSession, Envelope, InvoicePayment, PaymentIntent, meta};
use crate::stripe::prices;

impl Mapper<'_> {
    pub(super) async fn checkout(&self, b: &mut Batch, env: &Envelope, pre: &Prefetched) -> Result<Handled, Fail> {
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
        let Some(account) = self.resolve(b, env, explicit, customer).await? else {
            return Err(Fail::Permanent(format!("checkout {} names no account and no customer", s.id)));
        };
        let payment = s.payment_intent.map(|p| p.0).unwrap_or(s.id);
        // A payment already granted (told by another event, maybe resolved to another account) is not granted
        // again: the grant goes to the account that has it, where it is a no-op.
        let account = b.payment_account(&payment).await?.unwrap_or(account);
        self.apply(
            b,
            env,
            &account,
            vec![Op::Grant { lot_id: payment.as_str().into(), source: Source::Package, credits }],
        )
        .await?;
        Ok(Handled::Applied { account, facts: vec![format!("payment:{payment}")] })
    }

    pub(super) async fn payment_intent(&self, b: &mut Batch, env: &Envelope) -> Result<Handled, Fail> {
        let pi: PaymentIntent = parse(env, "payment intent")?;
        let Some(name) = meta(&pi.metadata, "credits_package") else {
            return Ok(Handled::Ignored("payment intent names no credits_package".into()));
        };
        let quantity = quantity(meta(&pi.metadata, "quantity"))?;
        let p = self.catalog.packages.get(&name).ok_or_else(|| Fail::Permanent(format!("unknown package {name:?}")))?;
        let customer = pi.customer.as_ref().map(|c| c.0.as_str());
        let Some(account) = self.resolve(b, env, meta(&pi.metadata, "account_id"), customer).await? else {
            return Err(Fail::Permanent(format!("payment intent {} names no account and no customer", pi.id)));
        };
        let account = b.payment_account(&pi.id).await?.unwrap_or(account);
        let op = Op::Grant { lot_id: pi.id.as_str().into(), source: Source::Package, credits: p.credits * quantity };
        self.apply(b, env, &account, vec![op]).await?;
        Ok(Handled::Applied { account, facts: vec![format!("payment:{}", pi.id)] })
    }

    /// A refund (rule 9): of a package, the refunded share of the lot the payment bought; of a subscription
    /// invoice, the refunded share of the allocation of each cycle that invoice paid. A payment linked to
    /// nothing yet waits for its grant or its invoice link (or is looked up with the API); one the API says
    /// paid no invoice, and that bought no package, is ignored.
    pub(super) async fn refund(&self, b: &mut Batch, env: &Envelope, pre: &Prefetched) -> Result<Handled, Fail> {
        let ch: Charge = parse(env, "charge")?;
        let Some(payment) = ch.payment_intent.map(|p| p.0) else {
            return Ok(Handled::Ignored("refunded charge has no payment intent".into()));
        };
        if let Some(account) = b.payment_account(&payment).await? {
            if let Some(c) = ch.customer.as_ref() {
                b.link_customer(&c.0, &account, OnMissing::CreateFromStripe, self.now, &cause(env)).await?;
            }
            let op = Op::Refund { payment: payment.into(), refunded: ch.amount_refunded, total: ch.amount };
            self.apply(b, env, &account, vec![op]).await?;
            return Ok(Handled::Applied { account, facts: vec![] });
        }
        if let Some(inv) = ch.invoice.as_ref() {
            b.link_payment(&payment, &inv.0, self.now).await?;
        }
        let invoice = match b.invoice_of(&payment).await? {
            Some(i) => i,
            None => match &pre.invoice_of_payment {
                Some(Some(i)) => {
                    b.link_payment(&payment, i, self.now).await?;
                    i.clone()
                }
                Some(None) => {
                    return Ok(Handled::Ignored(format!(
                        "payment {payment} bought no credit package and paid no invoice (Stripe API): nothing to take back"
                    )));
                }
                None => return Ok(Handled::Waiting(format!("payment:{payment}"))),
            },
        };
        let Some(fact) = b.invoice(&invoice).await? else {
            return Ok(Handled::Waiting(format!("invoice:{invoice}")));
        };
        let (Some(sub), Some((start, end))) = (fact.subscription, fact.period) else {
            return Ok(Handled::Ignored(format!(
                "payment {payment} paid invoice {invoice}, which granted no credits (no subscription or period)"
            )));
        };
        // The account that holds the subscription now (it may have moved since the invoice was paid).
        let Some(account) = b.subscription_account(&sub).await?.or(fact.account) else {
            return Ok(Handled::Waiting(format!("subscription:{sub}")));
        };
        let lots = b.subscription_lots(&account, &sub, start, end).await?;
        if lots.is_empty() {
            return Ok(Handled::Ignored(format!("invoice {invoice} has granted no credits yet: nothing to take back")));
        }
        let ops = lots
            .into_iter()
            .map(|lot| Op::Refund { payment: lot, refunded: ch.amount_refunded, total: ch.amount })
            .collect();
        self.apply(b, env, &account, ops).await?;
        Ok(Handled::Applied { account, facts: vec![] })
    }

    /// Which payment paid which invoice (API versions from 2025-03-31): refunds of that payment find it.
    pub(super) async fn invoice_payment(&self, b: &mut Batch, env: &Envelope) -> Result<Handled, Fail> {
        let ip: InvoicePayment = parse(env, "invoice payment")?;
        let pi = ip.payment.and_then(|p| p.payment_intent).map(|p| p.0);
        let (Some(pi), Some(invoice)) = (pi, ip.invoice.map(|i| i.0)) else {
            return Ok(Handled::Ignored(format!("invoice payment {} names no payment intent or invoice", ip.id)));
        };
        b.link_payment(&pi, &invoice, self.now).await?;
        self.learn(format!("payment:{pi}"));
        Ok(Handled::Ignored(format!("recorded: payment {pi} paid invoice {invoice} (no credits by itself)")))
    }
}
