//! `agent.toml`: what an agent tails and where it spools. The tailer itself comes with the agent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::broker::{Broker, RawBroker, duration_or};
use crate::error::KeyError;
use crate::load::Validate;
use crate::machine::{check_state_version, ensure_readable_dir, ensure_writable_dir, hostname};
use crate::units::parse_size;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentConfig {
    pub host: Option<String>,
    pub state_dir: PathBuf,
    pub shutdown_timeout: Option<String>,
    pub watch: Option<WatchMode>,
    /// Watched files kept open at most (idle ones are closed and reopened); default: what the
    /// open-file limit leaves after the agent's own descriptors.
    pub max_open_files: Option<u64>,
    pub broker: RawBroker,
    #[serde(default)]
    pub buffer: RawBuffer,
    pub inputs: Vec<RawInput>,
    /// Fields added to every input's lines (an input's own win).
    #[serde(default)]
    pub host_fields: BTreeMap<String, String>,
    #[serde(default)]
    pub metrics: crate::metrics::RawMetrics,
}

/// `[buffer]`: the on-disk spool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {
    pub max_bytes: Option<String>,
    pub when_full: Option<WhenFull>,
}

/// What happens when the spool reaches `buffer.max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Stop reading files until the spool drains; nothing is lost.
    Block,
    /// Drop the oldest spooled lines, counted and logged.
    DropOldest,
}

/// How the reader learns that files changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// inotify events on the watched directories, a slow rescan as the safety net, and
    /// polling where inotify is unavailable (logged once).
    #[default]
    Inotify,
    /// Poll every file (for filesystems whose changes inotify does not see, e.g. NFS).
    Poll,
}

/// Where a file seen for the first time starts; a checkpointed file always resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    Beginning,
    End,
}

/// What an `[[inputs]]` table reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    /// Files named by globs (`paths`).
    #[default]
    File,
    /// The systemd journal (`directory`, `units`).
    Journal,
    /// Docker's json-file logs (`directory`, default `/var/lib/docker/containers`).
    Docker,
    /// Kubernetes pods' CRI logs (`directory`, default `/var/log/pods`).
    Cri,
}

/// How a file input's bytes are read: plain lines, or a container runtime's log format whose
/// entries are decoded (and pieces of a line joined) before they are shipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Each line of the file is a line (`type = "file"`).
    #[default]
    Lines,
    /// Docker's json-file driver: `{"log","stream","time"}` per line (`type = "docker"`).
    Docker,
    /// The CRI format of containerd and CRI-O: `<time> <stream> <P|F> <text>` (`type = "cri"`).
    Cri,
}

impl Format {
    /// The default directory of a container input, and the globs (below it) of its logs.
    pub fn layout(self) -> Option<(&'static str, &'static str)> {
        match self {
            Format::Lines => None,
            Format::Docker => Some(("/var/lib/docker/containers", "*/*-json.log")),
            Format::Cri => Some(("/var/log/pods", "*/*/*.log")),
        }
    }
}

/// One `[[inputs]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    #[serde(rename = "type")]
    pub kind: Option<InputType>,
    /// Globs of the files to read (`type = "file"`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// A directory of journal files, as `journalctl --directory` (`type = "journal"`); default:
    /// the local system journal. For `type = "docker"` and `"cri"`: where the runtime keeps
    /// its containers' logs.
    pub directory: Option<PathBuf>,
    /// Only entries whose `_SYSTEMD_UNIT` is one of these (`type = "journal"`); default: all.
    pub units: Option<Vec<String>>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub read_from: Option<ReadFrom>,
    pub max_line_bytes: Option<String>,
    /// Labels carried by every line of the input, in the envelope's `fields`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    pub multiline: Option<RawMultiline>,
}

/// `[inputs.multiline]`: lines joined into events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMultiline {
    /// A line matching this starts an event; other lines continue the current one.
    pub start: Option<String>,
    /// A line matching this continues the current event; other lines start one.
    #[serde(rename = "continue")]
    pub continues: Option<String>,
    pub max_lines: Option<u32>,
    pub timeout: Option<String>,
}

