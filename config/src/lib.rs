//! The configuration of logship-agent and logship-collector, and nothing else: TOML files
//! parsed into `Raw*` structs (unknown keys refused) and validated into typed configs, every
//! error naming the file and the dotted key. No broker client, no runtime: the daemons' shared
//! runtime is `logship-runtime`.
//!
//! - [`load`]: reading and validating a file.
//! - [`agent`], [`collector`]: each daemon's settings.
//! - [`layout`]: the collector's `output.layout` template.
//! - [`archive`]: the collector's compression, retention, intake bound and audit settings.
//! - [`upload`]: the collector's `[upload]` table (its archive on an S3-compatible store).
//! - [`security`]: the collector's `[security]` table (which hosts a broker user may write).
//! - [`broker`], [`tls`], [`partition`]: broker settings shared by both daemons; URIs never
//!   print their password.
//! - [`metrics`], [`units`], [`machine`]: the `[metrics]` table, sizes and durations, and the
//!   checks of this machine (hostname, writable directories, the state version).

pub mod agent;
pub mod archive;
pub mod broker;
pub mod collector;
pub mod error;
pub mod layout;
pub mod load;
pub mod machine;
pub mod metrics;
pub mod partition;
pub mod security;
pub mod tls;
pub mod units;
pub mod upload;

pub use agent::AgentConfig;
pub use broker::{Broker, BrokerUri};
pub use collector::CollectorConfig;
pub use error::ConfigError;
