//! Applying one batch: dedup, append, fsync, commit. Blocking; run it off the async threads.
//!
//! Invariant: when [`Writer::write`] returns `Ok`, every line it reports written is durable and
//! its id, its source's position and its file's length are in the commit journal's synced
//! record (`commit`), so the batch may be acked. When it
//! returns `Err`, nothing may be acked; the output has been truncated back to the committed
//! lengths (or, if even that failed, will be before the next batch is written), so the same
//! batch can simply be written again.
//!
//! The passes between batches ([`crate::archive::retention`]: retention, and with `[upload]`
//! sealing quiet tails) act on the writer's sink and commit record, so the writer runs them,
//! on the collector's clock: the consumer calls [`Writer::retain`] when
//! [`Writer::retention_due`] says so, between batches. The audit record
//! ([`crate::archive::audit`]) is rewritten after a batch that changed a hole.
//!
//! With `[upload]`, every record the writer commits is told to the upload backlog
//! ([`crate::upload::backlog`]).

use std::sync::Arc;
use std::time::Instant;

use logship_config::CollectorConfig;
use logship_runtime::status::Gap;

use logship_runtime::clock::now_ms;

use crate::archive::audit::Auditor;
use crate::archive::retention::{Retained, Retention};
use crate::commit::Commit;
use crate::commit::dedup;
use crate::consumer::validate::{Line, Marker};
use crate::sink::ahead::{Ahead, Made};
use crate::sink::{self, Sink, SinkError};
use crate::upload::backlog::Backlog;

/// What became of a batch.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: u64,
    pub duplicates: u64,
    /// Positions in the batch of lines whose output path can never be written, with why.
    pub refused: Vec<(usize, String)>,
    /// Time spent writing and fsyncing the output files.
    pub fsync: std::time::Duration,
    /// When the batch was committed (unix milliseconds).
    pub committed_at_ms: i64,
    /// The envelope `ts` of every line written: the delay is `committed_at_ms` minus it.
    pub line_ts_ms: Vec<i64>,
    /// The source hosts of the lines written, each once.
    pub hosts: Vec<String>,
    /// Output files open after the batch.
    pub open_files: usize,
    /// Every hole between committed ranges, when the batch opened, changed or closed one.
    pub gaps: Option<Vec<Gap>>,
}

/// Owns the output files and the commit record.
pub struct Writer {
    sink: Sink,
    commit: Commit,
    /// A failed batch could not be truncated back: do it before writing anything else.
    needs_recovery: bool,
    /// The audit record, rewritten after batches that change a hole.
    auditor: Auditor,
    /// The passes between batches: retention, and with `[upload]` sealing quiet tails.
    retention: Retention,
    /// `[upload]`: the backlog told of every commit.
    backlog: Option<Arc<Backlog>>,
}

impl Writer {
    /// Opens the record and truncates every output file back to its committed length.
    pub fn open(config: &CollectorConfig) -> Result<Writer, SinkError> {
        let commit = Commit::open(&config.state_dir, &config.dedup, now_ms())?;
        let limit = logship_runtime::cli::open_file_limit();
        let configured = config
            .max_open_files
            .unwrap_or(logship_config::collector::DEFAULT_MAX_OPEN_FILES);
        let max_open = sink::budget(configured, limit);
        // Only a number the operator chose is worth a warning; the default adapts silently
        // (the "state recovered" line says what is used).
        if let Some(configured) = config.max_open_files.filter(|&n| max_open < n) {
            tracing::warn!(
                configured,
                open_file_limit = limit,
                using = max_open,
                "output.max_open_files leaves too few descriptors under the open-file limit; keeping fewer output files open"
            );
        }
        let sink = Sink::open(
            &config.output_dir,
            &commit,
            max_open,
            config.archive.compression,
        )?;
        tracing::info!(
            files = commit.files()?.len(),
            seen_ids = commit.seen_count(),
            sources = commit.source_count(),
            max_open_files = sink.max_open(),
            "state recovered"
        );
        let mut writer = Writer {
            sink,
            commit,
            needs_recovery: false,
            auditor: Auditor::new(&config.state_dir),
            retention: Retention::new(config),
            backlog: None,
        };
        writer.audit();
        Ok(writer)
    }

    /// Tells `backlog` of every commit from now on, starting with every file's record.
    pub fn upload_to(&mut self, backlog: Arc<Backlog>) -> Result<(), SinkError> {
        backlog.committed(&self.commit.files()?);
        self.retention.upload_to(backlog.clone());
        self.backlog = Some(backlog);
        Ok(())
    }

    /// When the next pass between batches is due (it may be past); `None` if none ever is.
    pub fn retention_due(&self) -> Option<Instant> {
        self.retention.due()
    }

    /// Runs the pass between batches if one is due (see [`Retention::pass`]). Call it between
    /// batches.
    pub fn retain(&mut self) -> Result<Retained, SinkError> {
        self.retention.pass(&mut self.sink, &self.commit)
    }

