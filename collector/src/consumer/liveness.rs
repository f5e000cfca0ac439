//! Noticing a consumer that stopped receiving: its connection went silent (a NAT or firewall
//! lost its state, a half-open TCP connection) while the queue fills up, or it stands by behind
//! an active consumer that nobody serves any more.
//!
//! Every [`CHECK_EVERY`] the watch looks at the consumer's socket: one silent past the
//! heartbeat timeout ([`Silence`]) ends the session. When the consumer has received nothing for
//! [`CHECK_EVERY`] and is not busy writing a batch, the watch also asks the broker about the
//! queue on a connection of its own:
//! - messages ready and no other consumer attached: a strike; two strikes in a row (or a watch
//!   connection that went silent too) end the session; a question is waited for while the
//!   broker is heard from on the watch's connection, however slow the answer;
//! - another consumer attached: the consumer stands by behind the queue's
//!   single active consumer (said once, and shown on `/status`); when the ready messages grew at
//!   each of [`STALL_LOOKS`] looks in a row nobody takes them, and the session ends, so the
//!   collector consumes again on a new connection.
//!
//! Invariants: the watch never ends a session that receives, that is writing (a slow or failing
//! disk is an output outage, not a broker one), that is paused for the upload backlog, or that stands by behind a consumer that takes
//! the queue's messages. It holds at most one extra connection, opened only once the consumer
//! has been idle, and closed with the session.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use logship_config::{Broker, BrokerUri};
use logship_runtime::amqp;
use logship_runtime::silence::Silence;
use logship_runtime::socket::Socket;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How long a consumer may receive nothing before the watch asks the broker about its queue.
pub const CHECK_EVERY: Duration = Duration::from_secs(3);

/// Strikes in a row that end the session.
const STRIKES: u32 = 2;

/// Looks in a row at which a standing-by consumer saw the ready messages grow: nobody consumes
/// the queue, whatever the broker says of its active consumer. The session then ends at once.
/// Five looks (15 s) outlast the wait of a consumer that replaced a silent one: the broker drops
/// the silent one two heartbeats (20 s) after the silence, of which the new consumer, connected
/// 10-13 s after it, waits the rest.
const STALL_LOOKS: u32 = 5;

/// What the consumer tells the watch, without waiting on it.
pub struct Activity {
    started: Instant,
    /// Milliseconds since `started` of the last delivery.
    last_delivery_ms: AtomicU64,
    /// A batch is being written (deliveries wait in the client meanwhile).
    writing: AtomicBool,
    /// Deliveries are paused for the upload backlog: the queue fills on purpose.
    paused: AtomicBool,
}

impl Activity {
    /// A consumer that has just started (counts as a delivery).
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            last_delivery_ms: AtomicU64::new(0),
            writing: AtomicBool::new(false),
            paused: AtomicBool::new(false),
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

    /// Deliveries are paused for the upload backlog (`true`), or taken again.
    pub fn paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        if !paused {
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
        if self.writing.load(Ordering::Relaxed) || self.paused.load(Ordering::Relaxed) {
            return true;
        }
        self.idle() < window
    }
}

/// The watch's own connection to the broker.
struct Probe {
    connection: Connection,
    channel: Channel,
    /// Its questions are waited for while the broker is heard from on it: a broker slow to
    /// answer (overloaded) is no sign that the consumer is dead.
    silence: Silence,
}

/// What the watch looks at: the consumer's queue on the broker it is connected to, its socket
/// and its activity.
pub struct Watch {
    pub broker: Broker,
    pub uri: BrokerUri,
    pub queue: String,
    /// The consumer's connection's silence rule.
    pub silence: Silence,
    pub activity: Arc<Activity>,
    /// Where `/status` shows whether the consumer stands by.
    pub metrics: Arc<Metrics>,
}

/// What the last answers about the queue said of this consumer.
#[derive(Default)]
struct Standing {
    /// Looks in a row that found the consumer idle while another one is attached and messages
    /// are ready: it stands by behind the queue's single active consumer.
    looks: u32,
    /// The ready messages at each of those looks grew every time: nobody takes them.
    growing: u32,
    last_ready: u32,
}

