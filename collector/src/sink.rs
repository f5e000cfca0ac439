//! Output files: append, fsync, and truncate back to the committed length.
//!
//! Invariants:
//! - A file's length is in the commit record before the first byte is appended to it (an intent
//!   record for files opened anew), so a crash can always be undone by truncating.
//! - On start and after any write failure, every recorded file is truncated back to its committed
//!   length: bytes past it belong to batches that were never acked and will be redelivered.
//! - A file opened anew (after SIGHUP, or rotated away while we were down) that is shorter than
//!   its record starts a new committed length.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::commit::{Commit, CommitError};
use crate::durable::{OutputFs, SyncError, Target};

/// More open output files than this and all are closed after a batch (they reopen on demand).
const MAX_OPEN_FILES: usize = 1024;

/// A failure to write or sync output.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open \"{}\"", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write \"{}\"", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot truncate \"{}\" to its committed length {len}", path.display())]
    Truncate {
        path: PathBuf,
        len: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("\"{}\" was appended to before it was opened", path.display())]
    NotOpen { path: PathBuf },
    #[error(transparent)]
    Commit(#[from] CommitError),
}

impl SinkError {
    /// Whether the failure is caused by the line's own path (e.g. a file where a directory is
    /// needed), so retrying can never succeed and the line must be dead-lettered instead.
    pub fn is_permanent_for_path(&self) -> bool {
        matches!(self, SinkError::Open { source, .. } if matches!(
            source.kind(),
            ErrorKind::IsADirectory | ErrorKind::NotADirectory | ErrorKind::AlreadyExists
                | ErrorKind::InvalidFilename
        ))
    }
}

struct OutputFile {
    file: File,
    /// Length including `pending`, i.e. what the file will hold after the next sync.
    len: u64,
    /// Bytes appended since the last sync, written in one call.
    pending: Vec<u8>,
    /// Whether a syncfs of `output.dir` covers it (not on a mount below it).
    on_output_fs: bool,
}

/// The open output files under `output.dir`.
pub struct Sink {
    dir: PathBuf,
    /// Kept across recoveries: its syncfs reports errors since it was opened.
    fs: OutputFs,
    open: HashMap<PathBuf, OutputFile>,
}

impl Sink {
    /// Opens `dir` and truncates every recorded file back to its committed length.
    pub fn open(dir: &Path, commit: &Commit) -> Result<Sink, SinkError> {
        let fs = OutputFs::open(dir).map_err(|source| SinkError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut sink = Sink {
            dir: dir.to_path_buf(),
            fs,
            open: HashMap::new(),
        };
        sink.recover(commit)?;
        Ok(sink)
    }

    /// Closes every file (dropping unsynced appends) and truncates every recorded file back to
    /// its committed length.
    pub fn recover(&mut self, commit: &Commit) -> Result<(), SinkError> {
        self.close_all();
        let mut forget = Vec::new();
        for (relative, committed) in commit.files()? {
            let path = self.dir.join(&relative);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.len() > committed => {
                    truncate(&path, committed)?;
                    tracing::info!(file = %path.display(), committed, dropped = meta.len() - committed,
                        "truncated unacknowledged tail");
                }
                Ok(meta) if meta.len() < committed => {
                    tracing::info!(file = %path.display(), "output file shorter than committed, starting anew");
                    forget.push((relative, Some(meta.len())));
                }
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => forget.push((relative, None)),
                Err(source) => return Err(SinkError::Open { path, source }),
            }
        }
        if !forget.is_empty() {
            commit.set_lengths(&forget)?;
        }
        Ok(())
    }