    /// Writes the audit record and returns its gaps (see [`Auditor::write`]).
    pub fn audit(&mut self) -> Vec<Gap> {
        self.auditor.write(&self.commit)
    }

    /// Writes a batch of lines, in order. On failure the output is truncated back at once (on
    /// a full disk that frees what the failed attempt took).
    pub fn write(&mut self, lines: &[Line]) -> Result<Outcome, SinkError> {
        if self.needs_recovery {
            self.sink.recover(&self.commit)?;
            self.needs_recovery = false;
        }
        let result = self.write_batch(lines);
        // A batch that may be committed keeps its bytes: the collector stops, and its start
        // settles the batch from the journal.
        if result.as_ref().is_err_and(|err| !err.may_be_committed())
            && let Err(err) = self.sink.recover(&self.commit)
        {
            // Files are closed whatever failed, and each is re-checked when reopened; the full
            // recovery is tried again before the next batch.
            tracing::debug!(error = %logship_runtime::error_chain(&err), "cannot truncate output back yet");
            self.needs_recovery = true;
        }
        result
    }

    fn write_batch(&mut self, lines: &[Line]) -> Result<Outcome, SinkError> {
        let (fresh, duplicates) = dedup::fresh(lines, &self.commit);
        let refused_files = self.sink.open_all(
            fresh
                .iter()
                .filter(|(_, line)| line.marker.is_none())
                .map(|(_, line)| line.file.as_path()),
            &self.commit,
        )?;
        let mut outcome = Outcome {
            duplicates,
            ..Outcome::default()
        };
        let mut ids = Vec::with_capacity(fresh.len());
        let mut claims = Vec::with_capacity(fresh.len());
        let mut hosts = std::collections::HashSet::new();
        let mut markers = Vec::new();
        for (position, line) in fresh {
            if line.marker.is_some() {
                // A loss or drop marker: nothing is written, and the range it gives up is
                // recorded as a hole (a resend is a duplicate by its id).
                markers.push(line);
                ids.push(line.id);
                hosts.insert(line.name.host.as_str());
                claims.push((line.claim(), &line.name));
                continue;
            }
            if let Some((_, err)) = refused_files.iter().find(|(file, _)| *file == line.file) {
                outcome
                    .refused
                    .push((position, logship_runtime::error_chain(&err)));
                continue;
            }
            self.sink.append(&line.file, &line.bytes);
            ids.push(line.id);
            outcome.line_ts_ms.push(line.ts_ms);
            hosts.insert(line.name.host.as_str());
            claims.push((line.claim(), &line.name));
        }
        let started = std::time::Instant::now();
        let lengths = self.sink.sync(&self.commit)?;
        outcome.fsync = started.elapsed();
        let holes_changed = self.commit.record(&ids, &claims, &lengths, now_ms())?;
        if let Some(backlog) = &self.backlog {
            backlog.committed(&lengths);
        }
        outcome.committed_at_ms = now_ms();
        for marker in &markers {
            let (from, to, unit) = (
                marker.claim.start,
                marker.claim.end,
                marker.claim.kind.unit(),
            );
            match marker.marker {
                Some(Marker::Dropped) => {
                    tracing::warn!(host = %marker.name.host, path = %marker.name.path, from, to, unit,
                    "the agent's spool dropped this range of this source (drop_oldest): a hole in the audit, but for lines of it published before the drop")
                }
                _ => tracing::warn!(host = %marker.name.host, path = %marker.name.path, from, to,
                    "the agent found this file truncated and never read these bytes of it (a hole in the audit)"),
            }
        }
        // The batch is committed whatever happens here: a failed compaction is finished or
        // undone by the recovery before the next batch.
        match self.sink.compact(&self.commit) {
            Ok(changed) => {
                if let Some(backlog) = self.backlog.as_ref().filter(|_| !changed.is_empty()) {
                    backlog.committed(&changed);
                }
            }
            Err(err) if err.is_fatal() => return Err(err),
            Err(err) => {
                tracing::warn!(error = %logship_runtime::error_chain(&err), "cannot compact compressed output yet");
                self.needs_recovery = true;
            }
        }
        outcome.hosts = hosts.into_iter().map(str::to_string).collect();
        outcome.open_files = self.sink.open_count();
        outcome.written = (ids.len() - markers.len()) as u64;
        outcome.gaps = self.auditor.after_batch(&self.commit, holes_changed);
        Ok(outcome)
    }

    /// A creator of output files ahead of their batch (see [`crate::sink::ahead`]).
    pub fn ahead(&self) -> std::io::Result<Ahead> {
        self.sink.ahead()
    }

    /// Takes the directories in which files were made ahead (see [`Sink::made_ahead`]).
    pub fn made_ahead(&mut self, made: Made) {
        self.sink.made_ahead(made);
    }

