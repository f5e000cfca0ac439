//! Applying one batch: dedup, append, fsync, commit. Blocking; run it off the async threads.
//!
//! Invariant: when [`Writer::write`] returns `Ok`, every line it reports written is durable and
//! its id, its source's position and its file's length are in the commit journal's synced
//! record (`commit`), so the batch may be acked. When it
//! returns `Err`, nothing may be acked; the output has been truncated back to the committed
//! lengths (or, if even that failed, will be before the next batch is written), so the same
//! batch can simply be written again.
//!
//! Retention passes are the writer's too (they close a file before deleting it), but they run on
//! the collector's clock, not with batches: the consumer calls [`Writer::retain`] when
//! [`Writer::retention_due`] says so, between batches.
//!
//! With `[upload]`, every record the writer commits is told to the upload backlog
//! ([`crate::upload::backlog`]); the same between-batch passes seal the tails of quiet compressed
//! files for the uploader, and delete a file only once all its bytes are in the store (after
//! `upload.keep_local`, or `output.retention` if shorter).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use logship_config::CollectorConfig;
use logship_runtime::status::Gap;

use logship_runtime::clock::now_ms;

use crate::archive::audit::AuditRecord;
use crate::archive::retention;
use crate::commit::Commit;
use crate::commit::dedup;
use crate::consumer::validate::{Line, Marker};
use crate::sink::{self, Sink, SinkError};
use crate::upload::backlog::Backlog;
use crate::upload::ledger::LocalFile;

/// The audit record is rewritten when only its count of sources changed at most this often.
const AUDIT_REFRESH_MS: i64 = 10_000;

/// With `[upload]`, the uploader's requests to seal quiet tails are taken this often.
const SEAL_EVERY: Duration = Duration::from_secs(1);

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

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    pub files: u64,
    pub bytes: u64,
}

/// Owns the output files and the commit record.
pub struct Writer {
    sink: Sink,
    commit: Commit,
    /// A failed batch could not be truncated back: do it before writing anything else.
    needs_recovery: bool,
    /// Where the audit record is kept.
    state_dir: PathBuf,
    /// When the audit record was last written, and the sources it counted.
    audited: (i64, usize),
    /// `output.dir` and `output.retention`.
    output_dir: PathBuf,
    retention: Option<Duration>,
    /// When the next retention pass is due: at once after opening, then one
    /// [`retention::pass_interval`] after the last pass started.
    next_retention: Instant,
    /// Retention passes run so far: the first is always logged, later ones only if they
    /// deleted something (a short retention passes every second).
    retention_passes: u64,
    /// `[upload]`: the backlog told of every commit, and asked before a file is deleted.
    backlog: Option<Arc<Backlog>>,
    /// When the uploader's seal requests are next taken.
    next_seal: Instant,
}