impl Watch {
    /// Watches until the consumer looks dead, then sends why on `dead`; returns (closing its
    /// connection) when `stop` is cancelled or after sending.
    pub async fn run(self, stop: CancellationToken, dead: tokio::sync::oneshot::Sender<String>) {
        let mut probe: Option<Probe> = None;
        let mut strikes = 0;
        let mut standing = Standing::default();
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // cancel-safe: only observes the token
                _ = stop.cancelled() => break,
                // cancel-safe: a tick missed by cancellation is simply taken later
                _ = ticks.tick() => {}
            }
            if let Some(quiet) = self.silence.broken() {
                let _ = dead.send(logship_runtime::silence::silent(quiet).to_string());
                break;
            }
            if self.activity.active_within(CHECK_EVERY) {
                strikes = 0;
                self.stand(&mut standing, None);
                continue;
            }
            let asked = tokio::select! {
                // cancel-safe: abandoning a question loses nothing
                _ = stop.cancelled() => break,
                // cancel-safe: only looks at the consumer's socket
                err = self.silence.broke() => {
                    let _ = dead.send(err.to_string());
                    break;
                }
                asked = ask(&self.broker, &self.uri, &self.queue, &mut probe) => asked,
            };
            let why = match asked {
                Ok((ready, consumers)) if ready > 0 && consumers <= 1 => format!(
                    "nothing received for {}s while the queue has {ready} messages ready",
                    self.activity.idle().as_secs()
                ),
                Ok((ready, consumers)) => {
                    strikes = 0;
                    let behind = (consumers > 1).then_some(ready);
                    if let Some(why) = self.stand(&mut standing, behind) {
                        let _ = dead.send(why);
                        break;
                    }
                    continue;
                }
                Err(err) => {
                    // Dropped, not closed: a silent connection would not answer the close.
                    probe = None;
                    format!("the broker is silent on a second connection too: {err}")
                }
            };
            strikes += 1;
            tracing::debug!(queue = %self.queue, strikes, "{why}");
            if strikes >= STRIKES {
                let _ = dead.send(why);
                break;
            }
        }
        self.metrics.set_standby(false);
        if let Some(probe) = probe {
            amqp::close(&probe.connection, &self.broker, "logship-collector watch").await;
        }
    }

    /// Takes one look's verdict on standing by: `behind` is the ready messages when the
    /// consumer is idle while another one is attached, `None` when it is not. Says when the consumer
    /// starts and stops standing by; `Some` (why) once it stood by for [`STALL_LOOKS`] looks
    /// while the ready messages grew at each: a stall, which ends the session at once.
    fn stand(&self, standing: &mut Standing, behind: Option<u32>) -> Option<String> {
        let Some(ready) = behind else {
            if standing.looks > 0 {
                tracing::info!(queue = %self.queue, "active again: deliveries come to this consumer");
                self.metrics.set_standby(false);
            }
            *standing = Standing::default();
            return None;
        };
        if standing.looks == 0 {
            tracing::info!(queue = %self.queue, ready,
                "standing by: another consumer of the queue is its single active consumer; taking over when it goes");
            self.metrics.set_standby(true);
        } else if ready > standing.last_ready {
            standing.growing += 1;
        } else {
            standing.growing = 0;
        }
        standing.looks += 1;
        standing.last_ready = ready;
        (standing.growing >= STALL_LOOKS).then(|| {
            format!(
                "standing by for {}s while the queue grew to {ready} ready messages that nobody takes",
                self.activity.idle().as_secs()
            )
        })
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
    let probe = match probe {
        Some(probe) => probe,
        None => {
            let socket = Socket::default();
            let connection = amqp::connect_watched(broker, uri, &socket).await?;
            let silence = Silence::of(&connection, socket);
            let opening = connection.create_channel();
            let channel = silence
                .wait("channel open", broker.connect_timeout, opening)
                .await?;
            probe.insert(Probe {
                connection,
                channel,
                silence,
            })
        }
    };
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declaring = probe
        .channel
        .queue_declare(queue.into(), options, FieldTable::default());
    let result = probe
        .silence
        .wait("queue declare (passive)", broker.connect_timeout, declaring)
        .await;
    result.map(|state| (state.message_count(), state.consumer_count()))
}
