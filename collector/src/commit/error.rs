//! What fails in the commit record, named with the state directory and the operation.

use std::path::{Path, PathBuf};

use super::wal::AppendError;
use super::{DATABASE, RESERVE};

/// A failure of the commit record.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("cannot open state in \"{}\"", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// The state database (sled, `path`) failed at `op`.
    #[error("the state database \"{}\" failed to {op}", path.display())]
    Sled {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    /// Too little space on the state disk to commit (see [`RESERVE`]): nothing was written.
    #[error("only {free} bytes free in the state directory \"{}\", {RESERVE} are kept for the state database", path.display())]
    LowSpace { path: PathBuf, free: u64 },
    /// The batch is committed in the journal, but sled failed to take its changes: nothing may
    /// be undone (a start replays it).
    #[error("batch committed in the journal, but the state database failed")]
    Committed(#[source] sled::Error),
    #[error(transparent)]
    Wal(#[from] AppendError),
    /// The commit journal (in the state directory `dir`) failed at `op`.
    #[error("the commit journal in \"{}\" failed to {op}", dir.display())]
    Io {
        dir: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Names where and at what a failure of the state happened: `.at(state_dir, "flush")`.
pub(super) trait At<T> {
    fn at(self, state_dir: &Path, op: &'static str) -> Result<T, CommitError>;
}

impl<T> At<T> for Result<T, sled::Error> {
    fn at(self, state_dir: &Path, op: &'static str) -> Result<T, CommitError> {
        self.map_err(|source| CommitError::Sled {
            path: state_dir.join(DATABASE),
            op,
            source,
        })
    }
}

impl<T> At<T> for std::io::Result<T> {
    fn at(self, state_dir: &Path, op: &'static str) -> Result<T, CommitError> {
        self.map_err(|source| CommitError::Io {
            dir: state_dir.to_path_buf(),
            op,
            source,
        })
    }
}

impl CommitError {
    /// Whether the batch may be committed although the call failed: its output must not be
    /// truncated back, and the collector stops (a start settles it from the journal).
    pub fn may_be_committed(&self) -> bool {
        matches!(
            self,
            CommitError::Committed(_) | CommitError::Wal(AppendError::Unsure { .. })
        )
    }
}
