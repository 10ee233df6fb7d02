//! RabbitMQ in and out (SPEC §6): commands consumed from the quorum queue with manual acks after commit, retries
//! with growing delays, parking of what cannot apply; outgoing events published from the outbox with publisher
//! confirms. A supervisor reconnects with backoff when the broker goes away; `/readyz` shows the state.

pub mod consumer;
pub mod dlq;
pub mod publisher;
pub mod topology;

use crate::clock::Clock;
use crate::commands::Commander;
use crate::store::{Lease, StoreError};
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;
use tokio::sync::watch;
pub use topology::Names;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("the broker refused (nacked) a message")]
    Nacked,
    #[error("simulated crash between commit and ack (test hook)")]
    SimulatedCrash,
    #[error("the broker closed the consumer")]
    Closed,
    #[error("the broker did not answer in time")]
    Timeout,
}

/// The broker connection's state, shared with `/readyz` and the metrics.
#[derive(Debug, Clone, Default)]
pub struct BrokerState(Arc<AtomicU8>);

const NONE: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl BrokerState {
    /// `none` (no broker configured), `up` or `down`.
    pub fn status(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            UP => "up",
            DOWN => "down",
            _ => "none",
        }
    }

    pub fn set_up(&self) {
        self.0.store(UP, Ordering::Relaxed);
    }

    /// Mark it down; true when it was up (a connection that had worked ended).
    pub fn set_down(&self) -> bool {
        self.0.swap(DOWN, Ordering::Relaxed) == UP
    }

    pub fn configured(&self) -> bool {
        self.0.load(Ordering::Relaxed) != NONE
    }
}

#[derive(Clone)]
pub struct Broker {
    pub url: String,
    pub names: Names,
    pub prefetch: u16,
    pub commander: Commander,
    pub clock: Clock,
    /// Shared with `/readyz`.
    pub state: BrokerState,
    /// Test hook: drop the connection once after a commit, before the ack, as a crash would.
    pub crash_before_ack: Arc<AtomicBool>,
}

/// How long a broker operation (a publish going out, an ack, a publisher confirm) may take before the
/// connection is taken for lost.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Await a broker operation, at most [`CONFIRM_TIMEOUT`].
pub async fn timely<T>(op: impl std::future::Future<Output = lapin::Result<T>>) -> Result<T, QueueError> {
    match tokio::time::timeout(CONFIRM_TIMEOUT, op).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(QueueError::Timeout),
    }
}

/// Await a publisher confirm, at most [`CONFIRM_TIMEOUT`].
pub async fn confirmed(c: lapin::PublisherConfirm) -> Result<lapin::Confirmation, QueueError> {
    timely(c).await
}

/// Ack a delivery; an acker the channel already poisoned did not ack, which ends the session (the broker
/// delivers the message again).
pub async fn ack(d: &lapin::message::Delivery) -> Result<(), QueueError> {
    match timely(d.ack(lapin::options::BasicAckOptions::default())).await? {
        true => Ok(()),
        false => Err(QueueError::Closed),
    }
}

/// The TLS layer's reason, when a connection failed there: the far end does not speak TLS (a plain AMQP port),
/// or its certificate is not trusted. Retrying does not mend either, so it is said plainly.
pub fn tls_failure(e: &lapin::Error) -> Option<String> {
    let lapin::ErrorKind::IOError(io) = e.kind() else { return None };
    let text = io.to_string();
    let rustls = io.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    let lower = text.to_lowercase();
    (rustls || lower.contains("tls") || lower.contains("certificate") || lower.contains("corrupt message"))
        .then_some(text)
}

/// What to tell the operator about a TLS failure to `url`.
fn tls_advice(url: &str, why: &str) -> String {
    format!(
        "AMQP_URL {}: the TLS handshake with the broker failed ({why}); an amqps:// URL needs the broker's TLS port \
         (RabbitMQ's is 5671) and a certificate the system's roots trust (SSL_CERT_FILE names another bundle)",
        crate::config::redact(url)
    )
}

/// At the start, for an `amqps://` URL: one connection attempt, so a TLS mistake stops the start with a clear
/// message instead of a reconnect loop. A broker that is away or slow is not a mistake: the worker starts and
/// reconnects in the background, as with `amqp://`.
pub async fn check_tls(url: &str) -> Result<(), String> {
    if !url.starts_with("amqps://") {
        return Ok(());
    }
    match tokio::time::timeout(CONFIRM_TIMEOUT, connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
            Ok(())
        }
        Ok(Err(e)) => match tls_failure(&e) {
            Some(why) => Err(tls_advice(url, &why)),
            None => {
                tracing::warn!(error = %e, "the broker is not reachable at the start; reconnecting in the background");
                Ok(())
            }
        },
        Err(_) => Ok(()),
    }
}

pub async fn connect(url: &str) -> lapin::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default().with_connection_name("billing-worker".into())).await
}

