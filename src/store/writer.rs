//! Group commit: every change to the ledger is a job handed to a writer lane, which gathers the jobs waiting
//! for it, applies them in one transaction ([`Batch`]) and commits once, then answers every caller.
//!
//! Why: a commit (and on PostgreSQL a round trip per statement) per change capped the worker far below what the
//! database can do, and AI tools debit on every call. A batch locks its accounts in one statement in one fixed
//! order (sorted ids), so lanes and instances batching the same accounts cannot deadlock; each account is loaded
//! once per batch however many of its changes are in it; the rows are written with multi-row statements. A job
//! refused by the rules changes nothing (checked in memory, or undone to its savepoint), and a batch that fails
//! is run again job by job, so one bad change never fails the others. Nothing is answered before its commit.
//!
//! On PostgreSQL there are several lanes (a job goes to the lane of its first account, so one account's
//! changes are batched together and stay in order); on SQLite one lane is the single writer, so no request
//! waits on `SQLITE_BUSY`.

use super::batch::{Batch, Step};
use super::load::AccountCache;
use super::{Backend, StoreError};
use sqlx::AnyPool;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a job asks of the batch before it runs.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Accounts the job changes, locked (in sorted order, with those of the other jobs) and loaded before any
    /// job of the batch runs. An account not named here is locked when the job first needs it.
    pub accounts: Vec<String>,
    /// Idempotency keys (account, key) to look up with the accounts.
    pub keys: Vec<(String, String)>,
    /// Inbox rows (source, event id) to look up with the accounts.
    pub events: Vec<(String, String)>,
    /// The job writes rows itself (not only through [`Batch::apply`]): it runs inside a savepoint, so that
    /// [`Step::Undo`] takes back its rows as well as its changes to accounts.
    pub savepoint: bool,
    /// The job changes accounts only through [`Batch::apply`] (no rows of its own, no inbox): its batch may
    /// run optimistically, without a transaction or locks, when the lane holds every account in memory.
    pub optimistic: bool,
}

/// A unit of work in a batch. `run` may be called more than once (a failed batch is run again job by job);
/// `finish` is called once, after the commit, with its outcome.
pub trait Job: Send {
    fn plan(&self) -> &Plan;
    fn run<'a>(&'a mut self, b: &'a mut Batch) -> BoxFuture<'a, Result<Step, StoreError>>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A job made of a closure, answering through a channel.
struct FnJob<T, F> {
    plan: Plan,
    f: F,
    value: Option<T>,
    reply: Option<oneshot::Sender<Result<T, StoreError>>>,
}

impl<T, F> Job for FnJob<T, F>
where
    T: Send,
    F: for<'a> FnMut(&'a mut Batch) -> BoxFuture<'a, Result<(T, Step), StoreError>> + Send,
{
    fn plan(&self) -> &Plan {
        &self.plan
    }

    fn run<'a>(&'a mut self, b: &'a mut Batch) -> BoxFuture<'a, Result<Step, StoreError>> {
        Box::pin(async move {
            let (v, step) = (self.f)(b).await?;
            self.value = Some(v);
            Ok(step)
        })
    }

    fn finish(mut self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = committed.and_then(|()| self.value.take().ok_or(StoreError::Closed));
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(answer);
        }
    }
}

/// Settings of the writer lanes.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub lanes: usize,
    /// At most this many jobs per batch.
    pub max_batch: usize,
    /// How long a lane waits, at most, for as many jobs as its last batch had (0: take what is queued, go).
    pub gather: Duration,
    pub lock_timeout_ms: u64,
    pub low_balance: i64,
    /// PostgreSQL: run batches optimistically when they may (see [`optimistic`]).
    pub optimistic: bool,
}

/// The test hook that holds back the commit of batches changing one account.
pub(crate) type Pause = std::sync::Arc<Mutex<Option<(String, std::sync::Arc<tokio::sync::Notify>)>>>;
type Lanes = Vec<mpsc::UnboundedSender<Box<dyn Job>>>;

/// What a lane needs to open batches.
#[derive(Clone)]
pub(crate) struct LaneCtx {
    pub pool: AnyPool,
    pub backend: Backend,
    pub config: WriterConfig,
    /// Test hook: a batch that changes this account waits for the notify before it commits.
    pub pause: Pause,
    pub stats: std::sync::Arc<WriterStats>,
}

/// What a writer did since it started.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    /// Batches tried optimistically, and those of them found stale by the version check (run again with locks).
    pub optimistic: AtomicU64,
    pub stale: AtomicU64,
}

