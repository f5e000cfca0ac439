//! What the collector declares on the broker: the fanout exchange, its own durable queue bound
//! to it, and the dead-letter exchange and queue for rejected messages; or, as a member of a
//! partitioned group (`broker.partitions` > 1), the group's consistent-hash exchange `<queue>.hash`
//! bound to the fanout exchange and every partition's queue `<queue>.<i>` bound to it with
//! weight `"1"`, each with its own dead-letter queue `<queue>.<i>.dead-letter`.
//!
//! Invariants:
//! - Declarations are idempotent and the same on every (re)connect; a queue or exchange that
//!   exists with other arguments makes the broker refuse them (PRECONDITION_FAILED), which the
//!   consumer treats as fatal rather than reconnecting forever.
//! - A declaration or binding the user has no permission for (ACCESS_REFUSED) is reported as
//!   [`TopologyError::Refused`], naming the permission and the object; the consumer says it
//!   once and retries (granting the permission heals the collector without a restart).
//! - Every member of a group declares all N partition queues, so the hash ring (and hence a
//!   host's partition) depends only on N, not on which members are running.
//! - The hash exchange is declared first and carries N in its arguments, as `x-logship-partitions`
//!   (for operators) and in its `alternate-exchange` name (the one exchange argument the broker
//!   compares on redeclaration): a member with another N is refused before it binds anything,
//!   so it can never add queues to, or take them from, a running group's ring.

use lapin::options::{ExchangeBindOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use logship_config::CollectorConfig;
use logship_config::collector::QueueType;
use logship_config::partition::{self, Partition};
use logship_runtime::access::{Op, Refused};
use logship_runtime::amqp;

/// The plugin providing the `x-consistent-hash` exchange type, bundled with RabbitMQ.
pub const HASH_PLUGIN: &str = "rabbitmq_consistent_hash_exchange";

/// The exchange type of a partitioned group's exchange.
const HASH_EXCHANGE_TYPE: &str = "x-consistent-hash";

/// Binding key of a partition queue on the hash exchange: its weight on the ring. Equal weights
/// spread hosts evenly over the partitions.
const PARTITION_WEIGHT: &str = "1";

/// AMQP reply code for a declaration that conflicts with an existing one.
const PRECONDITION_FAILED: u16 = 406;

/// AMQP reply code for an invalid command, e.g. an exchange type the broker does not know.
const COMMAND_INVALID: u16 = 503;

/// Why the declarations failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A queue or exchange exists with other arguments; reconnecting cannot help.
    #[error("the broker refused our declarations (queue or exchange exists with other arguments)")]
    Conflict(#[source] lapin::Error),
    /// The group's hash exchange exists with another number of partitions. `reply` is the
    /// broker's text, which names the running group's N.
    #[error(
        "broker.partitions: the partitioned group \"{queue}\" exists on the broker with another number of partitions than {partitions}; every member needs the same broker.partitions (broker: {reply})"
    )]
    Partitions {
        queue: String,
        partitions: u32,
        reply: String,
    },
    /// The broker does not know the `x-consistent-hash` exchange type.
    #[error(
        "broker.partitions: the broker has no x-consistent-hash exchange type; enable it with `rabbitmq-plugins enable {HASH_PLUGIN}` (broker: {reply})"
    )]
    NoHashPlugin { reply: String },
    /// The broker refused an operation for lack of permission.
    #[error("{0}")]
    Refused(Refused),
    /// The connection or channel failed: reconnect.
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// Declares the exchange, and this collector's queue or its whole partitioned group, with the
/// dead-letter routes.
pub async fn declare(channel: &Channel, config: &CollectorConfig) -> Result<(), TopologyError> {
    amqp::declare_exchange(channel, &config.broker)
        .await
        .map_err(failed(Op::Declare))?;
    let queue = config.queue.name.as_str();
    let Some(group) = config.queue.partition else {
        let fanout = config.broker.exchange.as_str();
        return declare_queue(channel, config, queue, fanout, "").await;
    };
    let hash = declare_hash_exchange(channel, config, group).await?;
    for index in 0..group.count {
        let name = partition::queue_name(queue, index);
        declare_queue(channel, config, &name, &hash, PARTITION_WEIGHT).await?;
    }
    Ok(())
}

