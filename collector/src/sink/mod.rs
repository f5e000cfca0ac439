//! Output files: append, make durable, and truncate back to the committed length.
//!
//! Invariants:
//! - A file's length is in the commit record before the first byte is appended to it (an intent
//!   record for files opened anew), so a crash can always be undone by truncating.
//! - The directory entry of a new file (and of each directory made for it) is durable before the
//!   batch that first writes to it commits: [`Sink::sync`] makes it so with the file's bytes
//!   (see [`crate::sink::durable::NewEntries`]). A crash before that may lose the file with its
//!   intent record still there: the start then forgets the record, as for any missing file.
//!   Files made ahead of their batch ([`ahead`]) are empty and unrecorded until that batch opens
//!   them; the entries made ahead are noted before that batch opens a file.
//! - On start and after any write failure, every recorded file is truncated back to its committed
//!   length: bytes past it belong to batches that were never acked and will be redelivered.
//! - A file opened anew (after SIGHUP, or rotated away while we were down) that is shorter than
//!   its record starts a new committed length.
//! - At most `max_open` output files are open. Appended lines wait in memory until
//!   [`Sink::sync`], which writes and syncs the touched files `max_open` at a time, so a file is
//!   closed (evicted, least recently used first) only when it has no bytes that are not yet
//!   durable; once its batch commits, all of them are committed too.
//! - No symbolic link below `output.dir` is ever followed, to write or to truncate: every file
//!   and directory is opened relative to its parent's descriptor without following links
//!   ([`nofollow`]). A path through a link is refused, and its lines are dead-lettered.
//! - Compressed files (`output.compression = "zstd"`) get one frame per batch, so their
//!   committed length is always the end of a frame; a staged compaction is finished before the
//!   file is truncated or written ([`frames`], [`compact`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use logship_config::archive::Compression;

use crate::commit::file_record::FileRecord;
use crate::commit::{Commit, CommitError};
use ahead::{Ahead, Made};
use durable::{NewEntries, OutputFs, SyncError, Target};
use lru::Lru;

pub(crate) mod ahead;
mod budget;
mod compact;
pub(crate) mod durable;
pub mod frames;
pub(crate) mod lru;
mod nofollow;
pub(crate) mod outpath;

pub use budget::budget;

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
    #[error("\"{}\" was written before it was opened", path.display())]
    NotOpen { path: PathBuf },
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("cannot compress for \"{}\"", path.display())]
    Compress {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SinkError {
    /// Whether the failure is caused by the line's own path (e.g. a file where a directory is
    /// needed), so retrying can never succeed and the line must be dead-lettered instead.
    pub fn is_permanent_for_path(&self) -> bool {
        matches!(self, SinkError::Open { source, .. } if matches!(
            source.kind(),
            ErrorKind::IsADirectory | ErrorKind::NotADirectory | ErrorKind::AlreadyExists
                | ErrorKind::InvalidFilename
        ) || nofollow::is_refusal(source))
    }

    /// Whether the state database failed, or a batch may be committed although its commit
    /// failed: the collector then exits (and systemd restarts it), since sled keeps failing once
    /// it hit an I/O error, and a start settles an uncertain commit from the journal.
    /// Everything else is an outage.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SinkError::Commit(CommitError::Sled { .. } | CommitError::Open { .. })
        ) || self.may_be_committed()
    }

    /// Whether the failed batch may be committed all the same (see
    /// [`CommitError::may_be_committed`]): its output must not be truncated back.
    pub fn may_be_committed(&self) -> bool {
        matches!(self, SinkError::Commit(err) if err.may_be_committed())
    }

    /// The operating system's error and the path it concerns, if the failure has them.
    pub fn io_error(&self) -> Option<(&Path, &std::io::Error)> {
        match self {
            SinkError::Open { path, source }
            | SinkError::Write { path, source }
            | SinkError::Truncate { path, source, .. }
            | SinkError::Sync(SyncError { path, source })
            | SinkError::Compress { path, source } => Some((path, source)),
            SinkError::NotOpen { .. } | SinkError::Commit(_) => None,
        }
    }
}

struct OutputFile {
    file: File,
    /// What the file holds (and will hold once synced): its committed record plus what this
    /// batch wrote to it.
    record: FileRecord,
    /// Whether a syncfs of `output.dir` covers it (not on a mount below it).
    on_output_fs: bool,
}

