//! How files enter the reader: the glob scan, a name an event reports, a rename followed to
//! the file's new name, files rotated while the agent was stopped, and files held while a file
//! read from its `.gz` still has their inode's key ([`Deferred`]).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use logship_config::agent::{Format, ReadFrom};

use super::outcome::{OpenOutcome, Opening, Revived};
use super::{Reader, ReaderError};
use crate::discover::{self, Found};
use crate::identity::{self, FileKey};
use crate::line_rules::LineRules;
use crate::source::Source;
use crate::spool::Checkpoint;

/// A file found under a matching name while a decompressed source still has its key (the
/// inode of the `.gz`'s original, reused): two sources cannot share a key (the spool keeps one
/// checkpoint per key), so it is held open, and followed once that source is closed.
pub(super) struct Deferred {
    found: Found,
    file: File,
    key: FileKey,
}

impl Reader {
    /// Expands the globs: opens what is not open yet, and watches the directories.
    pub(super) fn scan(&mut self) -> Result<(), ReaderError> {
        // The globs' directories are watched before they are expanded: a file created in
        // between is seen by one or the other.
        for dir in discover::directories(&self.inputs) {
            self.wakeups.watch(&dir);
        }
        self.sources.recount();
        // What the scan finds is looked at as it comes, not listed: of 100k files only those not
        // followed yet (stat, not open: a followed file costs no descriptor and no event) and
        // those closed for the budget that the scan's stat says changed (another file at the
        // path, or another size: they ask for their descriptor) are kept.
        let (mut new, mut changed, mut parents) = (Vec::new(), Vec::new(), BTreeSet::new());
        let errors = {
            let closed: HashMap<&Path, usize> = (0..self.sources.len())
                .filter(|&i| !self.sources[i].is_open())
                .map(|i| (self.sources[i].path(), i))
                .collect();
            discover::scan(&self.inputs, &self.rules, |found| {
                if let Some(parent) = found.path.parent()
                    && !parents.contains(parent)
                {
                    parents.insert(parent.to_path_buf());
                }
                if let Some(&index) = closed.get(found.path.as_path()) {
                    let source = &self.sources[index];
                    if found.key != Some(source.key()) || found.size != Some(source.read_position())
                    {
                        changed.push(index);
                    }
                }
                if !found.key.is_some_and(|key| self.sources.follows(key)) {
                    new.push(found);
                }
            })
        };
        for (path, err) in &errors {
            self.warn_once(path, "cannot read file, will retry", err);
        }
        for dir in parents {
            self.wakeups.watch(&dir);
        }
        for index in changed {
            self.sources[index].wake();
        }
        for found in new {
            self.open(found)?;
        }
        self.first_scan = false;
        Ok(())
    }

    /// Opens a file found under a matching name, unless it is followed already. It waits
    /// behind an older file of the same path, if one is still open. A newer file of a path
    /// being read is in transit and opened at once; any other waits for a descriptor if the
    /// budget is reached.
    pub(super) fn open(&mut self, found: Found) -> Result<(), ReaderError> {
        if found.key.is_some_and(|key| self.sources.follows(key)) {
            return Ok(());
        }
        let first_scan = self.first_scan;
        if self.sources.follows_path(found.path.as_path()) {
            self.make_room()?;
        } else if self.budget.is_queued(&found.path) || !self.budget.has_room(self.sources.open()) {
            self.budget.queue(found, first_scan);
            return Ok(());
        }
        if let Opening::NoDescriptor(found) = self.open_now(found, first_scan)? {
            self.budget.ran_out(self.sources.open());
            self.budget.queue(found, first_scan);
        }
        Ok(())
    }

    /// Opens `found` now; `first_scan`: found by the first scan of a config (`read_from`
    /// applies).
    pub(super) fn open_now(
        &mut self,
        found: Found,
        first_scan: bool,
    ) -> Result<Opening, ReaderError> {
        let (file, key) = match self.open_file(&found.path) {
            OpenOutcome::File(file, key) => (file, key),
            OpenOutcome::NoDescriptor => return Ok(Opening::NoDescriptor(found)),
            OpenOutcome::Gone | OpenOutcome::Failed => return Ok(Opening::Skipped),
        };
        self.open_held(found, file, key, first_scan)
    }