    /// Opens every file in `files` that is not open yet, recording intent lengths for new ones
    /// in one flush. Returns the files that can never be opened (see
    /// [`SinkError::is_permanent_for_path`]) with their error.
    pub fn open_all<'a>(
        &mut self,
        files: impl Iterator<Item = &'a Path>,
        commit: &Commit,
    ) -> Result<Vec<(PathBuf, SinkError)>, SinkError> {
        let mut intents = Vec::new();
        let mut refused = Vec::new();
        for relative in files {
            if self.open.contains_key(relative) || refused.iter().any(|(r, _)| r == relative) {
                continue;
            }
            match self.open_one(relative, commit) {
                Ok((output, intent)) => {
                    if let Some(len) = intent {
                        intents.push((relative.to_path_buf(), Some(len)));
                    }
                    self.open.insert(relative.to_path_buf(), output);
                }
                Err(err) if err.is_permanent_for_path() => {
                    refused.push((relative.to_path_buf(), err))
                }
                Err(err) => return Err(err),
            }
        }
        if !intents.is_empty() {
            commit.set_lengths(&intents)?;
        }
        Ok(refused)
    }

    /// Opens one file; returns the length to record first if its record is missing or stale.
    fn open_one(
        &self,
        relative: &Path,
        commit: &Commit,
    ) -> Result<(OutputFile, Option<u64>), SinkError> {
        let path = self.dir.join(relative);
        let open_err = |source| SinkError::Open {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(open_err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let actual = meta.len();
        let (len, intent) = match commit.committed_len(relative)? {
            Some(committed) if actual > committed => {
                truncate(&path, committed)?;
                (committed, None)
            }
            Some(committed) if actual == committed => (committed, None),
            _ => {
                // A new directory entry must be durable before any line in it is acked.
                if let Some(parent) = path.parent() {
                    File::open(parent)
                        .and_then(|dir| dir.sync_all())
                        .map_err(open_err)?;
                }
                (actual, Some(actual))
            }
        };
        Ok((
            OutputFile {
                file,
                len,
                pending: Vec::new(),
                on_output_fs: self.fs.covers(&meta),
            },
            intent,
        ))
    }

    /// Appends a line (plus a newline) to an opened file; nothing reaches the disk before
    /// [`Sink::sync`].
    pub fn append(&mut self, relative: &Path, line: &[u8]) -> Result<(), SinkError> {
        let output = self
            .open
            .get_mut(relative)
            .ok_or_else(|| SinkError::NotOpen {
                path: relative.to_path_buf(),
            })?;
        output.pending.extend_from_slice(line);
        output.pending.push(b'\n');
        output.len += line.len() as u64 + 1;
        Ok(())
    }

    /// Writes what was appended, makes every touched file durable (see [`OutputFs::sync`]), and
    /// returns their new lengths.
    pub fn sync(&mut self) -> Result<Vec<(PathBuf, u64)>, SinkError> {
        let mut lengths = Vec::new();
        for (relative, output) in &mut self.open {
            if output.pending.is_empty() {
                continue;
            }
            output
                .file
                .write_all(&output.pending)
                .map_err(|source| SinkError::Write {
                    path: self.dir.join(relative),
                    source,
                })?;
            output.pending.clear();
            lengths.push((relative.clone(), output.len));
        }
        let paths: Vec<PathBuf> = lengths.iter().map(|(r, _)| self.dir.join(r)).collect();
        let targets: Vec<Target<'_>> = lengths
            .iter()
            .zip(&paths)
            .filter_map(|((relative, _), path)| {
                let output = self.open.get(relative)?;
                Some(Target {
                    file: &output.file,
                    path,
                    on_output_fs: output.on_output_fs,
                })
            })
            .collect();
        self.fs.sync(&targets)?;
        if self.open.len() > MAX_OPEN_FILES {
            self.open.clear();
        }
        Ok(lengths)
    }

    /// Closes every file, dropping unsynced appends; each reopens (and is re-checked) on demand.
    /// Used on SIGHUP and after a failed batch.
    pub fn close_all(&mut self) {
        self.open.clear();
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), SinkError> {
    let fail = |source| SinkError::Truncate {
        path: path.to_path_buf(),
        len,
        source,
    };
    let file = OpenOptions::new().write(true).open(path).map_err(fail)?;
    file.set_len(len).map_err(fail)?;
    file.sync_all().map_err(fail)
}
