//! What the collector declares on the broker: the fanout exchange, its own durable queue bound
//! to it, and the dead-letter exchange and queue for rejected messages; or, as a member of a
//! partitioned group (`broker.partitions` > 1), the group's consistent-hash exchange `<queue>.hash`
//! bound to the fanout exchange and every partition's queue `<queue>.<i>` bound to it with
//! weight `"1"`, each with its own dead-letter queue `<queue>.<i>.dead-letter`.
//!
//! Invariants:
//! - Declarations are idempotent and the same on every (re)connect; a queue or exchange that
//!   exists with other arguments makes the broker refuse them (PRECONDITION_FAILED), which the
//!   consumer treats as fatal rather than reconnecting forever. Two exceptions, both for queues
//!   an earlier release declared: a consumed queue without `x-single-active-consumer` is used
//!   as it is (see [`Declared::single_active`]), and a dead-letter queue of another type (see
//!   below).
//! - Every queue the collector consumes is declared with `x-single-active-consumer`: while the
//!   broker still holds a consumer whose connection went silent, a new consumer gets nothing;
//!   it takes over once the old one's unacked deliveries are back in the queue, ahead of newer
//!   messages, so a source's lines are never written out of order (README: Order across a
//!   silent network).
//! - A dead-letter queue has the type of the queue it serves (quorum with
//!   `queue_type = "quorum"`), so nothing the collector declares lives on one node only. It is
//!   never needed to start a session: if it cannot be declared (a classic one from an earlier
//!   release, its node down), the collector says so once and consumes anyway.
//! - Each declaration runs under `broker.connect_timeout`.
//! - A declaration or binding the user has no permission for (ACCESS_REFUSED) is reported as
//!   [`TopologyError::Refused`], naming the permission and the object; the consumer says it
//!   once and retries (granting the permission heals the collector without a restart).
//! - Every member of a group declares all N partition queues, so the hash ring (and hence a
//!   host's partition) depends only on N, not on which members are running.
//! - The hash exchange is declared first and carries N in its arguments, as `x-logship-partitions`
//!   (for operators) and in its `alternate-exchange` name (the one exchange argument the broker
//!   compares on redeclaration): a member with another N is refused before it binds anything,
//!   so it can never add queues to, or take them from, a running group's ring.

use std::time::Duration;

use lapin::options::{ExchangeBindOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};
use logship_config::CollectorConfig;
use logship_config::collector::QueueType;
use logship_config::partition::{self, Partition};
use logship_runtime::access::{Op, Refused};
use logship_runtime::amqp::{self, within};
use logship_runtime::silence::Silence;

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

/// AMQP reply code for a queue that does not exist or whose node is down.
const NOT_FOUND: u16 = 404;

/// The queue argument that makes the broker deliver to one consumer at a time.
pub const SINGLE_ACTIVE_CONSUMER: &str = "x-single-active-consumer";

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

/// What the declarations found, for the consumer.
#[derive(Debug, Default)]
pub struct Declared {
    /// The consumed queue has `x-single-active-consumer`. `false`: an earlier release declared
    /// it without (the argument cannot be added to an existing queue); the consumer then
    /// consumes exclusively, which keeps order the same way on a classic queue.
    pub single_active: bool,
    /// Why a queue could not be declared as this release would (said once by the consumer).
    pub warnings: Vec<String>,
}

/// Declarations on one connection: a channel, reopened after a refusal that is not fatal (a
/// refused declaration closes its channel).
struct Declarer<'a> {
    connection: &'a Connection,
    channel: Channel,
    /// Every declaration is waited for while the broker is heard from.
    silence: &'a Silence,
    /// A declaration unanswered for this long is said to be slow.
    slow: Duration,
    declared: Declared,
}

impl Declarer<'_> {
    async fn reopen(&mut self) -> Result<(), TopologyError> {
        let opening = self.connection.create_channel();
        self.channel = self
            .silence
            .wait("channel open", self.slow, opening)
            .await?;
        Ok(())
    }
}

