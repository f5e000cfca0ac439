//! The upload ledger: what of each output file is in the object store, kept in
//! `<state_dir>/upload.json` (a snapshot, replaced by a rename) and `<state_dir>/upload.log`
//! (the changes since, one JSON line each, appended and synced one by one): a change costs one
//! small append and one fdatasync however many files the ledger holds. When the log has grown
//! past [`SNAPSHOT_AFTER`] (or the snapshot's size, if larger) a new snapshot is written and
//! the log emptied; a crash in between replays the whole log onto the new snapshot, which ends
//! in the same state (every change sets one entry, in order). A torn last line is ignored.
//!
//! Offsets in the store (and in keys) run over a path's whole history: a local file that
//! `upload.keep_local` deleted, or that was replaced (logrotate on the collector's side), is
//! followed by a new local file at the same path whose byte 0 is the store's offset `base`.
//! So a path's objects never restart at offset 0 with other bytes.
//!
//! Invariants:
//! - An object's range is in its entry (`next_end`) before the object is sent, and stays the
//!   same until the store confirmed it: a re-upload after a crash puts the same bytes.
//! - An entry's `done` advances only after the store confirmed the object holding the bytes
//!   up to it (the PUT, or the multipart upload's completion, returned success), and the
//!   change is durable (appended and synced) before anything relies on the advance, such as
//!   deleting local bytes.
//! - A multipart upload is in `multipart` before its first part is sent and leaves it once
//!   completed or aborted; a start aborts every one left there.
//! - An entry is retired (its local file deleted) only when `done` is the whole file, and the
//!   retirement is durable before the file is deleted.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The ledger's snapshot file name in `state_dir`.
pub const LEDGER_FILE: &str = "upload.json";
/// The ledger's log of changes since the snapshot, in `state_dir`.
pub const LOG_FILE: &str = "upload.log";
/// The log is folded into a new snapshot once it holds this many bytes (or more than the
/// snapshot itself).
pub const SNAPSHOT_AFTER: u64 = 1 << 20;

/// A failure to read or write the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot read the upload ledger \"{}\"", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the upload ledger \"{}\" is not one", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the upload ledger \"{}\"", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The local file an entry's offsets refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalFile {
    pub dev: u64,
    pub ino: u64,
}

/// One output path's upload state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The local file whose bytes `done` counts; `None` once it was deleted (retired).
    pub local: Option<LocalFile>,
    /// When the local file was retired (unix milliseconds): a file at the path written since
    /// is a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_ms: Option<i64>,
    /// The store's offset of the local file's byte 0.
    pub base: u64,
    /// The local file's bytes `[0, done)` are in the store.
    pub done: u64,
    /// Objects uploaded for the path, over its whole history.
    pub objects: u64,
    /// The end of the object being uploaded from `done`, recorded before its first request:
    /// after a crash the same range goes up again under the same key, whatever was committed
    /// since, so an object never changes once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_end: Option<u64>,
}

impl Entry {
    /// A path never uploaded, for `local`.
    pub fn new(local: LocalFile) -> Entry {
        Entry {
            local: Some(local),
            retired_ms: None,
            base: 0,
            done: 0,
            objects: 0,
            next_end: None,
        }
    }

    /// Where the path's objects end in the store.
    pub fn end(&self) -> u64 {
        self.base + self.done
    }

    /// The entry for a new local file at the path: it continues where the store ends.
    pub fn succeeded_by(&self, local: LocalFile) -> Entry {
        Entry {
            local: Some(local),
            retired_ms: None,
            base: self.end(),
            done: 0,
            objects: self.objects,
            next_end: None,
        }
    }
}

/// A multipart upload begun and not yet completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenMultipart {
    pub key: String,
    pub upload_id: String,
}

/// What `upload.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Per output path relative to `output.dir`.
    pub files: BTreeMap<String, Entry>,
    pub multipart: Vec<OpenMultipart>,
}

/// One change to the ledger, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The entry of an output path is now this.
    Entry { file: String, entry: Entry },
    /// A multipart upload is about to send its parts.
    MultipartBegun(OpenMultipart),
    /// A multipart upload was completed or aborted.
    MultipartEnded(OpenMultipart),
}

