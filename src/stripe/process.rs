//! Receiving an event: store it once per event id (the inbox), apply it, and record its outcome, all in one
//! transaction; a permanent failure is kept with its error for replay, and events that waited for a fact are
//! applied when it arrives.
//!
//! Why one transaction: the answer to Stripe (200) must mean the event is durably decided, and an event must
//! never be applied twice, however often and however concurrently it is delivered.

use super::api::StripeApi;
use super::event::{CheckoutSession, Envelope, Invoice, parse_envelope};
use super::mapping::{Fail, Handled, Mapper, Prefetched};
use crate::catalog::Catalog;
use crate::store::{InboxStatus, Store, StoreError};
use crate::time::Ts;
use serde::Serialize;
use std::sync::Arc;

pub const SOURCE: &str = "stripe";

/// How an event was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The inbox row.
    pub id: i64,
    pub status: InboxStatus,
    pub detail: Option<String>,
    /// True when the event had been decided before this delivery (nothing was done now).
    pub duplicate: bool,
}

/// Applied and ignored events are decided for good: replaying them changes nothing.
fn decided(status: InboxStatus) -> bool {
    matches!(status, InboxStatus::Applied | InboxStatus::Ignored)
}

/// Whether an event is decided for the first time (its row was inserted in the same transaction) or again.
#[derive(Clone, Copy)]
enum Attempt<'a> {
    First(&'a str),
    Again,
}

#[derive(Clone)]
pub struct Intake {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub api: Option<StripeApi>,
}

impl Intake {
    /// A verified event body (webhook, queue, backfill). Errors only when it could not be stored.
    #[tracing::instrument(skip_all, fields(event_id = %env.id, event_type = %env.kind))]
    pub async fn receive(&self, env: &Envelope, payload: &str, now: Ts) -> Result<Decision, StoreError> {
        if let Some(row) = self.store.inbox_find(SOURCE, &env.id).await? {
            self.store.inbox_seen(row.id, now).await?;
            return Ok(Decision { id: row.id, status: row.status, detail: row.detail, duplicate: true });
        }
        let pre = self.prefetch(env).await;
        let mut tx = self.store.begin_write().await?;
        let inserted = self
            .store
            .inbox_insert(&mut tx, SOURCE, &env.id, &env.kind, payload, env.created, InboxStatus::Received, None, now)
            .await?;
        let Some(id) = inserted else {
            // Delivered concurrently and decided by the other delivery.
            tx.rollback().await?;
            let row = self
                .store
                .inbox_find(SOURCE, &env.id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("inbox row vanished".into()))?;
            return Ok(Decision { id: row.id, status: row.status, detail: row.detail, duplicate: true });
        };
        let decision = self.decide(tx, id, env, &pre, now, Attempt::First(payload)).await?;
        self.wake(&decision, now).await;
        Ok(decision.0)
    }

