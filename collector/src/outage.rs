//! Write outages: a full disk, too many open files, a failing device. Such a failure is not a
//! crash and not a broker problem: the batch stays unacked in memory, the output is truncated
//! back to the committed lengths, and the same batch is tried again after a backoff delay, on
//! the same channel (no reconnect, no redelivery storm).
//!
//! Invariants: one warning when an outage starts (or its cause or [`Stage`] changes), with the
//! cause and the path, naming what failed: "cannot write output" for the output files, "cannot
//! commit" for the commit record (its journal and the state database); one info line when a
//! batch is written again; every failed attempt is counted under its
//! cause. The delay doubles from `broker.reconnect_delay` up to `broker.reconnect_max_delay`
//! (with jitter) and starts over only after a batch was written.

use std::time::{Duration, Instant};

use logship_config::Broker;
use logship_runtime::Backoff;

use crate::sink::SinkError;

/// Why writing failed, as an operator acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    // Discriminants 0..=3 index `Metrics::write_errors`.
    /// ENOSPC or EDQUOT: free space on the output (or state) filesystem.
    DiskFull,
    /// EMFILE or ENFILE: raise `LimitNOFILE` or lower `output.max_open_files`.
    OpenFiles,
    /// EIO: the device is failing.
    Io,
    /// Anything else (permissions, a read-only remount, ...).
    Other,
}

impl Cause {
    /// Every cause, in the order of their discriminants (metrics index by them).
    pub const ALL: [Cause; 4] = [Cause::DiskFull, Cause::OpenFiles, Cause::Io, Cause::Other];

    /// Classifies an operating system error.
    pub fn of_io(err: &std::io::Error) -> Cause {
        match err.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Cause::DiskFull,
            Some(libc::EMFILE | libc::ENFILE) => Cause::OpenFiles,
            Some(libc::EIO) => Cause::Io,
            _ => Cause::Other,
        }
    }

    /// Classifies a failed batch by the operating system error under it, if any.
    pub fn of(err: &SinkError) -> Cause {
        match err.io_error() {
            Some((_, io)) => Cause::of_io(io),
            None => match err {
                SinkError::Commit(crate::commit::CommitError::Io { source: io, .. }) => {
                    Cause::of_io(io)
                }
                SinkError::Commit(crate::commit::CommitError::LowSpace { .. }) => Cause::DiskFull,
                SinkError::Commit(crate::commit::CommitError::Wal(
                    crate::commit::wal::AppendError::NotWritten { source, .. },
                )) => Cause::of_io(source),
                _ => Cause::Other,
            },
        }
    }

    /// The label in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Cause::DiskFull => "disk_full",
            Cause::OpenFiles => "open_files",
            Cause::Io => "io",
            Cause::Other => "other",
        }
    }
}

/// Which step of a batch failed, as an operator looks for it: the output files, or the commit
/// record in `state_dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Opening, writing, syncing, compressing or truncating an output file.
    Output,
    /// The commit record: its journal or the state database (`state_dir`).
    Commit,
}

impl Stage {
    /// The step `err` failed in.
    pub fn of(err: &SinkError) -> Stage {
        match err {
            SinkError::Commit(_) => Stage::Commit,
            _ => Stage::Output,
        }
    }

    /// The warning that starts an outage of this step.
    pub fn failing(self) -> &'static str {
        match self {
            Stage::Output => {
                "cannot write output; retrying with backoff, nothing is acked meanwhile"
            }
            Stage::Commit => "cannot commit; retrying with backoff, nothing is acked meanwhile",
        }
    }

    /// The info line that ends it.
    pub fn recovered(self) -> &'static str {
        match self {
            Stage::Output => "output writable again",
            Stage::Commit => "committing again",
        }
    }
}

/// What [`Outages::failed`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Retry {
    /// Wait this long before trying the batch again.
    pub delay: Duration,
    /// Whether this failure starts an outage (or changes its cause): say so.
    pub announce: bool,
}

/// An outage that just ended.
#[derive(Debug)]
pub struct Ended {
    pub cause: Cause,
    /// The step that failed last.
    pub stage: Stage,
    pub lasted: Duration,
    /// Attempts that failed during it.
    pub failures: u64,
}

struct Current {
    cause: Cause,
    stage: Stage,
    since: Instant,
    failures: u64,
}

/// The state of writing: fine, or in an outage since some instant.
pub struct Outages {
    backoff: Backoff,
    current: Option<Current>,
}

impl Outages {
    /// No outage; delays from `broker`'s reconnect settings.
    pub fn new(broker: &Broker) -> Outages {
        Outages {
            backoff: Backoff::new(broker),
            current: None,
        }
    }

    /// A batch failed at `stage` because of `cause`.
    pub fn failed(&mut self, stage: Stage, cause: Cause) -> Retry {
        let announce = match &mut self.current {
            Some(current) => {
                current.failures += 1;
                let was = (current.stage, current.cause);
                (current.stage, current.cause) = (stage, cause);
                was != (stage, cause)
            }
            None => {
                self.current = Some(Current {
                    cause,
                    stage,
                    since: Instant::now(),
                    failures: 1,
                });
                true
            }
        };
        Retry {
            delay: self.backoff.next_delay(),
            announce,
        }
    }

    /// A batch was written: the outage, if there was one, is over.
    pub fn succeeded(&mut self) -> Option<Ended> {
        let current = self.current.take()?;
        self.backoff.reset();
        Some(Ended {
            cause: current.cause,
            stage: current.stage,
            lasted: current.since.elapsed(),
            failures: current.failures,
        })
    }

