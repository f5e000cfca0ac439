//! Connecting to the broker and declaring the exchange, the same way in both daemons.

use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::broker::{Broker, BrokerUri};

/// Opens one connection to `uri`, named after this daemon and host in the management UI.
pub async fn connect(broker: &Broker, uri: &BrokerUri) -> Result<Connection, lapin::Error> {
    let properties =
        ConnectionProperties::default().with_connection_name(broker.connection_name.clone().into());
    Connection::connect_uri(uri.uri.clone(), properties).await
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
