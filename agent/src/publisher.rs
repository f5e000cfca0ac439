//! The publisher: drains the spool in order over one channel in confirm mode.
//!
//! Invariants:
//! - A segment leaves the spool only once every line of it got a clean ack: `Ack(None)`. Nack,
//!   ack-with-returned-message (no queue bound), a connection that went silent, or a lost
//!   channel all mean "not delivered".
//! - After a failure the publisher waits for the rest of its window, then republishes from the
//!   first line not confirmed, in spool order. Lines confirmed meanwhile are not resent.
//! - After a nack it republishes on a new channel of the same connection, never on the channel
//!   that was nacked: a channel's view of a queue can be stale for the channel's whole life.
//!   RabbitMQ 3.10 binds a channel's client of a quorum queue to the leader on record when the
//!   channel first publishes to it; a channel that did so after the leader's node died, before
//!   the new leader was on record, has every publish to that queue nacked, however long it lives.
//! - A confirm is waited for as long as the connection is alive: while the broker is heard from
//!   (heartbeats come at least every half heartbeat timeout), slow confirms (flow control, a
//!   resource alarm that blocks us, a deep queue) are slowness, never a reason to reconnect and
//!   republish, which would multiply the load that made the broker slow. Only a connection
//!   silent past the heartbeat timeout, or one that failed, ends the session ([`Silence`]).
//! - Every publish of a line this process already published is counted as a republish
//!   (`logship_agent_republished_total`), so a resend storm shows in the metrics.
//! - The wait before resending after a nack doubles with each round nacked again, from
//!   [`RETRY_DELAY`] up to [`MAX_NACK_DELAY`], and starts over at the first clean ack: a broker
//!   that keeps nacking gets a new channel and the window again once per 15-30 s once the wait
//!   has grown, not every second or two.
//!
//! Its books are kept apart: `cursor` is where publishing stands in the spool (what is
//! loaded, what to publish next, the head segment's confirmed prefix), `window` the publishes
//! awaiting their confirm.

mod cursor;
mod window;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Confirmation, Connection, Event};
use logship_config::{Broker, BrokerUri};
use logship_runtime::access::{Op, RefusalLog, Refused};
use logship_runtime::amqp;
use logship_runtime::reconnect::{Connected, Reconnect};
use logship_runtime::silence::Silence;
use logship_runtime::{Backoff, Throttle};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::publish_error::PublishError;
use crate::spool::{Seq, Spool, SpoolError};
use crate::status::Status;
use cursor::SpoolCursor;
use window::{ConfirmWindow, InFlight};

/// Wait before resending what was returned (no queue bound) or, the first time, nacked (then on
/// a new channel).
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest wait before resending after nacks: a broker that keeps refusing (a full queue
/// with `reject-publish`, a quorum queue without a leader) is not sent a new channel and the
/// whole window more often than this, and one that takes them again is resent to within it.
const MAX_NACK_DELAY: Duration = Duration::from_secs(30);
/// At most one "no queue bound" warning per this interval.
const UNROUTABLE_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// At most one warning about nacked publishes per this interval; the nacks in between are
/// counted in the next one (and each in `logship_agent_nacked_total`).
const NACK_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// What a confirm said about a publish.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// A clean ack: the line is delivered.
    Delivered,
    /// Acked with the message returned (no queue bound): not delivered; resent on the same
    /// channel, which is not at fault.
    Returned,
    /// Nacked (or a confirm the channel was not asked for): not delivered; resent on a new
    /// channel.
    Nacked,
}

/// Why publishing on one channel stopped, short of an error.
enum ChannelEnd {
    /// Stopped, and drained (or the drain deadline passed).
    Stopped,
    /// The broker nacked a publish; nothing is left in flight on the channel.
    Nacked,
}

