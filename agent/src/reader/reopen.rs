//! Descriptors taken back and given out under the budget: idle files closed, least recently
//! active first, when others wait; files waiting given theirs in turn, oldest first; a closed
//! file reopened only as itself.
//!
//! Invariants:
//! - Only a file read to its end, with every line spooled and the spool flushed, loses its
//!   descriptor: should it be renamed away or deleted while closed, nothing it held is lost.
//! - A closed file is reopened as itself only if the name it was found under, the name an event
//!   says it was renamed to, or a name in its directory opens the same (device, inode); its
//!   head is compared before the next read, so a file rewritten meanwhile is a truncation.
//!   Found under another name, it drains like a rotated file; found nowhere, it is finished.

use std::path::Path;
use std::time::Duration;

use super::budget::Queued;
use super::outcome::{OpenOutcome, Opening, Revived};
use super::{Reader, ReaderError};
use crate::identity;
use crate::moment::Moment;

/// A budget's share kept free while no file waits (1/32nd: 14 of 448): a closed file that
/// changes gets its descriptor at once, without a spool flush (to close another) in its way.
const SPARE_SHARE: usize = 32;
/// Only files idle this long are closed to keep the spare share free.
const SPARE_IDLE: Duration = Duration::from_secs(1);

impl Reader {
    /// Gives descriptors to the files waiting for one (closed files that changed, files never
    /// opened), oldest first, closing idle files to make room; says an outage once.
    pub(super) fn admit(&mut self) -> Result<(), ReaderError> {
        let mut woken: Vec<(Moment, usize)> = (0..self.sources.len())
            .filter_map(|i| self.sources[i].woken_at().map(|at| (at, i)))
            .collect();
        let waiting = woken.len() + self.budget.queued();
        if waiting == 0 {
            // Back under the budget if it was lowered (the process ran out of descriptors),
            // and the spare share freed from files idle for a while.
            let over = self.sources.open().saturating_sub(self.budget.max());
            if over > 0 {
                self.close_idle(over, Duration::ZERO)?;
            }
            let spare = self.budget.max() / SPARE_SHARE;
            let over = (self.sources.open() + spare).saturating_sub(self.budget.max());
            if over > 0 {
                self.close_idle(over, SPARE_IDLE)?;
            }
            self.budget.report(0, self.sources.open(), &self.metrics);
            return Ok(());
        }
        woken.sort_unstable();
        let short = (self.sources.open() + waiting).saturating_sub(self.budget.max());
        if short > 0 {
            self.close_idle(short, Duration::ZERO)?;
        }
        let mut woken = woken.into_iter().peekable();
        let mut gone = Vec::new();
        while self.budget.has_room(self.sources.open()) {
            let take_woken = match (woken.peek(), self.budget.oldest_queued()) {
                (None, None) => break,
                (Some(&(at, _)), Some(queued)) => at <= queued,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_woken {
                let Some((at, index)) = woken.next() else {
                    break;
                };
                match self.revive(index, None)? {
                    Revived::Open => self.budget.served(at),
                    Revived::Gone => gone.push(index),
                    Revived::NoDescriptor => {
                        self.budget.ran_out(self.sources.open());
                        break;
                    }
                }
            } else {
                let Some(queued) = self.budget.pop() else {
                    break;
                };
                let (since, first_scan) = (queued.since, queued.first_scan);
                match self.open_now(queued.found, first_scan)? {
                    Opening::Opened => self.budget.served(since),
                    Opening::Skipped => {}
                    Opening::NoDescriptor(found) => {
                        self.budget.ran_out(self.sources.open());
                        self.budget.requeue(Queued {
                            found,
                            first_scan,
                            since,
                        });
                        break;
                    }
                }
            }
        }
        let left = woken.count() + self.budget.queued();
        self.finish_gone(gone)?;
        self.budget.report(left, self.sources.open(), &self.metrics);
        Ok(())
    }

    /// Makes room for a file in transit (it is opened anyway): closes an idle file if the
    /// budget is reached.
    pub(super) fn make_room(&mut self) -> Result<(), ReaderError> {
        let over = (self.sources.open() + 1).saturating_sub(self.budget.max());
        if over > 0 {
            self.close_idle(over, Duration::ZERO)?;
        }
        Ok(())
    }

    /// Closes up to `n` files idle for at least `min_idle`, least recently active first, after
    /// flushing the spool.
    fn close_idle(&mut self, n: usize, min_idle: Duration) -> Result<(), ReaderError> {
        let mut idle: Vec<(Moment, usize)> = (0..self.sources.len())
            .filter(|&i| self.sources[i].is_open() && self.sources[i].closable())
            .map(|i| (self.sources[i].active_at(), i))
            .filter(|(active_at, _)| active_at.elapsed() >= min_idle)
            .collect();
        if idle.is_empty() {
            return Ok(());
        }
        if idle.len() > n {
            idle.select_nth_unstable(n);
            idle.truncate(n);
        }
        match self.spool.flush() {
            Err(err) if err.is_disk_failure() => return Ok(()),
            other => other?,
        }
        tracing::debug!(
            files = idle.len(),
            "closing idle files for the descriptor budget"
        );
        for (_, index) in idle {
            self.sources.park(index);
        }
        Ok(())
    }

    /// Reopens the closed file at `index` as itself: at its name, at `renamed_to`, or under
    /// another name in its directory (then it drains).
    pub(super) fn revive(
        &mut self,
        index: usize,
        renamed_to: Option<&Path>,
    ) -> Result<Revived, ReaderError> {
        let (path, key) = {
            let source = &self.sources[index];
            (source.path().to_path_buf(), source.key())
        };
        match self.open_file(&path) {
            OpenOutcome::File(file, found) if found == key => {
                self.sources.reopen(index, file, false);
                return Ok(Revived::Open);
            }
            OpenOutcome::NoDescriptor => return Ok(Revived::NoDescriptor),
            // Another file holds the name, or none does: this one left it.
            _ => {}
        }
        let renamed = renamed_to.and_then(|to| match self.open_file(to) {
            OpenOutcome::File(file, found) if found == key => Some(file),
            _ => None,
        });
        match renamed.or_else(|| identity::find_by_key(&path, key).map(|(file, _)| file)) {
            Some(file) => {
                tracing::info!(path = %path.display(),
                    "file closed for the descriptor budget left its name, draining it");
                self.sources.reopen(index, file, true);
                Ok(Revived::Open)
            }
            None => {
                tracing::info!(path = %path.display(), "file closed for the descriptor budget was deleted");
                Ok(Revived::Gone)
            }
        }
    }

    /// Finishes closed files found deleted: a last line without a newline is spooled (the
    /// file was read to its end when it was closed), then they are forgotten.
    pub(super) fn finish_gone(&mut self, mut gone: Vec<usize>) -> Result<(), ReaderError> {
        if gone.is_empty() {
            return Ok(());
        }
        gone.sort_unstable();
        let mut lines = Vec::new();
        for &index in &gone {
            let source = &mut self.sources[index];
            if let Err(err) = source.ship_partial(&self.host, &mut lines) {
                tracing::warn!(path = %source.path().display(), error = %err,
                    "cannot ship the last line of a deleted file");
            }
        }
        if self.spool_turn(lines)? {
            self.close(gone)?;
        }
        Ok(())
    }
}