impl Ledger {
    /// The ledger in `state_dir` (its snapshot and the changes logged since); empty if there
    /// is none yet.
    pub fn read(state_dir: &Path) -> Result<Ledger, LedgerError> {
        let path = state_dir.join(LEDGER_FILE);
        let mut ledger = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| LedgerError::Parse { path, source })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ledger::default(),
            Err(source) => return Err(LedgerError::Read { path, source }),
        };
        let log = state_dir.join(LOG_FILE);
        match std::fs::read(&log) {
            Ok(bytes) => {
                // Every whole line is a change; a torn last one (a crash mid-append) is not.
                for line in bytes.split(|&b| b == b'\n') {
                    if let Ok(change) = serde_json::from_slice::<Change>(line) {
                        ledger.apply(change);
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LedgerError::Read { path: log, source }),
        }
        Ok(ledger)
    }

    /// Applies one change.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Entry { file, entry } => {
                self.files.insert(file, entry);
            }
            Change::MultipartBegun(open) => {
                self.multipart.retain(|m| *m != open);
                self.multipart.push(open);
            }
            Change::MultipartEnded(open) => self.multipart.retain(|m| *m != open),
        }
    }

    /// Writes the snapshot: a new file, synced, renamed over the old one, the directory synced.
    fn snapshot(&self, state_dir: &Path) -> Result<u64, LedgerError> {
        let path = state_dir.join(LEDGER_FILE);
        let fail = |source| LedgerError::Write {
            path: path.clone(),
            source,
        };
        let temporary = state_dir.join(format!("{LEDGER_FILE}.new"));
        let bytes = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .map_err(fail)?;
        let mut file = std::fs::File::create(&temporary).map_err(fail)?;
        file.write_all(&bytes).map_err(fail)?;
        file.sync_data().map_err(fail)?;
        std::fs::rename(&temporary, &path).map_err(fail)?;
        sync_dir(state_dir).map_err(fail)?;
        Ok(bytes.len() as u64)
    }
}

/// Appends changes to the ledger's log, and folds the log into a new snapshot now and then.
#[derive(Debug)]
pub struct LedgerLog {
    state_dir: PathBuf,
    log: std::fs::File,
    /// Bytes in the log now.
    logged: u64,
    /// Bytes of the last snapshot: the log is folded once it outgrows it (and
    /// [`SNAPSHOT_AFTER`]).
    snapshot: u64,
}

impl LedgerLog {
    /// The ledger in `state_dir`, and its log opened for changes (folded into a fresh snapshot
    /// first, so a start leaves an empty log).
    pub fn open(state_dir: &Path) -> Result<(Ledger, LedgerLog), LedgerError> {
        let ledger = Ledger::read(state_dir)?;
        let snapshot = ledger.snapshot(state_dir)?;
        let path = state_dir.join(LOG_FILE);
        let fail = |source| LedgerError::Write {
            path: path.clone(),
            source,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(fail)?;
        log.set_len(0).map_err(fail)?;
        log.sync_all().map_err(fail)?;
        sync_dir(state_dir).map_err(fail)?;
        let log = LedgerLog {
            state_dir: state_dir.to_path_buf(),
            log,
            logged: 0,
            snapshot,
        };
        Ok((ledger, log))
    }

    /// Makes `change` durable; `ledger` is the ledger with the change applied (written as the
    /// new snapshot when the log is due to be folded).
    pub fn append(&mut self, change: &Change, ledger: &Ledger) -> Result<(), LedgerError> {
        let path = self.state_dir.join(LOG_FILE);
        let fail = |source| LedgerError::Write {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(change)
            .map_err(std::io::Error::other)
            .map_err(fail)?;
        line.push(b'\n');
        self.log.write_all(&line).map_err(fail)?;
        self.log.sync_data().map_err(fail)?;
        self.logged += line.len() as u64;
        if self.logged > SNAPSHOT_AFTER.max(self.snapshot) {
            self.snapshot = ledger.snapshot(&self.state_dir)?;
            self.log.set_len(0).map_err(fail)?;
            self.log.sync_all().map_err(fail)?;
            self.logged = 0;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|dir| dir.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_changes_read_back_after_a_torn_line_and_across_a_fold() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Ledger::read(dir.path()).unwrap(), Ledger::default());
        let local = LocalFile { dev: 1, ino: 2 };
        let (mut ledger, mut log) = LedgerLog::open(dir.path()).unwrap();
        let open = OpenMultipart {
            key: "k".into(),
            upload_id: "u".into(),
        };
        let mut changes = vec![Change::MultipartBegun(open.clone())];
        for done in [100, 200, 300] {
            let entry = Entry {
                done,
                objects: done / 100,
                ..Entry::new(local)
            };
            changes.push(Change::Entry {
                file: "web-1/app.log".into(),
                entry,
            });
        }
        changes.push(Change::MultipartEnded(open));
        for change in changes {
            ledger.apply(change.clone());
            log.append(&change, &ledger).unwrap();
        }
        assert_eq!(ledger.files["web-1/app.log"].done, 300);
        assert!(ledger.multipart.is_empty());
        // A crash mid-append leaves a torn line: it is not a change.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap()
            .write_all(b"{\"entry\":{\"fi")
            .unwrap();
        assert_eq!(Ledger::read(dir.path()).unwrap(), ledger);
        // A fold (at a start) leaves the same ledger in the snapshot and an empty log.
        let (folded, _) = LedgerLog::open(dir.path()).unwrap();
        assert_eq!(folded, ledger);
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            0
        );
        let next = ledger.files["web-1/app.log"].succeeded_by(LocalFile { dev: 1, ino: 3 });
        assert_eq!(
            (next.base, next.done, next.end(), next.objects),
            (300, 0, 300, 3)
        );
    }
}
