//! Consuming one command: decide its verdict from the outcome, then settle it, in one place. Ack only after
//! the effect (or the record of its failure) is committed; a retry or a parking is published with a confirm
//! before the original is acked, so nothing is dropped.

use super::{Broker, QueueError};
use crate::commands::{self, Outcome};
use crate::store::StoreError;
use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation};
use sha2::{Digest, Sha256};
use std::sync::atomic::Ordering;

/// The start of the failed record's detail of a command that was parked.
pub const PARKED: &str = "parked: ";

/// What happens to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Applied, a duplicate, or refused for good and kept as a failed event.
    Ack,
    /// A transient failure: back through retry queue `n` (0-based), with the count in `x-retry-count`.
    Retry(usize),
    /// Cannot apply: to the parking queue with the reason in `x-park-reason`.
    Park(String),
}

/// The verdict for an outcome, given how often the message was retried already and how many retry queues
/// there are.
pub fn verdict(outcome: &Result<Outcome, Failure>, retried: usize, retry_queues: usize) -> Verdict {
    match outcome {
        Ok(_) => Verdict::Ack,
        Err(Failure::Malformed(reason)) => Verdict::Park(reason.clone()),
        Err(Failure::Transient(e)) if retried < retry_queues => {
            tracing::warn!(error = %e, retried, "transient failure; retrying later");
            Verdict::Retry(retried)
        }
        Err(Failure::Transient(e)) => Verdict::Park(format!("gave up after {retried} retries: {e}")),
    }
}

#[derive(Debug)]
pub enum Failure {
    Malformed(String),
    Transient(StoreError),
}

fn retried(props: &BasicProperties) -> usize {
    let v = props.headers().as_ref().and_then(|h| h.inner().get("x-retry-count").cloned());
    match v {
        Some(AMQPValue::LongLongInt(n)) => n.max(0) as usize,
        Some(AMQPValue::LongInt(n)) => n.max(0) as usize,
        Some(AMQPValue::ShortShortUInt(n)) => n as usize,
        _ => 0,
    }
}

fn hash_key(data: &[u8]) -> String {
    format!("msg_{}", &hex::encode(Sha256::digest(data))[..24])
}

/// The id a message is known by when it cannot be parsed: its `id` field, its message id, or a hash of it.
fn message_key(d: &Delivery) -> String {
    if let Some(id) =
        serde_json::from_slice::<serde_json::Value>(&d.data).ok().and_then(|v| v.get("id")?.as_str().map(str::to_owned))
    {
        return id;
    }
    if let Some(id) = d.properties.message_id().as_ref() {
        return id.as_str().to_owned();
    }
    hash_key(&d.data)
}

impl Broker {
    /// Start handling a delivery: its command is queued to the writer now; the returned task settles it.
    pub(super) fn handle(
        &self,
        publish: Channel,
        d: Delivery,
    ) -> impl std::future::Future<Output = Result<(), QueueError>> + Send + 'static {
        let me = self.clone();
        let now = self.clock.now();
        let retried = retried(&d.properties);
        // Stored as text: a NUL (which PostgreSQL refuses in text) is replaced, so even such a message is kept.
        let raw = String::from_utf8_lossy(&d.data).replace('\0', "\u{FFFD}");
        let decided = match commands::parse(&d.data) {
            Err(e) => Err(Failure::Malformed(e.to_string())),
            Ok(cmd) => Ok(self.commander.apply(&cmd, &raw, now)),
        };
        async move {
            let outcome = match decided {
                Err(f) => Err(f),
                Ok(pending) => pending.await.map_err(Failure::Transient),
            };
            if let Ok(o) = &outcome {
                me.commander.store_metrics(o);
            }
            let v = verdict(&outcome, retried, me.names.retry.len());
            if let Verdict::Park(reason) = &v {
                // Kept as a failed event too, so `failed list` and replay see it. A message that did not parse is
                // known by its hash: a corrected message with the same id is a new command, not a repeat of it.
                let kind = serde_json::from_slice::<serde_json::Value>(&d.data)
                    .ok()
                    .and_then(|v| v.get("type")?.as_str().map(str::to_owned));
                let key = match &outcome {
                    Err(Failure::Malformed(_)) => hash_key(&d.data),
                    _ => message_key(&d),
                };
                // "parked: " marks it as in the parking queue (the console lists those).
                let detail = format!("{PARKED}{reason}");
                me.commander.keep_failed(&key, kind.as_deref().unwrap_or("unknown"), &raw, &detail, now).await?;
            }
            if v == Verdict::Ack && me.crash_before_ack.swap(false, Ordering::SeqCst) {
                return Err(QueueError::SimulatedCrash);
            }
            me.settle(&publish, d, v).await
        }
    }

    /// The one place a delivery is acked, retried or parked.
    async fn settle(&self, publish: &Channel, d: Delivery, v: Verdict) -> Result<(), QueueError> {
        let (queue, header, value) = match &v {
            Verdict::Ack => {
                return super::ack(&d).await;
            }
            Verdict::Retry(n) => (&self.names.retry[*n].0, "x-retry-count", AMQPValue::LongLongInt(*n as i64 + 1)),
            Verdict::Park(reason) => {
                (&self.names.dead, "x-park-reason", AMQPValue::LongString(LongString::from(reason.as_str())))
            }
        };
        let mut headers = d.properties.headers().clone().unwrap_or_default();
        headers.insert(header.into(), value);
        let props = d.properties.clone().with_headers(headers).with_delivery_mode(2);
        let pending = super::timely(publish.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &d.data,
            props,
        ))
        .await?;
        let confirm = super::confirmed(pending).await?;
        if !matches!(confirm, Confirmation::Ack(_)) {
            return Err(QueueError::Nacked);
        }
        super::ack(&d).await
    }
}

/// Headers without the retry count and park reason, for a message sent back to the command queue.
pub fn fresh_headers(h: Option<&FieldTable>) -> FieldTable {
    let mut out = FieldTable::default();
    if let Some(h) = h {
        for (k, v) in h.inner() {
            if k.as_str() != "x-retry-count" && k.as_str() != "x-park-reason" && k.as_str() != "x-death" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InboxStatus;

    fn applied() -> Result<Outcome, Failure> {
        Ok(Outcome {
            id: "c".into(),
            status: InboxStatus::Applied,
            duplicate: false,
            detail: None,
            credits: None,
            balance: None,
        })
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(&applied(), 0, 4), Verdict::Ack);
        assert_eq!(verdict(&Err(Failure::Malformed("bad".into())), 0, 4), Verdict::Park("bad".into()));
        let transient = || Err(Failure::Transient(StoreError::Corrupt("db down".into())));
        assert_eq!(verdict(&transient(), 0, 4), Verdict::Retry(0));
        assert_eq!(verdict(&transient(), 3, 4), Verdict::Retry(3));
        assert!(matches!(verdict(&transient(), 4, 4), Verdict::Park(r) if r.starts_with("gave up after 4 retries")));
    }
}
