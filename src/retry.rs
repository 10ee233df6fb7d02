//! The retry schedule of waiting events and commands: each tick decides again, a page at a time, the rows whose
//! next attempt is due (growing delays, see [`crate::inbox::retry_delay`]); the protocol fails those still
//! waiting after the horizon.
//!
//! Why a page: an instance must not load every waiting payload every minute, and several instances share the
//! work (a row being decided by one is skipped by the others).

use crate::commands::Commander;
use crate::inbox::Receipt;
use crate::store::{InboxStatus, StoreError};
use crate::stripe::Intake;
use crate::time::UnixTime;

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Receipt, StoreError>> + Send>>;

/// Rows decided again per tick at most.
pub const PAGE: i64 = 100;

/// Decide again the waiting rows due by `now`; returns how many were applied.
pub async fn due(intake: &Intake, commander: &Commander, now: UnixTime) -> Result<usize, StoreError> {
    let rows = intake.store.inbox_due(now, PAGE).await?;
    let mut applied = 0;
    let mut queued: Vec<(i64, Pending)> = Vec::new();
    for (id, source) in rows {
        if source == crate::stripe::process::SOURCE && intake.api.is_some() {
            // May fetch from the Stripe API first: one at a time.
            count(intake.replay(id, now).await, id, &mut applied);
        } else if source == crate::stripe::process::SOURCE {
            queued.push((id, Box::pin(intake.inbox.redecide(id, None, now))));
        } else {
            queued.push((id, Box::pin(commander.inbox.redecide(id, None, now))));
        }
    }
    let mut facts = Vec::new();
    for (id, p) in queued {
        let r = p.await;
        if let Ok(r) = &r {
            facts.extend(r.facts.clone());
        }
        count(r, id, &mut applied);
    }
    intake.inbox.wake(facts.clone(), now).await;
    commander.inbox.wake(facts, now).await;
    Ok(applied)
}

fn count(r: Result<Receipt, StoreError>, id: i64, applied: &mut usize) {
    match r {
        Ok(r) if r.status == InboxStatus::Applied && !r.duplicate => *applied += 1,
        Ok(_) => {}
        Err(e) => tracing::warn!(id, error = %e, "waiting event could not be retried; skipped"),
    }
}
