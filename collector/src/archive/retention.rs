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

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