    /// Logs a failed batch (its `cause` is [`Cause::of`] `err`, counted by the caller); returns
    /// how long to wait before the next attempt.
    pub fn report_failure(&mut self, cause: Cause, err: &SinkError) -> Duration {
        let stage = Stage::of(err);
        let retry = self.failed(stage, cause);
        let path = err.io_error().map(|(path, _)| path.display().to_string());
        let error = logship_runtime::error_chain(err);
        if retry.announce {
            tracing::warn!(
                cause = cause.label(),
                path,
                error,
                retry_in_ms = retry.delay.as_millis() as u64,
                "{}",
                stage.failing()
            );
        } else {
            tracing::debug!(
                cause = cause.label(),
                path,
                error,
                retry_in_ms = retry.delay.as_millis() as u64,
                "still failing"
            );
        }
        retry.delay
    }

    /// Logs the end of an outage after a batch was written.
    pub fn report_success(&mut self) {
        if let Some(ended) = self.succeeded() {
            tracing::info!(
                cause = ended.cause.label(),
                outage_ms = ended.lasted.as_millis() as u64,
                failed_attempts = ended.failures,
                "{}",
                ended.stage.recovered()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Error;

    use super::*;
    use logship_runtime::error_chain as chain;

    fn outages(initial_ms: u64, max_ms: u64) -> Outages {
        let text = format!(
            "state_dir = \"/s\"\n[output]\ndir = \"/o\"\n[broker]\nuris = [\"amqp://h/%2f\"]\nqueue = \"q\"\nreconnect_delay = \"{initial_ms}ms\"\nreconnect_max_delay = \"{max_ms}ms\"\n"
        );
        let config = logship_config::load::parse::<logship_config::collector::RawCollectorConfig>(
            std::path::Path::new("collector.toml"),
            &text,
        )
        .unwrap();
        Outages::new(&config.broker)
    }

    #[test]
    fn os_errors_map_to_their_cause() {
        for (errno, cause) in [
            (libc::ENOSPC, Cause::DiskFull),
            (libc::EDQUOT, Cause::DiskFull),
            (libc::EMFILE, Cause::OpenFiles),
            (libc::ENFILE, Cause::OpenFiles),
            (libc::EIO, Cause::Io),
            (libc::EACCES, Cause::Other),
        ] {
            assert_eq!(Cause::of_io(&Error::from_raw_os_error(errno)), cause);
        }
        let err = SinkError::Write {
            path: "/out/h/x.log".into(),
            source: Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(Cause::of(&err), Cause::DiskFull);
        assert_eq!(
            chain(&err),
            "cannot write \"/out/h/x.log\": No space left on device (os error 28)"
        );
        let err = SinkError::Open {
            path: "/out/h/y.log".into(),
            source: Error::from_raw_os_error(libc::EMFILE),
        };
        assert_eq!(Cause::of(&err), Cause::OpenFiles);
        assert_eq!(
            chain(&err),
            "cannot open \"/out/h/y.log\": Too many open files (os error 24)"
        );
    }

    /// Issue 27 (item 6c): a failing commit journal was said as "cannot write output".
    #[test]
    fn a_failing_commit_record_is_said_as_cannot_commit_and_the_output_as_cannot_write() {
        let output = SinkError::Write {
            path: "/out/h/x.log".into(),
            source: Error::from_raw_os_error(libc::EIO),
        };
        assert_eq!(Stage::of(&output), Stage::Output);
        assert!(
            Stage::of(&output)
                .failing()
                .starts_with("cannot write output")
        );
        let journal = SinkError::Commit(crate::commit::CommitError::Io {
            dir: "/state".into(),
            op: "append a batch",
            source: Error::from_raw_os_error(libc::EIO),
        });
        let low = SinkError::Commit(crate::commit::CommitError::LowSpace {
            path: "/state".into(),
            free: 1,
        });
        assert_eq!(
            logship_runtime::error_chain(&journal),
            "the commit journal in \"/state\" failed to append a batch: Input/output error (os error 5)"
        );
        for err in [journal, low] {
            assert_eq!(Stage::of(&err), Stage::Commit);
            assert!(
                Stage::of(&err).failing().starts_with("cannot commit"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_outage_is_announced_once_per_cause_and_its_end_once() {
        let mut outages = outages(100, 1000);
        assert!(outages.succeeded().is_none());
        assert!(outages.failed(Stage::Output, Cause::DiskFull).announce);
        for _ in 0..20 {
            assert!(!outages.failed(Stage::Output, Cause::DiskFull).announce);
        }
        assert!(outages.failed(Stage::Output, Cause::Io).announce);
        // The same cause in the commit record is another outage to say.
        assert!(outages.failed(Stage::Commit, Cause::Io).announce);
        assert!(outages.failed(Stage::Output, Cause::Io).announce);
        let ended = outages.succeeded().unwrap();
        assert_eq!((ended.cause, ended.failures), (Cause::Io, 24));
        assert!(outages.succeeded().is_none());
        assert!(outages.failed(Stage::Output, Cause::Io).announce);
    }

    #[test]
    fn delays_double_up_to_the_maximum_and_start_over_after_a_success() {
        let mut outages = outages(100, 1000);
        let delays: Vec<Duration> = (0..10)
            .map(|_| outages.failed(Stage::Output, Cause::DiskFull).delay)
            .collect();
        for (i, delay) in delays.iter().enumerate() {
            let ceiling = Duration::from_millis((100u64 << i).min(1000));
            assert!(*delay >= ceiling / 2 && *delay <= ceiling, "{i}: {delay:?}");
        }
        outages.succeeded();
        assert!(outages.failed(Stage::Output, Cause::DiskFull).delay <= Duration::from_millis(100));
    }
}
