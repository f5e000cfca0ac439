//! The reader thread: owns every [`Tailer`], finds files, notices rotation and truncation,
//! reads, and spools. Blocking file I/O and sled writes, so it runs on its own OS thread.
//!
//! Rotation rules:
//! - Rename (the path now names another inode, or nothing): keep reading the old descriptor;
//!   once it has been idle for [`ROTATE_IDLE`], ship its partial last line, flush the spool, and
//!   close it. Only then is the new file at the path opened, so the two never interleave.
//! - Copytruncate (same inode, shorter than what was read, or a different head): ship the
//!   partial line, start a new generation at offset 0.
//! - Deleted while open: as rename; the checkpoint is forgotten once the file is closed.
//! - On start, a checkpointed file whose path now names another inode is looked for in its
//!   directory (rotated while we were stopped) and drained from its checkpoint first.

use std::collections::HashSet;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use logship_config::agent::{Input, ReadFrom};
use tokio_util::sync::CancellationToken;

use crate::discover;
use crate::identity::{self, FileKey};
use crate::metrics::Metrics;
use crate::spool::{Checkpoint, Spool, SpoolError};
use crate::tailer::Tailer;

/// Sleep between turns that read nothing: the latency of a new line.
const POLL: Duration = Duration::from_millis(100);
/// Globs are expanded again this often: files created later are found within it.
const SCAN: Duration = Duration::from_secs(1);
/// A rotated-away file is closed after this long without growth.
pub const ROTATE_IDLE: Duration = Duration::from_secs(1);
/// Bytes read from one file per turn, so one busy file cannot starve the others.
const READ_BUDGET: usize = 128 << 10;

/// The reader's state.
pub struct Watcher {
    host: String,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    inputs: Vec<Input>,
    tailers: Vec<Tailer>,
    /// `read_from` applies to files without a checkpoint found by the first scan of a config.
    first_scan: bool,
    /// Paths already warned about, so a permanently unreadable file warns once.
    warned: HashSet<PathBuf>,
    /// Since when `block` has stopped reading because the spool is full.
    full_since: Option<Instant>,
}

impl Watcher {
    /// A watcher for these inputs.
    pub fn new(
        host: String,
        inputs: Vec<Input>,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
    ) -> Watcher {
        Watcher {
            host,
            spool,
            metrics,
            inputs,
            tailers: Vec::new(),
            first_scan: true,
            warned: HashSet::new(),
            full_since: None,
        }
    }

    /// Reads until `stop` is cancelled, then flushes the spool.
    pub fn run(
        mut self,
        stop: CancellationToken,
        reload: Receiver<Vec<Input>>,
    ) -> Result<(), SpoolError> {
        self.resume_rotated()?;
        let mut last_scan: Option<Instant> = None;
        while !stop.is_cancelled() {
            if let Some(inputs) = reload.try_iter().last() {
                self.inputs = inputs;
                self.first_scan = true;
                last_scan = None;
                tracing::info!(inputs = self.inputs.len(), "inputs reloaded");
            }
            if last_scan.is_none_or(|at| at.elapsed() >= SCAN) {
                self.scan()?;
                last_scan = Some(Instant::now());
            }
            if !self.turn()? {
                std::thread::sleep(POLL);
            }
        }
        self.spool.flush()
    }