impl Writer {
    /// Opens the record and truncates every output file back to its committed length.
    pub fn open(config: &CollectorConfig) -> Result<Writer, SinkError> {
        let commit = Commit::open(&config.state_dir, &config.dedup, now_ms())?;
        let max_open = sink::budget(
            config.max_open_files,
            logship_runtime::cli::open_file_limit(),
        );
        if max_open < config.max_open_files {
            tracing::warn!(
                configured = config.max_open_files,
                open_file_limit = logship_runtime::cli::open_file_limit(),
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
            state_dir: config.state_dir.clone(),
            audited: (0, 0),
            output_dir: config.output_dir.clone(),
            retention: config.archive.retention,
            next_retention: Instant::now(),
            retention_passes: 0,
            backlog: None,
            next_seal: Instant::now(),
        };
        if let Some(upload) = &config.upload {
            // Uploaded bytes stay `keep_local`, or `output.retention` if that is shorter.
            writer.retention = Some(
                writer
                    .retention
                    .map_or(upload.keep_local, |age| age.min(upload.keep_local)),
            );
        }
        writer.audit();
        Ok(writer)
    }

    /// Tells `backlog` of every commit from now on, starting with every file's record.
    pub fn upload_to(&mut self, backlog: Arc<Backlog>) -> Result<(), SinkError> {
        backlog.committed(&self.commit.files()?);
        self.backlog = Some(backlog);
        Ok(())
    }

    /// When the next retention pass (or, with `[upload]`, seal pass) is due (it may be past);
    /// `None` without either.
    pub fn retention_due(&self) -> Option<Instant> {
        let retention = self.retention.map(|_| self.next_retention);
        match (&self.backlog, retention) {
            (Some(_), Some(at)) => Some(at.min(self.next_seal)),
            (Some(_), None) => Some(self.next_seal),
            (None, at) => at,
        }
    }

    /// Seals the tails the uploader asked for (see [`Sink::seal`]), if a seal pass is due.
    fn seal(&mut self) -> Result<(), SinkError> {
        let Some(backlog) = self.backlog.clone() else {
            return Ok(());
        };
        let now = Instant::now();
        if now < self.next_seal {
            return Ok(());
        }
        self.next_seal = now + SEAL_EVERY;
        let mut sealed = Vec::new();
        for (relative, len) in backlog.take_seal_requests() {
            if let Some(committed) = self.commit.committed(&relative)?
                && let Some(record) = self.sink.seal(&relative, committed, len)
            {
                sealed.push((relative, record));
            }
        }
        if !sealed.is_empty() {
            let records: Vec<_> = sealed
                .iter()
                .map(|(r, record)| (r.clone(), Some(*record)))
                .collect();
            self.commit.set_records(&records)?;
            backlog.committed(&sealed);
            backlog.wake();
        }
        Ok(())
    }

    /// Whether `relative` may be deleted: always without `[upload]`; with it, only once all
    /// its bytes are in the store (its ledger entry is then retired, durably).
    fn deletable(&self, relative: &std::path::Path) -> bool {
        let Some(backlog) = &self.backlog else {
            return true;
        };
        use std::os::unix::fs::MetadataExt as _;
        let Ok(meta) = std::fs::symlink_metadata(self.output_dir.join(relative)) else {
            return false;
        };
        let local = LocalFile {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        match backlog.retire_if_uploaded(relative, local, meta.len(), now_ms()) {
            Ok(retired) => retired,
            Err(err) => {
                tracing::warn!(error = %logship_runtime::error_chain(&err), "cannot record an uploaded file's deletion; it is kept");
                false
            }
        }
    }

    /// Deletes the output files older than `output.retention`, if set and a pass is due (see
    /// [`crate::archive::retention`]); returns what it deleted. A file that cannot be deleted is
    /// said and left; only a failing commit record is an error. Call it between batches.
    pub fn retain(&mut self) -> Result<Retained, SinkError> {
        self.seal()?;
        let Some(max_age) = self.retention else {
            return Ok(Retained::default());
        };
        let now = Instant::now();
        if now < self.next_retention {
            return Ok(Retained::default());
        }
        let interval = retention::pass_interval(max_age);
        self.next_retention = now + interval;
        self.retention_passes += 1;
        let cutoff = SystemTime::now() - max_age;
        let (expired, kept) = match retention::expired(&self.output_dir, cutoff) {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(dir = %self.output_dir.display(), error = %err,
                    next_in = %humantime::format_duration(interval), "retention pass failed");
                return Ok(Retained::default());
            }
        };
        let mut pass = retention::Pass {
            kept,
            ..retention::Pass::default()
        };
        for (relative, bytes) in expired {
            if !self.deletable(&relative) {
                pass.kept += 1;
                continue;
            }
            self.sink.close(&relative);
            match retention::delete(&self.output_dir, &relative) {
                Ok(dirs) => {
                    pass.dirs += dirs;
                    pass.bytes += bytes;
                    pass.deleted.push(relative);
                }
                Err(err) => {
                    tracing::warn!(file = %self.output_dir.join(&relative).display(), error = %err, "retention cannot delete an old output file")
                }
            }
        }
        let forget: Vec<_> = pass.deleted.iter().map(|r| (r.clone(), None)).collect();
        if !forget.is_empty() {
            self.commit.set_records(&forget)?;
            if let Some(backlog) = &self.backlog {
                backlog.forgotten(&pass.deleted);
            }
        }
        if !pass.deleted.is_empty() || self.retention_passes == 1 {
            tracing::info!(
                files = pass.deleted.len(),
                bytes = pass.bytes,
                dirs = pass.dirs,
                kept = pass.kept,
                retention = %humantime::format_duration(max_age),
                "retention pass: deleted output files older than output.retention"
            );
        }
        Ok(Retained {
            files: pass.deleted.len() as u64,
            bytes: pass.bytes,
        })
    }

    /// Writes the audit record (see [`crate::archive::audit`]) and returns its gaps. A record that
    /// cannot be written is said, not fatal: the output and its commit are unaffected.
    pub fn audit(&mut self) -> Vec<Gap> {
        self.audited = (now_ms(), self.commit.source_count());
        let record = match AuditRecord::of(&self.commit, now_ms()) {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(error = %logship_runtime::error_chain(&err), "cannot list gaps for the audit");
                return Vec::new();
            }
        };
        if let Err(err) = record.write(&self.state_dir) {
            tracing::warn!(error = %logship_runtime::error_chain(&err), "cannot write the audit record");
        }
        record.gaps
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
        // New sources alone refresh the record's count now and then, not on every batch.
        let (audited_ms, audited_sources) = self.audited;
        if holes_changed
            || (self.commit.source_count() != audited_sources
                && now_ms() - audited_ms >= AUDIT_REFRESH_MS)
        {
            outcome.gaps = Some(self.audit());
        }
        Ok(outcome)
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
