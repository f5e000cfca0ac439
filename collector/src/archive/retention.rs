//! Retention (`output.retention`): output files whose last write is older are deleted by the
//! collector itself, with the directories they leave empty: one pass at start and then one every
//! [`pass_interval`], on the collector's own clock, so a collector that receives nothing
//! deletes old files too.
//!
//! Invariants:
//! - A pass runs in the writer between batches (the consumer runs it while no batch is being
//!   written, connected or not): a file is closed in the sink before it is deleted, so no line
//!   is ever written to a deleted file.
//! - A file is deleted at most [`pass_interval`] after its last write became older than the
//!   retention (1/60 of it late at most, and never more than an hour).
//! - A deleted file's commit record is removed with it: a line that arrives later for it starts
//!   a new file. Its sources' committed ranges stay until `dedup.max_age` forgets them, as for
//!   any source, so a late duplicate is still dropped.
//! - Nothing is followed or deleted through a symbolic link; `output.dir` itself is never
//!   removed.
//! - With `[upload]`, a file is deleted only once every byte of it is in the store (its ledger
//!   entry retired, durably, first), after `upload.keep_local` (or `output.retention` if
//!   shorter); the same passes seal the tails of quiet compressed files the uploader asks for.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use logship_config::CollectorConfig;
use logship_runtime::clock::now_ms;

use crate::commit::Commit;
use crate::sink::{Sink, SinkError};
use crate::upload::backlog::Backlog;
use crate::upload::ledger::LocalFile;

/// With `[upload]`, the uploader's requests to seal quiet tails are taken this often.
const SEAL_EVERY: Duration = Duration::from_secs(1);

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    pub files: u64,
    pub bytes: u64,
}

/// The passes between batches, on the collector's own clock: retention, and with `[upload]`
/// sealing the tails of quiet compressed files for the uploader. With `[upload]` a file is
/// deleted only once all its bytes are in the store (after `upload.keep_local`, or
/// `output.retention` if shorter).
pub struct Retention {
    output_dir: PathBuf,
    /// `output.retention` (or, with `[upload]`, the shorter of it and `upload.keep_local`).
    max_age: Option<Duration>,
    /// When the next pass is due: at once after opening, then one [`pass_interval`] after the
    /// last pass started.
    next_pass: Instant,
    /// Passes run so far: the first is always logged, later ones only if they deleted
    /// something (a short retention passes every second).
    passes: u64,
    /// `[upload]`: asked before a file is deleted, and for the tails to seal.
    backlog: Option<Arc<Backlog>>,
    /// When the uploader's seal requests are next taken.
    next_seal: Instant,
}

impl Retention {
    pub fn new(config: &CollectorConfig) -> Retention {
        let mut max_age = config.archive.retention;
        if let Some(upload) = &config.upload {
            // Uploaded bytes stay `keep_local`, or `output.retention` if that is shorter.
            max_age = Some(max_age.map_or(upload.keep_local, |age| age.min(upload.keep_local)));
        }
        Retention {
            output_dir: config.output_dir.clone(),
            max_age,
            next_pass: Instant::now(),
            passes: 0,
            backlog: None,
            next_seal: Instant::now(),
        }
    }

    /// Asks `backlog` before deleting a file, and seals the tails it asks for.
    pub fn upload_to(&mut self, backlog: Arc<Backlog>) {
        self.backlog = Some(backlog);
    }

    /// When the next retention pass (or, with `[upload]`, seal pass) is due (it may be past);
    /// `None` without either.
    pub fn due(&self) -> Option<Instant> {
        let retention = self.max_age.map(|_| self.next_pass);
        match (&self.backlog, retention) {
            (Some(_), Some(at)) => Some(at.min(self.next_seal)),
            (Some(_), None) => Some(self.next_seal),
            (None, at) => at,
        }
    }

