//! What the collector declares on the broker: the fanout exchange, its own durable queue bound
//! to it, and the dead-letter exchange and queue for rejected messages.
//!
//! Invariant: declarations are idempotent and the same on every (re)connect; a queue that exists
//! with other arguments makes the broker refuse them (PRECONDITION_FAILED), which the consumer
//! treats as fatal rather than reconnecting forever.

use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use logship_config::CollectorConfig;
use logship_config::amqp;
use logship_config::collector::QueueType;

/// Declares the exchange, this collector's queue and its dead-letter route.
pub async fn declare(channel: &Channel, config: &CollectorConfig) -> Result<(), lapin::Error> {
    let queue = config.queue.name.as_str();
    amqp::declare_exchange(channel, &config.broker).await?;
    let mut arguments = FieldTable::default();
    if let Some(dlx) = &config.queue.dead_letter_exchange {
        channel
            .exchange_declare(
                dlx.as_str().into(),
                ExchangeKind::Direct,
                amqp::durable_exchange(),
                FieldTable::default(),
            )
            .await?;
        let dead_queue = format!("{queue}.dead-letter");
        channel
            .queue_declare(
                dead_queue.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                dead_queue.as_str().into(),
                dlx.as_str().into(),
                queue.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.as_str().into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(queue.into()),
        );
    }
    if config.queue.queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
        .await?;
    channel
        .queue_bind(
            queue.into(),
            config.broker.exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
