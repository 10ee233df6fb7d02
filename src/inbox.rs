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
use crate::store::inbox::{self as rows, Record};
use crate::store::{Batch, BoxFuture, InboxRow, InboxStatus, NewInbox, Plan, Seen, Step, Store, StoreError};
use crate::time::UnixTime;
use serde_json::json;
use std::sync::{Arc, OnceLock};

/// What a source decided about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It changed `account`; `facts` are what later events may have waited for (`subscription:ID`, ...).
    Applied { account: String, facts: Vec<String>, applied: Option<Applied> },
    /// It changes no credits, for this `reason`; `facts` it taught all the same (a payment linked to its invoice).
    Ignored { reason: String, facts: Vec<String> },
    /// It needs `fact` (`subscription:ID`, `price:ID`, `payment:ID`, `account:ID`); `reason` says why.
    Waiting { fact: String, reason: String },
    /// It can never apply as it is; kept for replay. `facts` it taught all the same (a price it carried).
    Failed { reason: String, facts: Vec<String> },
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

    /// The same event delivered again in the batch that added its row: the first delivery's outcome, whose row
    /// id is known once the batch is written.
    fn added_again(event_id: &str, status: InboxStatus, detail: Option<String>) -> Receipt {
        Receipt { id: 0, event_id: event_id.to_owned(), status, detail, duplicate: true, applied: None, facts: vec![] }
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
        now: UnixTime,
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
    pub created: UnixTime,
}

/// What a job found or did, with the inbox row's id to come with the commit when the row is new.
struct Draft {
    receipt: Receipt,
    id: Option<Arc<OnceLock<i64>>>,
}

impl Draft {
    fn done(receipt: Receipt) -> Draft {
        Draft { receipt, id: None }
    }

    /// The receipt, once its batch committed.
    fn finish(self) -> Receipt {
        let mut r = self.receipt;
        if let Some(id) = self.id.and_then(|c| c.get().copied()) {
            r.id = id;
        }
        r
    }
}

fn answered(d: Draft) -> Result<(Draft, Step), StoreError> {
    Ok((d, Step::Keep))
}