/// Declares the exchange, and this collector's queue or its whole partitioned group, with the
/// dead-letter routes, on a channel of its own (closed afterwards).
pub async fn declare(
    connection: &Connection,
    silence: &Silence,
    config: &CollectorConfig,
) -> Result<Declared, TopologyError> {
    let slow = config.broker.connect_timeout;
    let opening = connection.create_channel();
    let channel = silence.wait("channel open", slow, opening).await?;
    let mut declarer = Declarer {
        connection,
        channel,
        silence,
        slow,
        declared: Declared::default(),
    };
    declare_all(&mut declarer, config).await?;
    let _ = within(
        "channel close",
        slow,
        declarer.channel.close(200, "declared".into()),
    )
    .await;
    Ok(declarer.declared)
}

async fn declare_all(d: &mut Declarer<'_>, config: &CollectorConfig) -> Result<(), TopologyError> {
    d.silence
        .wait(
            "exchange declare",
            d.slow,
            amqp::declare_exchange(&d.channel, &config.broker),
        )
        .await
        .map_err(failed(Op::Declare))?;
    let queue = config.queue.name.as_str();
    let consumed = config.queue.consumed();
    let Some(group) = config.queue.partition else {
        let fanout = config.broker.exchange.as_str();
        d.declared.single_active = declare_queue(d, config, queue, fanout, "").await?;
        return Ok(());
    };
    let hash = declare_hash_exchange(d, config, group).await?;
    for index in 0..group.count {
        let name = partition::queue_name(queue, index);
        let single_active = declare_queue(d, config, &name, &hash, PARTITION_WEIGHT).await?;
        if name == consumed {
            d.declared.single_active = single_active;
        }
    }
    Ok(())
}

/// Declares the group's hash exchange, with N in its arguments, and binds it to the fanout
/// exchange; returns its name.
async fn declare_hash_exchange(
    d: &mut Declarer<'_>,
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
    let declaring = d.channel.exchange_declare(
        hash.as_str().into(),
        ExchangeKind::Custom(HASH_EXCHANGE_TYPE.into()),
        amqp::durable_exchange(),
        arguments,
    );
    let declared = d.silence.wait("exchange declare", d.slow, declaring).await;
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
    let binding = d.channel.exchange_bind(
        hash.as_str().into(),
        source.into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    );
    d.silence
        .wait("exchange bind", d.slow, binding)
        .await
        .map_err(failed(Op::Bind { source }))?;
    Ok(hash)
}

/// Declares the durable queue `queue` with its dead-letter route and a single active consumer,
/// bound to `source` with `routing_key`. Returns whether it has the single active consumer: an
/// existing queue declared without it by an earlier release is taken as it is.
async fn declare_queue(
    d: &mut Declarer<'_>,
    config: &CollectorConfig,
    queue: &str,
    source: &str,
    routing_key: &str,
) -> Result<bool, TopologyError> {
    let mut arguments = FieldTable::default();
    if let Some(dlx) = &config.queue.dead_letter_exchange {
        declare_dead_letter(
            d,
            dlx,
            queue,
            config.queue.queue_type,
            config.queue.dead_letter_max_bytes,
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
    insert_queue_type(&mut arguments, config.queue.queue_type);
    let op = Op::DeclareQueue {
        dead_letter: config.queue.dead_letter_exchange.as_deref(),
    };
    let mut single = arguments.clone();
    single.insert(SINGLE_ACTIVE_CONSUMER.into(), AMQPValue::Boolean(true));
    let declaring = d
        .channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), single);
    let single_active = match d.silence.wait("queue declare", d.slow, declaring).await {
        Ok(_) => true,
        Err(err)
            if reply_code(&err) == Some(PRECONDITION_FAILED)
                && reply_text(&err).contains(SINGLE_ACTIVE_CONSUMER) =>
        {
            // Declared by an earlier release: the same arguments without it must match.
            d.reopen().await?;
            let declaring =
                d.channel
                    .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments);
            d.silence
                .wait("queue declare", d.slow, declaring)
                .await
                .map_err(failed(op))?;
            false
        }
        Err(err) => return Err(failed(op)(err)),
    };
    let binding = d.channel.queue_bind(
        queue.into(),
        source.into(),
        routing_key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    d.silence
        .wait("queue bind", d.slow, binding)
        .await
        .map_err(failed(Op::Bind { source }))?;
    Ok(single_active)
}

