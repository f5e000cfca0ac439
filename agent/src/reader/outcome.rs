//! What an attempt to open a file, or to reopen a closed one, found: the outcomes
//! `opening.rs` and `reopen.rs` hand each other.

use std::fs::File;

use crate::discover::Found;
use crate::identity::FileKey;

/// What opening a file gave.
pub(super) enum OpenOutcome {
    File(File, FileKey),
    /// No such file (any more).
    Gone,
    /// Out of descriptors: the file waits for one.
    NoDescriptor,
    /// Any other failure, said once; the rescan tries again.
    Failed,
}

/// What `Reader::open_now` did with a found file.
pub(super) enum Opening {
    Opened,
    /// Followed already, gone, or unreadable.
    Skipped,
    /// Out of descriptors: the file is handed back to wait.
    NoDescriptor(Found),
}

/// What reopening a closed file found.
pub(super) enum Revived {
    /// Open again (at its name, or draining under another one).
    Open,
    /// Found nowhere: deleted.
    Gone,
    /// Out of descriptors: it waits on.
    NoDescriptor,
}
