//! Broker settings shared by both daemons: the URIs to try in turn, the exchange, heartbeats,
//! reconnect backoff, TLS, and where the password comes from. A [`BrokerUri`] never prints its
//! password, in `Display` or in `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use amq_protocol_uri::AMQPUri;
use serde::Deserialize;

use crate::error::KeyError;
use crate::tls::{RawTls, Tls};
use crate::units::parse_duration;

/// The `[broker]` table as written. The agent refuses the collector-only keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    pub uris: Vec<String>,
    pub exchange: Option<String>,
    pub heartbeat: Option<String>,
    pub connection_name: Option<String>,
    pub connect_timeout: Option<String>,
    pub reconnect_delay: Option<String>,
    pub reconnect_max_delay: Option<String>,
    /// A file holding the password for every URI (instead of writing it in the URIs).
    pub password_file: Option<PathBuf>,
    /// `[broker.tls]`: how `amqps://` URIs verify the broker (and present a client certificate).
    pub tls: Option<RawTls>,
    /// Collector only: `classic` or `quorum`.
    pub queue_type: Option<String>,
    /// Collector only: this collector's own durable queue.
    pub queue: Option<String>,
    /// Collector only: unacknowledged deliveries in flight.
    pub prefetch: Option<u16>,
    /// Collector only: where rejected messages go; `""` disables dead-lettering.
    pub dead_letter_exchange: Option<String>,
    /// Collector only: the dead-letter queue's size cap (oldest dropped past it).
    pub dead_letter_max_bytes: Option<String>,
    /// Collector only: queues in this collector's partitioned group (default 1: one queue).
    pub partitions: Option<u32>,
    /// Collector only: the partition (0-based) this member consumes.
    pub partition: Option<u32>,
}

/// Environment variable that, when set, supplies the broker password for every URI.
pub const PASSWORD_ENV: &str = "LOGSHIP_BROKER_PASSWORD";

/// Validated broker settings.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Tried in turn on every (re)connect.
    pub uris: Vec<BrokerUri>,
    /// The durable fanout exchange lines are published to.
    pub exchange: String,
    /// Shown in the management UI, so an operator can tell which host a connection is.
    pub connection_name: String,
    /// AMQP heartbeat timeout asked of the broker (a URI's `?heartbeat=` wins for that URI): the
    /// broker sends a heartbeat every half of it, so a connection that received nothing for a
    /// whole one is dead.
    pub heartbeat: Duration,
    /// Deadline of a connect (TCP, TLS and AMQP open together) and of a close. A later step of a
    /// session slower than this is said to be slow and waited for while the broker is heard
    /// from (`logship_runtime::silence`).
    pub connect_timeout: Duration,
    /// First delay after a lost session or a failed session start; doubles up to
    /// `reconnect_max_delay`, with jitter. A node that refuses connections is retried at a
    /// short fixed interval instead (see `logship_runtime::reconnect`).
    pub reconnect_delay: Duration,
    pub reconnect_max_delay: Duration,
    /// For `amqps://` URIs.
    pub tls: Tls,
    /// A URI in the config file itself carries the password in use (no password_file or
    /// environment variable replaced it): the file must not be world-readable.
    pub password_in_config: bool,
}

/// Default exchange: the fanout every collector binds its queue to.
pub const DEFAULT_EXCHANGE: &str = "logs";

