//! The RabbitMQ topology, declared by the worker at start (idempotent): the quorum command queue that
//! dead-letters at-least-once to its parking queue, retry queues whose TTL sends messages back, and the topic
//! exchange of outgoing events. Names carry a prefix so several deployments (and tests) run side by side.

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub commands: String,
    pub dead: String,
    /// Retry queues with their delay in milliseconds, shortest first.
    pub retry: Vec<(String, u64)>,
    pub events: String,
}

impl Names {
    pub fn new(prefix: &str, retry_delays_ms: &[u64]) -> Self {
        Names {
            commands: format!("{prefix}.commands"),
            dead: format!("{prefix}.commands.dead"),
            retry: retry_delays_ms.iter().map(|d| (format!("{prefix}.commands.retry.{d}ms"), *d)).collect(),
            events: format!("{prefix}.events"),
        }
    }
}

fn text(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

pub async fn declare(ch: &Channel, n: &Names) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(n.events.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;

    let mut dead = FieldTable::default();
    dead.insert("x-queue-type".into(), text("quorum"));
    ch.queue_declare(n.dead.as_str().into(), QueueDeclareOptions::durable(), dead).await?;

    let mut commands = FieldTable::default();
    commands.insert("x-queue-type".into(), text("quorum"));
    commands.insert("x-dead-letter-exchange".into(), text(""));
    commands.insert("x-dead-letter-routing-key".into(), text(&n.dead));
    commands.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    commands.insert("x-overflow".into(), text("reject-publish"));
    ch.queue_declare(n.commands.as_str().into(), QueueDeclareOptions::durable(), commands).await?;

    for (name, delay) in &n.retry {
        let mut retry = FieldTable::default();
        retry.insert("x-message-ttl".into(), AMQPValue::LongLongInt(*delay as i64));
        retry.insert("x-dead-letter-exchange".into(), text(""));
        retry.insert("x-dead-letter-routing-key".into(), text(&n.commands));
        ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), retry).await?;
    }
    Ok(())
}
