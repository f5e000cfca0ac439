//! What can fail in an upload.

use std::path::PathBuf;

use crate::upload::ledger::LedgerError;
use crate::upload::store::StoreError;

/// A failure of one upload.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot read \"{}\" to upload it", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl UploadError {
    /// A short name of the kind of failure: an outage is said again when its kind changes.
    pub fn kind(&self) -> &'static str {
        match self {
            UploadError::Store(err) if err.is_refusal() => "refused",
            UploadError::Store(_) => "store",
            UploadError::Ledger(_) => "ledger",
            UploadError::Read { .. } => "read",
        }
    }
}
