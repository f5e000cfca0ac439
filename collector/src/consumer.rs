//! The broker side: connect (see `logship_runtime::reconnect`), start a session (`session`),
//! consume, batch, ack, with a liveness watch beside each session (`liveness`).
//!
//! Invariants:
//! - Batches are formed by the batch policy ([`batch`]). While a batch is written, the
//!   deliveries that arrive are taken into the next one (but during the last write at shutdown
//!   or SIGHUP), and their new output files are made meanwhile ([`ahead`]).
//! - A delivery is acked only after the writer committed its batch (`ack` with `multiple`
//!   up to the batch's last line); a malformed one is rejected without requeue, never acked.
//! - A batch whose channel died is dropped unacked: the broker redelivers it, and dedup (committed
//!   source positions, then the seen-id set) drops whatever of it was already written.
//! - Retention passes (see [`crate::archive::retention`]) run on their own clock, between
//!   batches, while connected and while connecting: a quiet or cut-off collector deletes old files too.
//! - While the upload backlog is over `upload.max_backlog` no delivery is taken (the broker
//!   stops sending once the prefetch window is full, and the liveness watch counts the pause as
//!   busy, not dead); taking resumes when the backlog drains (see [`crate::upload::backlog`]).
//! - A failed write keeps the batch unacked, truncates the output back to the committed lengths,
//!   and writes the same batch again after a backoff delay on the same channel (see
//!   [`crate::outage`]); only a failure of the state database stops the collector.

pub(crate) mod ahead;
pub(crate) mod batch;
pub(crate) mod liveness;
pub(crate) mod session;
pub(crate) mod topology;
pub(crate) mod validate;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{FutureExt as _, StreamExt as _};
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicRejectOptions};
use lapin::{Channel, Connection};
use logship_config::{BrokerUri, CollectorConfig};
use logship_runtime::Throttle;
use logship_runtime::access::RefusalLog;
use logship_runtime::amqp::{self, within};
use logship_runtime::reconnect::{Connected, Reconnect};
use logship_runtime::signals::Signals;
use logship_runtime::silence::Silence;
use logship_runtime::socket::Socket;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counters, Metrics};
use crate::outage::{Cause, Outages};
use crate::sink::outpath::Recent;
use crate::writer::{Outcome, Writer};
use ahead::Creator;
use batch::{Batch, LOW_WATER};
use liveness::Activity;
pub use session::FatalError;
use session::{Said, SessionEnd, Subscription};
use topology::TopologyError;
use validate::Line;

/// At most one warning per this interval about rejected messages; the rest are counted.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// An ack or a reject is one frame written to the socket; one not written by then is said to be
/// slow. It is waited for while the broker is heard from: lapin never resolves it once its I/O
/// loop has ended (seen after a broker stop: the collector then waited forever, up but idle),
/// and then the connection's socket is gone or silent ([`Silence`]).
const SETTLE_SLOW: Duration = Duration::from_secs(5);

/// Consumes this collector's queue for as long as it runs.
pub struct Consumer {
    config: CollectorConfig,
    /// Taken while a batch is written on a blocking thread, then put back.
    writer: Option<Writer>,
    metrics: Arc<Metrics>,
    /// Rejected messages, said at once, then one count per [`REJECT_LOG_INTERVAL`] at most.
    rejects: Throttle,
    /// Kept across sessions: an outage spans reconnects and is announced once.
    outages: Outages,
    /// Warnings about the broker's queues, said once.
    said: Said,
    /// What the liveness watch of the current session reads.
    activity: Arc<Activity>,
    /// Lines of the last batch written: a large one means heavy traffic (see
    /// [`batch::LINGER`]).
    last_batch: usize,
    /// The output file of the last line taken.
    recent: Recent,
    /// The connection's socket: its receive low-water mark is raised while a batch lingers,
    /// and lowered before the batch is written.
    socket: Socket,
    /// The current connection's silence rule: acks and rejects are waited for while it holds.
    silence: Silence,
    /// `[upload]`: `true` while deliveries are paused for the upload backlog.
    paused: Option<tokio::sync::watch::Receiver<bool>>,
    /// Creates the output files of the lines taken while a batch is written.
    creator: Creator,
}

impl Consumer {
    /// A consumer that writes through `writer`.
    pub fn new(config: CollectorConfig, writer: Writer, metrics: Arc<Metrics>) -> Consumer {
        let ahead = writer
            .ahead()
            .inspect_err(|err| tracing::warn!(error = %err, "cannot create output files ahead"))
            .ok();
        Consumer {
            creator: Creator::new(ahead),
            outages: Outages::new(&config.broker),
            config,
            writer: Some(writer),
            metrics,
            rejects: Throttle::new(REJECT_LOG_INTERVAL),
            said: Said::default(),
            activity: Activity::new(),
            last_batch: 0,
            recent: Recent::default(),
            socket: Socket::default(),
            silence: Silence::new(Socket::default(), Duration::ZERO),
            paused: None,
        }
    }