/// The publisher task's state.
pub struct Publisher {
    broker: Broker,
    /// This agent's host: the fanout exchange ignores it, a partitioned collector group hashes
    /// on it, so every line of a host lands in one partition.
    routing_key: String,
    /// The user this session's connection logged in as: sent as `user_id`, which the broker
    /// validates, so a collector can trust it (see `[security]` in collector.toml).
    user_id: String,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    /// Where publishing stands in the spool.
    cursor: SpoolCursor,
    /// Notified when the connection fails, so an idle publisher notices an outage at once.
    lost: Arc<tokio::sync::Notify>,
    /// Returned (unroutable) publishes, said at once, then at most once per
    /// [`UNROUTABLE_LOG_INTERVAL`] with how many since.
    unroutable: Throttle,
    /// Nacked publishes, said at once and then at most once per [`NACK_LOG_INTERVAL`]: a broker
    /// that nacks every publish must be visible in the log, without a line per nack.
    nacks: Throttle,
    /// The wait before resending after a nack: grows with consecutive nacked rounds, starts
    /// over at the first clean ack.
    nack_backoff: Backoff,
    /// Where `/status` reads the connected URI (masked) and whether the broker blocks us.
    status: Arc<Status>,
    /// The current connection's silence rule: every wait on the broker holds while it does.
    silence: Silence,
}

impl Publisher {
    /// A publisher draining `spool` to `broker`, resuming after the confirmed lines it saved.
    pub fn new(broker: Broker, spool: Arc<Spool>, metrics: Arc<Metrics>) -> Publisher {
        Publisher {
            broker,
            routing_key: String::new(),
            user_id: String::new(),
            cursor: SpoolCursor::new(spool.clone()),
            spool,
            metrics,
            lost: Arc::new(tokio::sync::Notify::new()),
            unroutable: Throttle::new(UNROUTABLE_LOG_INTERVAL),
            nacks: Throttle::new(NACK_LOG_INTERVAL),
            nack_backoff: Backoff::between(RETRY_DELAY, MAX_NACK_DELAY),
            status: Arc::default(),
            silence: Silence::new(Default::default(), Duration::ZERO),
        }
    }

    /// Shows the broker connection in `status`.
    pub fn with_status(mut self, status: Arc<Status>) -> Publisher {
        self.status = status;
        self
    }

    /// Publishes with `routing_key` (the agent's host) instead of `""`.
    pub fn with_routing_key(mut self, routing_key: String) -> Publisher {
        self.routing_key = routing_key;
        self
    }

    /// Connects and publishes until `stop`; then waits up to `drain` for outstanding confirms.
    /// Returns an error only if the spool fails.
    pub async fn run(mut self, stop: CancellationToken, drain: Duration) -> Result<(), SpoolError> {
        let mut reconnect = Reconnect::new(&self.broker);
        let mut refusals = RefusalLog::default();
        while let Some(Connected {
            connection,
            uri,
            outage,
        }) = reconnect.connect(&self.broker, &stop).await
        {
            if let Some(outage) = outage.filter(|_| !refusals.active()) {
                tracing::info!(uri = %uri, outage_secs = outage.as_secs(), spooled = self.spool.lines(),
                    "broker reachable again, draining the spool");
                Metrics::add(&self.metrics.reconnects, 1);
            }
            self.status.broker.connected(&uri);
            let end = self
                .session(&connection, &uri, &stop, drain, &mut reconnect)
                .await;
            self.status.broker.disconnected();
            amqp::close(&connection, &self.broker, "logship-agent closing").await;
            match end {
                Ok(()) => break,
                Err(PublishError::Spool(err)) => return Err(err),
                Err(err) if let Some(refused) = err.refused() => {
                    refusals.refused(&uri, &refused);
                    reconnect.lost();
                }
                Err(err) => {
                    refusals.other();
                    tracing::warn!(uri = %uri, error = %err, spooled = self.spool.lines(),
                        "connection to broker lost, spooling");
                    reconnect.lost();
                }
            }
        }
        self.cursor.save()
    }

