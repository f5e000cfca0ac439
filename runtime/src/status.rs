//! `GET /status`: what a daemon says about itself, as JSON; how to fetch the page from
//! `metrics.listen` and show it as a short table (the `status` subcommand, in `cli.rs`).
//!
//! The JSON field names are a contract (operators' scripts and acceptance tests read them):
//! fields are only ever added. URIs in it are masked (`BrokerUri`'s `Display`): the page never
//! shows a password.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use logship_config::BrokerUri;

/// How long `status` waits to connect, and then for the whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The broker connection as a daemon sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerStatus {
    /// The URI of the open connection, password masked; `None` while disconnected.
    pub uri: Option<String>,
    /// Whether a connection is open.
    pub connected: bool,
    /// Whether the broker blocks publishing (a resource alarm); the agent only.
    pub blocked: bool,
}

/// The live broker state a publisher or consumer keeps up to date and `/status` reads.
#[derive(Debug, Default)]
pub struct BrokerState {
    uri: Mutex<Option<String>>,
    blocked: AtomicBool,
}

impl BrokerState {
    /// A connection to `uri` is open (kept masked).
    pub fn connected(&self, uri: &BrokerUri) {
        if let Ok(mut current) = self.uri.lock() {
            *current = Some(uri.to_string());
        }
    }

    /// The connection is gone.
    pub fn disconnected(&self) {
        if let Ok(mut current) = self.uri.lock() {
            *current = None;
        }
        self.blocked.store(false, Ordering::Relaxed);
    }

    /// The broker blocked (`true`) or unblocked publishing.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    /// What `/status` shows.
    pub fn snapshot(&self) -> BrokerStatus {
        let uri = self.uri.lock().ok().and_then(|uri| uri.clone());
        BrokerStatus {
            connected: uri.is_some(),
            uri,
            blocked: self.blocked.load(Ordering::Relaxed),
        }
    }
}

/// One watched file of the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileStatus {
    /// The path it was found under (a draining file keeps its old name).
    pub path: String,
    /// `waiting` (behind an older file of its path), `active`, `copy` (reading the
    /// copytruncate copy) or `draining` (rotated away or deleted).
    pub state: String,
    /// Bytes read so far (the next byte to read) in this generation.
    pub offset: u64,
    /// The file's size now.
    pub size: u64,
    /// Truncations seen (copytruncate): part of every line's message id.
    pub generation: u64,
    /// The source its lines are shipped as when it is a container's log (`docker/<name>`,
    /// `pods/<namespace>/<pod>/<container>/<restart>.log`); absent for a plain file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One journal input of the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournalStatus {
    /// Its table in the config (`inputs[N]`).
    pub input: String,
    /// Its directory; `None`: the system journal.
    pub directory: Option<String>,
    /// Its unit filter; empty: every entry.
    pub units: Vec<String>,
    /// Whether a journalctl child is reading now.
    pub reading: bool,
    /// The cursor of the last entry spooled: where reading resumes after a restart.
    pub cursor: Option<String>,
    /// Entries spooled since the agent started.
    pub entries: u64,
    /// How old the last entry spooled was when it was spooled.
    pub lag_seconds: f64,
}

/// The agent's spool.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SpoolStatus {
    /// Lines not confirmed yet.
    pub lines: u64,
    /// Bytes of their segments.
    pub bytes: u64,
    /// Age of the oldest unconfirmed line (its segment's write time); `None`: empty.
    pub oldest_seconds: Option<f64>,
}

