//! Noticing a consumer that stopped receiving: its connection went silent (a NAT or firewall
//! lost its state, a half-open TCP connection) while the queue fills up.
//!
//! The heartbeat notices a silent connection after two intervals (20 s by default). This watch
//! usually notices sooner, by asking the broker on a connection of its own: when the consumer
//! has received nothing for [`CHECK_EVERY`], is not busy writing a batch, and the broker says
//! the queue has messages ready while no other consumer is attached, that is a strike; two
//! strikes in a row (or a watch connection that does not answer either) end the session.
//!
//! Invariants: the watch never ends a session that receives, that is writing (a slow or failing
//! disk is an output outage, not a broker one), or that waits behind another consumer as the
//! single active consumer's standby. It holds at most one extra connection, opened only once
//! the consumer has been idle, and closed with the session.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use logship_config::{Broker, BrokerUri};
use logship_runtime::amqp::{self, within};
use logship_runtime::silence::Silence;
use tokio_util::sync::CancellationToken;

/// How long a consumer may receive nothing before the watch asks the broker about its queue.
pub const CHECK_EVERY: Duration = Duration::from_secs(3);

/// Strikes in a row that end the session.
const STRIKES: u32 = 2;

/// What the consumer tells the watch, without waiting on it.
pub struct Activity {
    started: Instant,
    /// Milliseconds since `started` of the last delivery.
    last_delivery_ms: AtomicU64,
    /// A batch is being written (deliveries wait in the client meanwhile).
    writing: AtomicBool,
}

impl Activity {
    /// A consumer that has just started (counts as a delivery).
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            last_delivery_ms: AtomicU64::new(0),
            writing: AtomicBool::new(false),
        })
    }

    /// A delivery arrived.
    pub fn delivered(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_delivery_ms.store(ms, Ordering::Relaxed);
    }

    /// A batch is being written (`true`) or is done (`false`).
    pub fn writing(&self, writing: bool) {
        self.writing.store(writing, Ordering::Relaxed);
        if !writing {
            self.delivered();
        }
    }

    /// Time since the last delivery.
    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_delivery_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Whether the consumer received something (or wrote) within `window`.
    fn active_within(&self, window: Duration) -> bool {
        if self.writing.load(Ordering::Relaxed) {
            return true;
        }
        self.idle() < window
    }
}

/// The watch's own connection to the broker.
struct Probe {
    connection: Connection,
    channel: Channel,
}

/// Watches `queue` on `uri` until the consumer looks dead, then sends why on `dead`; returns
/// (closing its connection) when `stop` is cancelled or after sending.
pub async fn watch(
    broker: Broker,
    uri: BrokerUri,
    queue: String,
    silence: Silence,
    activity: Arc<Activity>,
    stop: CancellationToken,
    dead: tokio::sync::oneshot::Sender<String>,
) {
    let mut probe: Option<Probe> = None;
    let mut strikes = 0;
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // cancel-safe: only observes the token
            _ = stop.cancelled() => break,
            // cancel-safe: a tick missed by cancellation is simply taken later
            _ = ticks.tick() => {}
        }
        if let Some(quiet) = silence.broken() {
            let _ = dead.send(logship_runtime::silence::silent(quiet).to_string());
            break;
        }
        if activity.active_within(CHECK_EVERY) {
            strikes = 0;
            continue;
        }
        let asked = tokio::select! {
            // cancel-safe: abandoning a question loses nothing
            _ = stop.cancelled() => break,
            asked = ask(&broker, &uri, &queue, &mut probe) => asked,
        };
        let why = match asked {
            Ok((ready, consumers)) if ready > 0 && consumers <= 1 => format!(
                "nothing received for {}s while the queue has {ready} messages ready",
                activity.idle().as_secs()
            ),
            Ok(_) => {
                strikes = 0;
                continue;
            }
            Err(err) => {
                // Dropped, not closed: a silent connection would not answer the close.
                probe = None;
                format!("no answer on a second connection either: {err}")
            }
        };
        strikes += 1;
        tracing::debug!(queue = %queue, strikes, "{why}");
        if strikes >= STRIKES {
            let _ = dead.send(why);
            break;
        }
    }
    if let Some(probe) = probe {
        amqp::close(&probe.connection, &broker, "logship-collector watch").await;
    }
}

/// The queue's ready messages and consumers, by a passive declaration on the watch's connection
/// (opened if need be).
async fn ask(
    broker: &Broker,
    uri: &BrokerUri,
    queue: &str,
    probe: &mut Option<Probe>,
) -> Result<(u32, u32), lapin::Error> {
    if probe.is_none() {
        let connection = amqp::connect(broker, uri).await?;
        let channel = within(
            "channel open",
            broker.connect_timeout,
            connection.create_channel(),
        )
        .await?;
        *probe = Some(Probe {
            connection,
            channel,
        });
    }
    // unwrap: set just above when it was missing
    let channel = &probe.as_ref().unwrap().channel;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declaring = channel.queue_declare(queue.into(), options, FieldTable::default());
    let result = within("queue declare (passive)", broker.connect_timeout, declaring).await;
    result.map(|state| (state.message_count(), state.consumer_count()))
}
