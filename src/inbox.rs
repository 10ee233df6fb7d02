//! The inbox protocol, one for Stripe events and commands: store an event once per (source, id), decide it,
//! record the outcome, all in one job of the writer; events that wait for a fact are decided again when it
//! arrives, on a schedule, and fail after a horizon. A source only supplies the decision.
//!
//! Why one protocol: an answer (HTTP 200, an AMQP ack) must mean "decided and durable", an event must never be
//! applied twice however often and however concurrently it is delivered or replayed, and these rules are the
//! same whatever the event came from. The outcome is recorded with a compare-and-set on the status it was
//! read in, so two instances deciding the same stored event cannot overwrite each other: an applied event is
//! never marked failed, and no spurious `event.failed` goes out.

use crate::ledger::Applied;
use crate::store::inbox::{self as rows, NewEvent, Record};
use crate::store::{Batch, BoxFuture, InboxRow, InboxStatus, Plan, Step, Store, StoreError};
use crate::time::Ts;
use serde_json::json;
use std::sync::Arc;

/// What a source decided about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It changed `account`; `facts` are what later events may have waited for (`subscription:ID`, ...).
    Applied { account: String, facts: Vec<String>, applied: Option<Applied> },
    /// It changes no credits, for this reason.
    Ignored(String),
    /// It needs `fact` (`subscription:ID`, `price:ID`, `payment:ID`, `account:ID`); `reason` says why.
    Waiting { fact: String, reason: String },
    /// It can never apply as it is; kept for replay.
    Failed(String),
}

/// The outcome of receiving or deciding an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The inbox row.
    pub id: i64,
    pub event_id: String,
    pub status: InboxStatus,
    pub detail: Option<String>,
    /// True when the event had been decided before (nothing was done now).
    pub duplicate: bool,
    /// Credits moved and the balance after, for events that applied an op.
    pub applied: Option<Applied>,
    /// Facts learned, for the events that waited for them.
    pub facts: Vec<String>,
}

impl Receipt {
    fn seen(row: &InboxRow) -> Receipt {
        Receipt {
            id: row.id,
            event_id: row.event_id.clone(),
            status: row.status,
            detail: row.detail.clone(),
            duplicate: true,
            applied: None,
            facts: Vec::new(),
        }
    }
}

/// Where events come from and how one is decided.
pub trait Source: Send + Sync + 'static {
    /// An event as the source reads it (parsed, with anything fetched for it beforehand).
    type Event: Send + Sync + 'static;
    /// The inbox's `source` column.
    const NAME: &'static str;
    /// A failed or waiting event delivered again is decided again (commands), or answered as stored (Stripe).
    const RETRY_ON_REDELIVERY: bool;
    /// Read a stored payload again.
    fn parse(&self, row: &InboxRow) -> Result<Self::Event, String>;
    /// Accounts the event changes, when known before deciding (locked with the batch).
    fn accounts(&self, ev: &Self::Event) -> Vec<String>;
    /// Decide `ev` inside the batch; an error is transient (the database), the sender tries again.
    fn decide<'a>(
        &'a self,
        b: &'a mut Batch,
        ev: &'a Self::Event,
        now: Ts,
    ) -> BoxFuture<'a, Result<Decision, StoreError>>;
}

/// The protocol over one source.
pub struct Inbox<S: Source> {
    pub store: Store,
    pub source: Arc<S>,
    /// Waiting longer than this (since first seen) fails the event, kept for replay.
    pub horizon_secs: i64,
}

impl<S: Source> Clone for Inbox<S> {
    fn clone(&self) -> Self {
        Inbox { store: self.store.clone(), source: self.source.clone(), horizon_secs: self.horizon_secs }
    }
}

/// How long a waiting event waits before it is tried again, after `attempts` decisions: 1 minute, doubling,
/// at most an hour.
pub fn retry_delay(attempts: i64) -> i64 {
    60i64.saturating_mul(1 << attempts.clamp(1, 7).saturating_sub(1)).min(3_600)
}

/// A new event as received.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub event_id: String,
    pub kind: String,
    pub payload: String,
    pub created: Ts,
}

