//! Making a batch's appended bytes and new directory entries durable: one `fdatasync` per file
//! (and one `fsync` per directory holding a new entry) when a batch touched few, one `syncfs(2)`
//! of `output.dir`'s filesystem when it touched many.
//!
//! Measured with `cargo bench -p logship-collector --bench sync` (ext4 on the 2-core development
//! VM, one line appended to each of N files, mean per batch): N = 8: 1.0 ms in turn, 0.16 ms
//! syncfs; N = 64: 7.4 vs 0.28 ms; N = 400: 51 vs 1.7 ms; N = 1000: 183 vs 8.6 ms. fdatasyncs on
//! four threads only halve the sequential figure. syncfs also writes back whatever else is dirty
//! on that filesystem, so its cost depends on other writers: for a few files the per-file
//! fdatasync, bounded by our own bytes, is kept.
//!
//! New files and directories (a collector's start, midnight with a `{date}` layout) were each
//! made durable by an fsync of their directory at once, in turn: 400 new files in one batch
//! took 400 directory fsyncs before the batch's first line could be synced (issue 27, item 5).
//! Their entries are now noted ([`NewEntries`]) and made durable by the batch's sync: by its
//! syncfs, or, when few, by one fsync per directory.
//!
//! Invariants:
//! - When [`OutputFs::sync`] returns `Ok`, every byte written to the given files before the call
//!   is on stable storage, and so is every entry noted in its [`NewEntries`] (each new output
//!   file's, each new directory's); the entries are forgotten only then, so a failed sync leaves
//!   them for the next one.
//! - An entry is deferred only if the syncfs could cover it (its directory on `output.dir`'s
//!   filesystem, syncfs usable); any other is fsync'd when it is noted.
//! - syncfs reports writeback errors only from Linux 5.8 on, and only those after the descriptor
//!   it is called on was opened (or last synced): it is used only on such kernels, always on the
//!   one descriptor of `output.dir` opened at start, and only for files on that same filesystem
//!   (a mount below `output.dir` is synced file by file).

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// A batch that touched more files than this on `output.dir`'s filesystem is synced with one
/// `syncfs`; fewer are fdatasync'd one by one.
pub const SYNCFS_ABOVE: usize = 8;

/// The first Linux release whose syncfs(2) returns writeback errors (errseq on the superblock).
const SYNCFS_REPORTS_ERRORS: (u32, u32) = (5, 8);

/// A failure to make bytes durable.
#[derive(Debug, thiserror::Error)]
#[error("cannot sync \"{}\"", path.display())]
pub struct SyncError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// `output.dir`'s filesystem.
#[derive(Debug)]
pub struct OutputFs {
    /// Kept open for the collector's life: syncfs reports the writeback errors seen since this
    /// descriptor last looked, so a descriptor opened later could miss one.
    dir: File,
    dir_path: PathBuf,
    /// Device of `output.dir`: files on another one are not covered by its syncfs.
    dev: u64,
    /// Whether syncfs reports writeback errors on this kernel.
    syncfs_usable: bool,
}

/// Directory entries made (new output files and directories) and not durable yet: the next
/// [`OutputFs::sync`] makes them so.
#[derive(Debug, Default)]
pub struct NewEntries {
    /// The directories holding them (each once), with their paths, while at most
    /// [`SYNCFS_ABOVE`]: fsync'd one by one if the sync takes no syncfs.
    dirs: Vec<(File, PathBuf)>,
    /// More directories than that: the next sync takes a syncfs, which covers them all, and
    /// their descriptors are not kept.
    many: bool,
}

impl NewEntries {
    /// Whether nothing waits to be made durable.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && !self.many
    }
}

/// An open output file, as [`OutputFs::sync`] needs it.
pub struct Target<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    /// Whether the file lives on `output.dir`'s filesystem (see [`OutputFs::covers`]).
    pub on_output_fs: bool,
}

impl OutputFs {
    /// Opens `dir` for syncing.
    pub fn open(dir: &Path) -> std::io::Result<OutputFs> {
        let file = File::open(dir)?;
        let dev = file.metadata()?.dev();
        let syncfs_usable =
            kernel_release().is_some_and(|release| release >= SYNCFS_REPORTS_ERRORS);
        if !syncfs_usable {
            tracing::info!("kernel older than 5.8: output files are fsync'd one by one");
        }
        Ok(OutputFs {
            dir: file,
            dir_path: dir.to_path_buf(),
            dev,
            syncfs_usable,
        })
    }

    /// Whether a file with these metadata is on `output.dir`'s filesystem.
    pub fn covers(&self, meta: &std::fs::Metadata) -> bool {
        meta.dev() == self.dev
    }