impl Broker {
    /// Run until `stop` turns true, reconnecting with backoff whenever the broker goes away.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if *stop.borrow() {
                return;
            }
            // Each session runs as a task of its own, so even a panic ends only the session, not the worker's
            // broker side.
            let me = self.clone();
            let mut session_stop = stop.clone();
            match tokio::spawn(async move { me.session(&mut session_stop).await }).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => {
                    if self.state.set_down() {
                        backoff = Duration::from_millis(200); // it had worked: start the backoff over
                    }
                    let retry_in_ms = backoff.as_millis() as u64;
                    match &e {
                        QueueError::Amqp(a) if let Some(why) = tls_failure(a) => {
                            tracing::error!(retry_in_ms, "{}", tls_advice(&self.url, &why))
                        }
                        _ => tracing::warn!(error = %e, retry_in_ms, "broker session ended; reconnecting"),
                    }
                }
                Err(panic) => {
                    if self.state.set_down() {
                        backoff = Duration::from_millis(200);
                    }
                    tracing::error!(error = %panic, "broker session panicked; reconnecting");
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection's life: declare, consume and publish until an error or `stop`.
    async fn session(&self, stop: &mut watch::Receiver<bool>) -> Result<(), QueueError> {
        // Setting up holds nothing yet, so a stop ends it at once (a broker that is away or slow must not hold
        // the shutdown until its deadline).
        let setup = tokio::select! {
            r = self.setup() => r?,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        // `_consume` keeps the consuming channel's handle for the session's life.
        let (conn, _consume, publish, mut deliveries) = setup;
        self.state.set_up();
        tracing::info!(queue = %self.names.commands, "consuming commands");
        // The watchdog ends the session as soon as the connection is lost, wherever the work is waiting (an ack
        // or a publish whose frame never goes out would otherwise hold it, and `/readyz`, forever). Dropping the
        // work there is safe: nothing was acked that was not committed, and a command applied but not acked comes
        // back and is recognised as a duplicate.
        let result = tokio::select! {
            r = self.work(&conn, &publish, &mut deliveries, stop) => r,
            e = lost(&conn) => Err(e),
        };
        // A connection the broker dropped may never answer a close: bounded, like every other broker operation.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
        result
    }

    /// Connect, declare the topology, and start consuming.
    async fn setup(&self) -> Result<(Connection, lapin::Channel, lapin::Channel, lapin::Consumer), QueueError> {
        let conn = connect(&self.url).await?;
        let consume = conn.create_channel().await?;
        topology::declare(&consume, &self.names).await?;
        consume.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
        let publish = conn.create_channel().await?;
        publish.confirm_select(ConfirmSelectOptions::default()).await?;
        let deliveries = consume
            .basic_consume(
                self.names.commands.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((conn, consume, publish, deliveries))
    }

    async fn work(
        &self,
        conn: &Connection,
        publish: &lapin::Channel,
        deliveries: &mut lapin::Consumer,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), QueueError> {
        let mut publisher_stop = stop.clone();
        let consume = self.consume(conn, publish, deliveries, stop);
        let publisher = self.publish_loop(publish, &mut publisher_stop);
        tokio::pin!(consume, publisher);
        tokio::select! {
            // Stopped (or failed): a stopping publisher finishes the batch it is in, so a clean stop publishes
            // no event twice; a failed session drops it (its connection is gone).
            r = &mut consume => {
                r?;
                publisher.await
            }
            r = &mut publisher => r,
        }
    }

    /// Take deliveries while fewer than the prefetch are in flight: each is queued to the writer when it
    /// arrives (so one account's commands apply in queue order) and settled by its own task once decided.
    async fn consume(
        &self,
        conn: &Connection,
        publish: &lapin::Channel,
        deliveries: &mut lapin::Consumer,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), QueueError> {
        let mut inflight: tokio::task::JoinSet<Result<(), QueueError>> = tokio::task::JoinSet::new();
        let cap = self.prefetch.max(1) as usize;
        let mut check = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = async { drop(stop.wait_for(|s| *s).await) } => {
                    // Settle what is in flight (each is acked after its commit), every one of them even when one
                    // fails; the deliveries not started stay with the broker and come back unacked.
                    let mut first = Ok(());
                    while let Some(r) = inflight.join_next().await {
                        if let Err(e) = settled(r) {
                            first = first.and(Err(e));
                        }
                    }
                    return first;
                }
                d = deliveries.next(), if inflight.len() < cap => match d {
                    Some(Ok(delivery)) => {
                        inflight.spawn(self.handle(publish.clone(), delivery));
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(QueueError::Closed),
                },
                Some(r) = inflight.join_next(), if !inflight.is_empty() => settled(r)?,
                _ = check.tick() => {
                    if !conn.status().connected() {
                        return Err(QueueError::Closed);
                    }
                }
            }
        }
    }

    /// Publish the outbox whenever there is something to publish (under the lease).
    async fn publish_loop(&self, publish: &lapin::Channel, stop: &mut watch::Receiver<bool>) -> Result<(), QueueError> {
        let mut lease: Option<Lease> = None;
        loop {
            let stopping = *stop.borrow();
            if stopping {
                return Ok(());
            }
            match self.publish_outbox(publish, &mut lease).await {
                Ok(n) if n >= publisher::BATCH as usize => continue,
                Ok(_) => {}
                Err(QueueError::Store(e)) => tracing::warn!(error = %e, "outbox read failed; retrying"),
                Err(other) => return Err(other),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    }
}

/// The end of a delivery's task: its error ends the session; a panic too (the broker delivers again).
fn settled(r: Result<Result<(), QueueError>, tokio::task::JoinError>) -> Result<(), QueueError> {
    match r {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "a delivery's task panicked");
            Err(QueueError::Closed)
        }
    }
}

/// Resolves once the connection is no longer up.
async fn lost(conn: &Connection) -> QueueError {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !conn.status().connected() {
            return QueueError::Closed;
        }
    }
}
