//! `collector.toml`: where a collector consumes from and where it writes.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::archive::{self, Archive, RawArchive, RawAudit};
use crate::broker::{Broker, RawBroker, check_name, duration_or};
use crate::error::KeyError;
use crate::layout::Layout;
use crate::load::Validate;
use crate::machine::{check_state_version, ensure_writable_dir};
use crate::partition::{self, Partition};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollectorConfig {
    pub state_dir: PathBuf,
    pub broker: RawBroker,
    pub output: RawOutput,
    #[serde(default)]
    pub batch: RawBatch,
    #[serde(default)]
    pub dedup: RawDedup,
    #[serde(default)]
    pub metrics: crate::metrics::RawMetrics,
    #[serde(default)]
    pub security: crate::security::RawSecurity,
    #[serde(default)]
    pub audit: RawAudit,
    /// See [`crate::upload`]; absent: the archive stays on the local disk only.
    pub upload: Option<crate::upload::RawUpload>,
}

/// `[output]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub dir: PathBuf,
    pub max_open_files: Option<u64>,
    /// See [`crate::layout`]; default `{host}/{path}`.
    pub layout: Option<String>,
    /// See [`crate::archive`].
    pub compression: Option<String>,
    pub compression_level: Option<i32>,
    pub retention: Option<String>,
    pub max_line_bytes: Option<String>,
}

/// Output files kept open at most when `output.max_open_files` is not set and the open-file
/// limit allows as many (otherwise what it leaves, see the collector's `sink::budget`): more
/// than the sources a collector of one fleet writes to at once, so a batch that touches 400
/// files reopens none of them, yet far below the packaged `LimitNOFILE=65536`.
pub const DEFAULT_MAX_OPEN_FILES: usize = 4096;

/// `[batch]`: when a batch is written, fsync'd, committed and acked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    pub max_messages: Option<u32>,
    pub max_delay: Option<String>,
}

/// `[dedup]`: how long message ids are remembered.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDedup {
    pub max_ids: Option<u64>,
    pub max_age: Option<String>,
}

/// A validated collector config.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// sled: seen ids and committed file lengths. Checked writable.
    pub state_dir: PathBuf,
    pub broker: Broker,
    pub queue: QueueSettings,
    /// Lines go to `<dir>/<layout>`. Checked writable.
    pub output_dir: PathBuf,
    /// `output.layout`: where under `output_dir` a line goes.
    pub layout: Layout,
    /// `output.max_open_files`: output files kept open at most (least recently used ones are
    /// closed once their bytes are committed); `None`: as many as the open-file limit leaves,
    /// at most [`DEFAULT_MAX_OPEN_FILES`].
    pub max_open_files: Option<usize>,
    pub batch: BatchSettings,
    pub dedup: DedupSettings,
    /// Where `/metrics` and `/health` are served; `None`: not at all.
    pub metrics: Option<std::net::SocketAddr>,
    /// `[security]`: which hosts a broker user may write lines for.
    pub security: crate::security::Security,
    /// Compression, retention, the intake bound and the audit (see [`crate::archive`]).
    pub archive: Archive,
    /// `[upload]`: the archive uploaded to an object store; `None`: local only.
    pub upload: Option<crate::upload::Upload>,
}

/// This collector's own queue, or its partitioned group.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// `broker.queue`: durable, bound to the fanout exchange, one per collector; in a
    /// partitioned group, the name the group's exchange and queues derive from.
    pub name: String,
    /// This member's place in a partitioned group; `None`: the single queue `name`.
    pub partition: Option<Partition>,
    /// Deliveries in flight without an ack.
    pub prefetch: u16,
    /// Rejected (malformed or hostile) messages go here, routed by the queue's name.
    pub dead_letter_exchange: Option<String>,
    /// Quorum queues survive the loss of a minority of cluster nodes.
    pub queue_type: QueueType,
    /// `broker.dead_letter_max_bytes`: the dead-letter queue's cap; past it the oldest
    /// rejected messages are dropped (`x-overflow = drop-head`).
    pub dead_letter_max_bytes: u64,
}

impl QueueSettings {
    /// The queue this collector consumes: `name`, or its partition's queue `<name>.<index>`.
    pub fn consumed(&self) -> String {
        match self.partition {
            Some(partition) => partition::queue_name(&self.name, partition.index),
            None => self.name.clone(),
        }
    }
}

/// The kind of queue a collector declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// One node holds the queue (the default; fastest).
    Classic,
    /// Replicated with Raft over the cluster's nodes.
    Quorum,
}

/// When a batch ends.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// At most this many messages; below the prefetch so the broker keeps sending during fsync.
    pub max_messages: usize,
    /// How long after its first message a batch stays open for more. Default zero: a batch is
    /// what was waiting when its first message was taken (so a lone line is written at once,
    /// and under load what arrives while one batch is written forms the next).
    pub max_delay: Duration,
}

/// Bounds of what dedup remembers.
#[derive(Debug, Clone)]
pub struct DedupSettings {
    /// Ids in the seen-id set at most; the oldest are forgotten.
    pub max_ids: u64,
    /// Ids older than this, and the committed positions of a source with no commit for this
    /// long, are forgotten.
    pub max_age: Duration,
}

impl Validate for RawCollectorConfig {
    type Config = CollectorConfig;