    /// Seals the tails the uploader asked for (see [`Sink::seal`]), if a seal pass is due.
    fn seal(&mut self, sink: &mut Sink, commit: &Commit) -> Result<(), SinkError> {
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
            if let Some(committed) = commit.committed(&relative)?
                && let Some(record) = sink.seal(&relative, committed, len)
            {
                sealed.push((relative, record));
            }
        }
        if !sealed.is_empty() {
            let records: Vec<_> = sealed
                .iter()
                .map(|(r, record)| (r.clone(), Some(*record)))
                .collect();
            commit.set_records(&records)?;
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

    /// If a pass is due: seals the tails the uploader asked for, and deletes the output files
    /// older than the retention (closing each in `sink` first, forgetting it in `commit`);
    /// returns what it deleted. A file that cannot be deleted is said and left; only a failing
    /// commit record is an error. Call it between batches.
    pub fn pass(&mut self, sink: &mut Sink, commit: &Commit) -> Result<Retained, SinkError> {
        self.seal(sink, commit)?;
        let Some(max_age) = self.max_age else {
            return Ok(Retained::default());
        };
        let now = Instant::now();
        if now < self.next_pass {
            return Ok(Retained::default());
        }
        let interval = pass_interval(max_age);
        self.next_pass = now + interval;
        self.passes += 1;
        let cutoff = SystemTime::now() - max_age;
        let (expired, kept) = match expired(&self.output_dir, cutoff) {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(dir = %self.output_dir.display(), error = %err,
                    next_in = %humantime::format_duration(interval), "retention pass failed");
                return Ok(Retained::default());
            }
        };
        let mut pass = Pass {
            kept,
            ..Pass::default()
        };
        for (relative, bytes) in expired {
            if !self.deletable(&relative) {
                pass.kept += 1;
                continue;
            }
            sink.close(&relative);
            match delete(&self.output_dir, &relative) {
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
            commit.set_records(&forget)?;
            if let Some(backlog) = &self.backlog {
                backlog.forgotten(&pass.deleted);
            }
        }
        if !pass.deleted.is_empty() || self.passes == 1 {
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
}

/// The time between two passes for a retention of `max_age`: 1/60 of it, at least a second
/// (a pass walks the whole archive) and at most an hour.
pub fn pass_interval(max_age: Duration) -> Duration {
    (max_age / 60).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// What one pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Files deleted, relative to `output.dir`.
    pub deleted: Vec<PathBuf>,
    /// Their bytes.
    pub bytes: u64,
    /// Empty directories removed.
    pub dirs: u64,
    /// Files kept (younger than the retention).
    pub kept: u64,
}

/// The files under `root` (relative paths) whose last write is before `cutoff`, with their
/// sizes, and how many are kept. Links are neither followed nor listed.
pub fn expired(root: &Path, cutoff: SystemTime) -> io::Result<(Vec<(PathBuf, u64)>, u64)> {
    let mut expired = Vec::new();
    let mut kept = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let entries = match std::fs::read_dir(root.join(&relative)) {
            Ok(entries) => entries,
            // Removed meanwhile (by an operator): nothing to do there.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            let meta = entry.metadata()?; // does not follow a link
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                if meta.modified()? < cutoff {
                    expired.push((path, meta.len()));
                } else {
                    kept += 1;
                }
            }
        }
    }
    Ok((expired, kept))
}

/// Deletes `relative` under `root` and then each parent directory it leaves empty, up to (not
/// including) `root`; returns the directories removed.
pub fn delete(root: &Path, relative: &Path) -> io::Result<u64> {
    match std::fs::remove_file(root.join(relative)) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut dirs = 0;
    let mut parent = relative.parent();
    while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
        // Fails (and stops) at the first directory that is not empty.
        if std::fs::remove_dir(root.join(dir)).is_err() {
            break;
        }
        dirs += 1;
        parent = dir.parent();
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    #[test]
    fn a_pass_runs_every_sixtieth_of_the_retention_within_a_second_and_an_hour() {
        assert_eq!(
            pass_interval(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(
            pass_interval(Duration::from_secs(7200)),
            Duration::from_secs(120)
        );
        assert_eq!(
            pass_interval(Duration::from_secs(30 * 86400)),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn old_files_go_with_the_directories_they_leave_empty_young_ones_and_links_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let old = SystemTime::now() - Duration::from_secs(40 * 86400);
        for name in [
            "a/x/old.log",
            "a/y/old.log",
            "a/y/young.log",
            "b/old.log.zst",
        ] {
            std::fs::create_dir_all(root.join(name).parent().unwrap()).unwrap();
            std::fs::write(root.join(name), "line\n").unwrap();
        }
        for name in ["a/x/old.log", "a/y/old.log", "b/old.log.zst"] {
            File::options()
                .write(true)
                .open(root.join(name))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        std::os::unix::fs::symlink(root.join("a/x/old.log"), root.join("link.log")).unwrap();
        let cutoff = SystemTime::now() - Duration::from_secs(30 * 86400);
        let (mut expired, kept) = expired(root, cutoff).unwrap();
        expired.sort();
        let names: Vec<&Path> = expired.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(
            names,
            [
                Path::new("a/x/old.log"),
                Path::new("a/y/old.log"),
                Path::new("b/old.log.zst")
            ]
        );
        assert_eq!(kept, 1);
        let dirs: u64 = expired.iter().map(|(p, _)| delete(root, p).unwrap()).sum();
        assert_eq!(dirs, 2, "a/x and b");
        assert!(root.join("a/y/young.log").exists() && !root.join("a/x").exists());
        assert!(root.join("link.log").symlink_metadata().is_ok());
    }
}