/// A validated agent config.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Names this machine in every envelope.
    pub host: String,
    pub state_dir: PathBuf,
    /// How long SIGTERM waits for outstanding confirms.
    pub shutdown_timeout: Duration,
    /// How the reader learns that files changed.
    pub watch: WatchMode,
    /// `max_open_files`: watched files kept open at most; `None`: as many as the open-file limit
    /// leaves (the reader caps a configured value to that too).
    pub max_open_files: Option<usize>,
    pub broker: Broker,
    pub buffer: BufferSettings,
    /// The file inputs (`type = "file"`, and the container inputs `"docker"` and `"cri"`,
    /// which are files with a format), in file order.
    pub inputs: Vec<Input>,
    /// The journal inputs (`type = "journal"`), in file order.
    pub journals: Vec<JournalInput>,
    /// Where `/metrics` and `/health` are served; `None`: not at all.
    pub metrics: Option<std::net::SocketAddr>,
}

/// The spool's cap and policy.
#[derive(Debug, Clone)]
pub struct BufferSettings {
    pub max_bytes: u64,
    pub when_full: WhenFull,
}

/// One validated input.
#[derive(Debug, Clone)]
pub struct Input {
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub read_from: ReadFrom,
    /// A longer line is split into parts of this size.
    pub max_line_bytes: u64,
    /// The input's `fields` over the config's `host_fields`.
    pub fields: BTreeMap<String, String>,
    pub multiline: Option<Multiline>,
    /// How its bytes are decoded into lines.
    pub format: Format,
}

/// One validated journal input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalInput {
    /// Its key prefix in the file (`inputs[N]`), for messages.
    pub key: String,
    /// A directory of journal files; `None`: the local system journal.
    pub directory: Option<PathBuf>,
    /// Only entries of these units (`_SYSTEMD_UNIT`), sorted, a name without a type taken as a
    /// service (`nginx` is `nginx.service`); empty: all entries.
    pub units: Vec<String>,
    /// Where the first start reads from; afterwards the saved cursor.
    pub read_from: ReadFrom,
    /// A longer `MESSAGE` is truncated to this many bytes (counted).
    pub max_line_bytes: u64,
    /// The input's `fields` over the config's `host_fields`.
    pub fields: BTreeMap<String, String>,
}

/// How lines are joined into events.
#[derive(Debug, Clone)]
pub struct Multiline {
    pub rule: MultilineRule,
    /// An event is cut after this many lines.
    pub max_lines: u32,
    /// An event with no new line for this long is shipped as it is.
    pub timeout: Duration,
}

/// Which lines belong to the current event.
#[derive(Debug, Clone)]
pub enum MultilineRule {
    /// A line matching this starts an event.
    Start(regex::bytes::Regex),
    /// A line matching this continues the current event.
    Continue(regex::bytes::Regex),
}

impl Validate for RawAgentConfig {
    type Config = AgentConfig;

    fn validate(self) -> Result<AgentConfig, KeyError> {
        for (key, set) in [
            ("broker.queue", self.broker.queue.is_some()),
            ("broker.queue_type", self.broker.queue_type.is_some()),
            ("broker.prefetch", self.broker.prefetch.is_some()),
            (
                "broker.dead_letter_exchange",
                self.broker.dead_letter_exchange.is_some(),
            ),
            ("broker.partitions", self.broker.partitions.is_some()),
            (
                "broker.dead_letter_max_bytes",
                self.broker.dead_letter_max_bytes.is_some(),
            ),
            ("broker.partition", self.broker.partition.is_some()),
        ] {
            if set {
                return Err(KeyError::new(
                    key,
                    "is a collector setting, not an agent one",
                ));
            }
        }
        let broker = self.broker.validate_common("logship-agent")?;
        let host = match self.host {
            Some(host) if host.is_empty() || host.contains(['/', '\0']) => {
                return Err(KeyError::new("host", format!("invalid host \"{host}\"")));
            }
            // The host is the routing key (an AMQP short string) and a directory name.
            Some(host) if host.len() > 255 => {
                return Err(KeyError::new("host", "longer than 255 bytes"));
            }
            Some(host) => host,
            None => hostname(),
        };
        let max_bytes = match &self.buffer.max_bytes {
            Some(text) => parse_size(text).map_err(|p| KeyError::new("buffer.max_bytes", p))?,
            None => 1 << 30,
        };
        if self.inputs.is_empty() {
            return Err(KeyError::new(
                "inputs",
                "needs at least one [[inputs]] table",
            ));
        }
        let (mut inputs, mut journals) = (Vec::new(), Vec::new());
        for (index, input) in self.inputs.into_iter().enumerate() {
            match input.kind.unwrap_or_default() {
                InputType::File => inputs.push(input.validate(index, &self.host_fields)?),
                InputType::Journal => {
                    journals.push(input.validate_journal(index, &self.host_fields)?)
                }
                InputType::Docker => inputs.push(input.validate_container(
                    index,
                    Format::Docker,
                    &self.host_fields,
                )?),
                InputType::Cri => {
                    inputs.push(input.validate_container(index, Format::Cri, &self.host_fields)?)
                }
            }
        }
        let shutdown_timeout = duration_or(
            "shutdown_timeout",
            &self.shutdown_timeout,
            Duration::from_secs(10),
        )?;
        let max_open_files = match self.max_open_files {
            Some(0) => return Err(KeyError::new("max_open_files", "must be at least 1")),
            Some(n) => Some(
                usize::try_from(n)
                    .map_err(|_| KeyError::new("max_open_files", format!("{n} is too large")))?,
            ),
            None => None,
        };
        Ok(AgentConfig {
            host,
            state_dir: self.state_dir,
            shutdown_timeout,
            watch: self.watch.unwrap_or_default(),
            max_open_files,
            broker,
            buffer: BufferSettings {
                max_bytes,
                when_full: self.buffer.when_full.unwrap_or(WhenFull::Block),
            },
            inputs,
            journals,
            metrics: self.metrics.validate()?,
        })
    }

