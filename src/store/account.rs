//! Changing accounts: a [`Request`] becomes a job of the group-commit writer, applied with the others queued
//! beside it and answered after their common commit; and the periodic tick that applies due cycle work.

use super::Step;
use super::writer::{BoxFuture, Plan};
use super::{Batch, Guard, OnMissing, Outcome, Request, Store, StoreError};
use crate::ledger::{Op, UnixTime};
use std::future::Future;

/// The plan of a job that applies `req`: its account and idempotency key, looked up with the batch.
pub(crate) fn plan_of(req: &Request) -> Plan {
    Plan {
        accounts: vec![req.account.clone()],
        keys: req.key.iter().map(|k| (req.account.clone(), k.key.clone())).collect(),
        optimistic: true,
        ..Plan::default()
    }
}

/// Keep a job's answer for its caller; only a failure of the database fails the batch.
pub(crate) fn answer<T>(r: Result<T, StoreError>) -> Result<(Result<T, StoreError>, Step), StoreError> {
    match r {
        Err(e) if e.is_transient() => Err(e),
        r => Ok((r, Step::Keep)),
    }
}

impl Store {
    /// Apply `req`, serialized with every other change to the account. The job is queued when this is called.
    pub fn execute(&self, req: Request) -> impl Future<Output = Result<Outcome, StoreError>> + Send + use<> {
        self.execute_guarded(req, None)
    }

    /// [`Store::execute`] refused by `guard` on the account as loaded and brought up to date (a repeat of an
    /// idempotency key gets its first answer before any check). The job is queued when this is called.
    pub fn execute_guarded(
        &self,
        req: Request,
        guard: Option<Guard>,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send + use<> {
        let span = tracing::debug_span!("change", account = %req.account, cause = %req.cause);
        let plan = plan_of(&req);
        let done = self.submit(plan, move |b: &mut Batch| -> BoxFuture<'_, _> {
            let (req, guard) = (req.clone(), guard.clone());
            Box::pin(async move { answer(b.apply(&req, guard.as_ref()).await) })
        });
        // At debug level every change says how it ended, with the account and cause of its span.
        let logged = async move {
            let out = done.await?;
            match &out {
                Ok(_) => tracing::debug!("change committed"),
                Err(e) => tracing::debug!(error = %e, "change refused"),
            }
            out
        };
        tracing::Instrument::instrument(logged, span)
    }

    /// [`Store::execute_guarded`], then `view` of the account as the change left it (in the same batch).
    pub fn execute_with<T, V>(
        &self,
        req: Request,
        guard: Option<Guard>,
        view: V,
    ) -> impl Future<Output = Result<(Outcome, T), StoreError>> + Send + use<T, V>
    where
        T: Send + 'static,
        V: Fn(&crate::ledger::Account) -> T + Send + Sync + 'static,
    {
        let plan = plan_of(&req);
        let view = std::sync::Arc::new(view);
        let done = self.submit(plan, move |b: &mut Batch| -> BoxFuture<'_, _> {
            let (req, guard, view) = (req.clone(), guard.clone(), view.clone());
            Box::pin(async move {
                let r = b.apply(&req, guard.as_ref()).await;
                answer(r.map(|o| {
                    let v = view(b.account(&req.account).expect("applied to a loaded account"));
                    (o, v)
                }))
            })
        });
        async move { done.await? }
    }

    /// Apply due work for every account whose next due time has passed; returns how many were done. An account
    /// that fails is logged and skipped, so one bad account does not hold up the others.
    pub async fn tick(&self, now: UnixTime) -> Result<usize, StoreError> {
        let mut done = 0;
        let mut skipped: Vec<String> = Vec::new();
        loop {
            let ids: Vec<String> =
                sqlx::query_scalar("SELECT id FROM accounts WHERE next_due_at <= $1 ORDER BY next_due_at LIMIT $2")
                    .bind(now)
                    .bind(200 + skipped.len() as i64)
                    .fetch_all(&self.pool)
                    .await?;
            let ids: Vec<String> = ids.into_iter().filter(|id| !skipped.contains(id)).collect();
            if ids.is_empty() {
                return Ok(done);
            }
            // Queued together, applied in a few batches.
            let pending: Vec<_> = ids
                .iter()
                .map(|id| {
                    let req = Request {
                        account: id.clone(),
                        op: Op::Tick,
                        cause: "tick".into(),
                        key: None,
                        on_missing: OnMissing::Refuse,
                        now,
                    };
                    self.execute(req)
                })
                .collect();
            let mut first_error = None;
            for (id, p) in ids.into_iter().zip(pending) {
                match p.await {
                    Ok(_) => done += 1,
                    Err(e) => {
                        tracing::warn!(account = %id, error = %e, "due work failed; skipped until the next tick");
                        skipped.push(id);
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error
                && done == 0
                && e.is_transient()
            {
                return Err(e);
            }
        }
    }
}
