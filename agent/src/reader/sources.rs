//! The sources the reader follows ([`Sources`]): added and taken out with the indexes by key
//! and path that spare a walk over 100k sources, held behind an older file of their path, and
//! closed once drained.
//!
//! Invariants: sources are added and taken out only through [`Sources`], so its `keys` and
//! `paths` hold exactly the sources' keys and paths (a count per path), and `borrowed` the keys
//! of the decompressed ones; its open count is the
//! number of sources holding a descriptor (see [`Sources::open`]); a drained file is closed
//! only after the spool is flushed, so its lines outlive it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;

use super::{Reader, ReaderError};
use crate::identity::FileKey;
use crate::source::Source;

/// The sources, oldest first: of several files of one path, the first is read, the others
/// wait. Read and stepped in place as a slice; added, taken out, closed for the budget and
/// reopened only through its methods.
#[derive(Default)]
pub(super) struct Sources {
    list: Vec<Source>,
    /// The sources' keys and paths (how many per path), so that finding out whether a file is
    /// followed costs no walk over 100k sources.
    keys: HashSet<FileKey>,
    paths: HashMap<Arc<Path>, usize>,
    /// The keys of decompressed sources (a few, for a while after a start): the inode may be
    /// another file's now (see [`Sources::borrowed`]).
    borrowed: HashSet<FileKey>,
    /// Sources holding a descriptor.
    open: usize,
    /// The list changed since `held` was last worked out.
    relink_due: bool,
}

impl Deref for Sources {
    type Target = [Source];

    fn deref(&self) -> &[Source] {
        &self.list
    }
}

impl DerefMut for Sources {
    fn deref_mut(&mut self) -> &mut [Source] {
        &mut self.list
    }
}

impl Sources {
    /// Adds a source at `at`.
    pub fn add(&mut self, at: usize, source: Source) {
        self.keys.insert(source.key());
        if source.is_decompressed() {
            self.borrowed.insert(source.key());
        }
        *self.paths.entry(source.shared_path().clone()).or_default() += 1;
        self.open += usize::from(source.is_open());
        if self.list.len() == self.list.capacity() {
            // Grown by an eighth, not doubled: with 100k files a doubled list would hold up
            // to 100k empty slots of a few hundred bytes each (issue 27 item 4).
            self.list.reserve_exact(self.list.len() / 8 + 64);
        }
        self.list.insert(at, source);
        self.relink_due = true;
    }

    /// Adds a source after all the others.
    pub fn push(&mut self, source: Source) {
        self.add(self.list.len(), source);
    }

    /// Takes the source at `index` out.
    pub fn remove(&mut self, index: usize) -> Source {
        let source = self.list.remove(index);
        self.keys.remove(&source.key());
        self.borrowed.remove(&source.key());
        if let Some(count) = self.paths.get_mut(source.path()) {
            *count -= 1;
            if *count == 0 {
                self.paths.remove(source.path());
            }
        }
        self.open -= usize::from(source.is_open());
        self.relink_due = true;
        source
    }

    /// Whether the file of `key` is followed.
    pub fn follows(&self, key: FileKey) -> bool {
        self.keys.contains(&key)
    }

    /// Whether `key` is followed only as a decompressed file's (read from its `.gz`): a file on
    /// disk with that key is another file, whose inode was reused.
    pub fn borrowed(&self, key: FileKey) -> bool {
        self.borrowed.contains(&key)
    }

    /// Whether a file of `path` is followed.
    pub fn follows_path(&self, path: &Path) -> bool {
        self.paths.contains_key(path)
    }

    /// Sources holding a descriptor. Exact after [`Sources::add`], [`Sources::remove`],
    /// [`Sources::park`] and [`Sources::reopen`]; a step may take a descriptor for a closed
    /// file (its copytruncate copy swapped in), so it is counted again by [`Sources::recount`]
    /// before the budget is worked out.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Counts the sources holding a descriptor again.
    pub fn recount(&mut self) {
        self.open = self.list.iter().filter(|s| s.is_open()).count();
    }

    /// Closes the descriptor of the (idle) source at `index` (see [`Source::park`]).
    pub fn park(&mut self, index: usize) {
        if self.list[index].is_open() {
            self.list[index].park();
            self.open -= 1;
        }
    }

    /// Gives the closed source at `index` its descriptor back (see [`Source::reopen`]).
    pub fn reopen(&mut self, index: usize, file: File, draining: bool) {
        let was_open = self.list[index].is_open();
        self.list[index].reopen(file, draining);
        self.open += usize::from(!was_open);
    }

    /// Marks the files that an older file of the same path still holds back, if the list
    /// changed since it was last done.
    pub fn relink_if_due(&mut self) {
        if std::mem::take(&mut self.relink_due) {
            self.relink();
        }
    }

    /// Marks the files that an older file of the same path still holds back. Only paths with
    /// several files are remembered on the way: with 100k files, a set of every path, made at
    /// each file's close, was 3 MiB and 100k inserts (issue 27 item 4).
    pub fn relink(&mut self) {
        let mut seen = HashSet::new();
        for source in &mut self.list {
            let shared = self
                .paths
                .get(source.path())
                .is_some_and(|&count| count > 1);
            source.set_held(shared && !seen.insert(source.shared_path().clone()));
        }
        self.relink_due = false;
    }

    /// Asks for the held files to be worked out again before the next turn.
    pub fn relink_later(&mut self) {
        self.relink_due = true;
    }

    /// Whether a newer file of the path of the source at `index` has grown: the application
    /// writes there now.
    pub fn successor_grew(&self, index: usize) -> bool {
        let path = self.list[index].path();
        self.list[index + 1..]
            .iter()
            .any(|s| s.path() == path && s.is_open() && s.grown())
    }

    /// Whether a newer file of the path of the source at `index` is followed.
    pub fn has_successor(&self, index: usize) -> bool {
        let path = self.list[index].path();
        self.list[index + 1..].iter().any(|s| s.path() == path)
    }
}

impl Reader {
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
            let mut source = self.sources.remove(index);
            if source.deleted()
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
        self.follow_deferred()?;
        // The next file of each path, held since it appeared, is read from now on.
        self.sources.relink();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_several_files_of_a_path_all_but_the_oldest_are_held() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        let mut sources = Sources::default();
        sources.push(Source::written(&a, 1));
        sources.push(Source::written(&b, 2));
        // A newer file at a.log (the older one was renamed away and still drains under it).
        sources.push(Source::written(&a, 3));
        sources.relink();
        let held: Vec<bool> = sources.iter().map(Source::is_held).collect();
        assert_eq!(held, [false, false, true]);
        // The older one closed: the newer one is read.
        sources.remove(0);
        sources.relink();
        let held: Vec<bool> = sources.iter().map(Source::is_held).collect();
        assert_eq!(held, [false, false]);
    }
}
