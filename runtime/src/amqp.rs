//! Connecting to the broker and declaring the exchange, the same way in both daemons.

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::tcp::{AMQPUriTcpExt, AsyncTcpStream, OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm,
};

use std::future::Future;
use std::os::fd::AsRawFd as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logship_config::{Broker, BrokerUri};

use crate::socket::Socket;

/// Runs one step under `deadline`: a broker that does not answer in time fails the step with a
/// `TimedOut` I/O error naming it. For opening a connection (before there is one to hear
/// heartbeats on) and closing one; a step of a session on a live connection is waited for as
/// long as the broker is heard from ([`crate::silence::Silence::wait`]).
pub async fn within<T>(
    step: &'static str,
    deadline: Duration,
    future: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, lapin::Error> {
    match tokio::time::timeout(deadline, future).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(step, deadline)),
    }
}

/// The error of a step that passed its deadline.
pub fn timed_out(step: &'static str, deadline: Duration) -> lapin::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{step}: no answer from the broker within {deadline:?}"),
    )
    .into()
}

/// Opens one connection to `uri` (TCP, TLS and AMQP open under `broker.connect_timeout`), named
/// after this daemon and host in the management UI; an `amqps://` URI verifies the broker with
/// the system roots plus `broker.tls.ca_file`.
pub async fn connect(broker: &Broker, uri: &BrokerUri) -> Result<Connection, lapin::Error> {
    connect_watched(broker, uri, &Socket::default()).await
}

/// [`connect`], and `socket` is then the new connection's.
pub async fn connect_watched(
    broker: &Broker,
    uri: &BrokerUri,
    socket: &Socket,
) -> Result<Connection, lapin::Error> {
    within(
        "connect",
        broker.connect_timeout,
        open(broker, uri, socket.clone()),
    )
    .await
}

/// Closes `connection` politely, giving up after `broker.connect_timeout`: a silent peer never
/// answers the close.
pub async fn close(connection: &Connection, broker: &Broker, reason: &str) {
    let closing = connection.close(200, reason.into());
    let _ = tokio::time::timeout(broker.connect_timeout, closing).await;
}

async fn open(
    broker: &Broker,
    uri: &BrokerUri,
    watched: Socket,
) -> Result<Connection, lapin::Error> {
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
    // What lapin's own `connect_uri_with_config` does, keeping the socket's descriptor.
    Connection::connector(
        uri.uri.clone(),
        runtime,
        async move |uri, runtime| {
            let stream =
                AMQPUriTcpExt::connect_with_config_async(&uri, tls.as_ref(), &runtime).await?;
            let socket = match &stream {
                AsyncTcpStream::Plain(plain) => Some(plain.get_ref().as_raw_fd()),
                AsyncTcpStream::Rustls(tls) => Some(tls.get_ref().0.get_ref().as_raw_fd()),
                // `AsyncTcpStream` is non-exhaustive: a transport not known here keeps the
                // default mark and is never found silent.
                _ => None,
            };
            if let Some(socket) = socket {
                watched.watch(socket);
            }
            Ok(stream)
        },
        properties,
    )
    .await
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