    /// Takes no delivery while `paused` says so (the upload backlog is over its cap).
    pub fn pause_while(mut self, paused: tokio::sync::watch::Receiver<bool>) -> Consumer {
        self.paused = Some(paused);
        self
    }

    /// Connects, consumes and reconnects until shutdown; then commits the open batch and acks.
    pub async fn run(mut self, signals: &Signals) -> anyhow::Result<()> {
        let mut reconnect = Reconnect::new(&self.config.broker);
        self.socket = reconnect.socket();
        let mut refusals = RefusalLog::default();
        while let Some(Connected {
            connection,
            uri,
            outage,
        }) = self.connect(&mut reconnect, &signals.shutdown).await?
        {
            if let Some(outage) = outage.filter(|_| !refusals.active()) {
                tracing::info!(uri = %uri, outage_secs = outage.as_secs(), "broker reachable again");
                Counters::add(&self.metrics.counters.reconnects, 1);
            }
            self.metrics.broker.connected(&uri);
            let end = self
                .session(&connection, &uri, signals, &mut reconnect)
                .await;
            self.metrics.broker.disconnected();
            self.metrics.set_consuming(false);
            amqp::close(
                &connection,
                &self.config.broker,
                "logship-collector closing",
            )
            .await;
            match end {
                Ok(()) => break,
                // A wrong broker.partitions or a missing plugin is said with its key first;
                // a conflicting queue or exchange with the broker it is on.
                Err(SessionEnd::Refused(err @ TopologyError::Conflict(_))) => {
                    return Err(err).with_context(|| uri.to_string());
                }
                Err(SessionEnd::Refused(err)) => return Err(err.into()),
                Err(SessionEnd::Fatal(err)) => return Err(err.into()),
                // A missing permission: said once, retried (granting it heals us).
                Err(SessionEnd::Denied(refused)) => refusals.refused(&uri, &refused),
                Err(SessionEnd::Lost(err)) => {
                    refusals.other();
                    tracing::warn!(uri = %uri, error = %err, "connection to broker lost, unacked lines will be redelivered");
                }
            }
            reconnect.lost();
        }
        Ok(())
    }

    /// Connects (see [`Reconnect::connect`]); meanwhile retention passes run when due, so a
    /// collector cut off from its broker still deletes old files. `None` once shut down.
    async fn connect(
        &mut self,
        reconnect: &mut Reconnect,
        shutdown: &CancellationToken,
    ) -> Result<Option<Connected>, FatalError> {
        let broker = self.config.broker.clone();
        let mut connecting = std::pin::pin!(reconnect.connect(&broker, shutdown));
        loop {
            tokio::select! {
                // cancel-safe: the connect is pinned outside the loop and polled on
                connected = &mut connecting => return Ok(connected),
                // cancel-safe: a sleep
                _ = sleep_until(self.retention_due()) => self.retain().await?,
            }
        }
    }

    /// One connection's life: declare, consume, batch, ack, with a watch on the consumer's
    /// liveness beside it. `Ok` means shutdown was requested and the open batch is committed
    /// and acked.
    async fn session(
        &mut self,
        connection: &Connection,
        uri: &BrokerUri,
        signals: &Signals,
        reconnect: &mut Reconnect,
    ) -> Result<(), SessionEnd> {
        self.silence = Silence::of(connection, self.socket.clone());
        let Some(subscription) = session::start(
            connection,
            &self.silence,
            &self.config,
            &mut self.said,
            &signals.shutdown,
        )
        .await?
        else {
            return Ok(());
        };
        let queue = self.config.queue.consumed();
        tracing::info!(uri = %uri, queue = %queue, exchange = %self.config.broker.exchange,
            prefetch = self.config.queue.prefetch, "consuming");
        self.metrics.set_consuming(true);
        reconnect.established();
        self.activity = Activity::new();
        let stop_watch = CancellationToken::new();
        let (dead_tx, dead) = tokio::sync::oneshot::channel();
        let watch = liveness::Watch {
            broker: self.config.broker.clone(),
            uri: uri.clone(),
            queue,
            silence: self.silence.clone(),
            activity: self.activity.clone(),
            metrics: self.metrics.clone(),
        };
        let watch = tokio::spawn(watch.run(stop_watch.clone(), dead_tx));
        let result = self.consume(subscription, signals, dead).await;
        stop_watch.cancel();
        let _ = tokio::time::timeout(self.config.broker.connect_timeout * 2, watch).await;
        result
    }