    /// Follows `file` (keyed `key`), opened under the matching name `found` (unless a source
    /// has its key already); `first_scan` as for [`Reader::open_now`].
    pub(super) fn open_held(
        &mut self,
        found: Found,
        file: File,
        key: FileKey,
        first_scan: bool,
    ) -> Result<Opening, ReaderError> {
        if self.sources.follows(key) {
            if self.sources.borrowed(key) {
                self.defer(found, file, key);
            }
            return Ok(Opening::Skipped);
        }
        self.warned.remove(&found.path);
        let (checkpoint, copy) = self.checkpoint_for(&found, &file, key, first_scan)?;
        tracing::info!(path = %found.path.display(), offset = checkpoint.offset,
            generation = checkpoint.generation, "file opened");
        let mut source = Source::opened(&found.path, file, key, &checkpoint, found.rules.clone());
        if !found.by_scan {
            source.settled();
        }
        source.read_copy_first(copy);
        if checkpoint.fingerprint.is_none() && source.fingerprint().is_some() {
            // The head as it was when first seen, kept: a truncation while the agent is
            // stopped, before a line of the file was read, still finds the copy.
            self.spool.set_checkpoint(key, &source.checkpoint())?;
        }
        if let Some(dir) = found.path.parent() {
            self.wakeups.watch(dir);
            source.set_polled(self.wakeups.polled(dir));
        }
        self.sources.push(source);
        Ok(Opening::Opened)
    }

    /// A file was renamed from `from` to `to`. If `from` is a matching name and the file was
    /// never opened (it lived there between two looks), open it by its new name and drain it
    /// as `from`'s file (see [`Reader::drain_as`]).
    ///
    /// `to` is looked at when the event is applied, not when it happened: if the reader is a
    /// rotation or more behind, `to` may name a newer file of the path already (the older one
    /// shifted on to `path.2`, the next one renamed to `path.1`). That is why the files the
    /// watcher opened at their creation are adopted before renames are followed (see
    /// `Reader::apply`), and why [`Reader::drain_as`] places a file by what the path names now.
    pub(super) fn follow(&mut self, from: &Path, to: &Path) -> Result<(), ReaderError> {
        let Some(found) = self.matching(from) else {
            return Ok(());
        };
        let moved = std::fs::metadata(to).ok().map(|m| FileKey::of(&m));
        if let Some(key) = moved.filter(|&key| self.sources.borrowed(key)) {
            // Another file than the decompressed one of that key: its inode was reused. Held
            // already if it was seen under its name.
            if !self.deferred.iter().any(|d| d.key == key)
                && let OpenOutcome::File(file, opened) = self.open_file(to)
                && opened == key
            {
                self.defer(found, file, key);
            }
            return Ok(());
        }
        if let Some(index) = self.sources.iter().position(|s| Some(s.key()) == moved) {
            self.sources[index].mark_left();
            if !self.sources[index].is_open() {
                // Closed for the budget and now in transit: drained at once.
                self.make_room()?;
                if let Revived::Gone = self.revive(index, Some(to))? {
                    self.finish_gone(vec![index])?;
                }
            }
            return Ok(());
        }
        if discover::matches(&self.inputs, to) {
            return Ok(());
        }
        self.make_room()?;
        let (file, key) = match self.open_file(to) {
            OpenOutcome::File(file, key) => (file, key),
            OpenOutcome::NoDescriptor => {
                self.budget.ran_out(self.sources.open());
                return Ok(());
            }
            OpenOutcome::Gone | OpenOutcome::Failed => return Ok(()),
        };
        if self.sources.follows(key) {
            return Ok(());
        }
        let holder = holder(from);
        let offset = self.drain_as(&found, file, key, holder)?;
        tracing::info!(path = %from.display(), renamed_to = %to.display(), offset,
            "file renamed away before it was read, draining it");
        Ok(())
    }

