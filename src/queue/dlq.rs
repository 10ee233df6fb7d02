//! `billing-worker dlq requeue`: move parked messages back to the command queue, each confirmed before it is
//! taken off the parking queue.

use super::consumer::fresh_headers;
use super::{Names, QueueError, connect, topology};
use lapin::Confirmation;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;

/// How many messages are parked (the operator console's count).
pub async fn parked(url: &str, names: &Names) -> Result<u64, QueueError> {
    match tokio::time::timeout(std::time::Duration::from_secs(5), count(url, names)).await {
        Ok(r) => r,
        Err(_) => Err(QueueError::Timeout),
    }
}

async fn count(url: &str, names: &Names) -> Result<u64, QueueError> {
    let conn = connect(url).await?;
    let ch = conn.create_channel().await?;
    topology::declare(&ch, names).await?;
    let q = ch
        .queue_declare(names.dead.as_str().into(), QueueDeclareOptions::default().passive(), FieldTable::default())
        .await?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.close(200, "bye".into())).await;
    Ok(q.message_count() as u64)
}

/// Requeue up to `limit` parked messages (all when `None`); calls `progress(done, total)` after each.
pub async fn requeue(
    url: &str,
    names: &Names,
    limit: Option<u64>,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, QueueError> {
    let conn = connect(url).await?;
    let ch = conn.create_channel().await?;
    topology::declare(&ch, names).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let q = ch
        .queue_declare(names.dead.as_str().into(), QueueDeclareOptions::default().passive(), FieldTable::default())
        .await?;
    let total = limit.map_or(q.message_count() as u64, |l| l.min(q.message_count() as u64));
    let mut done = 0;
    while done < total {
        let Some(m) = ch.basic_get(names.dead.as_str().into(), BasicGetOptions { no_ack: false }).await? else { break };
        let props = m.delivery.properties.clone().with_headers(fresh_headers(m.delivery.properties.headers().as_ref()));
        let pending = super::timely(ch.basic_publish(
            "".into(),
            names.commands.as_str().into(),
            BasicPublishOptions::default(),
            &m.delivery.data,
            props,
        ))
        .await?;
        let c = super::confirmed(pending).await?;
        if matches!(c, Confirmation::Ack(_)) {
            super::ack(&m.delivery).await?;
        } else {
            m.nack(BasicNackOptions { multiple: false, requeue: true }).await?;
            return Err(QueueError::Nacked);
        }
        done += 1;
        progress(done, total);
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(done)
}
