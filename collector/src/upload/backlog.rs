//! The upload backlog: the committed bytes of each output file not yet in the object store.
//! Shared by the writer (which commits bytes, seals quiet tails and deletes local files), the
//! uploader (which takes bytes to the store) and the consumer (which stops taking deliveries
//! while the backlog is over `upload.max_backlog`).
//!
//! It holds the upload [`Ledger`] and its log and is the only code that changes them, so the
//! writer's deletions and the uploader's advances are serialized and each is durable before it
//! counts.
//!
//! Invariants:
//! - A local file is deleted only when the ledger says all of its bytes are in the store, and
//!   after its retirement is durable in the ledger ([`Backlog::retire_if_uploaded`]).
//! - The backlog counts every committed byte whose upload is not recorded: bytes of a
//!   compressed file's unsealed tail too, since they must go up once sealed.
//! - Deliveries are paused when the backlog exceeds `upload.max_backlog` and resume once it is
//!   below three quarters of it (so a draining backlog does not pause and resume at every
//!   object).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::commit::file_record::FileRecord;
use crate::upload::ledger::{
    Change, Entry, Ledger, LedgerError, LedgerLog, LocalFile, OpenMultipart,
};

/// What the writer last committed for one output file.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    pub record: FileRecord,
    /// When the record last changed: a compressed file unchanged for a while is quiet, and its
    /// tail is sealed so that it can go up.
    pub changed: Instant,
    /// Since when committed bytes of it wait for the store (the oldest of them, roughly: reset
    /// when an object leaves only a part behind).
    pub waiting_since: Option<Instant>,
}

/// The backlog in numbers, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub bytes: u64,
    /// How long the oldest byte not uploaded has waited.
    pub oldest: Duration,
    pub paused: bool,
}

#[derive(Debug)]
struct State {
    files: HashMap<PathBuf, Committed>,
    ledger: Ledger,
    /// Where changes to the ledger are made durable.
    log: LedgerLog,
    /// Compressed files whose unsealed tail should be sealed, with their committed length
    /// when asked (a file written since is not quiet after all).
    seal: Vec<(PathBuf, u64)>,
    /// Committed bytes not in the store, over every file.
    bytes: u64,
}

impl State {
    /// Applies `change` to the ledger and makes it durable; on failure the ledger is as it was.
    fn change(&mut self, change: Change) -> Result<(), LedgerError> {
        let entry_before = match &change {
            Change::Entry { file, .. } => {
                Some((file.clone(), self.ledger.files.get(file).copied()))
            }
            _ => None,
        };
        let multipart_before = self.ledger.multipart.clone();
        self.ledger.apply(change.clone());
        if let Err(err) = self.log.append(&change, &self.ledger) {
            match entry_before {
                Some((file, Some(entry))) => {
                    self.ledger.files.insert(file, entry);
                }
                Some((file, None)) => {
                    self.ledger.files.remove(&file);
                }
                None => self.ledger.multipart = multipart_before,
            }
            return Err(err);
        }
        Ok(())
    }

