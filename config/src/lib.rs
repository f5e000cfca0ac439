//! What logship-agent and logship-collector agree on.
//!
//! - [`load`]: TOML config files, parsed into `Raw*` structs (unknown keys refused) and then
//!   validated into typed configs. Every error names the file and the dotted key.
//! - [`broker`]: broker settings shared by both daemons; URIs never print their password.
//! - [`partition`]: partitioned collector groups and the broker names they derive.
//! - [`envelope`]: the wire format of one line, and its message id.
//! - [`amqp`], [`signals`]: how both daemons connect, declare the exchange, and react to signals.
//!
//! The invariant both daemons rely on: the message id of a line is a pure function of where the
//! line came from (host, file identity, generation, byte offset), so a line sent twice is
//! recognisable as the same line.

pub mod access;
pub mod agent;
pub mod amqp;
pub mod broker;
pub mod cli;
pub mod collector;
pub mod envelope;
pub mod error;
pub mod http;
pub mod load;
pub mod partition;
pub mod security;
pub mod signals;
pub mod systemd;
pub mod tls;
pub mod units;

pub use agent::AgentConfig;
pub use broker::{Backoff, Broker, BrokerUri};
pub use collector::CollectorConfig;
pub use envelope::{Envelope, EnvelopeError, EnvelopeRef, FileId};
pub use error::ConfigError;
