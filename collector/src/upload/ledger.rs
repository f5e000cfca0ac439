//! The upload ledger: what of each output file is in the object store, kept in
//! `<state_dir>/upload.json`.
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
//!   ledger is durable (written to a new file, synced, renamed over the old one, the directory
//!   synced) before anything relies on the advance, such as deleting local bytes.
//! - A multipart upload is in `multipart` before its first part is sent and leaves it once
//!   completed or aborted; a start aborts every one left there.
//! - An entry is retired (its local file deleted) only when `done` is the whole file, and the
//!   retirement is durable before the file is deleted.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The ledger's file name in `state_dir`.
pub const LEDGER_FILE: &str = "upload.json";

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

impl Ledger {
    /// The ledger in `state_dir`; empty if there is none yet.
    pub fn read(state_dir: &Path) -> Result<Ledger, LedgerError> {
        let path = state_dir.join(LEDGER_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| LedgerError::Parse { path, source })
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(source) => Err(LedgerError::Read { path, source }),
        }
    }

    /// Makes the ledger durable in `state_dir`, replacing the old one at once.
    pub fn save(&self, state_dir: &Path) -> Result<(), LedgerError> {
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
        std::fs::File::open(state_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_ledger_reads_back_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Ledger::read(dir.path()).unwrap(), Ledger::default());
        let local = LocalFile { dev: 1, ino: 2 };
        let mut ledger = Ledger::default();
        let entry = Entry {
            done: 100,
            objects: 2,
            ..Entry::new(local)
        };
        ledger.files.insert("web-1/app.log".into(), entry);
        ledger.multipart.push(OpenMultipart {
            key: "k".into(),
            upload_id: "u".into(),
        });
        ledger.save(dir.path()).unwrap();
        assert_eq!(Ledger::read(dir.path()).unwrap(), ledger);
        let next = entry.succeeded_by(LocalFile { dev: 1, ino: 3 });
        assert_eq!(
            (next.base, next.done, next.end(), next.objects),
            (100, 0, 100, 2)
        );
    }
}