impl<S: Source> Inbox<S> {
    /// Store and decide a new event. The job is queued when this is called; the answer comes after its commit.
    pub fn receive(
        &self,
        incoming: Incoming,
        ev: S::Event,
        now: Ts,
    ) -> impl std::future::Future<Output = Result<Receipt, StoreError>> + Send + use<S> {
        let (source, horizon) = (self.source.clone(), self.horizon_secs);
        let plan = Plan { accounts: source.accounts(&ev), keys: vec![], savepoint: true };
        let ev = Arc::new(ev);
        self.store.submit(plan, move |b: &mut Batch| -> BoxFuture<'_, _> {
            let (source, ev, incoming) = (source.clone(), ev.clone(), incoming.clone());
            Box::pin(async move {
                let new = NewEvent {
                    source: S::NAME,
                    event_id: &incoming.event_id,
                    kind: &incoming.kind,
                    payload: &incoming.payload,
                    created: incoming.created,
                };
                match rows::insert(b.tx(), &new, now).await? {
                    Some(id) => {
                        let row = Stored {
                            id,
                            event_id: &incoming.event_id,
                            kind: &incoming.kind,
                            from: InboxStatus::Received,
                            first_seen: now,
                            attempts: 1,
                            again: false,
                        };
                        decide::<S>(b, &source, &row, &ev, now, horizon).await
                    }
                    // Stored before (maybe by a concurrent delivery that committed meanwhile).
                    None => match rows::find(b.tx(), S::NAME, &incoming.event_id).await? {
                        Some(row) => again_or_seen::<S>(b, &source, row, Some(&ev), now, horizon).await,
                        None => Err(StoreError::Corrupt("inbox row vanished".into())),
                    },
                }
            })
        })
    }

    /// Decide stored row `id` again (replay, a fact it waited for, the retry schedule). An applied or ignored
    /// one changes nothing. `ev` is the row's event read beforehand (with what was fetched for it), if any.
    pub fn redecide(
        &self,
        id: i64,
        ev: Option<S::Event>,
        now: Ts,
    ) -> impl std::future::Future<Output = Result<Receipt, StoreError>> + Send + use<S> {
        let (source, horizon) = (self.source.clone(), self.horizon_secs);
        let accounts = ev.as_ref().map(|e| source.accounts(e)).unwrap_or_default();
        let plan = Plan { accounts, keys: vec![], savepoint: true };
        let ev = ev.map(Arc::new);
        self.store.submit(plan, move |b: &mut Batch| -> BoxFuture<'_, _> {
            let (source, ev) = (source.clone(), ev.clone());
            Box::pin(async move {
                let backend = b.backend();
                let Some(row) = rows::lock(b.tx(), backend, id).await? else {
                    // Gone, or held by another transaction deciding it right now: answer as it stands.
                    let row = rows::find_by_id(b.tx(), id).await?;
                    return match row {
                        Some(row) => Ok((Receipt::seen(&row), Step::Keep)),
                        None => Err(StoreError::Corrupt(format!("no inbox row {id}"))),
                    };
                };
                if row.status.is_final() {
                    return Ok((Receipt::seen(&row), Step::Keep));
                }
                let parsed;
                let ev = match &ev {
                    Some(ev) => ev.as_ref(),
                    None => match source.parse(&row) {
                        Ok(e) => {
                            parsed = e;
                            &parsed
                        }
                        Err(reason) => return fail_unreadable(b, &row, &reason, now).await,
                    },
                };
                decide::<S>(b, &source, &Stored::again(&row), ev, now, horizon).await
            })
        })
    }

    /// Decide again the events that waited for `facts` (and for the facts those bring, a few rounds deep).
    /// Best effort: a failure leaves them waiting for the schedule or a replay.
    pub async fn wake(&self, facts: Vec<String>, now: Ts) {
        let mut facts = facts;
        for _ in 0..8 {
            if facts.is_empty() {
                return;
            }
            let ids = match self.store.inbox_waiting_for(&facts).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look up waiting events");
                    return;
                }
            };
            facts.clear();
            let pending: Vec<_> = ids.iter().map(|id| (*id, self.redecide(*id, None, now))).collect();
            for (id, p) in pending {
                match p.await {
                    Ok(r) => facts.extend(r.facts),
                    Err(e) => tracing::warn!(id, error = %e, "waiting event could not be decided"),
                }
            }
        }
    }
}

/// A row being decided.
struct Stored<'a> {
    id: i64,
    event_id: &'a str,
    kind: &'a str,
    /// The status it was read in (the compare-and-set expects it).
    from: InboxStatus,
    first_seen: Ts,
    /// Decisions made on it, this one included.
    attempts: i64,
    again: bool,
}

