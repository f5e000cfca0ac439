//! The publisher: drains the spool in order over one channel in confirm mode.
//!
//! Invariants:
//! - An entry leaves the spool only on a clean ack: `Ack(None)`. Nack, ack-with-returned-message
//!   (no queue bound), a confirm timeout, or a lost channel all mean "not delivered".
//! - After a failure the publisher waits for the rest of its window, then republishes from the
//!   first entry not confirmed, in spool order. Entries confirmed meanwhile are not resent.
//! - While the broker blocks the connection (resource alarm) confirms may stall without error:
//!   the publisher waits, having said so once, instead of timing out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Event, PublisherConfirm};
use logship_config::{Backoff, Broker, BrokerUri, amqp};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::spool::{Seq, Spool, SpoolError};

/// Publishes in flight without a confirm: enough to keep one broker busy, small in memory.
const WINDOW: usize = 1024;
/// A confirm that takes longer (and the connection is not blocked) means a dead connection.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait before resending what was returned (no queue bound) or nacked.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// At most one "no queue bound" warning per this interval.
const UNROUTABLE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker connection failed")]
    Broker(#[from] lapin::Error),
    #[error("no confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// The publisher task's state.
pub struct Publisher {
    broker: Broker,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    /// Set while the broker blocks our connection.
    blocked: Arc<AtomicBool>,
    unroutable_logged: Option<Instant>,
}

impl Publisher {
    /// A publisher draining `spool` to `broker`.
    pub fn new(broker: Broker, spool: Arc<Spool>, metrics: Arc<Metrics>) -> Publisher {
        Publisher {
            broker,
            spool,
            metrics,
            blocked: Arc::new(AtomicBool::new(false)),
            unroutable_logged: None,
        }
    }

    /// Connects and publishes until `stop`; then waits up to `drain` for outstanding confirms.
    /// Returns an error only if the spool fails.
    pub async fn run(mut self, stop: CancellationToken, drain: Duration) -> Result<(), SpoolError> {
        let mut backoff = Backoff::new(&self.broker);
        let mut next_uri = 0;
        let mut outage: Option<Instant> = None;
        while !stop.is_cancelled() {
            if outage.is_some() {
                let delay = backoff.next_delay();
                tokio::select! {
                    // cancel-safe: only observes the token
                    _ = stop.cancelled() => break,
                    // cancel-safe: a sleep
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            let uri = self.broker.uris[next_uri % self.broker.uris.len()].clone();
            next_uri += 1;
            let connection = tokio::select! {
                // cancel-safe: abandoning a connect in progress loses nothing
                _ = stop.cancelled() => break,
                result = amqp::connect(&self.broker, &uri) => match result {
                    Ok(connection) => connection,
                    Err(err) => {
                        if outage.is_none() {
                            tracing::warn!(uri = %uri, error = %err, spooled = self.spool.entries(), "cannot connect to broker, spooling");
                        } else {
                            tracing::debug!(uri = %uri, error = %err, "cannot connect to broker");
                        }
                        outage.get_or_insert_with(Instant::now);
                        continue;
                    }
                },
            };
            if let Some(since) = outage.take() {
                tracing::info!(uri = %uri, outage_secs = since.elapsed().as_secs(), spooled = self.spool.entries(),
                    "broker reachable again, draining the spool");
                Metrics::add(&self.metrics.reconnects, 1);
            }
            let end = self
                .session(&connection, &uri, &stop, drain, &mut backoff)
                .await;
            let _ = connection.close(200, "logship-agent closing".into()).await;
            match end {
                Ok(()) => break,
                Err(PublishError::Spool(err)) => return Err(err),
                Err(err) => {
                    tracing::warn!(uri = %uri, error = %err, spooled = self.spool.entries(),
                        "connection to broker lost, spooling");
                    outage = Some(Instant::now());
                }
            }
        }
        Ok(())
    }

    /// One connection: publish from the spool's head, keep a window in flight, remove what is
    /// confirmed. `Ok` once stopped and drained (or the drain deadline passed).
    async fn session(
        &mut self,
        connection: &Connection,
        uri: &BrokerUri,
        stop: &CancellationToken,
        drain: Duration,
        backoff: &mut Backoff,
    ) -> Result<(), PublishError> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        amqp::declare_exchange(&channel, &self.broker).await?;
        let listener = self.watch_blocked(connection);
        backoff.reset();
        tracing::info!(uri = %uri, exchange = %self.broker.exchange, spooled = self.spool.entries(), "publishing");
        let result = self.publish_loop(&channel, stop, drain).await;
        listener.abort();
        self.blocked.store(false, Ordering::Relaxed);
        result
    }

    async fn publish_loop(
        &mut self,
        channel: &Channel,
        stop: &CancellationToken,
        drain: Duration,
    ) -> Result<(), PublishError> {
        let mut inflight: VecDeque<(Seq, PublisherConfirm)> = VecDeque::with_capacity(WINDOW);
        let mut cursor: Seq = 0;
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_none() && stop.is_cancelled() {
                drain_until = Some(Instant::now() + drain);
            }
            if drain_until.is_none() {
                self.fill(channel, &mut inflight, &mut cursor).await?;
            }
            let Some((seq, confirm)) = inflight.front_mut() else {
                if drain_until.is_some() {
                    return Ok(());
                }
                tokio::select! {
                    // cancel-safe: a Notify permit is kept until taken
                    _ = self.spool.appended.notified() => continue,
                    // cancel-safe: only observes the token
                    _ = stop.cancelled() => return Ok(()),
                }
            };
            let seq = *seq;
            let wait = match drain_until {
                Some(until) => until.saturating_duration_since(Instant::now()),
                None => CONFIRM_TIMEOUT,
            };
            let outcome = tokio::select! {
                biased;
                // cancel-safe: the confirm stays in the window and is awaited again
                result = confirm => Some(result),
                // cancel-safe: a sleep
                _ = tokio::time::sleep(wait) => None,
                // cancel-safe: only observes the token; the loop then switches to draining
                _ = stop.cancelled(), if drain_until.is_none() => continue,
            };
            let Some(result) = outcome else {
                if drain_until.is_some() {
                    tracing::warn!(
                        unconfirmed = inflight.len(),
                        "shutdown deadline passed; unconfirmed lines stay spooled"
                    );
                    return Ok(());
                }
                if self.blocked.load(Ordering::Relaxed) {
                    continue;
                }
                return Err(PublishError::ConfirmTimeout(CONFIRM_TIMEOUT));
            };
            inflight.pop_front();
            if !self.settle(seq, result?)? {
                // Let the rest of the window settle, then resend from the first failure.
                while let Some((seq, confirm)) = inflight.pop_front() {
                    let result = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
                        .await
                        .map_err(|_| PublishError::ConfirmTimeout(CONFIRM_TIMEOUT))??;
                    self.settle(seq, result)?;
                }
                cursor = seq;
                tokio::select! {
                    // cancel-safe: a sleep
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                    // cancel-safe: only observes the token
                    _ = stop.cancelled() => {}
                }
            }
        }
    }

    /// Publishes spooled entries from `cursor` on until the window is full.
    async fn fill(
        &self,
        channel: &Channel,
        inflight: &mut VecDeque<(Seq, PublisherConfirm)>,
        cursor: &mut Seq,
    ) -> Result<(), PublishError> {
        while inflight.len() < WINDOW {
            let page = self.spool.page(*cursor, WINDOW - inflight.len())?;
            if page.is_empty() {
                break;
            }
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for entry in page {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(entry.id.into())
                    .with_timestamp(timestamp)
                    .with_app_id("logship-agent".into());
                let confirm = channel
                    .basic_publish(
                        self.broker.exchange.as_str().into(),
                        "".into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &entry.body,
                        properties,
                    )
                    .await?;
                *cursor = entry.seq + 1;
                inflight.push_back((entry.seq, confirm));
                Metrics::add(&self.metrics.published, 1);
            }
        }
        Ok(())
    }

    /// Applies one confirm; `true` if delivered (and removed from the spool).
    fn settle(&mut self, seq: Seq, confirmation: Confirmation) -> Result<bool, PublishError> {
        match confirmation {
            Confirmation::Ack(None) => {
                self.spool.remove(seq)?;
                Metrics::add(&self.metrics.confirmed, 1);
                Ok(true)
            }
            Confirmation::Ack(Some(_returned)) => {
                Metrics::add(&self.metrics.returned, 1);
                let due = self
                    .unroutable_logged
                    .is_none_or(|at| at.elapsed() >= UNROUTABLE_LOG_INTERVAL);
                if due {
                    tracing::warn!(exchange = %self.broker.exchange, spooled = self.spool.entries(),
                        "no queue is bound to the exchange; holding lines until a collector binds one");
                    self.unroutable_logged = Some(Instant::now());
                }
                Ok(false)
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                Metrics::add(&self.metrics.nacked, 1);
                Ok(false)
            }
        }
    }

    /// Follows the connection's blocked/unblocked events (resource alarms).
    fn watch_blocked(&self, connection: &Connection) -> tokio::task::JoinHandle<()> {
        let mut events = connection.events_listener();
        let blocked = self.blocked.clone();
        tokio::spawn(async move {
            let mut since: Option<Instant> = None;
            while let Some(event) = events.next().await {
                match event {
                    Event::ConnectionBlocked(reason) => {
                        blocked.store(true, Ordering::Relaxed);
                        since = Some(Instant::now());
                        tracing::warn!(
                            reason,
                            "broker blocked publishing (resource alarm); spooling"
                        );
                    }
                    Event::ConnectionUnblocked => {
                        blocked.store(false, Ordering::Relaxed);
                        let secs = since.take().map_or(0, |s| s.elapsed().as_secs());
                        tracing::info!(blocked_secs = secs, "broker unblocked publishing");
                    }
                    _ => {}
                }
            }
        })
    }
}