/// The output files under `output.dir`.
pub struct Sink {
    dir: PathBuf,
    /// `output.dir`, opened once: every output path is resolved from it without following links.
    root: OwnedFd,
    /// Kept across recoveries: its syncfs reports errors since it was opened.
    fs: OutputFs,
    /// New files and directories whose entries the next [`Sink::sync`] makes durable (kept
    /// across a failed batch: a retry finds the files recorded, no longer new).
    entries: NewEntries,
    /// Directories in which files were made ahead ([`ahead`]), noted in `entries` when the
    /// next batch opens its files (kept until noted).
    made_ahead: Vec<(File, PathBuf)>,
    open: Lru<PathBuf, OutputFile>,
    /// Output files open at most; lowered if the process runs out of descriptors anyway.
    max_open: usize,
    /// Lines appended since the last sync, per file, in the order files were first appended to.
    pending: Vec<(PathBuf, Vec<u8>)>,
    /// Index of each file in `pending`.
    pending_index: HashMap<PathBuf, usize>,
    /// zstd contexts when files are compressed; `None`: plain files.
    frames: Option<frames::Frames>,
    /// Compressed files whose tail of small frames is due for compaction once committed.
    compact_due: Vec<PathBuf>,
    /// Not before this instant is the next compaction round (see [`compact`]).
    next_compaction: std::time::Instant,
}

impl Sink {
    /// Opens `dir` and truncates every recorded file back to its committed length; at most
    /// `max_open` files will be open at once; files are written as `compression` says.
    pub fn open(
        dir: &Path,
        commit: &Commit,
        max_open: usize,
        compression: Compression,
    ) -> Result<Sink, SinkError> {
        let open_err = |source| SinkError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let fs = OutputFs::open(dir).map_err(open_err)?;
        let root = nofollow::open_root(dir).map_err(open_err)?;
        let mut sink = Sink {
            dir: dir.to_path_buf(),
            root,
            fs,
            entries: NewEntries::default(),
            made_ahead: Vec::new(),
            open: Lru::default(),
            max_open: max_open.max(1),
            pending: Vec::new(),
            pending_index: HashMap::new(),
            frames: match compression {
                Compression::None => None,
                Compression::Zstd { level } => Some(frames::Frames::new(level).map_err(
                    |source| SinkError::Compress {
                        path: dir.to_path_buf(),
                        source,
                    },
                )?),
            },
            compact_due: Vec::new(),
            next_compaction: std::time::Instant::now(),
        };
        sink.truncate_back(commit, true)?;
        Ok(sink)
    }

    /// After a failed batch: closes every file (dropping unsynced appends) and truncates every
    /// recorded file back to its committed length. Quiet: an outage is reported once elsewhere.
    pub fn recover(&mut self, commit: &Commit) -> Result<(), SinkError> {
        self.truncate_back(commit, false)
    }

    /// Truncates every recorded file back to its committed length; `on_start` logs each file
    /// cut at info (at debug after a failed batch, where it happens on every retry).
    fn truncate_back(&mut self, commit: &Commit, on_start: bool) -> Result<(), SinkError> {
        self.close_all();
        let mut forget = Vec::new();
        for (relative, record) in commit.files()? {
            let record = match record.staged {
                Some(_) => match self.settle(&relative, &record, commit) {
                    Err(SinkError::Open { source, .. }) if source.kind() == ErrorKind::NotFound => {
                        forget.push((relative, None));
                        continue;
                    }
                    settled => settled?,
                },
                None => record,
            };
            let committed = record.len;
            let path = self.dir.join(&relative);
            let opened = nofollow::open_existing(self.root.as_fd(), &relative);
            let meta = opened.and_then(|file| Ok((file.metadata()?, file)));
            match meta {
                Ok((meta, file)) if meta.len() > committed => {
                    truncate(&file, &path, committed)?;
                    let dropped = meta.len() - committed;
                    if on_start {
                        tracing::info!(file = %path.display(), committed, dropped, "truncated unacknowledged tail");
                    } else {
                        tracing::debug!(file = %path.display(), committed, dropped, "truncated unacknowledged tail");
                    }
                }
                Ok((meta, _)) if meta.len() < committed => {
                    tracing::info!(file = %path.display(), "output file shorter than committed, starting anew");
                    forget.push((relative, Some(FileRecord::at(meta.len()))));
                }
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => forget.push((relative, None)),
                Err(err)
                    if nofollow::is_refusal(&err) || err.kind() == ErrorKind::NotADirectory =>
                {
                    // A link (or other non-file) now stands where our file was: it is not ours
                    // to truncate, and writes to it will be refused.
                    tracing::warn!(file = %path.display(), error = %err, "output file replaced by a link or non-file, left alone");
                    forget.push((relative, None));
                }
                Err(source) => return Err(SinkError::Open { path, source }),
            }
        }
        if !forget.is_empty() {
            commit.set_records(&forget)?;
        }
        Ok(())
    }

    /// A creator of output files ahead of their batch, on the same `output.dir` descriptor.
    pub fn ahead(&self) -> std::io::Result<Ahead> {
        Ok(Ahead::new(self.root.try_clone()?))
    }

