//! Connecting to the broker and declaring the exchange, the same way in both daemons.

use lapin::options::ExchangeDeclareOptions;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::broker::{Broker, BrokerUri};

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
