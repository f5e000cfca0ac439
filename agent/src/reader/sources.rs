//! The sources the reader follows: added and taken out (with the indexes by key and path
//! that spare a walk over 100k sources), held behind an older file of their path, and closed
//! once drained.
//!
//! Invariants: `keys` and `paths` hold exactly the sources' keys and paths (a count per path);
//! `open_files` counts the sources holding a descriptor; a drained file is closed only after
//! the spool is flushed, so its lines outlive it.

use std::collections::HashSet;

use super::{Reader, ReaderError};
use crate::identity::FileKey;
use crate::source::Source;

impl Reader {
    /// Whether a newer file of the path of the source at `index` has grown: the application
    /// writes there now.
    pub(super) fn successor_grew(&self, index: usize) -> bool {
        let path = self.sources[index].path();
        self.sources[index + 1..]
            .iter()
            .any(|s| s.path() == path && s.is_open() && s.grown())
    }

    /// Marks the files that an older file of the same path still holds back; called whenever
    /// the list of sources changes.
    pub(super) fn relink(&mut self) {
        let mut seen = HashSet::new();
        for source in &mut self.sources {
            let path = source.shared_path().clone();
            source.set_held(!seen.insert(path));
        }
    }

    /// Closes drained files: the spool is flushed first, so their lines outlive the files.
    pub(super) fn close(&mut self, finished: Vec<usize>) -> Result<(), ReaderError> {
        if finished.is_empty() {
            return Ok(());
        }
        match self.spool.flush() {
            Err(err) if err.is_disk_failure() => return Ok(()),
            other => other?,
        }
        let mut reused = Vec::new();
        for index in finished.into_iter().rev() {
            let mut source = self.remove_source(index);
            if source.tailer().deleted()
                && std::fs::metadata(source.path()).is_ok_and(|m| FileKey::of(&m) == source.key())
            {
                reused.push(source.path().to_path_buf());
            }
            match source.closing_checkpoint() {
                Some(checkpoint) => self.spool.set_checkpoint(source.key(), &checkpoint)?,
                None => self.spool.remove_checkpoint(source.key())?,
            }
            if let Some(handover) = source.take_handover() {
                self.hand_over(source.path(), handover);
            }
            tracing::info!(path = %source.path().display(), "file closed");
        }
        // The next file of each path, held since it appeared, is read from now on.
        self.relink();
        // A file drained under a key that the file at its path now has too (a gzipped rotated
        // container log, whose inode the runtime's new file reused) kept that file from being
        // opened: it is looked at again now, not at the next rescan.
        for path in reused {
            if let Some(found) = self.matching(&path) {
                self.open(found)?;
            }
        }
        Ok(())
    }

    /// Whether a newer file of the path of the source at `index` is open.
    pub(super) fn has_successor(&self, index: usize) -> bool {
        let path = self.sources[index].path();
        self.sources[index + 1..].iter().any(|s| s.path() == path)
    }

    /// Gives the open lines of a finished container log to the next file of its path (older
    /// files come first in the list).
    fn hand_over(&mut self, path: &std::path::Path, handover: crate::tailer::Handover) {
        match self.sources.iter_mut().find(|s| s.path() == path) {
            Some(next) => {
                tracing::info!(path = %path.display(), "lines the runtime cut across a rotation go on in the newer file");
                next.take_over(handover);
            }
            // Never so: the step that finished it saw the newer file. Its checkpoint stays
            // unfinished, so a restart reads it again.
            None => tracing::warn!(path = %path.display(),
                "no newer file to carry the open lines of a rotated container log into; they are read again after a restart"),
        }
    }

    /// Adds a source at `at` (it holds a descriptor).
    pub(super) fn add_source(&mut self, at: usize, source: Source) {
        self.keys.insert(source.key());
        *self.paths.entry(source.shared_path().clone()).or_default() += 1;
        self.open_files += usize::from(source.is_open());
        self.sources.insert(at, source);
        self.relink_due = true;
    }

    /// Takes the source at `index` out.
    pub(super) fn remove_source(&mut self, index: usize) -> Source {
        let source = self.sources.remove(index);
        self.keys.remove(&source.key());
        if let Some(count) = self.paths.get_mut(source.path()) {
            *count -= 1;
            if *count == 0 {
                self.paths.remove(source.path());
            }
        }
        self.open_files -= usize::from(source.is_open());
        self.relink_due = true;
        source
    }
}