impl<'a> Stored<'a> {
    fn again(row: &'a InboxRow) -> Self {
        Stored {
            id: row.id,
            event_id: &row.event_id,
            kind: &row.kind,
            from: row.status,
            first_seen: row.first_seen,
            attempts: row.attempts + 1,
            again: true,
        }
    }
}

async fn again_or_seen<S: Source>(
    b: &mut Batch,
    source: &Arc<S>,
    row: InboxRow,
    ev: Option<&S::Event>,
    now: Ts,
    horizon: i64,
) -> Result<(Receipt, Step), StoreError> {
    let retry = S::RETRY_ON_REDELIVERY && matches!(row.status, InboxStatus::Failed | InboxStatus::Waiting);
    if !retry {
        rows::seen(b.tx(), row.id, now).await?;
        return Ok((Receipt::seen(&row), Step::Keep));
    }
    // Sent again after it failed or while it waits (requeued, posted again): another try.
    let backend = b.backend();
    let Some(row) = rows::lock(b.tx(), backend, row.id).await? else {
        return Ok((Receipt::seen(&row), Step::Keep));
    };
    if row.status.is_final() {
        return Ok((Receipt::seen(&row), Step::Keep));
    }
    let stored = Stored::again(&row);
    match ev {
        Some(ev) => decide::<S>(b, source, &stored, ev, now, horizon).await,
        None => match source.parse(&row) {
            Ok(ev) => decide::<S>(b, source, &stored, &ev, now, horizon).await,
            Err(reason) => fail_unreadable(b, &row, &reason, now).await,
        },
    }
}

/// A stored payload that no longer parses: failed for good.
async fn fail_unreadable(b: &mut Batch, row: &InboxRow, reason: &str, now: Ts) -> Result<(Receipt, Step), StoreError> {
    let rec = Record {
        status: InboxStatus::Failed,
        detail: Some(reason),
        waiting_for: None,
        account: None,
        next_attempt_at: None,
        again: true,
        now,
    };
    if !rows::record(b.tx(), row.id, row.status, &rec).await? {
        let current = rows::find_by_id(b.tx(), row.id).await?.unwrap_or_else(|| row.clone());
        return Ok((Receipt::seen(&current), Step::Undo));
    }
    Ok((
        Receipt { status: InboxStatus::Failed, detail: Some(reason.into()), duplicate: false, ..Receipt::seen(row) },
        Step::Keep,
    ))
}

/// Decide an event stored in row `s`, record the outcome (compare-and-set), and emit `event.failed` when it
/// turns failed. A failing or waiting decision changes nothing but the row.
async fn decide<S: Source>(
    b: &mut Batch,
    source: &Arc<S>,
    s: &Stored<'_>,
    ev: &S::Event,
    now: Ts,
    horizon: i64,
) -> Result<(Receipt, Step), StoreError> {
    b.savepoint().await?;
    let decision = source.decide(b, ev, now).await?;
    match &decision {
        Decision::Applied { .. } | Decision::Ignored(_) => b.release().await?,
        Decision::Waiting { .. } | Decision::Failed(_) => b.rollback().await?,
    }
    let (status, detail, waiting_for, account, next, applied, facts) = match decision {
        Decision::Applied { account, facts, applied } => {
            (InboxStatus::Applied, None, None, Some(account), None, applied, facts)
        }
        Decision::Ignored(why) => (InboxStatus::Ignored, Some(why), None, None, None, None, vec![]),
        Decision::Failed(why) => (InboxStatus::Failed, Some(why), None, None, None, None, vec![]),
        Decision::Waiting { fact, reason } if now - s.first_seen >= horizon => (
            InboxStatus::Failed,
            Some(format!(
                "{reason}: still waiting for {fact} after {} s (BILLING_WAIT_HORIZON_SECS)",
                now - s.first_seen
            )),
            None,
            None,
            None,
            None,
            vec![],
        ),
        Decision::Waiting { fact, reason } => {
            let next = now + retry_delay(s.attempts);
            (InboxStatus::Waiting, Some(reason), Some(fact), None, Some(next), None, vec![])
        }
    };
    let rec = Record {
        status,
        detail: detail.as_deref(),
        waiting_for: waiting_for.as_deref(),
        account: account.as_deref(),
        next_attempt_at: next,
        again: s.again,
        now,
    };
    if !rows::record(b.tx(), s.id, s.from, &rec).await? {
        // Decided meanwhile by someone else: theirs stands, ours is taken back.
        let current =
            rows::find_by_id(b.tx(), s.id).await?.ok_or_else(|| StoreError::Corrupt("inbox row vanished".into()))?;
        return Ok((Receipt::seen(&current), Step::Undo));
    }
    if status == InboxStatus::Failed && s.from != InboxStatus::Failed {
        tracing::warn!(source = S::NAME, event_id = %s.event_id, error = detail.as_deref().unwrap_or(""), "event failed; kept for replay");
        let data = json!({"source": S::NAME, "event_id": s.event_id, "event_type": s.kind, "error": detail});
        b.emit("event.failed", None, data, now);
    }
    let receipt =
        Receipt { id: s.id, event_id: s.event_id.to_owned(), status, detail, duplicate: false, applied, facts };
    Ok((receipt, Step::Keep))
}