pub struct Writer {
    pub(crate) stats: std::sync::Arc<WriterStats>,
    lanes: Mutex<Option<Lanes>>,
    /// Told when the writer's thread has finished every lane.
    done: Mutex<Option<oneshot::Receiver<()>>>,
    next: AtomicUsize,
    count: usize,
    pub(crate) pause: Pause,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("lanes", &self.count).finish()
    }
}

fn lane_of(account: &str, lanes: usize) -> usize {
    // FNV-1a: stable, cheap, and the same account always lands in the same lane.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % lanes as u64) as usize
}

impl Writer {
    /// Start the lanes on a thread of their own: the round trips of a batch follow one another with no HTTP
    /// request between them on the same runtime, so a batch's latency is the database's.
    pub(crate) fn start(pool: AnyPool, backend: Backend, config: WriterConfig) -> Writer {
        let count = if backend == Backend::Sqlite { 1 } else { config.lanes.max(1) };
        let pause = std::sync::Arc::new(Mutex::new(None));
        let stats = std::sync::Arc::new(WriterStats::default());
        let ctx = LaneCtx { pool, backend, config, pause: pause.clone(), stats: stats.clone() };
        let mut senders = Vec::with_capacity(count);
        let mut receivers = Vec::with_capacity(count);
        for _ in 0..count {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("billing-writer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                rt.block_on(async move {
                    let lanes: Vec<_> = receivers.into_iter().map(|rx| tokio::spawn(lane(rx, ctx.clone()))).collect();
                    for l in lanes {
                        let _ = l.await;
                    }
                    ctx.pool.close().await;
                });
                let _ = done_tx.send(());
            })
            .expect("the writer thread");
        Writer {
            stats,
            lanes: Mutex::new(Some(senders)),
            done: Mutex::new(Some(done_rx)),
            next: AtomicUsize::new(0),
            count,
            pause,
        }
    }

    /// Queue a job now (so jobs queued one after the other run in that order when they share an account).
    fn enqueue(&self, job: Box<dyn Job>) -> Result<(), StoreError> {
        let lanes = self.lanes.lock().expect("writer lanes");
        let Some(lanes) = lanes.as_ref() else { return Err(StoreError::Closed) };
        let i = match job.plan().accounts.first() {
            Some(a) => lane_of(a, lanes.len()),
            None => self.next.fetch_add(1, Ordering::Relaxed) % lanes.len(),
        };
        lanes[i].send(job).map_err(|_| StoreError::Closed)
    }

    /// Hand a job to its lane; the answer comes after the batch that ran it committed. The job is queued when
    /// this is called, not when the future is first polled.
    pub fn submit<T, F>(&self, plan: Plan, f: F) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: for<'a> FnMut(&'a mut Batch) -> BoxFuture<'a, Result<(T, Step), StoreError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let queued = self.enqueue(Box::new(FnJob { plan, f, value: None, reply: Some(tx) }));
        async move {
            queued?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Stop taking jobs, finish those queued, and wait for the lanes to end.
    pub async fn close(&self) {
        drop(self.lanes.lock().expect("writer lanes").take());
        let done = self.done.lock().expect("writer done").take();
        if let Some(done) = done {
            let _ = done.await;
        }
    }
}

async fn lane(mut rx: mpsc::UnboundedReceiver<Box<dyn Job>>, ctx: LaneCtx) {
    let max = ctx.config.max_batch.max(1);
    let mut cache = AccountCache::default();
    let mut backoff = Backoff::default();
    let mut conn: Conn = None;
    // As many jobs as the last batch had are likely on their way (their callers were answered together): wait a
    // moment for them, so a steady load keeps full batches instead of alternating a full one and a small one.
    let mut expected = 1usize;
    // After a batch written optimistically (one round trip), waiting to fill the next one would cost more than
    // it saves.
    let mut last_optimistic = false;
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < max {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let want = expected.min(max);
        if !ctx.config.gather.is_zero() && !last_optimistic && jobs.len() < want {
            let until = tokio::time::Instant::now() + ctx.config.gather;
            while jobs.len() < want {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(j)) => jobs.push(j),
                    _ => break,
                }
            }
        }
        expected = jobs.len();
        let run = std::panic::AssertUnwindSafe(run_batch(&ctx, &mut cache, &mut backoff, &mut conn, jobs));
        match futures_lite::FutureExt::catch_unwind(run).await {
            Ok(written_optimistically) => last_optimistic = written_optimistically,
            Err(_) => {
                // A job panicked: its callers were told (their answer channels closed); the lane goes on with a
                // new connection and nothing in memory.
                tracing::error!("a write batch panicked; its changes were rolled back");
                conn = None;
                cache = AccountCache::default();
                last_optimistic = false;
            }
        }
    }
}

