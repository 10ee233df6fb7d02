//! Stripe events through the inbox protocol ([`crate::inbox`]): this module supplies the decision (the mapping
//! of SPEC §5) and fetches, before the write, what the Stripe API can tell that the event leaves out.
//!
//! Why fetch first: an API call may take seconds; made inside a batch it would hold every change queued behind
//! it.

use super::api::StripeApi;
use super::event::{CheckoutSession, Envelope, Invoice, meta, parse_envelope};
use super::mapping::{Mapper, Prefetched};
use crate::catalog::Catalog;
use crate::inbox::{Decision, Inbox, Incoming, Receipt, Source};
use crate::store::{Batch, BoxFuture, InboxRow, Store, StoreError};
use crate::time::UnixTime;
use std::sync::Arc;

pub const SOURCE: &str = "stripe";

/// Stripe events as an inbox source.
pub struct StripeEvents {
    pub catalog: Arc<Catalog>,
}

/// An event with what was fetched for it.
pub struct Fetched {
    pub env: Envelope,
    pub pre: Prefetched,
}

impl Source for StripeEvents {
    type Event = Fetched;
    const NAME: &'static str = SOURCE;
    const RETRY_ON_REDELIVERY: bool = false;

    fn parse(&self, row: &InboxRow) -> Result<Fetched, String> {
        parse_envelope(row.payload.as_bytes())
            .map(|env| Fetched { env, pre: Prefetched::default() })
            .map_err(|e| e.to_string())
    }

    fn accounts(&self, ev: &Fetched) -> Vec<String> {
        let o = &ev.env.data.object;
        // A name PostgreSQL could not store is no hint (the decision refuses the event).
        let text = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.as_str())
                .filter(|s| !s.is_empty() && s.len() <= 255 && !s.contains('\0'))
                .map(str::to_owned)
        };
        text(o.get("metadata").and_then(|m| m.get("account_id")))
            .or_else(|| text(o.get("client_reference_id")))
            .into_iter()
            .collect()
    }

    fn decide<'a>(
        &'a self,
        b: &'a mut Batch,
        ev: &'a Fetched,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(async move { Mapper::new(&self.catalog, now).decide(b, &ev.env, &ev.pre).await })
    }
}

#[derive(Clone)]
pub struct Intake {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub api: Option<StripeApi>,
    pub inbox: Inbox<StripeEvents>,
}

impl Intake {
    pub fn new(store: Store, catalog: Arc<Catalog>, api: Option<StripeApi>, horizon_secs: i64) -> Intake {
        let inbox =
            Inbox { store: store.clone(), source: Arc::new(StripeEvents { catalog: catalog.clone() }), horizon_secs };
        Intake { store, catalog, api, inbox }
    }

    /// A verified event body (webhook, queue, backfill). Errors only when it could not be stored.
    #[tracing::instrument(skip_all, fields(event_id = %env.id, event_type = %env.kind))]
    pub async fn receive(&self, env: &Envelope, payload: &str, now: UnixTime) -> Result<Receipt, StoreError> {
        let pre = if self.api.is_some() && self.store.inbox_find(SOURCE, &env.id).await?.is_none() {
            self.prefetch(env).await
        } else {
            Prefetched::default()
        };
        let incoming = Incoming {
            event_id: env.id.clone(),
            kind: env.kind.clone(),
            payload: payload.to_owned(),
            created: env.created,
        };
        let r = self.inbox.receive(incoming, Fetched { env: env.clone(), pre }, now).await?;
        self.inbox.wake(r.facts.clone(), now).await;
        Ok(r)
    }

    /// Decide a stored event again (replay, or the retry schedule).
    pub async fn replay(&self, id: i64, now: UnixTime) -> Result<Receipt, StoreError> {
        let row = self
            .store
            .inbox_get(&id.to_string())
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no inbox row {id}")))?;
        // Fetching may call the Stripe API: done before the write, never while holding it.
        let ev = match parse_envelope(row.payload.as_bytes()) {
            Ok(env) if !row.status.is_final() => {
                let pre = self.prefetch(&env).await;
                Some(Fetched { env, pre })
            }
            _ => None,
        };
        let r = self.inbox.redecide(id, ev, now).await?;
        self.inbox.wake(r.facts.clone(), now).await;
        Ok(r)
    }

    /// Facts from the Stripe API the event will need (only with an API key; failures just leave them out).
    async fn prefetch(&self, env: &Envelope) -> Prefetched {
        let mut pre = Prefetched::default();
        let Some(api) = &self.api else { return pre };
        match env.kind.as_str() {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                if let Ok(s) = serde_json::from_value::<CheckoutSession>(env.data.object.clone())
                    && meta(&s.metadata, "credits_package").is_none()
                {
                    match api.checkout_line_items(&s.id).await {
                        Ok(items) => pre.line_items = Some(items),
                        Err(e) => tracing::warn!(error = %e, session = %s.id, "could not fetch line items"),
                    }
                }
            }
            "invoice.paid" | "invoice.payment_failed" => {
                if let Ok(inv) = serde_json::from_value::<Invoice>(env.data.object.clone())
                    && let Some(sub) = inv.subscription_id()
                    && !self.store.subscription_exists(&sub).await.unwrap_or(true)
                {
                    match api.subscription(&sub).await {
                        Ok(s) => pre.subscription = Some(s),
                        Err(e) => tracing::warn!(error = %e, subscription = %sub, "could not fetch subscription"),
                    }
                }
            }
            "charge.refunded" => {
                // Which invoice a refunded payment paid (the basil shape carries no `charge.invoice`); a refund of
                // a package finds its lot without it, and a failure just leaves the refund waiting.
                if let Ok(ch) = serde_json::from_value::<super::event::Charge>(env.data.object.clone())
                    && ch.invoice.is_none()
                    && let Some(pi) = ch.payment_intent
                {
                    match api.invoice_of_payment(&pi.0).await {
                        Ok(found) => pre.invoice_of_payment = Some(found),
                        Err(e) => {
                            tracing::warn!(error = %e, payment = %pi.0, "could not look up the invoice of a payment")
                        }
                    }
                }
            }
            _ => {}
        }
        pre
    }
}