    /// Decide a stored event again (replay, or a fact it waited for arrived).
    pub async fn replay(&self, id: i64, now: Ts) -> Result<Decision, StoreError> {
        let row = self
            .store
            .inbox_get(&id.to_string())
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no inbox row {id}")))?;
        // Prefetching may call the Stripe API: done before the write lock is taken, never while holding it.
        let parsed = parse_envelope(row.payload.as_bytes());
        let pre = match &parsed {
            Ok(env) if !decided(row.status) => self.prefetch(env).await,
            _ => Prefetched::default(),
        };
        let mut tx = self.store.begin_write().await?;
        let row = self
            .store
            .inbox_lock(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no inbox row {id}")))?;
        if decided(row.status) {
            tx.rollback().await?;
            return Ok(Decision { id, status: row.status, detail: row.detail, duplicate: true });
        }
        let env = match parsed {
            Ok(env) => env,
            Err(e) => {
                self.store
                    .inbox_set(&mut tx, id, InboxStatus::Failed, Some(&e.to_string()), None, None, now, true)
                    .await?;
                tx.commit().await?;
                return Ok(Decision { id, status: InboxStatus::Failed, detail: Some(e.to_string()), duplicate: false });
            }
        };
        let decision = self.decide(tx, id, &env, &pre, now, Attempt::Again).await?;
        self.wake(&decision, now).await;
        Ok(decision.0)
    }

    /// Apply the event and record the outcome on row `id`, committing `tx`.
    async fn decide(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        id: i64,
        env: &Envelope,
        pre: &Prefetched,
        now: Ts,
        attempt: Attempt<'_>,
    ) -> Result<(Decision, Vec<String>), StoreError> {
        let mut id = id;
        let mapper = Mapper { store: &self.store, catalog: &self.catalog, now };
        let (status, detail, waiting, account, facts) = match mapper.handle(&mut tx, env, pre).await {
            Ok(Handled::Applied { account, facts }) => (InboxStatus::Applied, None, None, Some(account), facts),
            Ok(Handled::Ignored(why)) => (InboxStatus::Ignored, Some(why), None, None, vec![]),
            Ok(Handled::Waiting(fact)) => {
                (InboxStatus::Waiting, Some(format!("waiting for {fact}")), Some(fact), None, vec![])
            }
            Err(Fail::Store(e)) => {
                tx.rollback().await?;
                return Err(e);
            }
            Err(fail) => {
                // Undo whatever the attempt wrote; keep the event with its error (or what it waits for).
                tx.rollback().await?;
                tx = self.store.begin_write().await?;
                let (status, detail, waiting) = match fail {
                    Fail::Permanent(e) => (InboxStatus::Failed, Some(e), None),
                    Fail::Wait(fact) => (InboxStatus::Waiting, Some(format!("waiting for {fact}")), Some(fact)),
                    Fail::Store(_) => unreachable!(),
                };
                if let Attempt::First(payload) = attempt {
                    // The rollback took the new inbox row with it: store the event again, now decided.
                    let s = &self.store;
                    match s
                        .inbox_insert(&mut tx, SOURCE, &env.id, &env.kind, payload, env.created, status, None, now)
                        .await?
                    {
                        Some(new_id) => id = new_id,
                        None => {
                            // Stored meanwhile by a concurrent delivery, which decides it the same way.
                            tx.rollback().await?;
                            return Ok((Decision { id, status, detail, duplicate: true }, vec![]));
                        }
                    }
                }
                (status, detail, waiting, None, vec![])
            }
        };
        if status == InboxStatus::Failed {
            tracing::warn!(event_id = %env.id, error = detail.as_deref().unwrap_or(""), "event failed; kept for replay");
            let data =
                serde_json::json!({"source": SOURCE, "event_id": env.id, "event_type": env.kind, "error": detail});
            self.store.outbox_insert(&mut tx, "event.failed", None, data, now).await?;
        }
        let again = matches!(attempt, Attempt::Again);
        self.store
            .inbox_set(&mut tx, id, status, detail.as_deref(), waiting.as_deref(), account.as_deref(), now, again)
            .await?;
        tx.commit().await?;
        Ok((Decision { id, status, detail, duplicate: false }, facts))
    }

    /// Decide again the events that waited for facts just learned. Best effort: a failure here leaves them
    /// waiting for the next fact, the periodic retry, or a replay.
    async fn wake(&self, decided: &(Decision, Vec<String>), now: Ts) {
        let mut facts = decided.1.clone();
        let mut rounds = 0;
        while !facts.is_empty() && rounds < 8 {
            rounds += 1;
            let ids = match self.store.inbox_waiting_for(&facts).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look up waiting events");
                    return;
                }
            };
            facts.clear();
            for id in ids {
                match Box::pin(self.replay_collect(id, now)).await {
                    Ok(more) => facts.extend(more),
                    Err(e) => tracing::warn!(id, error = %e, "waiting event could not be decided"),
                }
            }
        }
    }

    async fn replay_collect(&self, id: i64, now: Ts) -> Result<Vec<String>, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let Some(row) = self.store.inbox_lock(&mut tx, id).await? else { return Ok(vec![]) };
        if row.status != InboxStatus::Waiting {
            return Ok(vec![]);
        }
        let Ok(env) = parse_envelope(row.payload.as_bytes()) else { return Ok(vec![]) };
        let (_, facts) = self.decide(tx, id, &env, &Prefetched::default(), now, Attempt::Again).await?;
        Ok(facts)
    }

    /// Decide again every waiting event (the periodic retry).
    pub async fn retry_waiting(&self, now: Ts) -> Result<usize, StoreError> {
        let filter = crate::store::InboxFilter { status: Some(InboxStatus::Waiting), ..Default::default() };
        let rows = self.store.inbox_list(&filter).await?;
        let mut applied = 0;
        for r in rows {
            match self.replay(r.id, now).await {
                Ok(d) if d.status == InboxStatus::Applied => applied += 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(id = r.id, error = %e, "waiting event could not be retried; skipped"),
            }
        }
        Ok(applied)
    }

    /// Facts from the Stripe API the event will need (only with an API key; failures just leave them out).
    async fn prefetch(&self, env: &Envelope) -> Prefetched {
        let mut pre = Prefetched::default();
        let Some(api) = &self.api else { return pre };
        match env.kind.as_str() {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                if let Ok(s) = serde_json::from_value::<CheckoutSession>(env.data.object.clone())
                    && super::event::meta(&s.metadata, "credits_package").is_none()
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
            _ => {}
        }
        pre
    }
}