/// Errors after which the same batch may simply be run again: a deadlock or serialization failure chose it as
/// the victim, or a unique key was taken by another writer's commit after this batch looked (an idempotency key
/// sent to two instances at once): run again, the batch sees the row and answers from it.
fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict(_)) || matches!(e.db_code().as_deref(), Some("40P01" | "40001" | "23505"))
}

/// When optimistic batches keep finding an account changed by another writer (requests for the same accounts
/// spread over instances), each costs a round trip more than locking would have. Past about a quarter of the
/// recent ones found stale, a lane locks for its next 64 batches, then tries again.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    score: f32,
    cool: u32,
}

impl Backoff {
    /// Whether the next batch that could go optimistically may.
    pub(crate) fn allow(&mut self) -> bool {
        if self.cool > 0 {
            self.cool -= 1;
            return false;
        }
        true
    }

    /// An optimistic batch was written (`stale` false) or found stale.
    pub(crate) fn record(&mut self, stale: bool) {
        self.score = self.score * 0.9 + if stale { 0.1 } else { 0.0 };
        if self.score > 0.25 {
            self.cool = 64;
            self.score = 0.0;
        }
    }
}

/// Whether a batch may be written optimistically: on PostgreSQL, when every job changes accounts only through
/// the rules and the lane holds each of them in memory from its last batch. Such a batch takes no lock and opens
/// no transaction: its one write statement checks that every account it read is still at the version the lane
/// holds, and commits by itself (one round trip instead of four). Found stale (another lane or instance changed
/// an account), it fails whole as a serialization failure; the lane has then forgotten its accounts, and runs
/// it again with locks. A batch held by the test hook takes the locked path.
fn optimistic(ctx: &LaneCtx, cache: &AccountCache, jobs: &[Box<dyn Job>]) -> bool {
    ctx.backend == Backend::Postgres
        && ctx.config.optimistic
        && ctx.pause.lock().expect("pause").is_none()
        && jobs.iter().all(|j| {
            let p = j.plan();
            p.optimistic
                && !p.savepoint
                && p.events.is_empty()
                && !p.accounts.is_empty()
                && p.accounts.iter().all(|a| cache.holds(a))
        })
}

async fn run_batch(
    ctx: &LaneCtx,
    cache: &mut AccountCache,
    backoff: &mut Backoff,
    conn: &mut Conn,
    mut jobs: Vec<Box<dyn Job>>,
) -> bool {
    match attempt_retrying(ctx, cache, backoff, conn, &mut jobs).await {
        Ok(optimistically) => {
            crate::metrics::global().batch(jobs.len());
            ctx.stats.batches.fetch_add(1, Ordering::Relaxed);
            ctx.stats.jobs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
            for j in jobs {
                j.finish(Ok(()));
            }
            optimistically
        }
        Err(e) if jobs.len() == 1 => {
            jobs.pop().expect("one job").finish(Err(e));
            false
        }
        Err(e) => {
            // One of them (or the database) failed the batch: run each alone, so only a failing one fails.
            tracing::debug!(error = %e, jobs = jobs.len(), "batch failed; running its jobs one by one");
            for j in jobs {
                let mut one = vec![j];
                let r = attempt_retrying(ctx, cache, backoff, conn, &mut one).await.map(|_| ());
                one.pop().expect("one job").finish(r);
            }
            false
        }
    }
}

/// [`attempt`], run again (at most three times) while it fails in a way that running again can cure.
async fn attempt_retrying(
    ctx: &LaneCtx,
    cache: &mut AccountCache,
    backoff: &mut Backoff,
    conn: &mut Conn,
    jobs: &mut [Box<dyn Job>],
) -> Result<bool, StoreError> {
    let mut result = attempt(ctx, cache, backoff, conn, jobs).await;
    for _ in 0..3 {
        match &result {
            Err(e) if retryable(e) => result = attempt(ctx, cache, backoff, conn, jobs).await,
            _ => break,
        }
    }
    result
}

/// A lane's connection, kept from batch to batch (no pool round trip, statements prepared once).
type Conn = Option<sqlx::pool::PoolConnection<sqlx::Any>>;