/// Default AMQP heartbeat. RabbitMQ advises 5 to 20 s; with 10 s a silent connection is noticed
/// by the daemons after 10 s without a byte (two heartbeats missed), by lapin after 20 s and by
/// the broker after two missed heartbeats, while a busy or briefly paused peer (GC, a slow disk)
/// is not mistaken for a dead one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Default deadline of a connect. A healthy broker answers in milliseconds; a connect that takes
/// longer is waiting on a node that is booting, stopping or unreachable without a refusal.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl RawBroker {
    /// Validates the settings both daemons share; `app` names the default connection.
    pub fn validate_common(&self, app: &str) -> Result<Broker, KeyError> {
        let heartbeat_interval =
            duration_or("broker.heartbeat", &self.heartbeat, DEFAULT_HEARTBEAT)?;
        let heartbeat = u16::try_from(heartbeat_interval.as_secs())
            .map_err(|_| KeyError::new("broker.heartbeat", "must be at most 65535s"))?;
        let connect_timeout = duration_or(
            "broker.connect_timeout",
            &self.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        )?;
        if connect_timeout.is_zero() {
            return Err(KeyError::new(
                "broker.connect_timeout",
                "must be above zero",
            ));
        }
        if self.uris.is_empty() {
            return Err(KeyError::new("broker.uris", "needs at least one URI"));
        }
        let password = self.password()?;
        let mut password_in_config = false;
        let uris = self
            .uris
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let mut uri = BrokerUri::parse(text, heartbeat, connect_timeout)
                    .map_err(|problem| KeyError::new(format!("broker.uris[{i}]"), problem))?;
                match &password {
                    Some(password) => uri.uri.authority.userinfo.password = password.clone(),
                    None => password_in_config |= !uri.uri.authority.userinfo.password.is_empty(),
                }
                Ok(uri)
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        let tls = Tls::load(self.tls.as_ref())?;
        let exchange = self.exchange.as_deref().unwrap_or(DEFAULT_EXCHANGE);
        check_name("broker.exchange", exchange)?;
        let reconnect_delay = duration_or(
            "broker.reconnect_delay",
            &self.reconnect_delay,
            Duration::from_millis(500),
        )?;
        let reconnect_max_delay = duration_or(
            "broker.reconnect_max_delay",
            &self.reconnect_max_delay,
            Duration::from_secs(30),
        )?;
        if reconnect_delay.is_zero() || reconnect_max_delay < reconnect_delay {
            return Err(KeyError::new(
                "broker.reconnect_max_delay",
                "must be at least broker.reconnect_delay, which must be above zero",
            ));
        }
        let connection_name = match &self.connection_name {
            Some(name) => name.clone(),
            None => format!("{app}@{}", crate::machine::hostname()),
        };
        Ok(Broker {
            uris,
            exchange: exchange.to_string(),
            connection_name,
            heartbeat: heartbeat_interval,
            connect_timeout,
            reconnect_delay,
            reconnect_max_delay,
            tls,
            password_in_config,
        })
    }

    /// The password from `password_file`, else from [`PASSWORD_ENV`], else none (the URIs').
    fn password(&self) -> Result<Option<String>, KeyError> {
        if let Some(path) = &self.password_file {
            return read_secret("broker.password_file", path).map(Some);
        }
        Ok(std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()))
    }
}

/// Checks an exchange or queue name: what RabbitMQ accepts, and not the nameless default.
pub fn check_name(key: &str, name: &str) -> Result<(), KeyError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if name.is_empty() || name.len() > 255 || !name.chars().all(ok_char) {
        return Err(KeyError::new(
            key,
            format!("invalid name \"{name}\" (1 to 255 of a-z A-Z 0-9 - _ . :)"),
        ));
    }
    if name.starts_with("amq.") {
        return Err(KeyError::new(
            key,
            format!("\"{name}\": the amq. prefix is reserved"),
        ));
    }
    Ok(())
}

/// The secret in the file `path` (key `key`): its text less a final line break; empty is an
/// error.
pub(crate) fn read_secret(key: &str, path: &std::path::Path) -> Result<String, KeyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| KeyError::new(key, format!("cannot read \"{}\": {err}", path.display())))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(KeyError::new(
            key,
            format!("\"{}\" is empty", path.display()),
        ));
    }
    Ok(secret)
}

pub(crate) fn duration_or(
    key: &str,
    value: &Option<String>,
    default: Duration,
) -> Result<Duration, KeyError> {
    match value {
        Some(text) => parse_duration(text).map_err(|problem| KeyError::new(key, problem)),
        None => Ok(default),
    }
}

/// The largest AMQP frame asked of the broker unless a URI's `?frame_max=` sets one. lapin
/// keeps 32 frames' worth of buffer each way for a connection, filled in turn as frames pass:
/// 8 MiB at RabbitMQ's default of 128 KiB, a tenth of the agent's RSS with 100k files (issue
/// 27 item 4); 2 MiB at this. A message larger than a frame goes in several (lines are
/// mostly far smaller).
pub const FRAME_MAX: u32 = 32 << 10;