    /// One connection: publish from the spool's head, keep a window in flight, remove what is
    /// confirmed. `Ok` once stopped and drained (or the drain deadline passed).
    async fn session(
        &mut self,
        connection: &Connection,
        uri: &BrokerUri,
        stop: &CancellationToken,
        drain: Duration,
        reconnect: &mut Reconnect,
    ) -> Result<(), PublishError> {
        self.silence = Silence::of(connection, reconnect.socket());
        let channel = self.open_channel(connection).await?;
        self.user_id = user_of(uri);
        let listener = self.watch_events(connection);
        reconnect.established();
        let heartbeat_secs = self.silence.limit().map_or(0, |limit| limit.as_secs());
        tracing::info!(uri = %uri, exchange = %self.broker.exchange, spooled = self.spool.lines(),
            heartbeat_secs, "publishing");
        let result = self.publish_on(connection, channel, stop, drain).await;
        listener.abort();
        // A failure notice of this connection must not end the next one's session.
        let _ = tokio::time::timeout(Duration::ZERO, self.lost.notified()).await;
        result
    }

    /// A channel in confirm mode, with the exchange declared; each step waited for while the
    /// broker is heard from.
    async fn open_channel(&self, connection: &Connection) -> Result<Channel, PublishError> {
        let slow = self.broker.connect_timeout;
        let opening = connection.create_channel();
        let channel = self.silence.wait("channel open", slow, opening).await?;
        let confirms = channel.confirm_select(ConfirmSelectOptions::default());
        self.silence.wait("confirm select", slow, confirms).await?;
        let declared = amqp::declare_exchange(&channel, &self.broker);
        self.silence
            .wait("exchange declare", slow, declared)
            .await
            .map_err(|err| match Refused::during(&err, Op::Declare) {
                Some(refused) => PublishError::Refused(refused),
                None => err.into(),
            })?;
        Ok(channel)
    }

    /// Publishes on `channel`, and goes on on a new channel of `connection` each time the
    /// broker nacks (see the module's invariants). `Ok` once stopped and drained.
    async fn publish_on(
        &mut self,
        connection: &Connection,
        mut channel: Channel,
        stop: &CancellationToken,
        drain: Duration,
    ) -> Result<(), PublishError> {
        loop {
            match self.publish_loop(&channel, stop, drain).await? {
                ChannelEnd::Stopped => return Ok(()),
                ChannelEnd::Nacked => {
                    // Nothing is in flight on it: every confirm of its window has come in.
                    let closing = channel.close(200, "publishes nacked".into());
                    let _ =
                        amqp::within("channel close", self.broker.connect_timeout, closing).await;
                    channel = self.open_channel(connection).await?;
                    tracing::debug!("publishing on a new channel after a nack");
                }
            }
        }
    }

    /// Publishes on `channel` until stopped and drained, or until the broker nacks a publish
    /// (then with nothing left in flight).
    async fn publish_loop(
        &mut self,
        channel: &Channel,
        stop: &CancellationToken,
        drain: Duration,
    ) -> Result<ChannelEnd, PublishError> {
        let mut window = ConfirmWindow::new();
        let mut drain_until: Option<Instant> = None;
        self.cursor.rewind();
        loop {
            if drain_until.is_none() && stop.is_cancelled() {
                drain_until = Some(Instant::now() + drain);
            }
            if drain_until.is_none() && window.wants_more() {
                self.fill(channel, &mut window).await?;
            }
            let Some(confirm) = window.oldest() else {
                if drain_until.is_some() {
                    return Ok(ChannelEnd::Stopped);
                }
                tokio::select! {
                    // cancel-safe: a Notify permit is kept until taken
                    _ = self.spool.appended.notified() => continue,
                    // cancel-safe: only observes the token
                    _ = stop.cancelled() => return Ok(ChannelEnd::Stopped),
                    // cancel-safe: a Notify permit is kept until taken
                    _ = self.lost.notified() => return Err(PublishError::Lost),
                }
            };
            // Most confirms are in by the time the loop comes back for them: take those
            // without a timer.
            let ready = futures_util::FutureExt::now_or_never(&mut *confirm);
            let outcome = match ready {
                Some(result) => Some(result),
                // Not `lost`: lapin's error event also reports a channel the broker closed with
                // a refusal, whose reason the confirm carries. A failed connection rejects its
                // confirms, and its socket is then gone (`silence`).
                None => tokio::select! {
                biased;
                // cancel-safe: the confirm stays in the window and is awaited again
                result = confirm => Some(result),
                // cancel-safe: a sleep
                _ = sleep_until(drain_until), if drain_until.is_some() => None,
                // cancel-safe: only looks at the socket
                err = self.silence.broke() => return Err(err.into()),
                // cancel-safe: only observes the token; the loop then switches to draining
                _ = stop.cancelled(), if drain_until.is_none() => continue,
                },
            };
            let Some(result) = outcome else {
                tracing::warn!(
                    unconfirmed = window.len(),
                    "shutdown deadline passed; unconfirmed lines stay spooled"
                );
                return Ok(ChannelEnd::Stopped);
            };
            let Some(InFlight { seq, line, .. }) = window.pop() else {
                continue;
            };
            let settled = self.settle(seq, line, result?)?;
            if settled != Settled::Delivered
                && self.retry_later(settled, &mut window, stop).await?
                && !stop.is_cancelled()
            {
                return Ok(ChannelEnd::Nacked);
            }
        }
    }