/// Store an event that will not apply (malformed, unknown type, refused before deciding) as failed, with
/// `event.failed`. A row stored already is answered as it stands.
pub fn keep_failed(
    store: &Store,
    source: &'static str,
    incoming: Incoming,
    reason: String,
    now: Ts,
) -> impl std::future::Future<Output = Result<Receipt, StoreError>> + Send + use<> {
    let plan = Plan { accounts: vec![], keys: vec![], savepoint: true };
    store.submit(plan, move |b: &mut Batch| -> BoxFuture<'_, _> {
        let (incoming, reason) = (incoming.clone(), reason.clone());
        Box::pin(async move {
            let new = NewEvent {
                source,
                event_id: &incoming.event_id,
                kind: &incoming.kind,
                payload: &incoming.payload,
                created: incoming.created,
            };
            let Some(id) = rows::insert(b.tx(), &new, now).await? else {
                let row = rows::find(b.tx(), source, &incoming.event_id).await?;
                let row = row.ok_or_else(|| StoreError::Corrupt("inbox row vanished".into()))?;
                return Ok((Receipt::seen(&row), Step::Keep));
            };
            let rec = Record {
                status: InboxStatus::Failed,
                detail: Some(&reason),
                waiting_for: None,
                account: None,
                next_attempt_at: None,
                again: false,
                now,
            };
            rows::record(b.tx(), id, InboxStatus::Received, &rec).await?;
            tracing::warn!(source, event_id = %incoming.event_id, reason = %reason, "event failed; kept for replay");
            let data =
                json!({"source": source, "event_id": incoming.event_id, "event_type": incoming.kind, "error": reason});
            b.emit("event.failed", None, data, now);
            let receipt = Receipt {
                id,
                event_id: incoming.event_id.clone(),
                status: InboxStatus::Failed,
                detail: Some(reason.clone()),
                duplicate: false,
                applied: None,
                facts: vec![],
            };
            Ok((receipt, Step::Keep))
        })
    })
}

/// Record `status` on row `id` if it is still in status `from` (a command whose outcome was decided elsewhere,
/// such as a `stripe.event` decided by the Stripe intake).
pub fn settle(
    store: &Store,
    id: i64,
    from: InboxStatus,
    status: InboxStatus,
    detail: Option<String>,
    now: Ts,
) -> impl std::future::Future<Output = Result<Receipt, StoreError>> + Send + use<> {
    let plan = Plan { accounts: vec![], keys: vec![], savepoint: true };
    store.submit(plan, move |b: &mut Batch| -> BoxFuture<'_, _> {
        let detail = detail.clone();
        Box::pin(async move {
            let rec = Record {
                status,
                detail: detail.as_deref(),
                waiting_for: None,
                account: None,
                next_attempt_at: None,
                again: true,
                now,
            };
            let changed = rows::record(b.tx(), id, from, &rec).await?;
            let row =
                rows::find_by_id(b.tx(), id).await?.ok_or_else(|| StoreError::Corrupt(format!("no inbox row {id}")))?;
            Ok((Receipt { duplicate: !changed, ..Receipt::seen(&row) }, Step::Keep))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(1), 60);
        assert_eq!(retry_delay(2), 120);
        assert_eq!(retry_delay(3), 240);
        assert_eq!(retry_delay(6), 1_920);
        assert_eq!(retry_delay(7), 3_600);
        assert_eq!(retry_delay(50), 3_600);
        assert_eq!(retry_delay(0), 60);
    }
}
