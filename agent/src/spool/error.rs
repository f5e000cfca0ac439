//! Why the spool failed, and whether reading should pause (a failing disk) or the agent end.

use std::path::PathBuf;

use super::{RESERVE, Seq};

/// A failure of the spool's database.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open spool in \"{}\"", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// The index (sled) failed at `op`; `path` is its directory.
    #[error("the spool's index \"{}\" failed to {op}", path.display())]
    Index {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("only {free} bytes free under \"{}\", {RESERVE} are kept for the spool's index", path.display())]
    LowSpace { path: PathBuf, free: u64 },
    #[error("spool segment {seq:016x} in \"{}\" failed", dir.display())]
    Segment {
        /// The segments' directory.
        dir: PathBuf,
        seq: Seq,
        #[source]
        source: std::io::Error,
    },
}

impl SpoolError {
    /// The disk under the spool failed in a way that may pass (full, quota, I/O error, read
    /// only): reading pauses and retries instead of ending the agent.
    pub fn is_disk_failure(&self) -> bool {
        if let SpoolError::LowSpace { .. } = self {
            return true;
        }
        // Out of descriptors is as transient: the reader keeps fewer files open.
        self.os_error().is_some_and(|code| {
            [
                libc::ENOSPC,
                libc::EDQUOT,
                libc::EIO,
                libc::EROFS,
                libc::EMFILE,
                libc::ENFILE,
            ]
            .contains(&code)
        })
    }

    /// The process (or the system) ran out of file descriptors.
    pub fn is_out_of_descriptors(&self) -> bool {
        self.os_error()
            .is_some_and(|code| code == libc::EMFILE || code == libc::ENFILE)
    }

    fn os_error(&self) -> Option<i32> {
        let io = match self {
            SpoolError::Segment { source, .. } => Some(source),
            SpoolError::Index {
                source: sled::Error::Io(source),
                ..
            } => Some(source),
            SpoolError::LowSpace { .. } | SpoolError::Open { .. } | SpoolError::Index { .. } => {
                None
            }
        };
        io.and_then(std::io::Error::raw_os_error)
    }
}