    /// Drains `file`, which left `found`'s name before it was read, as that path's file: after
    /// every file of the path that no longer holds the name, before the one that holds it now
    /// (`holder`, as the path names it now). A file of the path still read as its current one
    /// has left the name too if the path names another file now (the reader would find out at
    /// its next step): it is older, marked as left here, and this one comes after it.
    ///
    /// Except before a file that left the name, of which nothing was read yet, and that was
    /// created after this one (birth times, where the filesystem keeps them): the watcher's
    /// thread, handling a creation late, may have opened the next file under the name instead,
    /// so the older file is found only by its rename, after the newer one was placed. Returns
    /// the offset it is read from.
    fn drain_as(
        &mut self,
        found: &Found,
        file: File,
        key: FileKey,
        holder: Option<FileKey>,
    ) -> Result<u64, ReaderError> {
        let path = found.path.as_path();
        for source in self.sources.iter_mut() {
            if source.path() == path && !source.has_left() && Some(source.key()) != holder {
                source.mark_left();
            }
        }
        let born = file.metadata().ok().and_then(|m| m.created().ok());
        let (checkpoint, _) = self.checkpoint_for(found, &file, key, false)?;
        let source = Source::rotated(path, file, key, &checkpoint, found.rules.clone());
        let younger_unread = |s: &Source| {
            s.has_left()
                && !s.is_decompressed()
                && s.read_position() == 0
                && born.is_some_and(|born| s.born().is_some_and(|b| b > born))
        };
        let at = self
            .sources
            .iter()
            .position(|s| s.path() == path && (!s.has_left() || younger_unread(s)))
            .unwrap_or(self.sources.len());
        self.sources.add(at, source);
        Ok(checkpoint.offset)
    }

    /// A file opened by the watcher when it was created at `path` (see `wakeup`). If `path`
    /// still names it, it is left to the event that reported it (opened by name, as any
    /// other). If it has left the name already (renamed away, or deleted, before the reader
    /// got to it), it is drained as `path`'s file (see [`Reader::drain_as`]): the files of that
    /// path that no longer hold the name are older and come first, the one holding it now
    /// comes after.
    pub(super) fn adopt(&mut self, path: &Path, file: File) -> Result<(), ReaderError> {
        let Ok(key) = file.metadata().map(|m| FileKey::of(&m)) else {
            return Ok(());
        };
        let Some(found) = self.matching(path) else {
            return Ok(());
        };
        if self.sources.follows(key) {
            if self.sources.borrowed(key) {
                self.defer(found, file, key);
            }
            return Ok(());
        }
        let holder = holder(path);
        if holder == Some(key) {
            return Ok(());
        }
        self.make_room()?;
        let offset = self.drain_as(&found, file, key, holder)?;
        tracing::info!(path = %path.display(), offset,
            "file left its name before it was read, draining it");
        Ok(())
    }

    /// Holds `file` until the decompressed source of its key is closed (see [`Deferred`]);
    /// once per key.
    fn defer(&mut self, found: Found, file: File, key: FileKey) {
        if self.deferred.iter().any(|d| d.key == key) {
            return;
        }
        tracing::info!(path = %found.path.display(),
            "file reuses the inode of a file read from its .gz, following it once that one is drained");
        self.deferred.push(Deferred { found, file, key });
    }

    /// Follows the deferred files whose key is free again: as its path's current file if the
    /// path still names it, else drained as a file that left its name (see
    /// [`Reader::drain_as`]).
    pub(super) fn follow_deferred(&mut self) -> Result<(), ReaderError> {
        let (free, held): (Vec<Deferred>, Vec<Deferred>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|d| !self.sources.follows(d.key));
        self.deferred = held;
        for Deferred { found, file, key } in free {
            let holder = holder(&found.path);
            if holder == Some(key) {
                self.open_held(found, file, key, false)?;
            } else {
                let offset = self.drain_as(&found, file, key, holder)?;
                tracing::info!(path = %found.path.display(), offset,
                    "file left its name before it was read, draining it");
            }
        }
        Ok(())
    }