    fn prepare(config: &AgentConfig) -> Result<(), KeyError> {
        ensure_writable_dir("state_dir", &config.state_dir)?;
        for journal in &config.journals {
            if let Some(dir) = &journal.directory {
                ensure_readable_dir(&format!("{}.directory", journal.key), dir)?;
            }
        }
        check_state_version(&config.state_dir)
    }
}

impl RawInput {
    fn validate(
        self,
        index: usize,
        host_fields: &BTreeMap<String, String>,
    ) -> Result<Input, KeyError> {
        for (key, set) in [
            ("directory", self.directory.is_some()),
            ("units", self.units.is_some()),
        ] {
            if set {
                return Err(KeyError::new(
                    format!("inputs[{index}].{key}"),
                    "is a journal setting: add type = \"journal\" or remove it",
                ));
            }
        }
        if self.paths.is_empty() {
            return Err(KeyError::new(
                format!("inputs[{index}].paths"),
                "needs at least one glob",
            ));
        }
        let max_line_bytes = max_line_bytes(&format!("inputs[{index}]"), &self.max_line_bytes)?;
        let mut fields = host_fields.clone();
        fields.extend(self.fields);
        let multiline = self
            .multiline
            .map(|raw| raw.validate(&format!("inputs[{index}].multiline")))
            .transpose()?;
        Ok(Input {
            paths: self.paths,
            exclude: self.exclude,
            read_from: self.read_from.unwrap_or(ReadFrom::Beginning),
            max_line_bytes,
            fields,
            multiline,
            format: Format::Lines,
        })
    }

    /// A container input (`type = "docker"` or `"cri"`): a file input over the runtime's
    /// directory, whose files are decoded by `format`.
    fn validate_container(
        self,
        index: usize,
        format: Format,
        host_fields: &BTreeMap<String, String>,
    ) -> Result<Input, KeyError> {
        let key = format!("inputs[{index}]");
        let name = if format == Format::Docker {
            "docker"
        } else {
            "cri"
        };
        for (setting, set) in [
            ("paths", !self.paths.is_empty()),
            ("units", self.units.is_some()),
            ("multiline", self.multiline.is_some()),
        ] {
            if set {
                return Err(KeyError::new(
                    format!("{key}.{setting}"),
                    format!("is not a setting of type = \"{name}\""),
                ));
            }
        }
        // Never the fallback: every container format has a layout.
        let (default_dir, glob) = format.layout().unwrap_or(("/", "*"));
        let directory = self.directory.unwrap_or_else(|| PathBuf::from(default_dir));
        if directory.as_os_str().is_empty() || directory.is_relative() {
            return Err(KeyError::new(
                format!("{key}.directory"),
                format!("must be an absolute path, not \"{}\"", directory.display()),
            ));
        }
        let Some(dir) = directory.to_str() else {
            return Err(KeyError::new(
                format!("{key}.directory"),
                "must be valid UTF-8",
            ));
        };
        if dir.contains(['*', '?', '[']) {
            return Err(KeyError::new(
                format!("{key}.directory"),
                format!("must not hold a glob character, not \"{dir}\""),
            ));
        }
        let max_line_bytes = max_line_bytes(&key, &self.max_line_bytes)?;
        let mut fields = host_fields.clone();
        fields.extend(self.fields);
        Ok(Input {
            paths: vec![format!("{}/{glob}", dir.trim_end_matches('/'))],
            exclude: self.exclude,
            read_from: self.read_from.unwrap_or(ReadFrom::Beginning),
            max_line_bytes,
            fields,
            multiline: None,
            format,
        })
    }
}