    fn validate(self) -> Result<CollectorConfig, KeyError> {
        let broker = self.broker.validate_common("logship-collector")?;
        let queue_name = self
            .broker
            .queue
            .clone()
            .ok_or_else(|| KeyError::new("broker.queue", "missing key"))?;
        check_name("broker.queue", &queue_name)?;
        let partition =
            Partition::from_raw(&queue_name, self.broker.partitions, self.broker.partition)?;
        let prefetch = self.broker.prefetch.unwrap_or(1000);
        if prefetch == 0 {
            return Err(KeyError::new("broker.prefetch", "must be at least 1"));
        }
        let dead_letter_exchange = match self.broker.dead_letter_exchange.as_deref() {
            Some("") => None,
            Some(name) => {
                check_name("broker.dead_letter_exchange", name)?;
                Some(name.to_string())
            }
            None => Some(format!("{}.dead-letter", broker.exchange)),
        };
        let dead_letter_max_bytes =
            archive::dead_letter_max_bytes(self.broker.dead_letter_max_bytes.as_deref())?;
        let archive = RawArchive {
            compression: self.output.compression.as_deref(),
            compression_level: self.output.compression_level,
            retention: self.output.retention.as_deref(),
            max_line_bytes: self.output.max_line_bytes.as_deref(),
            audit: Some(&self.audit),
        }
        .validate()?;
        let queue_type = match self.broker.queue_type.as_deref() {
            None | Some("classic") => QueueType::Classic,
            Some("quorum") => QueueType::Quorum,
            Some(other) => {
                return Err(KeyError::new(
                    "broker.queue_type",
                    format!("unknown queue type \"{other}\" (classic or quorum)"),
                ));
            }
        };
        let max_messages = match self.batch.max_messages {
            Some(0) => return Err(KeyError::new("batch.max_messages", "must be at least 1")),
            Some(n) if n > u32::from(prefetch) => {
                return Err(KeyError::new(
                    "batch.max_messages",
                    format!("{n} is above broker.prefetch ({prefetch}); a batch could never fill"),
                ));
            }
            Some(n) => n as usize,
            None => usize::from(prefetch).div_ceil(2),
        };
        let max_delay = duration_or("batch.max_delay", &self.batch.max_delay, Duration::ZERO)?;
        let max_ids = self.dedup.max_ids.unwrap_or(1_000_000);
        if max_ids == 0 {
            return Err(KeyError::new("dedup.max_ids", "must be at least 1"));
        }
        let max_age = duration_or(
            "dedup.max_age",
            &self.dedup.max_age,
            Duration::from_secs(7 * 86400),
        )?;
        let max_open_files = match self.output.max_open_files {
            Some(0) => return Err(KeyError::new("output.max_open_files", "must be at least 1")),
            Some(n) => Some(usize::try_from(n).map_err(|_| {
                KeyError::new("output.max_open_files", format!("{n} is too large"))
            })?),
            None => None,
        };
        Ok(CollectorConfig {
            state_dir: self.state_dir,
            broker,
            queue: QueueSettings {
                name: queue_name,
                partition,
                prefetch,
                dead_letter_exchange,
                queue_type,
                dead_letter_max_bytes,
            },
            output_dir: self.output.dir,
            layout: match &self.output.layout {
                Some(template) => Layout::parse(template)?,
                None => Layout::default(),
            },
            max_open_files,
            batch: BatchSettings {
                max_messages,
                max_delay,
            },
            dedup: DedupSettings { max_ids, max_age },
            metrics: self.metrics.validate()?,
            security: self.security.validate()?,
            archive,
            upload: self.upload.as_ref().map(|u| u.validate()).transpose()?,
        })
    }

    fn prepare(config: &CollectorConfig) -> Result<(), KeyError> {
        ensure_writable_dir("state_dir", &config.state_dir)?;
        check_state_version(&config.state_dir)?;
        ensure_writable_dir("output.dir", &config.output_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConfigError;

    const BASE: &str = "state_dir = \"/s\"\n[output]\ndir = \"/o\"\n[broker]\nuris = [\"amqp://h\"]\nqueue = \"logs.archive\"\nconnection_name = \"t\"\n";

    fn parse(broker: &str) -> Result<CollectorConfig, ConfigError> {
        crate::load::parse::<RawCollectorConfig>(
            std::path::Path::new("collector.toml"),
            &format!("{BASE}{broker}"),
        )
    }

    fn key(broker: &str) -> String {
        match parse(broker) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{broker:?}: expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn a_member_consumes_its_partition_and_a_plain_collector_its_queue() {
        let member = parse("partitions = 4\npartition = 2\n").unwrap();
        assert_eq!(
            member.queue.partition,
            Some(Partition { count: 4, index: 2 })
        );
        assert_eq!(member.queue.consumed(), "logs.archive.2");
        let plain = parse("").unwrap();
        assert_eq!(plain.queue.partition, None);
        assert_eq!(plain.queue.consumed(), "logs.archive");
        assert_eq!(
            parse("partitions = 1\n").unwrap().queue.consumed(),
            "logs.archive"
        );
    }

    #[test]
    fn bad_partition_settings_name_their_key() {
        assert_eq!(key("partitions = 0\n"), "broker.partitions");
        assert_eq!(key("partitions = -1\npartition = 0\n"), "broker.partitions");
        assert_eq!(key("partitions = 4\n"), "broker.partition");
        assert_eq!(key("partitions = 4\npartition = 4\n"), "broker.partition");
        assert_eq!(key("partition = 0\n"), "broker.partition");
        assert_eq!(key("partitions = 1\npartition = 0\n"), "broker.partition");
        assert_eq!(
            key("partitions = 2\npartition = \"one\"\n"),
            "broker.partition"
        );
    }

    #[test]
    fn the_error_is_one_line_naming_file_and_key() {
        let err = parse("partitions = 2\npartition = 2\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "collector.toml: broker.partition: 2 is out of range: broker.partitions is 2, so 0 to 1"
        );
    }
}