    /// Opens a file (a failure other than a shortage of descriptors is said once per path).
    pub(super) fn open_file(&mut self, path: &Path) -> OpenOutcome {
        let opened = File::open(path).and_then(|file| {
            let meta = file.metadata()?;
            Ok((file, FileKey::of(&meta)))
        });
        match opened {
            Ok((file, key)) => OpenOutcome::File(file, key),
            Err(err) if err.kind() == ErrorKind::NotFound => OpenOutcome::Gone,
            Err(err)
                if err.raw_os_error() == Some(libc::EMFILE)
                    || err.raw_os_error() == Some(libc::ENFILE) =>
            {
                OpenOutcome::NoDescriptor
            }
            Err(err) => {
                self.warn_once(path, "cannot read file, will retry", &err);
                OpenOutcome::Failed
            }
        }
    }

    /// Where reading a newly opened file starts: its checkpoint if it still fits; the same
    /// checkpoint in the copy next to it if it was truncated while we were stopped (a
    /// copytruncate), then a new generation; a new generation; or (first scan,
    /// `read_from = "end"`) its end.
    fn checkpoint_for(
        &mut self,
        found: &Found,
        file: &File,
        key: FileKey,
        first_scan: bool,
    ) -> Result<(Checkpoint, Option<File>), ReaderError> {
        let size = file.metadata().map_or(0, |m| m.len());
        Ok(match self.spool.checkpoint(key)? {
            // A container log's path names its container: a checkpoint of another path under
            // this key is another container's file whose inode was reused, however alike
            // their heads (replicas print alike).
            // A finished one neither: a rotated container log never comes back to its name.
            Some(checkpoint)
                if resumable(file, &checkpoint, size)
                    && (found.rules.format == Format::Lines
                        || (checkpoint.path == found.path && !checkpoint.finished)) =>
            {
                (checkpoint, None)
            }
            Some(old) => {
                // Container runtimes rotate by rename, never by copytruncate: another head at a
                // checkpointed inode is a new file that reuses the inode of a deleted one (Docker
                // deletes its oldest file right before it creates the new one), not a truncation
                // with a copy to find (whose head might look alike).
                let copy = old
                    .fingerprint
                    .filter(|_| found.rules.format == Format::Lines)
                    .and_then(|head| identity::find_copy(&found.path, key, head))
                    .filter(|copy| copy.size > old.offset);
                if let Some(copy) = copy {
                    tracing::info!(path = %found.path.display(), copy = %copy.path.display(), offset = old.offset,
                        "file truncated while stopped, reading the rest from its copy first");
                    return Ok((old, Some(copy.file)));
                }
                let checkpoint = Checkpoint {
                    generation: old.generation.wrapping_add(1),
                    ..Checkpoint::start(&found.path)
                };
                (checkpoint, None)
            }
            None => {
                let at_end = first_scan && found.read_from == ReadFrom::End;
                let checkpoint = Checkpoint {
                    offset: if at_end { size } else { 0 },
                    generation: 0,
                    fingerprint: None,
                    path: found.path.clone(),
                    finished: false,
                    mid_event: false,
                };
                if at_end {
                    self.spool.set_checkpoint(key, &checkpoint)?;
                }
                (checkpoint, None)
            }
        })
    }

    /// The input `path` matches, with its shared rules (see [`discover::matching_shared`]).
    pub(super) fn matching(&self, path: &Path) -> Option<Found> {
        discover::matching_shared(&self.inputs, &self.rules, path)
    }

    /// The rules of the input `path` matches (of the first input if it matches none any more).
    pub(super) fn rules_for(&self, path: &Path) -> Arc<LineRules> {
        self.matching(path)
            .map(|found| found.rules)
            .or_else(|| self.rules.first().cloned())
            .unwrap_or_else(|| Arc::new(LineRules::plain(1 << 20)))
    }
}

/// The file `path` names now, if any.
fn holder(path: &Path) -> Option<FileKey> {
    std::fs::metadata(path).ok().map(|m| FileKey::of(&m))
}

/// Whether reading `file` may resume at `checkpoint`: same head, and not shorter.
pub(super) fn resumable(file: &File, checkpoint: &Checkpoint, size: u64) -> bool {
    size >= checkpoint.offset
        && match checkpoint.fingerprint {
            Some(fp) => identity::matches(file, fp).unwrap_or(false),
            None => true,
        }
}