impl RawInput {
    fn validate_journal(
        self,
        index: usize,
        host_fields: &BTreeMap<String, String>,
    ) -> Result<JournalInput, KeyError> {
        let key = format!("inputs[{index}]");
        for (name, set) in [
            ("paths", !self.paths.is_empty()),
            ("exclude", !self.exclude.is_empty()),
            ("multiline", self.multiline.is_some()),
        ] {
            if set {
                return Err(KeyError::new(
                    format!("{key}.{name}"),
                    "is a file setting, not one of type = \"journal\"",
                ));
            }
        }
        if let Some(dir) = &self.directory
            && (dir.as_os_str().is_empty() || dir.is_relative())
        {
            return Err(KeyError::new(
                format!("{key}.directory"),
                format!("must be an absolute path, not \"{}\"", dir.display()),
            ));
        }
        let mut units = self.units.unwrap_or_default();
        if let Some((i, unit)) = units
            .iter()
            .enumerate()
            .find(|(_, u)| u.is_empty() || u.contains(['=', '\n', '\0']) || u.trim() != *u)
        {
            return Err(KeyError::new(
                format!("{key}.units[{i}]"),
                format!("invalid unit name \"{}\"", unit.escape_default()),
            ));
        }
        // As systemctl and journalctl -u do: a name without a type is a service.
        for unit in &mut units {
            if !unit.contains('.') {
                unit.push_str(".service");
            }
        }
        units.sort();
        units.dedup();
        let max_line_bytes = max_line_bytes(&key, &self.max_line_bytes)?;
        let mut fields = host_fields.clone();
        fields.extend(self.fields);
        Ok(JournalInput {
            key,
            directory: self.directory,
            units,
            read_from: self.read_from.unwrap_or(ReadFrom::Beginning),
            max_line_bytes,
            fields,
        })
    }
}

/// An input's `max_line_bytes` (default 1 MiB, never 0); errors name `<input>.max_line_bytes`.
fn max_line_bytes(input: &str, raw: &Option<String>) -> Result<u64, KeyError> {
    let key = || format!("{input}.max_line_bytes");
    let bytes = match raw {
        Some(text) => parse_size(text).map_err(|p| KeyError::new(key(), p))?,
        None => 1 << 20,
    };
    if bytes == 0 {
        return Err(KeyError::new(key(), "must be above zero"));
    }
    Ok(bytes)
}

impl RawMultiline {
    fn validate(self, key: &str) -> Result<Multiline, KeyError> {
        let compile = |name: &str, pattern: &str| {
            regex::bytes::Regex::new(pattern).map_err(|err| {
                let reason = err.to_string();
                let reason = reason
                    .lines()
                    .last()
                    .unwrap_or("invalid")
                    .trim()
                    .to_string();
                KeyError::new(
                    format!("{key}.{name}"),
                    format!("invalid regex \"{pattern}\": {reason}"),
                )
            })
        };
        let rule = match (&self.start, &self.continues) {
            (Some(start), None) => MultilineRule::Start(compile("start", start)?),
            (None, Some(continues)) => MultilineRule::Continue(compile("continue", continues)?),
            _ => {
                return Err(KeyError::new(
                    key,
                    "needs exactly one of start and continue",
                ));
            }
        };
        let max_lines = self.max_lines.unwrap_or(500);
        if max_lines == 0 {
            return Err(KeyError::new(
                format!("{key}.max_lines"),
                "must be above zero",
            ));
        }
        let timeout = duration_or(
            &format!("{key}.timeout"),
            &self.timeout,
            Duration::from_secs(1),
        )?;
        Ok(Multiline {
            rule,
            max_lines,
            timeout,
        })
    }
}
