//! Connecting to the broker and declaring the exchange, the same way in both daemons.

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm,
};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use logship_config::{Broker, BrokerUri};

use crate::backoff::Backoff;

/// Opens one connection to `uri`, named after this daemon and host in the management UI; an
/// `amqps://` URI verifies the broker with the system roots plus `broker.tls.ca_file`.
pub async fn connect(broker: &Broker, uri: &BrokerUri) -> Result<Connection, lapin::Error> {
    let properties =
        ConnectionProperties::default().with_connection_name(broker.connection_name.clone().into());
    let tls = OwnedTLSConfig {
        identity: broker
            .tls
            .client
            .as_ref()
            .map(|(pem, key)| OwnedIdentity::PKCS8 {
                pem: pem.clone(),
                key: key.clone(),
            }),
        cert_chain: broker.tls.ca_pem.clone(),
    };
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connect_uri_with_config(uri.uri.clone(), properties, tls, runtime).await
}

/// Publishes one line as every logship publisher does: persistent (`delivery_mode` 2), JSON,
/// with its message id, the time of publishing (seconds) and the publisher's `app_id`, and
/// `mandatory`, so a line no queue takes comes back (as an ack carrying the returned message)
/// instead of vanishing. `user_id`, when given, must be the user the connection logged in as:
/// the broker refuses any other (validated user-id), so a collector can trust it. Resolves once
/// the frames are written; the confirm follows.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    message_id: &str,
    body: &[u8],
    app_id: &str,
    user_id: Option<&str>,
) -> Result<PublisherConfirm, lapin::Error> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into())
        .with_timestamp(timestamp)
        .with_app_id(app_id.into());
    let properties = match user_id {
        Some(user) => properties.with_user_id(user.into()),
        None => properties,
    };
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties,
        )
        .await
}

/// Declares the durable fanout exchange lines are published to. Both daemons do it, so either
/// may start first.
pub async fn declare_exchange(channel: &Channel, broker: &Broker) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            broker.exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
}

/// Options for a durable exchange.
pub fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// The reconnect policy both daemons share: the URIs in turn, a backoff delay (exponential, with
/// jitter) between attempts after a failure, one warning per outage.
pub struct Reconnect {
    backoff: Backoff,
    next_uri: usize,
    /// Since when the broker is unreachable (or the last session was lost).
    outage: Option<Instant>,
}

/// A connection, the URI it went to, and how long the outage before it lasted (if any).
pub type Connected = (Connection, BrokerUri, Option<Duration>);

impl Reconnect {
    /// A policy for `broker`'s URIs and delays.
    pub fn new(broker: &Broker) -> Reconnect {
        Reconnect {
            backoff: Backoff::new(broker),
            next_uri: 0,
            outage: None,
        }
    }

    /// Connects to the next URI, after a backoff delay when the last attempt or session failed.
    /// Logs the first failure of an outage at warn and the rest at debug. `None` once `stop` is
    /// cancelled.
    pub async fn connect(
        &mut self,
        broker: &Broker,
        stop: &CancellationToken,
    ) -> Option<Connected> {
        loop {
            if self.outage.is_some() {
                let delay = self.backoff.next_delay();
                tokio::select! {
                    // cancel-safe: only observes the token
                    _ = stop.cancelled() => return None,
                    // cancel-safe: a sleep
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            let uri = broker.uris[self.next_uri % broker.uris.len()].clone();
            self.next_uri += 1;
            let result = tokio::select! {
                // cancel-safe: abandoning a connect in progress loses nothing
                _ = stop.cancelled() => return None,
                result = connect(broker, &uri) => result,
            };
            match result {
                Ok(connection) => {
                    let outage = self.outage.take().map(|since| since.elapsed());
                    return Some((connection, uri, outage));
                }
                Err(err) => {
                    let refused = crate::access::Refused::of(&err);
                    if let Some(refused) = refused.filter(|_| self.outage.is_none()) {
                        // Credentials or vhost access, not the network: said as such.
                        tracing::warn!(uri = %uri, user = %uri.uri.authority.userinfo.username,
                            "{refused}; check the user, its password and its vhost permissions, retrying");
                    } else if self.outage.is_none() {
                        tracing::warn!(uri = %uri, error = %err, "cannot connect to broker, retrying");
                    } else {
                        tracing::debug!(uri = %uri, error = %err, "cannot connect to broker");
                    }
                    self.outage.get_or_insert_with(Instant::now);
                }
            }
        }
    }

    /// The session is up: the next failure starts with the shortest delay again.
    pub fn established(&mut self) {
        self.backoff.reset();
    }

    /// The session was lost: the next connect waits a backoff delay first.
    pub fn lost(&mut self) {
        self.outage = Some(Instant::now());
    }
}