/// A parsed `amqp://` or `amqps://` URI. Prints with its password masked.
#[derive(Clone)]
pub struct BrokerUri {
    /// Ready for `lapin::Connection::connect_uri`.
    pub uri: AMQPUri,
    redacted: String,
}

impl BrokerUri {
    /// Parses `text`, applying the heartbeat, the connect timeout and [`FRAME_MAX`] unless the
    /// URI sets its own.
    pub fn parse(text: &str, heartbeat: u16, connect_timeout: Duration) -> Result<Self, String> {
        let redacted = redact(text);
        if !(text.starts_with("amqp://") || text.starts_with("amqps://")) {
            return Err(format!(
                "invalid URI \"{redacted}\": the scheme must be amqp:// or amqps://"
            ));
        }
        let mut uri: AMQPUri = text
            .parse()
            .map_err(|err: String| format!("invalid URI \"{redacted}\": {}", redact(&err)))?;
        if uri.authority.host.is_empty() {
            return Err(format!("invalid URI \"{redacted}\": no host"));
        }
        uri.query.heartbeat.get_or_insert(heartbeat);
        uri.query.frame_max.get_or_insert(FRAME_MAX);
        uri.query
            .connection_timeout
            .get_or_insert(connect_timeout.as_millis().try_into().unwrap_or(u64::MAX));
        Ok(BrokerUri { uri, redacted })
    }
}

impl fmt::Display for BrokerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for BrokerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUri({})", self.redacted)
    }
}

/// Replaces the password in a URI's userinfo with `***`.
pub fn redact(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let start = scheme_end + 3;
    let end = uri[start..]
        .find(['/', '?', '#'])
        .map_or(uri.len(), |i| start + i);
    let Some(at) = uri[start..end].rfind('@') else {
        return uri.to_string();
    };
    let userinfo = &uri[start..start + at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &uri[..start],
            &userinfo[..colon],
            &uri[start + at..]
        ),
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_replaces_the_uris_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut raw: RawBroker =
            toml::from_str("uris = [\"amqp://u:old@h/%2f\", \"amqp://u@h2/%2f\"]").unwrap();
        raw.password_file = Some(file.clone());
        let broker = raw.validate_common("t").unwrap();
        assert!(
            broker
                .uris
                .iter()
                .all(|u| u.uri.authority.userinfo.password == "s3cret")
        );
        assert!(!format!("{:?}", broker).contains("s3cret"));
        raw.password_file = Some(dir.path().join("missing"));
        assert_eq!(
            raw.validate_common("t").unwrap_err().key,
            "broker.password_file"
        );
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redact("amqp://guest:s3cr@t@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("amqps://host/vh"), "amqps://host/vh");
        assert_eq!(redact("amqp://user@host"), "amqp://user@host");
        let uri =
            BrokerUri::parse("amqp://u:hunter2@h:5672/%2f", 30, Duration::from_secs(5)).unwrap();
        assert!(!format!("{uri} {uri:?}").contains("hunter2"));
    }

    #[test]
    fn bad_uris_are_refused_without_the_password() {
        let err = BrokerUri::parse("http://u:hunter2@h/", 30, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("amqp://") && !err.contains("hunter2"), "{err}");
        let err = BrokerUri::parse("amqp://u:hunter2@h:notaport/", 30, Duration::from_secs(5))
            .unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn heartbeat_and_frame_size_apply_unless_the_uri_sets_them() {
        let uri = BrokerUri::parse("amqp://h", 7, Duration::from_secs(5)).unwrap();
        assert_eq!(uri.uri.query.heartbeat, Some(7));
        assert_eq!(uri.uri.query.frame_max, Some(FRAME_MAX));
        let uri = BrokerUri::parse(
            "amqp://h?heartbeat=3&frame_max=131072",
            7,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(uri.uri.query.heartbeat, Some(3));
        assert_eq!(uri.uri.query.frame_max, Some(131072));
    }
}