/// `GET /status` of logship-agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    /// The agent's version.
    pub version: String,
    /// The `host` its lines carry.
    pub host: String,
    /// Bytes in watched files not yet read (size minus offset, summed).
    pub lag_bytes: u64,
    /// Every open file, oldest first.
    pub files: Vec<FileStatus>,
    /// Containers followed: distinct container sources among `files`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub containers: u64,
    /// Every journal input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journals: Vec<JournalStatus>,
    /// What waits for the broker's confirm.
    pub spool: SpoolStatus,
    /// The publisher's connection.
    pub broker: BrokerStatus,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `GET /status` of logship-collector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectorStatus {
    /// The collector's version.
    pub version: String,
    /// The queue this collector consumes (its partition's, in a group).
    pub queue: String,
    /// Whether a consumer is registered on it now.
    pub consuming: bool,
    /// Whether that consumer stands by behind another consumer of the queue (the queue's single
    /// active consumer), taking over when it goes.
    #[serde(default)]
    pub standby: bool,
    /// The consumer's connection.
    pub broker: BrokerStatus,
    /// Output files open now.
    pub open_files: u64,
    /// Source hosts whose last committed line is remembered.
    pub hosts: u64,
    /// Every counter of `/metrics`, by metric name, in its shown unit.
    pub counters: BTreeMap<String, f64>,
    /// Holes between committed ranges open longer than `audit.gap_after`: pieces of sources
    /// that never arrived.
    #[serde(default)]
    pub gaps: Vec<Gap>,
}

/// A hole between two committed ranges of a source: on `/status`, and in the audit record the
/// collector keeps for `logship-collector audit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gap {
    pub host: String,
    pub path: String,
    /// The source (file identity and generation) as the collector keys it, in hex.
    pub source: String,
    /// `"bytes"`, or `"sequence numbers"` for sources whose offsets are not byte positions.
    pub unit: String,
    /// The missing range, `[start, end)`.
    pub start: u64,
    pub end: u64,
    /// Since when it has been open (unix milliseconds).
    pub since_ms: i64,
}

impl AgentStatus {
    /// The short table `logship-agent status` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "logship-agent {} on {}", self.version, self.host);
        let _ = writeln!(out, "broker  {}", broker_line(&self.broker));
        let oldest = self
            .spool
            .oldest_seconds
            .map_or("-".to_string(), |secs| format!("{secs:.1}s"));
        let _ = writeln!(
            out,
            "spool   {} lines, {}, oldest {oldest}",
            self.spool.lines,
            size(self.spool.bytes)
        );
        let _ = writeln!(
            out,
            "lag     {} unread in {} files\n",
            size(self.lag_bytes),
            self.files.len()
        );
        let _ = writeln!(
            out,
            "{:<9} {:>12} {:>12} {:>4}  PATH",
            "STATE", "OFFSET", "SIZE", "GEN"
        );
        for file in &self.files {
            let source = file
                .source
                .as_deref()
                .map_or(String::new(), |s| format!("  ({s})"));
            let _ = writeln!(
                out,
                "{:<9} {:>12} {:>12} {:>4}  {}{source}",
                file.state, file.offset, file.size, file.generation, file.path
            );
        }
        if self.containers > 0 {
            let _ = writeln!(
                out,
                "
containers followed: {}",
                self.containers
            );
        }
        for journal in &self.journals {
            let _ = writeln!(
                out,
                "\njournal {} {} units {}: {} entries, lag {:.1}s, {}\n  cursor {}",
                journal.input,
                journal.directory.as_deref().unwrap_or("(system journal)"),
                if journal.units.is_empty() {
                    "(all)".to_string()
                } else {
                    journal.units.join(",")
                },
                journal.entries,
                journal.lag_seconds,
                if journal.reading {
                    "reading"
                } else {
                    "not reading"
                },
                journal.cursor.as_deref().unwrap_or("-"),
            );
        }
        out
    }
}

impl CollectorStatus {
    /// The short table `logship-collector status` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "logship-collector {}", self.version);
        let consuming = if self.consuming && self.standby {
            "standing by behind another consumer"
        } else if self.consuming {
            "consuming"
        } else {
            "not consuming"
        };
        let _ = writeln!(out, "queue       {} ({consuming})", self.queue);
        let _ = writeln!(out, "broker      {}", broker_line(&self.broker));
        let _ = writeln!(out, "open files  {}", self.open_files);
        let _ = writeln!(out, "hosts       {}", self.hosts);
        let _ = writeln!(out, "gaps        {}\n", self.gaps.len());
        for (name, value) in &self.counters {
            let short = name.strip_prefix("logship_collector_").unwrap_or(name);
            let _ = writeln!(out, "{short:<24} {value}");
        }
        out
    }
}

