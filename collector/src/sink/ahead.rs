//! Creating the next batch's new output files while the current batch is written.
//!
//! 400 sources that start at once (a collector's start, midnight with a `{date}` layout) need
//! 400 new output files. Made by the batch that writes them, their creates waited behind the
//! journal commits of the other fsyncs on the disk, 30-40 ms for 200-300 files, before its
//! first byte could be synced (issue 27, item 5). The consumer keeps taking deliveries while a
//! batch is written and hands the output files of the lines taken to [`Ahead::create`], on
//! another blocking thread: the next batch then finds them made.
//!
//! Invariants:
//! - A file is created here empty, and nothing else is done to it: no byte is appended and no
//!   record is written. The batch that first writes it records its intent length (0) before
//!   its first byte, as for any file it finds without a record (see [`crate::sink`]). A crash
//!   leaves at most empty files without a record, which the next start treats as any other.
//! - No directory is made here (the batch makes those and syncs their entries), so no new
//!   directory can escape the sync of the batch that first writes in it. The directory of
//!   every file made here is handed back ([`Made`]) and noted by the sink before the next
//!   batch opens a file ([`crate::sink::Sink::made_ahead`]): the new entry is durable before
//!   that batch commits, whatever its record says.
//! - The caller never hands over a file of the batch being written, and waits for a
//!   [`Ahead::create`] to return before the next batch (or a retention pass) uses the sink.
//! - No link is followed ([`nofollow`]), and at most [`MAX_DIRS`] directory descriptors (plus
//!   the root's and one walked to) are held: a file whose directory would be one more is left
//!   to its batch.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use super::nofollow;

/// Directories held in a [`Made`] at most; their entries are noted as the sink's own (see
/// [`crate::sink::durable::NewEntries`], which holds as many before it takes a syncfs).
pub const MAX_DIRS: usize = super::durable::SYNCFS_ABOVE;

/// Files remembered as existing at most; the set is forgotten when full (a file forgotten is
/// only looked up again).
const MAX_KNOWN: usize = 16 * 1024;

/// Creates output files ahead of the batch that writes them.
pub struct Ahead {
    /// A duplicate of the sink's descriptor of `output.dir`: the same directory, never a path
    /// looked up again.
    root: OwnedFd,
    /// Files seen to exist, made here or found: not looked up again.
    known: HashSet<PathBuf>,
}

/// The directories in which files were made ahead (each once, with its path relative to
/// `output.dir`): their new entries are not durable yet.
#[derive(Default)]
pub struct Made(Vec<(File, PathBuf)>);

impl Made {
    /// Whether no file was made.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The directories, for the sink to note.
    pub(super) fn into_dirs(self) -> Vec<(File, PathBuf)> {
        self.0
    }
}

impl Ahead {
    /// Creates files under the directory `root` stands for.
    pub(super) fn new(root: OwnedFd) -> Ahead {
        Ahead {
            root,
            known: HashSet::new(),
        }
    }

    /// Creates each of `files` that is missing and whose directory exists, adding its
    /// directory to `made`. A file that cannot be made here is left to its batch, which opens
    /// it itself and says why not.
    pub fn create(&mut self, files: &[PathBuf], made: &mut Made) {
        let mut last = nofollow::LastDir::default();
        for relative in files {
            if self.known.contains(relative) {
                continue;
            }
            let dir = relative.parent().unwrap_or(Path::new(""));
            let held = made.0.iter().any(|(_, path)| path == dir);
            if !held && made.0.len() >= MAX_DIRS {
                continue;
            }
            // A missing directory, a link, no space: the batch's own open decides.
            let Ok(entry) = nofollow::create_in_existing(self.root.as_fd(), relative, &mut last)
            else {
                continue;
            };
            if let Some(entry) = entry.filter(|_| !held) {
                made.0.push(entry);
            }
            if self.known.len() >= MAX_KNOWN {
                self.known.clear();
            }
            self.known.insert(relative.clone());
        }
    }
}
