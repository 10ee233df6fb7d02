//! Publishing the outbox: in id order (so in order for each account), with publisher confirms, marked sent only
//! after the broker confirmed. One instance publishes at a time (a lease), so several instances on PostgreSQL
//! neither publish twice nor out of order.

use super::{Broker, QueueError};
use crate::store::Lease;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};

/// Events read and published at a time.
pub const BATCH: i64 = 1000;

impl Broker {
    pub(super) async fn publish_outbox(&self, ch: &Channel, lease: &mut Option<Lease>) -> Result<usize, QueueError> {
        let store = &self.commander.store;
        if let Some(l) = lease.as_mut()
            && !l.alive().await
        {
            tracing::warn!("publisher lease lost; taking it again before publishing");
            *lease = None;
        }
        if lease.is_none() {
            *lease = store.publisher_lease().await?;
            if lease.is_none() {
                return Ok(0); // another instance publishes
            }
        }
        let rows = store.outbox_unpublished(BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut confirms = Vec::with_capacity(rows.len());
        for r in &rows {
            let props = BasicProperties::default()
                .with_message_id(r.event_id.as_str().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_type(r.kind.as_str().into());
            let c = super::timely(ch.basic_publish(
                self.names.events.as_str().into(),
                r.kind.as_str().into(),
                BasicPublishOptions::default(),
                r.payload.as_bytes(),
                props,
            ))
            .await?;
            confirms.push((r.id, c));
        }
        let mut sent = Vec::with_capacity(confirms.len());
        for (id, c) in confirms {
            match super::confirmed(c).await? {
                Confirmation::Ack(_) => sent.push(id),
                // Stop at the first refusal: what follows is sent again later, after it, in order.
                _ => break,
            }
        }
        store.outbox_mark_published(&sent, self.clock.now()).await?;
        let n = sent.len();
        if n < rows.len() {
            return Err(QueueError::Nacked);
        }
        Ok(n)
    }
}