fn broker_line(broker: &BrokerStatus) -> String {
    match (&broker.uri, broker.blocked) {
        (Some(uri), false) => format!("{uri} (connected)"),
        (Some(uri), true) => format!("{uri} (connected, BLOCKED by the broker)"),
        (None, _) => "not connected".to_string(),
    }
}

/// `12.3 KiB`: a size for people.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Why `status` could not show the page.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no answer from the daemon at {addr} (is it running?)")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon at {addr} answered {what}")]
    Answer { addr: SocketAddr, what: String },
}

/// Fetches `GET /status` from `addr`; the body on a 200.
pub fn fetch(addr: SocketAddr) -> Result<String, StatusError> {
    let io = |source| StatusError::Connect { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    stream
        .write_all(b"GET /status HTTP/1.0\r\nConnection: close\r\n\r\n")
        .map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.1 200") && !status_line.starts_with("HTTP/1.0 200") {
        return Err(StatusError::Answer {
            addr,
            what: format!("\"{status_line}\" to GET /status (an older version?)"),
        });
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn the_agent_table_names_every_file_and_masks_nothing_itself() {
        let status = AgentStatus {
            version: "1".into(),
            host: "web-1".into(),
            lag_bytes: 10,
            files: vec![
                FileStatus {
                    path: "/var/log/a.log".into(),
                    state: "active".into(),
                    offset: 5,
                    size: 15,
                    generation: 0,
                    source: None,
                },
                FileStatus {
                    path: "/var/log/pods/shop_web_1/nginx/0.log".into(),
                    state: "active".into(),
                    offset: 5,
                    size: 5,
                    generation: 0,
                    source: Some("pods/shop/web/nginx/0.log".into()),
                },
            ],
            containers: 1,
            journals: vec![JournalStatus {
                input: "inputs[1]".into(),
                directory: None,
                units: vec!["nginx.service".into()],
                reading: true,
                cursor: Some("s=1;i=2".into()),
                entries: 3,
                lag_seconds: 0.5,
            }],
            spool: SpoolStatus::default(),
            broker: BrokerStatus::default(),
        };
        let json = serde_json::to_string(&status).unwrap();
        let back: AgentStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, status);
        let table = status.table();
        assert!(table.contains("/var/log/a.log"), "{table}");
        assert!(table.contains("(pods/shop/web/nginx/0.log)"), "{table}");
        assert!(table.contains("containers followed: 1"), "{table}");
        assert!(table.contains("nginx.service: 3 entries"), "{table}");
        assert!(table.contains("not connected"), "{table}");
    }

    #[test]
    fn the_status_page_shows_the_broker_uri_without_its_password() {
        let uri = BrokerUri::parse("amqp://u:hunter2@h:5672/%2f", 30, Duration::from_secs(5))
            .expect("a valid URI");
        let state = BrokerState::default();
        state.connected(&uri);
        let status = AgentStatus {
            version: "1".into(),
            host: "web-1".into(),
            lag_bytes: 0,
            files: Vec::new(),
            containers: 0,
            journals: Vec::new(),
            spool: SpoolStatus::default(),
            broker: state.snapshot(),
        };
        let json = serde_json::to_string(&status).unwrap();
        let table = status.table();
        assert!(json.contains("amqp://u:***@h:5672"), "{json}");
        assert!(
            table.contains("amqp://u:***@h:5672/%2f (connected)"),
            "{table}"
        );
        assert!(
            !json.contains("hunter2") && !table.contains("hunter2"),
            "{json}\n{table}"
        );
    }
}