    /// Consumes until shutdown (`Ok`), the channel fails, or the watch says the consumer is
    /// dead.
    async fn consume(
        &mut self,
        subscription: Subscription,
        signals: &Signals,
        mut dead: tokio::sync::oneshot::Receiver<String>,
    ) -> Result<(), SessionEnd> {
        let Subscription {
            channel,
            mut deliveries,
        } = subscription;
        let deadline = self.config.broker.connect_timeout;
        let mut batch = Batch::default();
        let mut pause = self.paused.clone();
        let mut was_paused = false;
        loop {
            // A batch filled while the last one was written is written at once.
            let flush_at = if batch.is_full(self.config.batch.max_messages) {
                Some(Instant::now())
            } else {
                batch.due()
            };
            let paused = pause.as_ref().is_some_and(|p| *p.borrow());
            if paused != was_paused {
                // A pause is busy, not dead, for the liveness watch.
                self.activity.paused(paused);
                was_paused = paused;
            }
            tokio::select! {
                biased;
                // cancel-safe: only observes the token
                _ = signals.shutdown.cancelled() => {
                    // Stop deliveries first so no new ones arrive while the last batch commits.
                    let cancel = channel.basic_cancel(deliveries.tag(), BasicCancelOptions::default());
                    let _ = within("basic.cancel", deadline, cancel).await;
                    self.flush(&mut batch, &channel, &signals.shutdown, None).await?;
                    let _ = within("channel close", deadline, channel.close(200, "shutdown".into())).await;
                    return Ok(());
                }
                // cancel-safe: a Notify permit is kept until taken
                _ = signals.reload.notified() => {
                    self.flush(&mut batch, &channel, &signals.shutdown, None).await?;
                    self.writer.as_mut().ok_or_else(writer_lost)?.reopen();
                }
                // cancel-safe: a sleep (a batch may be open: it is written after the pass)
                _ = sleep_until(self.retention_due()) => {
                    self.retain().await.map_err(SessionEnd::Fatal)?;
                }
                // cancel-safe: a oneshot receiver keeps its value until taken
                why = &mut dead => {
                    // The sender is dropped without a value only when the watch stops.
                    let why = why.unwrap_or_else(|_| "liveness watch stopped".to_string());
                    return Err(SessionEnd::Lost(std::io::Error::new(
                        std::io::ErrorKind::TimedOut, format!("consumer looks dead: {why}")).into()));
                }
                // cancel-safe: a sleep
                _ = sleep_until(flush_at), if flush_at.is_some() => {
                    if batch.lingering() {
                        self.take_waiting(&mut deliveries, &mut batch).await?;
                    }
                    self.flush(&mut batch, &channel, &signals.shutdown, Some(&mut deliveries)).await?;
                }
                // cancel-safe: a watch keeps its latest value
                _ = pause_changed(&mut pause) => {}
                // cancel-safe: lapin's consumer keeps undelivered messages in its own buffer
                delivery = deliveries.next(), if !batch.lingering() && !paused => {
                    self.take(delivery, &mut deliveries, &mut batch).await?;
                    if batch.ready(self.config.batch.max_messages) {
                        self.flush(&mut batch, &channel, &signals.shutdown, Some(&mut deliveries)).await?;
                    }
                }
            }
        }
    }