    /// After a publish that was not delivered (`settled`): lets the rest of the window settle,
    /// rewinds to the first line not confirmed, and waits (less if `stop`): [`RETRY_DELAY`]
    /// after a return, the next step of the nack backoff after a nack. `true` if the broker
    /// nacked that publish or one after it: the channel is then replaced.
    async fn retry_later(
        &mut self,
        settled: Settled,
        window: &mut ConfirmWindow,
        stop: &CancellationToken,
    ) -> Result<bool, PublishError> {
        let mut nacked = settled == Settled::Nacked;
        while let Some(InFlight { confirm, .. }) = window.pop() {
            let confirmation = tokio::select! {
                // cancel-safe: the loop ends with the select's other arms
                confirmation = confirm => confirmation?,
                // cancel-safe: only looks at the socket
                err = self.silence.broke() => return Err(err.into()),
            };
            nacked |= matches!(confirmation, Confirmation::Nack(_));
        }
        self.cursor.rewind();
        let delay = if nacked {
            self.nack_backoff.next_delay()
        } else {
            RETRY_DELAY
        };
        tokio::select! {
            // cancel-safe: a sleep
            _ = tokio::time::sleep(delay) => {}
            // cancel-safe: only observes the token
            _ = stop.cancelled() => {}
        }
        Ok(nacked)
    }

    /// Publishes spooled lines until the window is full or the spool is drained, in bursts:
    /// every publish of a burst is handed to the client before any is awaited, so its I/O
    /// thread writes the burst with one wake-up instead of one per line.
    async fn fill(
        &mut self,
        channel: &Channel,
        window: &mut ConfirmWindow,
    ) -> Result<(), PublishError> {
        loop {
            let burst = self.cursor.next_burst(window.room())?;
            if burst.is_empty() {
                return Ok(());
            }
            let publishes = burst.iter().map(|&(seq, line)| {
                let (id, body) = self.cursor.line(seq, line);
                amqp::publish(
                    channel,
                    &self.broker.exchange,
                    &self.routing_key,
                    id,
                    body,
                    "logship-agent",
                    Some(&self.user_id),
                )
            });
            let published = tokio::select! {
                // cancel-safe: on the other arms the session ends and the burst is resent
                published = in_order(publishes.collect()) => published,
                // cancel-safe: only looks at the socket (lapin never resolves publishes once
                // its I/O loop has ended: its socket is then gone)
                err = self.silence.broke() => return Err(err.into()),
            };
            for ((seq, line), result) in burst.into_iter().zip(published) {
                match result {
                    Ok(confirm) => {
                        window.push(seq, line, confirm);
                        Metrics::add(&self.metrics.published, 1);
                        if self.cursor.republishes(seq, line) {
                            Metrics::add(&self.metrics.republished, 1);
                        }
                    }
                    Err(err) => {
                        return Err(PublishError::closed(err, window.oldest()).await);
                    }
                }
            }
        }
    }