/// Adds `x-queue-type` for a quorum queue (a classic queue is declared without it, as always).
fn insert_queue_type(arguments: &mut FieldTable, queue_type: QueueType) {
    if queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
}

/// The arguments of `<queue>.dead-letter`: the type of the queue it serves.
fn dead_letter_arguments(queue_type: QueueType, max_bytes: u64) -> FieldTable {
    let mut arguments = FieldTable::default();
    insert_queue_type(&mut arguments, queue_type);
    arguments.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(i64::try_from(max_bytes).unwrap_or(i64::MAX)),
    );
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    arguments
}

/// Declares the dead-letter exchange `dlx` and `<queue>.dead-letter`, bound to it by `queue`'s
/// name (the routing key its rejected messages carry). The dead-letter queue holds at most
/// `max_bytes` (`broker.dead_letter_max_bytes`), dropping its oldest messages past it: a flood
/// of rejected messages must not fill the broker's disk and raise its alarm, which would block
/// every agent. A dead-letter queue that exists with other arguments, or whose node is down, is
/// reported in the warnings and skipped: it is not needed to consume.
async fn declare_dead_letter(
    d: &mut Declarer<'_>,
    dlx: &str,
    queue: &str,
    queue_type: QueueType,
    max_bytes: u64,
) -> Result<(), TopologyError> {
    let declaring = d.channel.exchange_declare(
        dlx.into(),
        ExchangeKind::Direct,
        amqp::durable_exchange(),
        FieldTable::default(),
    );
    d.silence
        .wait("exchange declare", d.slow, declaring)
        .await
        .map_err(failed(Op::Declare))?;
    let dead_queue = format!("{queue}.dead-letter");
    let declaring = d.channel.queue_declare(
        dead_queue.as_str().into(),
        QueueDeclareOptions::durable(),
        dead_letter_arguments(queue_type, max_bytes),
    );
    match d.silence.wait("queue declare", d.slow, declaring).await {
        Ok(_) => {}
        Err(err) if Refused::of(&err).is_none() && skippable(&err) => {
            d.declared
                .warnings
                .push(dead_letter_warning(&dead_queue, queue_type, &err));
            return d.reopen().await;
        }
        Err(err) => return Err(failed(Op::Declare)(err)),
    }
    let binding = d.channel.queue_bind(
        dead_queue.as_str().into(),
        dlx.into(),
        queue.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    d.silence
        .wait("queue bind", d.slow, binding)
        .await
        .map_err(failed(Op::Bind { source: dlx }))
}

/// Whether a failed dead-letter queue declaration may be skipped: it exists with other
/// arguments, its node is down, or its node did not answer in time.
fn skippable(err: &lapin::Error) -> bool {
    let timed_out = matches!(err.kind(), lapin::ErrorKind::IOError(io)
        if io.kind() == std::io::ErrorKind::TimedOut);
    timed_out || matches!(reply_code(err), Some(PRECONDITION_FAILED | NOT_FOUND))
}

/// What an operator is told about a dead-letter queue that could not be declared.
fn dead_letter_warning(dead_queue: &str, queue_type: QueueType, err: &lapin::Error) -> String {
    let reply = reply_text(err);
    if reply_code(err) == Some(PRECONDITION_FAILED) && queue_type == QueueType::Quorum {
        format!(
            "dead-letter queue \"{dead_queue}\" exists with other arguments (a classic queue declared by an earlier release?); rejected messages still go to it, but it lives on one node and may have no length cap: delete it once empty and it is declared as a capped quorum queue (README: Upgrade) (broker: {reply})"
        )
    } else if reply_code(err) == Some(PRECONDITION_FAILED) {
        format!(
            "dead-letter queue \"{dead_queue}\" exists with other arguments (declared by an earlier release without broker.dead_letter_max_bytes, or with another cap?); rejected messages still go to it: delete it once empty and it is declared with the cap (README: Upgrade) (broker: {reply})"
        )
    } else {
        format!(
            "cannot declare dead-letter queue \"{dead_queue}\"; consuming anyway, rejected messages may be dropped until it is available (broker: {reply})"
        )
    }
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