    /// Takes `first` and every delivery already waiting in the client (up to a full batch):
    /// what arrived while the last batch was written forms the next, so batches grow with the
    /// traffic while a lone line is written at once.
    async fn take(
        &mut self,
        first: Option<Result<Delivery, lapin::Error>>,
        deliveries: &mut lapin::Consumer,
        batch: &mut Batch,
    ) -> Result<(), SessionEnd> {
        let mut next = first;
        loop {
            match next {
                Some(Ok(delivery)) => self.accept(delivery, batch).await?,
                Some(Err(err)) => return Err(err.into()),
                None => {
                    return Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                        lapin::ChannelState::Closed,
                        "consumer cancelled by the broker",
                    ))
                    .into());
                }
            }
            if batch.is_full(self.config.batch.max_messages) {
                return Ok(());
            }
            match deliveries.next().now_or_never() {
                Some(delivery) => next = delivery,
                None => return Ok(()),
            }
        }
    }

    /// Takes every delivery already waiting in the client (up to a full batch).
    async fn take_waiting(
        &mut self,
        deliveries: &mut lapin::Consumer,
        batch: &mut Batch,
    ) -> Result<(), SessionEnd> {
        match deliveries.next().now_or_never() {
            Some(delivery) => self.take(delivery, deliveries, batch).await,
            None => Ok(()),
        }
    }

    /// Validates a delivery: a line joins the batch; anything else is rejected at once.
    async fn accept(&mut self, delivery: Delivery, batch: &mut Batch) -> Result<(), SessionEnd> {
        Counters::add(&self.metrics.counters.received, 1);
        self.activity.delivered();
        let user = delivery.properties.user_id().as_ref().map(|u| u.as_str());
        match validate::intake(&delivery.data, &self.config, user, &mut self.recent) {
            Ok(line) => {
                let hold = batch::hold(self.last_batch, self.config.batch.max_delay);
                if batch.open(hold) {
                    self.socket.raise_low_water(LOW_WATER);
                }
                batch.push(line, delivery.acker);
            }
            Err(rejection) => {
                reject(&delivery.acker, &self.silence).await?;
                Counters::add(&self.metrics.counters.dead_lettered, 1);
                Counters::add(self.metrics.rejected(rejection.reason()), 1);
                self.warn_rejected(&format_args!("{rejection:#}"));
            }
        }
        Ok(())
    }

    /// Writes, syncs and commits the batch, then acks it. A batch that cannot be written is
    /// left unacked if shutdown is requested during the outage (the broker redelivers it).
    /// With `deliveries`, those that arrive during the write are taken into `batch`, the next
    /// one, and their output files created meanwhile.
    async fn flush(
        &mut self,
        batch: &mut Batch,
        channel: &Channel,
        shutdown: &CancellationToken,
        deliveries: Option<&mut lapin::Consumer>,
    ) -> Result<(), SessionEnd> {
        if batch.lingering() {
            // What trickled in meanwhile is read while this batch is written.
            self.socket.lower_low_water();
        }
        let Batch { lines, ackers, .. } = std::mem::take(batch);
        self.creator.next_batch();
        self.last_batch = lines.len();
        if lines.is_empty() {
            return Ok(());
        }
        self.activity.writing(true);
        let meanwhile = deliveries.map(|deliveries| (deliveries, batch));
        let written = self
            .write_until_done(lines, channel, shutdown, meanwhile)
            .await;
        self.activity.writing(false);
        let Some(outcome) = written? else {
            return Ok(());
        };
        let mut refused = vec![false; ackers.len()];
        for (position, reason) in &outcome.refused {
            reject(&ackers[*position], &self.silence).await?;
            refused[*position] = true;
            self.warn_rejected(reason);
        }
        // `multiple` acks every unsettled delivery up to this one: the whole batch but the
        // lines just rejected (which are already settled).
        if let Some(last) = (0..ackers.len()).rev().find(|&i| !refused[i])
            && !self
                .silence
                .wait(
                    "basic.ack",
                    SETTLE_SLOW,
                    ackers[last].ack(BasicAckOptions { multiple: true }),
                )
                .await?
        {
            return Err(channel_closed("ack"));
        }
        self.metrics.committed(&outcome, ackers.len());
        Ok(())
    }

    /// When the next retention pass is due; `None` without retention (or while the writer is
    /// out, which it never is between batches).
    fn retention_due(&self) -> Option<Instant> {
        self.writer.as_ref().and_then(Writer::retention_due)
    }

    /// Runs a retention pass on a blocking thread, if one is due, and counts what it deleted.
    async fn retain(&mut self) -> Result<(), FatalError> {
        self.creator.idle().await;
        let mut writer = self.writer.take().ok_or(FatalError::WriterLost)?;
        let (writer, result) = tokio::task::spawn_blocking(move || {
            let result = writer.retain();
            (writer, result)
        })
        .await
        .map_err(FatalError::WriterPanicked)?;
        self.writer = Some(writer);
        self.metrics
            .retained(result.map_err(FatalError::Retention)?);
        Ok(())
    }

    /// Warns of a message rejected to dead-letter: at once, then at most once per
    /// [`REJECT_LOG_INTERVAL`] with how many were rejected since.
    fn warn_rejected(&mut self, reason: &dyn std::fmt::Display) {
        if let Some(rejected) = self.rejects.event() {
            tracing::warn!(reason = %reason, rejected, "rejected message to dead-letter");
        }
    }

    /// Writes the batch on a blocking thread (taking deliveries `meanwhile`, see
    /// [`Consumer::write_meanwhile`]); after a failure, waits a backoff delay and writes
    /// it again, until it is written (`Some`), the channel dies, or shutdown is requested
    /// (`None`: nothing written, nothing to ack).
    async fn write_until_done(
        &mut self,
        mut lines: Vec<Line>,
        channel: &Channel,
        shutdown: &CancellationToken,
        mut meanwhile: Option<(&mut lapin::Consumer, &mut Batch)>,
    ) -> Result<Option<Outcome>, SessionEnd> {
        // Files of this batch are its own to create (see `crate::sink::ahead`).
        let writing: HashSet<PathBuf> = match meanwhile {
            Some(_) => lines.iter().map(|line| line.file.clone()).collect(),
            None => HashSet::new(),
        };
        loop {
            let made = self.creator.settle().await;
            let mut writer = self.writer.take().ok_or_else(writer_lost)?;
            let mut writing_task = tokio::task::spawn_blocking(move || {
                writer.made_ahead(made);
                let result = writer.write(&lines);
                (writer, lines, result)
            });
            let (joined, taken) = self
                .write_meanwhile(&mut writing_task, meanwhile.as_mut(), &writing)
                .await;
            let (writer, back, result) =
                joined.map_err(|err| SessionEnd::Fatal(FatalError::WriterPanicked(err)))?;
            self.writer = Some(writer);
            lines = back;
            // A channel that failed while the batch was written: it cannot be acked.
            taken?;
            let err = match result {
                Ok(outcome) => {
                    self.outages.report_success();
                    return Ok(Some(outcome));
                }
                Err(err) if err.is_fatal() => {
                    return Err(SessionEnd::Fatal(FatalError::Commit(err)));
                }
                Err(err) => err,
            };
            let cause = Cause::of(&err);
            Counters::add(self.metrics.write_errors(cause), 1);
            let delay = self.outages.report_failure(cause, &err);
            tokio::select! {
                // cancel-safe: only observes the token
                _ = shutdown.cancelled() => {
                    tracing::info!(lines = lines.len(),
                        "stopping while output is not writable; the open batch stays unacked for redelivery");
                    return Ok(None);
                }
                // cancel-safe: a sleep
                _ = tokio::time::sleep(delay) => {}
            }
            if !channel.status().connected() {
                // The broker redelivers the batch on the next connection; keep backing off.
                return Err(channel_closed("write retry"));
            }
        }
    }
}