    /// Notes a new entry (a file or a directory) in `dir` (at `path`): it must be durable
    /// before a line in it is acked. Deferred to the next [`OutputFs::sync`] if its syncfs can
    /// cover it; else (a mount below `output.dir`, a kernel whose syncfs hides errors) the
    /// directory is fsync'd now.
    pub fn note_entry(
        &self,
        entries: &mut NewEntries,
        dir: File,
        path: &Path,
    ) -> Result<(), SyncError> {
        let failed = |source| SyncError {
            path: path.to_path_buf(),
            source,
        };
        let meta = dir.metadata().map_err(failed)?;
        if !self.syncfs_usable || !self.covers(&meta) {
            return dir.sync_all().map_err(failed);
        }
        let known =
            |(held, _): &(File, PathBuf)| held.metadata().is_ok_and(|m| m.ino() == meta.ino());
        if entries.many || entries.dirs.iter().any(known) {
            return Ok(());
        }
        if entries.dirs.len() >= SYNCFS_ABOVE {
            entries.dirs.clear();
            entries.many = true;
        } else {
            entries.dirs.push((dir, path.to_path_buf()));
        }
        Ok(())
    }

    /// Makes everything written to `targets`, and every entry in `entries`, durable; returns
    /// how many sync calls it took. `entries` is emptied only if it succeeds.
    pub fn sync(
        &self,
        targets: &[Target<'_>],
        entries: &mut NewEntries,
    ) -> Result<usize, SyncError> {
        let shared = targets.iter().filter(|t| t.on_output_fs).count();
        // Noted entries are on this filesystem, and only while syncfs is usable.
        let use_syncfs =
            self.syncfs_usable && (entries.many || shared + entries.dirs.len() > SYNCFS_ABOVE);
        let mut calls = 0;
        if use_syncfs {
            self.syncfs()?;
            calls += 1;
        } else {
            for (dir, path) in &entries.dirs {
                dir.sync_all().map_err(|source| SyncError {
                    path: path.clone(),
                    source,
                })?;
                calls += 1;
            }
        }
        for target in targets {
            if use_syncfs && target.on_output_fs {
                continue;
            }
            target.file.sync_data().map_err(|source| SyncError {
                path: target.path.to_path_buf(),
                source,
            })?;
            calls += 1;
        }
        *entries = NewEntries::default();
        Ok(calls)
    }

    fn syncfs(&self) -> Result<(), SyncError> {
        // SAFETY: syncfs(2) on a descriptor this struct owns and keeps open.
        let rc = unsafe { libc::syncfs(self.dir.as_raw_fd()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(SyncError {
                path: self.dir_path.clone(),
                source: std::io::Error::last_os_error(),
            })
        }
    }
}

/// The running kernel's (major, minor) release, from uname(2).
fn kernel_release() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain bytes; uname fills it.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a utsname we own.
    if unsafe { libc::uname(&mut name) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = name
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    parse_release(&String::from_utf8_lossy(&bytes))
}

fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(parse_release("5.8.0"), Some((5, 8)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert!(parse_release("4.19") < Some(SYNCFS_REPORTS_ERRORS));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn few_files_are_fdatasynced_and_many_take_one_syncfs() {
        let dir = tempfile::tempdir().unwrap();
        let fs = OutputFs::open(dir.path()).unwrap();
        let paths: Vec<PathBuf> = (0..SYNCFS_ABOVE + 1)
            .map(|i| dir.path().join(format!("{i}.log")))
            .collect();
        let files: Vec<File> = paths
            .iter()
            .map(|p| {
                let mut f = File::create(p).unwrap();
                f.write_all(b"line\n").unwrap();
                f
            })
            .collect();
        let targets: Vec<Target<'_>> = files
            .iter()
            .zip(&paths)
            .map(|(file, path)| Target {
                file,
                path,
                on_output_fs: fs.covers(&file.metadata().unwrap()),
            })
            .collect();
        let mut none = NewEntries::default();
        assert_eq!(
            fs.sync(&targets[..SYNCFS_ABOVE], &mut none).unwrap(),
            SYNCFS_ABOVE
        );
        let expected = if fs.syncfs_usable { 1 } else { targets.len() };
        assert_eq!(fs.sync(&targets, &mut none).unwrap(), expected);
    }

    /// Issue 27 (item 5): each new file's directory was fsync'd at once, in turn.
    #[test]
    fn new_entries_wait_for_the_sync_few_take_a_fsync_per_directory_many_one_syncfs() {
        let dir = tempfile::tempdir().unwrap();
        let fs = OutputFs::open(dir.path()).unwrap();
        if !fs.syncfs_usable {
            return; // every entry is fsync'd when noted
        }
        let subdir = |i: usize| {
            let path = dir.path().join(format!("d{i}"));
            std::fs::create_dir(&path).unwrap();
            (File::open(&path).unwrap(), path)
        };
        let mut entries = NewEntries::default();
        let (one, path) = subdir(0);
        fs.note_entry(&mut entries, one, &path).unwrap();
        // The same directory again is one fsync.
        fs.note_entry(&mut entries, File::open(&path).unwrap(), &path)
            .unwrap();
        let (two, path) = subdir(1);
        fs.note_entry(&mut entries, two, &path).unwrap();
        assert_eq!(fs.sync(&[], &mut entries).unwrap(), 2);
        assert!(entries.is_empty());
        for i in 2..2 + 4 * SYNCFS_ABOVE {
            let (d, path) = subdir(i);
            fs.note_entry(&mut entries, d, &path).unwrap();
        }
        assert!(entries.dirs.len() <= SYNCFS_ABOVE, "descriptors held");
        assert_eq!(fs.sync(&[], &mut entries).unwrap(), 1, "one syncfs");
        assert!(entries.is_empty());
    }
}