    /// Applies one confirm, in publish order.
    fn settle(
        &mut self,
        seq: Seq,
        line: usize,
        confirmation: Confirmation,
    ) -> Result<Settled, PublishError> {
        match confirmation {
            Confirmation::Ack(None) => {
                Metrics::add(&self.metrics.confirmed, 1);
                self.nack_backoff.reset();
                self.cursor.confirmed(seq, line)?;
                Ok(Settled::Delivered)
            }
            Confirmation::Ack(Some(_returned)) => {
                Metrics::add(&self.metrics.returned, 1);
                if let Some(returned) = self.unroutable.event() {
                    tracing::warn!(exchange = %self.broker.exchange, spooled = self.spool.lines(), returned,
                        "no queue is bound to the exchange; holding lines until a collector binds one");
                }
                Ok(Settled::Returned)
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                Metrics::add(&self.metrics.nacked, 1);
                if let Some(nacked) = self.nacks.event() {
                    tracing::warn!(exchange = %self.broker.exchange, nacked,
                        "the broker nacked publishes (it could not enqueue them); resending on a new channel");
                }
                Ok(Settled::Nacked)
            }
        }
    }

    /// Follows the connection's events: blocked/unblocked (resource alarms) and failure.
    fn watch_events(&self, connection: &Connection) -> tokio::task::JoinHandle<()> {
        let mut events = connection.events_listener();
        let lost = self.lost.clone();
        let metrics = self.metrics.clone();
        let status = self.status.clone();
        tokio::spawn(async move {
            let mut since: Option<Instant> = None;
            while let Some(event) = events.next().await {
                match event {
                    Event::ConnectionBlocked(reason) => {
                        status.broker.set_blocked(true);
                        since = Some(Instant::now());
                        tracing::warn!(
                            reason,
                            "broker blocked publishing (resource alarm); spooling"
                        );
                    }
                    Event::ConnectionUnblocked => {
                        status.broker.set_blocked(false);
                        let spell = since.take().map_or(Duration::ZERO, |s| s.elapsed());
                        Metrics::add(&metrics.blocked_ms, spell.as_millis() as u64);
                        tracing::info!(
                            blocked_secs = spell.as_secs(),
                            "broker unblocked publishing"
                        );
                    }
                    Event::Error(_) => lost.notify_one(),
                    _ => {}
                }
            }
        })
    }
}

/// Polls `futures` in their order until every one is done; their outputs, in that order. A
/// publish takes its delivery tag and queues its frames when first polled, so the first pass
/// queues the whole burst in order before the first of them is awaited.
async fn in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Sleeps until `until`; never resolves without one.
async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until.into()).await,
        None => std::future::pending().await,
    }
}

/// The user a connection to `uri` logs in as: the URI's user, or `guest` when it names none (as
/// lapin and RabbitMQ default). With `auth_mechanism=external` the broker takes the user from
/// the client certificate instead: the URI must then name that same user, or every publish is
/// refused (and said so).
pub fn user_of(uri: &BrokerUri) -> String {
    uri.uri.authority.userinfo.username.clone()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::in_order;

    #[tokio::test]
    async fn a_burst_is_started_in_order_and_answered_in_order() {
        let started = Mutex::new(Vec::new());
        let futures = (0..5usize)
            .map(|i| {
                let started = &started;
                async move {
                    started.lock().unwrap().push(i);
                    // Later ones finish first: the outputs keep the futures' order anyway.
                    for _ in 0..(5 - i) {
                        tokio::task::yield_now().await;
                    }
                    i * 10
                }
            })
            .collect();
        assert_eq!(in_order(futures).await, [0, 10, 20, 30, 40]);
        assert_eq!(*started.lock().unwrap(), [0, 1, 2, 3, 4]);
    }
}