    /// Bytes of `relative` not in the store.
    fn pending(&self, relative: &Path, record: &FileRecord) -> u64 {
        let done = key_of(relative)
            .and_then(|k| self.ledger.files.get(&k))
            .filter(|entry| entry.local.is_some())
            .map_or(0, |entry| entry.done);
        record.len.saturating_sub(done)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Backlog {
    state: Mutex<State>,
    max_bytes: u64,
    paused: watch::Sender<bool>,
    /// Wakes the uploader: a seal it asked for is done, or a file crossed `object_bytes`.
    wake: Notify,
    object_bytes: u64,
}

impl Backlog {
    /// The backlog of the collector with this `state_dir`, from its ledger.
    pub fn open(
        state_dir: &Path,
        max_bytes: u64,
        object_bytes: u64,
    ) -> Result<Backlog, LedgerError> {
        let (ledger, log) = LedgerLog::open(state_dir)?;
        Ok(Backlog {
            state: Mutex::new(State {
                files: HashMap::new(),
                ledger,
                log,
                seal: Vec::new(),
                bytes: 0,
            }),
            max_bytes,
            paused: watch::Sender::new(false),
            wake: Notify::new(),
            object_bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves plain data behind, still consistent enough
        // to count and to retry uploads from the durable ledger.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The writer committed these records (a batch, a compaction, a seal, or every file at
    /// start).
    pub fn committed(&self, records: &[(PathBuf, FileRecord)]) {
        let now = Instant::now();
        let mut state = self.lock();
        let mut wake = false;
        for (relative, record) in records {
            let before = state
                .files
                .get(relative)
                .map(|c| state.pending(relative, &c.record));
            let pending = state.pending(relative, record);
            state.bytes = state.bytes.saturating_sub(before.unwrap_or(0)) + pending;
            let previous = state.files.get(relative).copied();
            let waiting_since = match previous.and_then(|c| c.waiting_since) {
                Some(since) if pending > 0 => Some(since),
                _ if pending > 0 => Some(now),
                _ => None,
            };
            wake |= pending >= self.object_bytes && before.unwrap_or(0) < self.object_bytes;
            state.files.insert(
                relative.clone(),
                Committed {
                    record: *record,
                    changed: if previous.is_some_and(|c| c.record == *record) {
                        previous.map_or(now, |c| c.changed)
                    } else {
                        now
                    },
                    waiting_since,
                },
            );
        }
        self.update_pause(&state);
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }

    /// The writer deleted these files and forgot their records.
    pub fn forgotten(&self, relatives: &[PathBuf]) {
        let mut state = self.lock();
        for relative in relatives {
            if let Some(committed) = state.files.remove(relative) {
                let pending = state.pending(relative, &committed.record);
                state.bytes -= pending.min(state.bytes);
            }
        }
        self.update_pause(&state);
    }

    /// Whether every byte of the local file `relative` (`local`, `len` bytes long) is in the
    /// store; if so, retires its ledger entry durably, so that the file may be deleted.
    pub fn retire_if_uploaded(
        &self,
        relative: &Path,
        local: LocalFile,
        len: u64,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        let Some(key) = key_of(relative) else {
            return Ok(false);
        };
        let mut state = self.lock();
        let Some(entry) = state.ledger.files.get(&key).copied() else {
            return Ok(false);
        };
        if entry.local != Some(local) || entry.done < len {
            return Ok(false);
        }
        let retired = Entry {
            local: None,
            retired_ms: Some(now_ms),
            ..entry
        };
        state.change(Change::Entry {
            file: key,
            entry: retired,
        })?;
        Ok(true)
    }

    /// Takes the seal requests: `(file, its committed length when asked)`.
    pub fn take_seal_requests(&self) -> Vec<(PathBuf, u64)> {
        std::mem::take(&mut self.lock().seal)
    }

    /// The uploader asks the writer to seal `relative`'s tail of `len` committed bytes.
    pub fn request_seal(&self, relative: &Path, len: u64) {
        let mut state = self.lock();
        if !state.seal.iter().any(|(r, _)| r == relative) {
            state.seal.push((relative.to_path_buf(), len));
        }
    }

    /// Every file with committed bytes not in the store, or an unsealed tail, as committed.
    pub fn waiting(&self) -> Vec<(PathBuf, Committed)> {
        let state = self.lock();
        state
            .files
            .iter()
            .filter(|(relative, c)| {
                state.pending(relative, &c.record) > 0 || c.record.tail_start < c.record.len
            })
            .map(|(relative, c)| (relative.clone(), *c))
            .collect()
    }

    /// The ledger's entry for `relative`.
    pub fn entry(&self, relative: &Path) -> Option<Entry> {
        let key = key_of(relative)?;
        self.lock().ledger.files.get(&key).copied()
    }

    /// A copy of the ledger.
    pub fn ledger(&self) -> Ledger {
        self.lock().ledger.clone()
    }

    /// Records, durably, that the store confirmed `relative`'s bytes up to `entry.done` (or
    /// that a new local file took the path over); the multipart upload `finished`, if any, is
    /// no longer open.
    pub fn uploaded(
        &self,
        relative: &Path,
        entry: Entry,
        finished: Option<&OpenMultipart>,
    ) -> Result<(), LedgerError> {
        let Some(key) = key_of(relative) else {
            return Ok(());
        };
        let mut state = self.lock();
        let before = state
            .files
            .get(relative)
            .map(|c| (c.record, state.pending(relative, &c.record)));
        // Not durable: the advance does not count (the object is uploaded again).
        state.change(Change::Entry { file: key, entry })?;
        if let Some(open) = finished {
            state.change(Change::MultipartEnded(open.clone()))?;
        }
        if let Some((record, before)) = before {
            let pending = state.pending(relative, &record);
            state.bytes = state.bytes.saturating_sub(before) + pending;
            let now = Instant::now();
            if let Some(committed) = state.files.get_mut(relative) {
                committed.waiting_since = (pending > 0).then_some(now);
            }
        }
        self.update_pause(&state);
        Ok(())
    }

    /// Records, durably, the range of the object about to be sent (`entry.next_end`).
    pub fn intend(&self, relative: &Path, entry: Entry) -> Result<(), LedgerError> {
        let Some(key) = key_of(relative) else {
            return Ok(());
        };
        self.lock().change(Change::Entry { file: key, entry })
    }

    /// Notes, durably, a multipart upload about to begin its parts (`true`), or one aborted
    /// (`false`).
    pub fn multipart(&self, open: &OpenMultipart, begun: bool) -> Result<(), LedgerError> {
        let change = if begun {
            Change::MultipartBegun(open.clone())
        } else {
            Change::MultipartEnded(open.clone())
        };
        self.lock().change(change)
    }

    /// The backlog's size, age and whether deliveries are paused.
    pub fn gauges(&self) -> Gauges {
        let state = self.lock();
        let now = Instant::now();
        Gauges {
            bytes: state.bytes,
            oldest: state
                .files
                .values()
                .filter_map(|c| c.waiting_since)
                .map(|since| now.saturating_duration_since(since))
                .max()
                .unwrap_or_default(),
            paused: *self.paused.borrow(),
        }
    }

    /// Whether deliveries are paused now, and its changes.
    pub fn paused(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    /// Resolves when the uploader has something new to look at.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Wakes the uploader (a seal was done).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn update_pause(&self, state: &State) {
        let paused = *self.paused.borrow();
        if !paused && state.bytes > self.max_bytes {
            tracing::warn!(
                backlog_bytes = state.bytes,
                max_backlog = self.max_bytes,
                "upload backlog over upload.max_backlog: deliveries paused until it drains (the broker and the agents' spools hold the lines)"
            );
            self.paused.send_replace(true);
        } else if paused && state.bytes <= self.max_bytes / 4 * 3 {
            tracing::info!(
                backlog_bytes = state.bytes,
                "upload backlog drained: deliveries resumed"
            );
            self.paused.send_replace(false);
        }
    }
}

/// The ledger's key for an output file: its path under `output.dir` (object keys are text).
pub fn key_of(relative: &Path) -> Option<String> {
    relative.to_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: u64) -> FileRecord {
        FileRecord::at(len)
    }

    #[test]
    fn deliveries_pause_over_the_cap_and_resume_below_three_quarters_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let backlog = Backlog::open(dir.path(), 100, 10).unwrap();
        let paused = backlog.paused();
        let file = PathBuf::from("web-1/app.log");
        backlog.committed(&[(file.clone(), record(60))]);
        assert!(!*paused.borrow());
        backlog.committed(&[(file.clone(), record(120))]);
        assert!(*paused.borrow(), "120 bytes over a cap of 100");
        let local = LocalFile { dev: 1, ino: 2 };
        let uploaded = |done| Entry {
            done,
            ..Entry::new(local)
        };
        backlog.uploaded(&file, uploaded(40), None).unwrap();
        assert!(*paused.borrow(), "80 bytes left: above three quarters");
        backlog.uploaded(&file, uploaded(50), None).unwrap();
        assert!(!*paused.borrow(), "70 bytes left: resumed");
        assert_eq!(backlog.gauges().bytes, 70);
    }

    #[test]
    fn a_file_is_retired_only_once_all_of_it_is_uploaded_and_that_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalFile { dev: 1, ino: 2 };
        let file = PathBuf::from("web-1/app.log");
        {
            let backlog = Backlog::open(dir.path(), 1000, 10).unwrap();
            backlog.committed(&[(file.clone(), FileRecord::at(50))]);
            assert!(
                !backlog.retire_if_uploaded(&file, local, 50, 1).unwrap(),
                "nothing up yet"
            );
            let entry = Entry {
                done: 40,
                ..Entry::new(local)
            };
            backlog.uploaded(&file, entry, None).unwrap();
            assert!(
                !backlog.retire_if_uploaded(&file, local, 50, 1).unwrap(),
                "10 bytes not up"
            );
            let other = LocalFile { dev: 1, ino: 3 };
            assert!(
                !backlog.retire_if_uploaded(&file, other, 40, 1).unwrap(),
                "another file"
            );
            backlog
                .uploaded(&file, Entry { done: 50, ..entry }, None)
                .unwrap();
            assert!(backlog.retire_if_uploaded(&file, local, 50, 7).unwrap());
        }
        let reopened = Backlog::open(dir.path(), 1000, 10).unwrap();
        let entry = reopened.entry(&file).unwrap();
        assert_eq!(
            (entry.local, entry.retired_ms, entry.end()),
            (None, Some(7), 50)
        );
    }
}