    /// Takes the directories in which files were made ahead: their entries become durable
    /// with the next batch's sync, like the entries that batch makes. Call between batches,
    /// after the [`Ahead::create`] that made them returned.
    pub fn made_ahead(&mut self, made: Made) {
        self.made_ahead.extend(made.into_dirs());
    }

    /// Notes the entries made ahead in `entries`; one that fails stays, for the next try.
    fn note_made_ahead(&mut self) -> Result<(), SinkError> {
        while let Some((dir, path)) = self.made_ahead.last() {
            let path = self.dir.join(path);
            let held = dir.try_clone().map_err(|source| SinkError::Open {
                path: path.clone(),
                source,
            })?;
            self.fs.note_entry(&mut self.entries, held, &path)?;
            self.made_ahead.pop();
        }
        Ok(())
    }

    /// Opens (or keeps open) every file in `files`, recording intent lengths for new ones in
    /// one flush. Returns the files that can never be opened (see
    /// [`SinkError::is_permanent_for_path`]) with their error.
    pub fn open_all<'a>(
        &mut self,
        files: impl Iterator<Item = &'a Path>,
        commit: &Commit,
    ) -> Result<Vec<(PathBuf, SinkError)>, SinkError> {
        self.note_made_ahead()?;
        let mut intents = Vec::new();
        let mut refused = Vec::new();
        // Held for this batch's opens only (see `nofollow::LastDir`).
        let mut last_dir = nofollow::LastDir::default();
        for relative in files {
            if self.open.get_mut(relative).is_some() || refused.iter().any(|(r, _)| r == relative) {
                continue;
            }
            // Make room first, so the budget holds even while the new file is opened. Nothing
            // waits in an open file outside `sync`'s write-then-sync: closing loses nothing.
            while self.open.len() >= self.max_open {
                self.open.pop_oldest();
            }
            match self.open_one(relative, commit, &mut last_dir) {
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
            commit.set_records(&intents)?;
        }
        Ok(refused)
    }

    /// Opens one file; returns the length to record first if its record is missing or stale.
    fn open_one(
        &mut self,
        relative: &Path,
        commit: &Commit,
        last_dir: &mut nofollow::LastDir,
    ) -> Result<(OutputFile, Option<FileRecord>), SinkError> {
        let path = self.dir.join(relative);
        let open_err = |source| SinkError::Open {
            path: path.clone(),
            source,
        };
        let nofollow::Opened { file, dir, made_in } =
            match nofollow::open_append(self.root.as_fd(), relative, last_dir) {
                Ok(opened) => opened,
                Err(err) => {
                    self.out_of_descriptors(&err);
                    return Err(open_err(err));
                }
            };
        for (parent, parent_path) in made_in {
            let parent_path = self.dir.join(parent_path);
            self.fs
                .note_entry(&mut self.entries, parent, &parent_path)?;
        }
        let committed = match commit.committed(relative)? {
            Some(record) if record.staged.is_some() => {
                Some(self.settle(relative, &record, commit)?)
            }
            other => other,
        };
        let meta = file.metadata().map_err(open_err)?;
        let actual = meta.len();
        let (record, intent) = match committed {
            Some(record) if actual > record.len => {
                truncate(&file, &path, record.len)?;
                (record, None)
            }
            Some(record) if actual == record.len => (record, None),
            _ => {
                // A new directory entry must be durable before any line in it is acked: the
                // batch's sync sees to it.
                let dir_path = path.parent().unwrap_or(&self.dir);
                self.fs.note_entry(&mut self.entries, dir, dir_path)?;
                (FileRecord::at(actual), Some(FileRecord::at(actual)))
            }
        };
        let on_output_fs = self.fs.covers(&meta);
        Ok((
            OutputFile {
                file,
                record,
                on_output_fs,
            },
            intent,
        ))
    }

    /// EMFILE with output files open means the budget is more than the process has: keep
    /// three quarters of what was open, so the retry after recovery can make progress.
    fn out_of_descriptors(&mut self, err: &std::io::Error) {
        if err.raw_os_error() == Some(libc::EMFILE) && self.open.len() > 1 {
            let lowered = (self.open.len() * 3 / 4).max(1);
            if lowered < self.max_open {
                tracing::warn!(
                    from = self.max_open,
                    to = lowered,
                    "out of file descriptors: keeping fewer output files open"
                );
                self.max_open = lowered;
            }
        }
    }

    /// Appends a line (plus a newline) for `relative`; nothing is written before
    /// [`Sink::sync`].
    pub fn append(&mut self, relative: &Path, line: &[u8]) {
        let index = match self.pending_index.get(relative) {
            Some(&index) => index,
            None => {
                self.pending.push((relative.to_path_buf(), Vec::new()));
                self.pending_index
                    .insert(relative.to_path_buf(), self.pending.len() - 1);
                self.pending.len() - 1
            }
        };
        let bytes = &mut self.pending[index].1;
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }

    /// Writes what was appended and makes it durable (see [`OutputFs::sync`]), at most
    /// `max_open` files at a time; returns the touched files' new records.
    pub fn sync(&mut self, commit: &Commit) -> Result<Vec<(PathBuf, FileRecord)>, SinkError> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_index.clear();
        let mut lengths = Vec::with_capacity(pending.len());
        for chunk in pending.chunks(self.max_open) {
            // Every file of the chunk is used after those opened before it, and the chunk fits
            // in the budget: opening it never evicts a file of the chunk.
            let refused = self.open_all(chunk.iter().map(|(r, _)| r.as_path()), commit)?;
            if let Some((_, err)) = refused.into_iter().next() {
                return Err(err);
            }
            for (relative, bytes) in chunk {
                let output = self
                    .open
                    .get_mut(relative)
                    .ok_or_else(|| SinkError::NotOpen {
                        path: relative.clone(),
                    })?;
                let frame = match &mut self.frames {
                    Some(frames) => {
                        Some(frames.frame(bytes).map_err(|source| SinkError::Compress {
                            path: self.dir.join(relative),
                            source,
                        })?)
                    }
                    None => None,
                };
                let written = frame.as_deref().unwrap_or(bytes);
                output
                    .file
                    .write_all(written)
                    .map_err(|source| SinkError::Write {
                        path: self.dir.join(relative),
                        source,
                    })?;
                let old_len = output.record.len;
                output.record.len += written.len() as u64;
                if frame.is_none() {
                    output.record = FileRecord::at(output.record.len);
                } else if frames::appended(&mut output.record, old_len, bytes.len() as u64)
                    && !self.compact_due.contains(relative)
                {
                    self.compact_due.push(relative.clone());
                }
                lengths.push((relative.clone(), output.record));
            }
            self.sync_chunk(chunk)?;
        }
        // New entries without a line written (none today), durable all the same.
        if !self.entries.is_empty() {
            self.fs.sync(&[], &mut self.entries)?;
        }
        Ok(lengths)
    }

    /// Makes what was just written to `chunk`'s files durable.
    fn sync_chunk(&mut self, chunk: &[(PathBuf, Vec<u8>)]) -> Result<(), SinkError> {
        let paths: Vec<PathBuf> = chunk.iter().map(|(r, _)| self.dir.join(r)).collect();
        let mut targets = Vec::with_capacity(chunk.len());
        for ((relative, _), path) in chunk.iter().zip(&paths) {
            // Present: opened above, and nothing was evicted since.
            let output = self.open.peek(relative).ok_or_else(|| SinkError::NotOpen {
                path: relative.clone(),
            })?;
            targets.push(Target {
                file: &output.file,
                path,
                on_output_fs: output.on_output_fs,
            });
        }
        self.fs.sync(&targets, &mut self.entries)?;
        Ok(())
    }

    /// Closes every file and drops what was appended but not synced; each file reopens (and is
    /// re-checked) on demand. Used on SIGHUP and after a failed batch.
    pub fn close_all(&mut self) {
        self.open.clear();
        self.pending.clear();
        self.pending_index.clear();
        self.compact_due.clear();
    }

    /// Closes `relative` if it is open (before retention deletes it). Nothing of it may be
    /// pending: call between batches.
    pub fn close(&mut self, relative: &Path) {
        self.open.remove(relative);
    }

    /// Seals the unsealed tail of a quiet compressed file: its frames stay as they are and will
    /// never be compacted, so they may go to the object store; the next batch starts a new
    /// tail. Returns the record to commit, or `None` if the file's committed length is no longer
    /// `len` (written since the seal was asked for) or it has no tail. Call between batches.
    pub fn seal(&mut self, relative: &Path, committed: FileRecord, len: u64) -> Option<FileRecord> {
        if committed.len != len
            || committed.tail_start >= committed.len
            || committed.staged.is_some()
        {
            return None;
        }
        let sealed = FileRecord::at(len);
        if let Some(output) = self.open.get_mut(relative) {
            output.record = sealed;
        }
        self.compact_due.retain(|due| due != relative);
        Some(sealed)
    }

    /// Output files open now.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Output files kept open at most.
    pub fn max_open(&self) -> usize {
        self.max_open
    }
}

/// Truncates `file` (opened without following links; `path` names it in errors) to `len`.
fn truncate(file: &File, path: &Path, len: u64) -> Result<(), SinkError> {
    let fail = |source| SinkError::Truncate {
        path: path.to_path_buf(),
        len,
        source,
    };
    file.set_len(len).map_err(fail)?;
    file.sync_all().map_err(fail)
}

#[cfg(test)]
mod tests;