impl<S: Source> Inbox<S> {
    /// Store and decide a new event. The job is queued when this is called; the answer comes after its commit.
    pub fn receive(
        &self,
        incoming: Incoming,
        ev: S::Event,
        now: UnixTime,
    ) -> impl std::future::Future<Output = Result<Receipt, StoreError>> + Send + use<S> {
        let (source, horizon) = (self.source.clone(), self.horizon_secs);
        let plan = Plan {
            accounts: source.accounts(&ev),
            events: vec![(S::NAME.to_owned(), incoming.event_id.clone())],
            ..Plan::default()
        };
        let ev = Arc::new(ev);
        let done = self.store.submit(plan, move |b: &mut Batch| -> BoxFuture<'_, _> {
            let (source, ev, incoming) = (source.clone(), ev.clone(), incoming.clone());
            Box::pin(async move {
                match b.inbox_row(S::NAME, &incoming.event_id).await? {
                    // Delivered twice in one batch: the first delivery's outcome.
                    Some(Seen::Added { status, detail, id }) => {
                        let receipt = Receipt::added_again(&incoming.event_id, status, detail);
                        answered(Draft { receipt, id: Some(id) })
                    }
                    Some(Seen::Stored(row)) => again_or_seen::<S>(b, &source, row, Some(&ev), now, horizon).await,
                    None => {
                        let (status, detail, waiting_for, next, account, applied, facts) =
                            decide::<S>(b, &source, &ev, now, now, 1, horizon).await?;
                        let id = b.inbox_add(NewInbox {
                            source: S::NAME.into(),
                            event_id: incoming.event_id.clone(),
                            kind: incoming.kind.clone(),
                            payload: incoming.payload.clone(),
                            status,
                            detail: detail.clone(),
                            waiting_for,
                            account,
                            created: incoming.created,
                            now,
                            next_attempt_at: next,
                            id: Default::default(),
                        });
                        if status == InboxStatus::Failed {
                            failed::<S>(b, &incoming.event_id, &incoming.kind, detail.as_deref(), now);
                        }
                        let receipt = Receipt {
                            id: 0,
                            event_id: incoming.event_id.clone(),
                            status,
                            detail,
                            duplicate: false,
                            applied,
                            facts,
                        };
                        answered(Draft { receipt, id: Some(id) })
                    }
                }
            })
        });
        async move { Ok(done.await?.finish()) }
    }

    /// Decide stored row `id` again (replay, a fact it waited for, the retry schedule). An applied or ignored
    /// one changes nothing. `ev` is the row's event read beforehand (with what was fetched for it), if any.
    pub fn redecide(
        &self,
        id: i64,
        ev: Option<S::Event>,
        now: UnixTime,
    ) -> impl std::future::Future<Output = Result<Receipt, StoreError>> + Send + use<S> {
        let (source, horizon) = (self.source.clone(), self.horizon_secs);
        let accounts = ev.as_ref().map(|e| source.accounts(e)).unwrap_or_default();
        let plan = Plan { accounts, ..Plan::default() };
        let ev = ev.map(Arc::new);
        let done = self.store.submit(plan, move |b: &mut Batch| -> BoxFuture<'_, _> {
            let (source, ev) = (source.clone(), ev.clone());
            Box::pin(async move {
                let backend = b.backend();
                let Some(row) = rows::lock(b.tx(), backend, id).await? else {
                    // Gone, or held by another transaction deciding it right now: answer as it stands.
                    return match rows::find_by_id(b.tx(), id).await? {
                        Some(row) => answered(Draft::done(Receipt::seen(&row))),
                        None => Err(StoreError::Corrupt(format!("no inbox row {id}"))),
                    };
                };
                if row.status.is_final() {
                    return answered(Draft::done(Receipt::seen(&row)));
                }
                redecide_locked::<S>(b, &source, row, ev.as_deref(), now, horizon).await
            })
        });
        async move { Ok(done.await?.finish()) }
    }

    /// Decide again the events that waited for `facts` (and for the facts those bring, a few rounds deep).
    /// Best effort: a failure leaves them waiting for the schedule or a replay.
    pub async fn wake(&self, facts: Vec<String>, now: UnixTime) {
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

/// What deciding came to: status, detail, the fact waited for, the next attempt, the account, what was moved,
/// the facts learned.
type Decided =
    (InboxStatus, Option<String>, Option<String>, Option<UnixTime>, Option<String>, Option<Applied>, Vec<String>);

/// Decide `ev` (first seen at `first_seen`, `attempts` decisions with this one): a failing or waiting decision
/// changes nothing (it is taken back); waiting past the horizon fails.
async fn decide<S: Source>(
    b: &mut Batch,
    source: &Arc<S>,
    ev: &S::Event,
    now: UnixTime,
    first_seen: UnixTime,
    attempts: i64,
    horizon: i64,
) -> Result<Decided, StoreError> {
    b.mark();
    let decision = source.decide(b, ev, now).await?;
    match &decision {
        Decision::Applied { .. } | Decision::Ignored { .. } => b.keep(),
        Decision::Waiting { .. } | Decision::Failed { .. } => b.undo(),
    }
    Ok(match decision {
        Decision::Applied { account, facts, applied } => {
            (InboxStatus::Applied, None, None, None, Some(account), applied, facts)
        }
        Decision::Ignored { reason, facts } => (InboxStatus::Ignored, Some(reason), None, None, None, None, facts),
        Decision::Failed { reason, facts } => (InboxStatus::Failed, Some(reason), None, None, None, None, facts),
        Decision::Waiting { fact, reason } if now - first_seen >= horizon => {
            let why =
                format!("{reason}: still waiting for {fact} after {} s (BILLING_WAIT_HORIZON_SECS)", now - first_seen);
            (InboxStatus::Failed, Some(why), None, None, None, None, vec![])
        }
        Decision::Waiting { fact, reason } => {
            (InboxStatus::Waiting, Some(reason), Some(fact), Some(now + retry_delay(attempts)), None, None, vec![])
        }
    })
}

fn failed<S: Source>(b: &mut Batch, event_id: &str, kind: &str, detail: Option<&str>, now: UnixTime) {
    tracing::warn!(source = S::NAME, event_id, error = detail.unwrap_or(""), "event failed; kept for replay");
    let data = json!({"source": S::NAME, "event_id": event_id, "event_type": kind, "error": detail});
    b.emit("event.failed", None, data, now);
}

async fn again_or_seen<S: Source>(
    b: &mut Batch,
    source: &Arc<S>,
    row: InboxRow,
    ev: Option<&S::Event>,
    now: UnixTime,
    horizon: i64,
) -> Result<(Draft, Step), StoreError> {
    let retry = S::RETRY_ON_REDELIVERY && matches!(row.status, InboxStatus::Failed | InboxStatus::Waiting);
    if !retry {
        rows::seen(b.tx(), row.id, now).await?;
        return answered(Draft::done(Receipt::seen(&row)));
    }
    // Sent again after it failed or while it waits (requeued, posted again): another try.
    let backend = b.backend();
    let Some(row) = rows::lock(b.tx(), backend, row.id).await? else {
        return answered(Draft::done(Receipt::seen(&row)));
    };
    if row.status.is_final() {
        return answered(Draft::done(Receipt::seen(&row)));
    }
    redecide_locked::<S>(b, source, row, ev, now, horizon).await
}

/// Decide a stored row again, holding its lock; record the outcome only if its status is still the one read.
async fn redecide_locked<S: Source>(
    b: &mut Batch,
    source: &Arc<S>,
    row: InboxRow,
    ev: Option<&S::Event>,
    now: UnixTime,
    horizon: i64,
) -> Result<(Draft, Step), StoreError> {
    let parsed;
    let ev = match ev {
        Some(ev) => ev,
        None => match source.parse(&row) {
            Ok(e) => {
                parsed = e;
                &parsed
            }
            Err(reason) => {
                let d = (InboxStatus::Failed, Some(reason), None, None, None, None, vec![]);
                return record::<S>(b, &row, d, now).await;
            }
        },
    };
    b.mark();
    let d = decide::<S>(b, source, ev, now, row.first_seen, row.attempts + 1, horizon).await?;
    let out = record::<S>(b, &row, d, now).await?;
    match out.1 {
        Step::Keep => b.keep(),
        Step::Undo => b.undo(),
    }
    Ok((out.0, Step::Keep))
}

/// Record a decision on a stored row (compare-and-set on the status it was read in); when another writer
/// decided it meanwhile, theirs stands and this one is to be taken back ([`Step::Undo`]).
async fn record<S: Source>(
    b: &mut Batch,
    row: &InboxRow,
    d: Decided,
    now: UnixTime,
) -> Result<(Draft, Step), StoreError> {
    let (status, detail, waiting_for, next, account, applied, facts) = d;
    let rec = Record {
        status,
        detail: detail.as_deref(),
        waiting_for: waiting_for.as_deref(),
        account: account.as_deref(),
        next_attempt_at: next,
        again: true,
        now,
    };
    if !rows::record(b.tx(), row.id, row.status, &rec).await? {
        let current = rows::find_by_id(b.tx(), row.id).await?.unwrap_or_else(|| row.clone());
        return Ok((Draft::done(Receipt::seen(&current)), Step::Undo));
    }
    if status == InboxStatus::Failed && row.status != InboxStatus::Failed {
        failed::<S>(b, &row.event_id, &row.kind, detail.as_deref(), now);
    }
    let receipt =
        Receipt { id: row.id, event_id: row.event_id.clone(), status, detail, duplicate: false, applied, facts };
    Ok((Draft::done(receipt), Step::Keep))
}

/// Store an event that will not apply (malformed, unknown type, refused before deciding) as failed, with
/// `event.failed`. A row stored already is answered as it stands.
pub fn keep_failed(
    store: &Store,
    source: &'static str,
    incoming: Incoming,
    reason: String,
    now: UnixTime,
) -> impl std::future::Future<Output = Result<Receipt, StoreError>> + Send + use<> {
    let plan = Plan { events: vec![(source.to_owned(), incoming.event_id.clone())], ..Plan::default() };
    let done = store.submit(plan, move |b: &mut Batch| -> BoxFuture<'_, _> {
        let (incoming, reason) = (incoming.clone(), reason.clone());
        Box::pin(async move {
            match b.inbox_row(source, &incoming.event_id).await? {
                Some(Seen::Stored(row)) => return answered(Draft::done(Receipt::seen(&row))),
                Some(Seen::Added { status, detail, id }) => {
                    let receipt = Receipt::added_again(&incoming.event_id, status, detail);
                    return answered(Draft { receipt, id: Some(id) });
                }
                None => {}
            }
            let id = b.inbox_add(NewInbox {
                source: source.into(),
                event_id: incoming.event_id.clone(),
                kind: incoming.kind.clone(),
                payload: incoming.payload.clone(),
                status: InboxStatus::Failed,
                detail: Some(reason.clone()),
                waiting_for: None,
                account: None,
                created: incoming.created,
                now,
                next_attempt_at: None,
                id: Default::default(),
            });
            tracing::warn!(source, event_id = %incoming.event_id, reason = %reason, "event failed; kept for replay");
            let data =
                json!({"source": source, "event_id": incoming.event_id, "event_type": incoming.kind, "error": reason});
            b.emit("event.failed", None, data, now);
            let receipt = Receipt {
                id: 0,
                event_id: incoming.event_id.clone(),
                status: InboxStatus::Failed,
                detail: Some(reason.clone()),
                duplicate: false,
                applied: None,
                facts: vec![],
            };
            answered(Draft { receipt, id: Some(id) })
        })
    });
    async move { Ok(done.await?.finish()) }
}

/// Record `status` on row `id` if it is still in status `from` (a command whose outcome was decided elsewhere,
/// such as a `stripe.event` decided by the Stripe intake).
pub fn settle(
    store: &Store,
    id: i64,
    from: InboxStatus,
    status: InboxStatus,
    detail: Option<String>,
    now: UnixTime,
) -> impl std::future::Future<Output = Result<Receipt, StoreError>> + Send + use<> {
    store.submit(Plan::default(), move |b: &mut Batch| -> BoxFuture<'_, _> {
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
            let row = rows::find_by_id(b.tx(), id).await?;
            let row = row.ok_or_else(|| StoreError::Corrupt(format!("no inbox row {id}")))?;
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
