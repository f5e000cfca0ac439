//! How a session with the broker starts and how it ends.
//!
//! Starting one on a fresh connection: the declarations ([`super::topology`]), then a channel,
//! its prefetch and the consume. Every step is waited for while the broker is heard from
//! ([`Silence`]): a broker slow to answer (a `basic.consume` on a queue millions deep, a node
//! under flow control) is given the time it needs, said once past `broker.connect_timeout`,
//! while a node that went silent (hanging, a half-open network) fails the step within the
//! heartbeat timeout and is reconnected to. A deadline here would turn an overloaded broker
//! into an endless loop of reconnects that each ask it again.
//!
//! Invariant: the collector consumes its queue as its only active consumer. A queue declared by
//! this release has `x-single-active-consumer`; one declared by an earlier release without it
//! is consumed with `exclusive`, which the broker refuses while an older consumer of ours (on a
//! connection that went silent) still holds deliveries; the consume is then retried until the
//! broker has dropped that consumer and requeued its deliveries. Either way no newer line is
//! delivered before the older ones come back.

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use logship_config::CollectorConfig;
use logship_runtime::access::{ACCESS_REFUSED, Op, Refused};
use logship_runtime::silence::Silence;
use tokio_util::sync::CancellationToken;

use crate::consumer::topology::{self, TopologyError};

/// How often an exclusive consume refused because an older consumer holds the queue is tried
/// again.
const EXCLUSIVE_RETRY: Duration = Duration::from_secs(1);

/// Why a session with the broker ended.
pub enum SessionEnd {
    /// The broker or the network failed; reconnect.
    Lost(lapin::Error),
    /// The broker refused an operation for lack of permission: said once, retried.
    Denied(Refused),
    /// The broker refused our declarations (a queue or exchange exists with other arguments,
    /// another number of partitions, no hash exchange plugin): reconnecting cannot help.
    Refused(TopologyError),
    /// The state database failed, or the writer was lost to a panic: the collector stops.
    Fatal(FatalError),
}

/// A failure the collector cannot recover from by itself: it exits 1 with the cause, for
/// systemd to restart it.
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error("the writer panicked")]
    WriterPanicked(#[source] tokio::task::JoinError),
    #[error("the writer was lost to an earlier panic")]
    WriterLost,
    #[error("cannot commit a batch")]
    Commit(#[source] crate::sink::SinkError),
    #[error("cannot forget the output files retention deleted")]
    Retention(#[source] crate::sink::SinkError),
}

impl SessionEnd {
    /// A failed declaration: refused if reconnecting cannot help, else lost.
    fn declaring(err: TopologyError) -> SessionEnd {
        match err {
            TopologyError::Broker(err) => SessionEnd::Lost(err),
            TopologyError::Refused(refused) => SessionEnd::Denied(refused),
            refused => SessionEnd::Refused(refused),
        }
    }
}

impl From<lapin::Error> for SessionEnd {
    fn from(err: lapin::Error) -> Self {
        SessionEnd::Lost(err)
    }
}

/// A consuming channel.
pub struct Subscription {
    pub channel: Channel,
    pub deliveries: lapin::Consumer,
}

/// Warnings about the broker's state said once per process, not once per session.
#[derive(Default)]
pub struct Said(HashSet<String>);

impl Said {
    fn warn_once(&mut self, text: String) {
        if !self.0.contains(&text) {
            tracing::warn!("{text}");
            self.0.insert(text);
        }
    }
}

/// Declares, then consumes this collector's queue on a new channel. `Ok(None)` if `stop` was
/// cancelled meanwhile.
pub async fn start(
    connection: &Connection,
    silence: &Silence,
    config: &CollectorConfig,
    said: &mut Said,
    stop: &CancellationToken,
) -> Result<Option<Subscription>, SessionEnd> {
    let declared = topology::declare(connection, silence, config)
        .await
        .map_err(SessionEnd::declaring)?;
    for warning in declared.warnings {
        said.warn_once(warning);
    }
    let queue = config.queue.consumed();
    if !declared.single_active {
        said.warn_once(format!(
            "queue \"{queue}\" was declared by an earlier release without {}; consuming it exclusively instead{} (README: Upgrading)",
            topology::SINGLE_ACTIVE_CONSUMER,
            match config.queue.queue_type {
                logship_config::collector::QueueType::Quorum =>
                    ", which a quorum queue ignores: order across a silent network is not guaranteed until the queue is recreated",
                logship_config::collector::QueueType::Classic => "",
            }
        ));
    }
    let slow = config.broker.connect_timeout;
    loop {
        let channel = silence
            .wait("channel open", slow, connection.create_channel())
            .await?;
        let qos = channel.basic_qos(config.queue.prefetch, BasicQosOptions::default());
        silence.wait("basic.qos", slow, qos).await?;
        let options = BasicConsumeOptions {
            exclusive: !declared.single_active,
            ..BasicConsumeOptions::default()
        };
        let consuming = channel.basic_consume(
            queue.as_str().into(),
            "".into(),
            options,
            FieldTable::default(),
        );
        let err = match silence.wait("basic.consume", slow, consuming).await {
            Ok(deliveries) => {
                return Ok(Some(Subscription {
                    channel,
                    deliveries,
                }));
            }
            Err(err) => err,
        };
        if !held_by_another(&err) {
            return Err(match Refused::during(&err, Op::Consume) {
                Some(refused) => SessionEnd::Denied(refused),
                None => SessionEnd::Lost(err),
            });
        }
        tracing::debug!(queue = %queue, "an older consumer still holds the queue; waiting for the broker to drop it");
        tokio::select! {
            // cancel-safe: only observes the token
            _ = stop.cancelled() => return Ok(None),
            // cancel-safe: a sleep
            _ = tokio::time::sleep(EXCLUSIVE_RETRY) => {}
        }
    }
}

/// Whether an exclusive consume was refused because another consumer holds the queue.
fn held_by_another(err: &lapin::Error) -> bool {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            amqp.get_id() == ACCESS_REFUSED && amqp.get_message().as_str().contains("exclusive use")
        }
        _ => false,
    }
}