/// Run `jobs` in one transaction and commit it; whether it was written optimistically.
async fn attempt(
    ctx: &LaneCtx,
    cache: &mut AccountCache,
    backoff: &mut Backoff,
    conn: &mut Conn,
    jobs: &mut [Box<dyn Job>],
) -> Result<bool, StoreError> {
    let c = match conn.take() {
        Some(c) => c,
        None => {
            let mut c = ctx.pool.acquire().await?;
            // Dropped in the middle of a batch (a panic), it must not go back to the pool in a transaction.
            c.close_on_drop();
            c
        }
    };
    let optimistic = optimistic(ctx, cache, jobs) && backoff.allow();
    if optimistic {
        ctx.stats.optimistic.fetch_add(1, Ordering::Relaxed);
    }
    let mut b = match Batch::begin(ctx.backend, ctx.config.low_balance, c, optimistic).await {
        Ok(b) => b,
        Err((e, c)) => {
            *conn = c;
            return Err(e);
        }
    };
    match run_jobs(ctx, &mut b, cache, jobs).await {
        Ok(()) => {
            let (r, c) = b.commit(cache).await;
            *conn = c;
            if optimistic && r.is_ok() {
                backoff.record(false);
                crate::metrics::global().optimistic_batch("written");
            }
            r.map(|()| optimistic)
        }
        Err(e) => {
            // Refused by the database, an optimistic batch left nothing behind; what it assumed (a key unused)
            // may be why. It is run again with locks, like a stale one.
            let e = match e {
                e if optimistic && e.db_code().is_some() && !retryable(&e) => {
                    StoreError::Conflict(format!("an optimistic batch was refused ({e}); running it with locks"))
                }
                e => e,
            };
            if optimistic && retryable(&e) {
                // Stale: the version check failed (another writer changed an account). Otherwise the batch
                // needed what only locks give (a keyed refusal, a key used before, rows moved).
                let stale = e.db_code().as_deref() == Some("40001");
                if stale {
                    ctx.stats.stale.fetch_add(1, Ordering::Relaxed);
                    backoff.record(true);
                }
                crate::metrics::global().optimistic_batch(if stale { "stale" } else { "retried" });
                tracing::debug!(error = %e, stale, "optimistic batch not written; running it again with locks");
            }
            // An optimistic batch has no transaction to roll back, but a connection that failed other than by
            // the database's answer (a broken socket) is not used again.
            *conn = if optimistic && e.db_code().is_none() && !matches!(e, StoreError::Conflict(_)) {
                None
            } else {
                b.abort().await
            };
            Err(e)
        }
    }
}

async fn run_jobs(
    ctx: &LaneCtx,
    b: &mut Batch,
    cache: &mut AccountCache,
    jobs: &mut [Box<dyn Job>],
) -> Result<(), StoreError> {
    let mut accounts: Vec<String> = jobs.iter().flat_map(|j| j.plan().accounts.iter().cloned()).collect();
    let keys: Vec<(String, String)> = jobs.iter().flat_map(|j| j.plan().keys.iter().cloned()).collect();
    let events: Vec<(String, String)> = jobs.iter().flat_map(|j| j.plan().events.iter().cloned()).collect();
    accounts.sort();
    accounts.dedup();
    b.prelude(&accounts, &keys, &events, cache).await?;
    for j in jobs.iter_mut() {
        let savepoint = j.plan().savepoint;
        b.start_job(savepoint).await?;
        let step = j.run(b).await?;
        b.end_job(step).await?;
    }
    b.flush().await?;
    let pause = ctx.pause.lock().expect("pause").clone();
    if let Some((account, notify)) = pause
        && b.touches(&account)
    {
        notify.notified().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_that_keeps_finding_stale_accounts_locks_for_a_while_then_tries_again() {
        let mut b = Backoff::default();
        // Mostly written, a stale one now and then: it keeps going without locks.
        for i in 0..500 {
            assert!(b.allow());
            b.record(i % 10 == 0);
        }
        // Stale after stale: within a few it locks for 64 batches.
        let mut stale_in_a_row = 0;
        while b.allow() {
            b.record(true);
            stale_in_a_row += 1;
            assert!(stale_in_a_row < 10, "it backs off after a few stale batches");
        }
        for _ in 1..64 {
            assert!(!b.allow(), "locked for 64 batches");
        }
        assert!(b.allow(), "then it tries again");
    }

    #[test]
    fn an_account_always_goes_to_the_same_lane() {
        for lanes in 1..6 {
            for a in ["acct_1", "acct_2", "x", ""] {
                assert_eq!(lane_of(a, lanes), lane_of(a, lanes));
                assert!(lane_of(a, lanes) < lanes);
            }
        }
        let spread: std::collections::HashSet<usize> = (0..100).map(|i| lane_of(&format!("a{i}"), 4)).collect();
        assert_eq!(spread.len(), 4, "accounts spread over every lane");
    }
}