    /// SIGHUP: close every output file; each is reopened (and re-checked) when next written.
    pub fn reopen(&mut self) {
        self.sink.close_all();
    }
}

#[cfg(test)]
mod tests {
    use logship_runtime::{Envelope, FileId, SourceKind};

    use super::*;

    fn body(offset: u64, line: &[u8], kind: SourceKind) -> Vec<u8> {
        Envelope {
            host: "web-1".into(),
            path: "/var/log/app.log".into(),
            file: FileId {
                dev: 1,
                ino: 2,
                fp: 3,
            },
            generation: 0,
            offset,
            timestamp_ms: 0,
            line: line.to_vec(),
            fields: Default::default(),
            kind,
        }
        .to_json()
    }

    /// A collector's config with its state and output in `dir`, and its writer.
    fn writer_in(dir: &std::path::Path) -> (CollectorConfig, Writer) {
        let text = format!(
            "state_dir = \"{0}/state\"\n[output]\ndir = \"{0}/out\"\n[broker]\nuris = [\"amqp://h/%2f\"]\nqueue = \"q\"\n",
            dir.display()
        );
        let config = logship_config::load::parse::<logship_config::collector::RawCollectorConfig>(
            std::path::Path::new("collector.toml"),
            &text,
        )
        .unwrap();
        std::fs::create_dir_all(&config.output_dir).unwrap();
        let writer = Writer::open(&config).unwrap();
        (config, writer)
    }

    #[test]
    fn a_loss_marker_writes_nothing_and_leaves_the_bytes_it_gives_up_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let (config, mut writer) = writer_in(dir.path());
        let intake = |body: Vec<u8>| {
            crate::consumer::validate::intake(&body, &config, None, &mut Default::default())
                .unwrap()
        };
        // "first\n" is bytes 0..6; the file grew to 30 bytes and was truncated unread.
        let marker = || intake(body(30, b"", SourceKind::Lost { bytes: 24 }));
        let outcome = writer
            .write(&[intake(body(0, b"first", SourceKind::File)), marker()])
            .unwrap();
        assert_eq!(outcome.written, 1);
        let gaps = outcome.gaps.expect("a hole opened");
        assert_eq!(
            gaps.iter()
                .map(|g| (g.path.as_str(), g.start, g.end))
                .collect::<Vec<_>>(),
            [("/var/log/app.log", 6, 30)]
        );
        let out = dir.path().join("out/web-1/var/log/app.log");
        assert_eq!(std::fs::read(&out).unwrap(), b"first\n");
        // A resend of the marker is a duplicate: nothing written, the hole as it was.
        let outcome = writer.write(&[marker()]).unwrap();
        assert_eq!((outcome.written, outcome.duplicates), (0, 1));
        assert!(outcome.gaps.is_none());
        assert_eq!(writer.audit().len(), 1);
        assert_eq!(std::fs::read(&out).unwrap(), b"first\n");
    }

    #[test]
    fn a_drop_marker_at_a_files_head_leaves_a_hole_that_late_lines_shrink_without_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (config, mut writer) = writer_in(dir.path());
        let intake = |body: Vec<u8>| {
            crate::consumer::validate::intake(&body, &config, None, &mut Default::default())
                .unwrap()
        };
        let holes = |writer: &mut Writer| {
            writer
                .audit()
                .iter()
                .map(|g| (g.start, g.end))
                .collect::<Vec<_>>()
        };
        // "one\n" 0..4, "two\n" 4..8 dropped from the spool before any was confirmed; then
        // "three" at 8 arrives after the marker.
        let dropped = SourceKind::Dropped {
            lost: 8,
            journal: false,
        };
        let marker = || intake(body(8, b"", dropped));
        let outcome = writer
            .write(&[marker(), intake(body(8, b"three", SourceKind::File))])
            .unwrap();
        assert_eq!(outcome.written, 1);
        assert_eq!(
            holes(&mut writer),
            [(0, 8)],
            "a hole below the first committed byte"
        );
        let out = dir.path().join("out/web-1/var/log/app.log");
        assert_eq!(std::fs::read(&out).unwrap(), b"three\n");
        // "one" had been published before the drop and arrives late: written once, and only
        // what never arrived stays a hole; a resend of the marker changes nothing.
        let outcome = writer
            .write(&[intake(body(0, b"one", SourceKind::File)), marker()])
            .unwrap();
        assert_eq!((outcome.written, outcome.duplicates), (1, 1));
        assert_eq!(holes(&mut writer), [(4, 8)]);
        let outcome = writer
            .write(&[intake(body(0, b"one", SourceKind::File))])
            .unwrap();
        assert_eq!((outcome.written, outcome.duplicates), (0, 1));
        assert_eq!(std::fs::read(&out).unwrap(), b"three\none\n");
        // Everything arrived after all: no hole.
        writer
            .write(&[intake(body(4, b"two", SourceKind::File))])
            .unwrap();
        assert!(holes(&mut writer).is_empty());
    }
}