/// Declares the group's hash exchange, with N in its arguments, and binds it to the fanout
/// exchange; returns its name.
async fn declare_hash_exchange(
    channel: &Channel,
    config: &CollectorConfig,
    group: Partition,
) -> Result<String, TopologyError> {
    let queue = config.queue.name.as_str();
    let hash = partition::hash_exchange(queue);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-logship-partitions".into(),
        AMQPValue::LongLongInt(i64::from(group.count)),
    );
    // Never declared: a message the ring cannot route (it has no queue yet) is unroutable
    // either way. Its name only makes a redeclaration with another N conflict.
    arguments.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(format!("{hash}.partitions-{}", group.count).into()),
    );
    let declared = channel
        .exchange_declare(
            hash.as_str().into(),
            ExchangeKind::Custom(HASH_EXCHANGE_TYPE.into()),
            amqp::durable_exchange(),
            arguments,
        )
        .await;
    match declared {
        Ok(()) => {}
        Err(err) if reply_code(&err) == Some(PRECONDITION_FAILED) => {
            return Err(TopologyError::Partitions {
                queue: queue.to_string(),
                partitions: group.count,
                reply: reply_text(&err),
            });
        }
        Err(err) if reply_code(&err) == Some(COMMAND_INVALID) => {
            return Err(TopologyError::NoHashPlugin {
                reply: reply_text(&err),
            });
        }
        Err(err) => return Err(failed(Op::Declare)(err)),
    }
    let source = config.broker.exchange.as_str();
    channel
        .exchange_bind(
            hash.as_str().into(),
            source.into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed(Op::Bind { source }))?;
    Ok(hash)
}

/// Declares the durable queue `queue` with its dead-letter route, bound to `source` with
/// `routing_key`.
async fn declare_queue(
    channel: &Channel,
    config: &CollectorConfig,
    queue: &str,
    source: &str,
    routing_key: &str,
) -> Result<(), TopologyError> {
    let mut arguments = FieldTable::default();
    if let Some(dlx) = &config.queue.dead_letter_exchange {
        declare_dead_letter(channel, dlx, queue, config.queue.dead_letter_max_bytes).await?;
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
        .await
        .map_err(failed(Op::DeclareQueue {
            dead_letter: config.queue.dead_letter_exchange.as_deref(),
        }))?;
    channel
        .queue_bind(
            queue.into(),
            source.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed(Op::Bind { source }))
}

/// Declares the dead-letter exchange `dlx` and `<queue>.dead-letter`, bound to it by `queue`'s
/// name (the routing key its rejected messages carry). The dead-letter queue holds at most
/// `max_bytes` (`broker.dead_letter_max_bytes`), dropping its oldest messages past it: a flood
/// of rejected messages must not fill the broker's disk and raise its alarm, which would block
/// every agent.
async fn declare_dead_letter(
    channel: &Channel,
    dlx: &str,
    queue: &str,
    max_bytes: u64,
) -> Result<(), TopologyError> {
    channel
        .exchange_declare(
            dlx.into(),
            ExchangeKind::Direct,
            amqp::durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(failed(Op::Declare))?;
    let dead_queue = format!("{queue}.dead-letter");
    let mut bounded = FieldTable::default();
    bounded.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(i64::try_from(max_bytes).unwrap_or(i64::MAX)),
    );
    bounded.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    channel
        .queue_declare(
            dead_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            bounded,
        )
        .await
        .map_err(failed(Op::Declare))?;
    channel
        .queue_bind(
            dead_queue.as_str().into(),
            dlx.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed(Op::Bind { source: dlx }))
}

/// How a failed `op` is reported: a conflict if the broker says so, a refusal if it lacks a
/// permission, else a broker failure.
fn failed(op: Op<'_>) -> impl FnOnce(lapin::Error) -> TopologyError + '_ {
    move |err| {
        if let Some(refused) = Refused::during(&err, op) {
            TopologyError::Refused(refused)
        } else if reply_code(&err) == Some(PRECONDITION_FAILED) {
            TopologyError::Conflict(err)
        } else {
            TopologyError::Broker(err)
        }
    }
}

/// The AMQP reply code of a protocol error (a channel or connection closed by the broker).
fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// The broker's reply text of a protocol error (e.g. `PRECONDITION_FAILED - inequivalent arg
/// ...`), else the error's own text.
fn reply_text(err: &lapin::Error) -> String {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => amqp.get_message().to_string(),
        _ => err.to_string(),
    }
}