impl Consumer {
    /// Waits for the write `task`. Meanwhile, with `meanwhile`, takes the deliveries that
    /// arrive into the next batch (until it is full, and not while paused) and creates their
    /// output files ahead ([`Creator`]). A failure to take is returned beside the write's
    /// result: the write is always waited for, since it holds the writer.
    async fn write_meanwhile<T>(
        &mut self,
        task: &mut tokio::task::JoinHandle<T>,
        meanwhile: Option<&mut (&mut lapin::Consumer, &mut Batch)>,
        writing: &HashSet<PathBuf>,
    ) -> (Result<T, tokio::task::JoinError>, Result<(), SessionEnd>) {
        let Some((deliveries, next)) = meanwhile else {
            return (task.await, Ok(()));
        };
        let mut taken = Ok(());
        loop {
            let paused = self.paused.as_ref().is_some_and(|p| *p.borrow());
            let taking = taken.is_ok() && !paused && !next.is_full(self.config.batch.max_messages);
            tokio::select! {
                biased;
                // cancel-safe: a JoinHandle keeps its output until taken
                joined = &mut *task => return (joined, taken),
                // cancel-safe: awaits a JoinHandle, kept in the creator until it returns
                () = self.creator.finished() => self.creator.hand(next, writing),
                // cancel-safe: lapin's consumer keeps undelivered messages in its own buffer
                delivery = deliveries.next(), if taking => {
                    taken = self.take(delivery, deliveries, next).await;
                    self.creator.hand(next, writing);
                }
            }
        }
    }
}

fn writer_lost() -> SessionEnd {
    SessionEnd::Fatal(FatalError::WriterLost)
}

async fn reject(acker: &Acker, silence: &Silence) -> Result<(), SessionEnd> {
    let rejecting = acker.reject(BasicRejectOptions { requeue: false });
    if silence.wait("basic.reject", SETTLE_SLOW, rejecting).await? {
        Ok(())
    } else {
        Err(channel_closed("reject"))
    }
}

fn channel_closed(what: &'static str) -> SessionEnd {
    SessionEnd::Lost(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
        lapin::ChannelState::Closed,
        what,
    )))
}

/// Resolves when the pause starts or ends; never without `[upload]`.
async fn pause_changed(pause: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    if let Some(pause) = pause
        && pause.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