    /// Reads every file once; `true` if anything was read.
    fn turn(&mut self) -> Result<bool, SpoolError> {
        let mut progressed = false;
        let mut finished = Vec::new();
        for index in 0..self.tailers.len() {
            if !self.spool.has_room() {
                if self.full_since.is_none() {
                    tracing::warn!(
                        bytes = self.spool.bytes(),
                        entries = self.spool.entries(),
                        "spool full, reading paused until the broker drains it"
                    );
                    self.full_since = Some(Instant::now());
                }
                return Ok(false);
            }
            if let Some(since) = self.full_since.take() {
                tracing::info!(
                    paused_secs = since.elapsed().as_secs(),
                    "spool has room, reading resumed"
                );
            }
            let (read, done) = self.service(index)?;
            progressed |= read;
            if done {
                finished.push(index);
            }
        }
        for index in finished.into_iter().rev() {
            let tailer = self.tailers.remove(index);
            self.close(tailer)?;
        }
        self.metrics.files_watched.store(
            self.tailers.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(progressed)
    }

    /// Checks one file's identity, reads it, spools what was read. Returns (read anything,
    /// finished).
    fn service(&mut self, index: usize) -> Result<(bool, bool), SpoolError> {
        let host = self.host.clone();
        let tailer = &mut self.tailers[index];
        let mut out = Vec::new();
        if tailer.rotated_at.is_none() {
            match std::fs::metadata(&tailer.path) {
                Ok(meta) if FileKey::of(&meta) == tailer.key => match tailer.truncated() {
                    Ok(true) => {
                        let _ = tailer.ship_partial(&host, &mut out);
                        spool_lines(&self.spool, &self.metrics, tailer, &mut out)?;
                        tailer.restart();
                        self.spool
                            .set_checkpoint(tailer.key, &tailer.checkpoint())?;
                        tracing::info!(path = %tailer.path.display(), "file truncated, reading it again from the start");
                    }
                    Ok(false) => {}
                    Err(err) => warn_read(&tailer.path, &err),
                },
                Ok(_) | Err(_) => {
                    tailer.rotated_at = Some(Instant::now());
                    tracing::info!(path = %tailer.path.display(), "file rotated away or deleted, draining it");
                }
            }
        }
        let read = match tailer.read(&host, READ_BUDGET, &mut out) {
            Ok(read) => read,
            Err(err) => {
                warn_read(&tailer.path, &err);
                0
            }
        };
        let done = tailer.rotated_at.is_some_and(|at| {
            read == 0 && at.elapsed() >= ROTATE_IDLE && tailer.last_growth.elapsed() >= ROTATE_IDLE
        });
        if done && let Err(err) = tailer.ship_partial(&host, &mut out) {
            warn_read(&tailer.path, &err);
        }
        spool_lines(&self.spool, &self.metrics, tailer, &mut out)?;
        Ok((read > 0, done))
    }

    /// Closes a drained file: the spool is flushed first, so its lines outlive the file.
    fn close(&mut self, tailer: Tailer) -> Result<(), SpoolError> {
        self.spool.flush()?;
        if tailer.deleted() {
            self.spool.remove_checkpoint(tailer.key)?;
        } else {
            let mut checkpoint = tailer.checkpoint();
            checkpoint.finished = true;
            self.spool.set_checkpoint(tailer.key, &checkpoint)?;
        }
        tracing::info!(path = %tailer.path.display(), offset = tailer.checkpoint().offset, "file closed");
        Ok(())
    }

    /// Opens the files the globs match that are not open yet.
    fn scan(&mut self) -> Result<(), SpoolError> {
        let scan = discover::scan(&self.inputs);
        for (path, err) in &scan.errors {
            self.warn_once(path, err);
        }
        for found in scan.found {
            let file = match File::open(&found.path) {
                Ok(file) => file,
                Err(err) => {
                    if err.kind() != ErrorKind::NotFound {
                        self.warn_once(&found.path, &err);
                    }
                    continue;
                }
            };
            let meta = match file.metadata() {
                Ok(meta) => meta,
                Err(err) => {
                    self.warn_once(&found.path, &err);
                    continue;
                }
            };
            let key = FileKey::of(&meta);
            // Already open (perhaps under its old name), or its path waits for a rotated file.
            if self
                .tailers
                .iter()
                .any(|t| t.key == key || t.path == found.path)
            {
                continue;
            }
            self.warned.remove(&found.path);
            let checkpoint = match self.spool.checkpoint(key)? {
                Some(checkpoint) if resumable(&file, &checkpoint, meta.len()) => checkpoint,
                Some(old) => Checkpoint {
                    offset: 0,
                    generation: old.generation.wrapping_add(1),
                    fingerprint: None,
                    path: found.path.clone(),
                    finished: false,
                },
                None => {
                    let at_end = self.first_scan && found.read_from == ReadFrom::End;
                    let checkpoint = Checkpoint {
                        offset: if at_end { meta.len() } else { 0 },
                        generation: 0,
                        fingerprint: None,
                        path: found.path.clone(),
                        finished: false,
                    };
                    if at_end {
                        self.spool.set_checkpoint(key, &checkpoint)?;
                    }
                    checkpoint
                }
            };
            tracing::info!(path = %found.path.display(), offset = checkpoint.offset,
                generation = checkpoint.generation, "file opened");
            self.tailers.push(Tailer::new(
                &found.path,
                file,
                key,
                &checkpoint,
                found.max_line_bytes,
            ));
        }
        self.first_scan = false;
        Ok(())
    }

    /// Files rotated while we were stopped: find each unfinished checkpoint's inode next to
    /// its old path and drain it from the checkpoint before the new file at the path.
    fn resume_rotated(&mut self) -> Result<(), SpoolError> {
        for (key, checkpoint) in self.spool.checkpoints()? {
            if checkpoint.finished {
                continue;
            }
            let still_there =
                std::fs::metadata(&checkpoint.path).is_ok_and(|m| FileKey::of(&m) == key);
            if still_there {
                continue;
            }
            match find_by_key(&checkpoint.path, key) {
                Some((file, size)) if resumable(&file, &checkpoint, size) => {
                    tracing::info!(path = %checkpoint.path.display(), offset = checkpoint.offset,
                        "file rotated while stopped, draining it first");
                    let max_line = self.max_line_for(&checkpoint.path);
                    let mut tailer =
                        Tailer::new(&checkpoint.path, file, key, &checkpoint, max_line);
                    tailer.rotated_at = Some(Instant::now());
                    self.tailers.push(tailer);
                }
                _ => {
                    tracing::warn!(path = %checkpoint.path.display(), offset = checkpoint.offset,
                        "file rotated and removed while stopped; lines written after the checkpoint are gone");
                    self.spool.remove_checkpoint(key)?;
                }
            }
        }
        Ok(())
    }

    fn max_line_for(&self, path: &Path) -> usize {
        let found = discover::scan(&self.inputs);
        found
            .found
            .iter()
            .find(|f| f.path == path)
            .or(found.found.first())
            .map_or(1 << 20, |f| f.max_line_bytes)
    }

    fn warn_once(&mut self, path: &Path, err: &std::io::Error) {
        if self.warned.insert(path.to_path_buf()) {
            tracing::warn!(path = %path.display(), error = %err, "cannot read file, will retry");
        }
    }
}

/// Appends what a tailer read to the spool with its checkpoint, and counts it.
fn spool_lines(
    spool: &Spool,
    metrics: &Metrics,
    tailer: &mut Tailer,
    out: &mut Vec<crate::tailer::Shipped>,
) -> Result<(), SpoolError> {
    if out.is_empty() {
        return Ok(());
    }
    let dropped = spool.append(out, tailer.key, &tailer.checkpoint())?;
    Metrics::add(&metrics.lines_read, out.len() as u64);
    Metrics::add(&metrics.lines_split, std::mem::take(&mut tailer.parts));
    if dropped > 0 {
        Metrics::add(&metrics.dropped, dropped);
        tracing::warn!(
            dropped,
            total = spool.dropped(),
            "spool full, dropped the oldest lines"
        );
    }
    out.clear();
    Ok(())
}

/// Whether reading `file` may resume at `checkpoint`: same head, and not shorter.
fn resumable(file: &File, checkpoint: &Checkpoint, size: u64) -> bool {
    size >= checkpoint.offset
        && match checkpoint.fingerprint {
            Some(fp) => identity::matches(file, fp).unwrap_or(false),
            None => true,
        }
}

/// Looks in `path`'s directory for the file with `key` (a rotated sibling).
fn find_by_key(path: &Path, key: FileKey) -> Option<(File, u64)> {
    let dir = path.parent()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if FileKey::of(&meta) == key {
            let file = File::open(entry.path()).ok()?;
            return Some((file, meta.len()));
        }
    }
    None
}

fn warn_read(path: &Path, err: &std::io::Error) {
    tracing::warn!(path = %path.display(), error = %err, "read failed, will retry");
}
