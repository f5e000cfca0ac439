//! The descriptor budget: how many watched files the reader keeps open, the files that wait
//! for a descriptor, and how running out is said.
//!
//! Invariants:
//! - At most [`Budget::max`] watched files hold a descriptor, except files in transit (renamed
//!   away or deleted with their tail unread, a newer file of a path still being read): they
//!   get theirs at once, so rotation keeps its promises. The reserve of descriptors under the
//!   open-file limit (`logship_runtime::rlimit::RESERVED_DESCRIPTORS`, 64, as in the collector)
//!   stays for the agent's own: stdio, sled's files, the spool directory and the segment being
//!   written or read, the broker connections, inotify, the runtime's epoll and wakers, the
//!   metrics listener and a few clients, two pipes per journal input (its journalctl child's
//!   stdout and stderr), and the files opened briefly to look for a rotated file or a
//!   copytruncate copy (about 25 in use on an idle agent, see the README). They never fail
//!   because files took them all.
//! - A file that cannot have a descriptor waits in turn, oldest first; it is never dropped.
//! - Files waiting is a pause, said once per outage with the count (an outage that starts
//!   within [`OUTAGE_QUIET`] of the last one is the same one), and its end once: never a
//!   warning per file, never an exit.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::discover::Found;
use crate::metrics::Metrics;
use crate::moment::Moment;

/// A pause that starts this soon after the last one ended is the same outage: not said again.
const OUTAGE_QUIET: Duration = Duration::from_secs(60);
/// Kept below the count of open files when the process ran out of descriptors anyway (other
/// descriptors took more than the reserve), so the agent's own find theirs.
const SHORTAGE_MARGIN: usize = 16;

/// A file never opened, waiting for a descriptor.
pub struct Queued {
    pub found: Found,
    /// Found by the first scan of a config: `read_from` applies.
    pub first_scan: bool,
    pub since: Moment,
}

/// Files waiting for a descriptor, and since when.
struct Outage {
    since: Instant,
    said: bool,
    /// The most files that waited at once.
    most: usize,
}

/// The budget and the files that wait for it.
pub struct Budget {
    max: usize,
    queue: VecDeque<Queued>,
    queued: HashSet<PathBuf>,
    outage: Option<Outage>,
    /// When the last outage ended.
    ended_at: Option<Instant>,
    /// The longest a file waited for its descriptor in the current outage.
    longest: Duration,
}

impl Default for Budget {
    /// No budget (until the reader works it out from the config and the open-file limit).
    fn default() -> Budget {
        Budget {
            max: usize::MAX,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            outage: None,
            ended_at: None,
            longest: Duration::ZERO,
        }
    }
}

impl Budget {
    /// `configured` (`max_open_files`) capped to what the open-file `limit` leaves after
    /// the reserve (half a tiny limit); that alone when not configured. Said once.
    pub fn new(configured: Option<usize>, limit: Option<u64>) -> Budget {
        let usable = logship_runtime::rlimit::files_under(limit);
        let max = match (configured, usable) {
            (Some(configured), Some(usable)) if configured > usable => {
                tracing::warn!(
                    configured,
                    open_file_limit = limit,
                    max_open_files = usable,
                    "max_open_files leaves too few descriptors under the open-file limit; keeping fewer files open"
                );
                usable
            }
            (Some(configured), _) => configured,
            (None, Some(usable)) => usable,
            (None, None) => usize::MAX,
        };
        tracing::info!(
            max_open_files = max,
            open_file_limit = limit,
            "descriptor budget"
        );
        Budget {
            max,
            ..Budget::default()
        }
    }

    /// Watched files kept open at most.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether one more file may be opened with `open` open.
    pub fn has_room(&self, open: usize) -> bool {
        open < self.max
    }

    /// Whether a file at `path` already waits.
    pub fn is_queued(&self, path: &std::path::Path) -> bool {
        self.queued.contains(path)
    }

    /// `found` waits for a descriptor, behind those that waited before it.
    pub fn queue(&mut self, found: Found, first_scan: bool) {
        if self.queued.insert(found.path.clone()) {
            self.queue.push_back(Queued {
                found,
                first_scan,
                since: Moment::now(),
            });
        }
    }

    /// Since when the first file in the queue waits.
    pub fn oldest_queued(&self) -> Option<Moment> {
        self.queue.front().map(|q| q.since)
    }

    /// The first file in the queue, taken out of it. The queue's memory goes with its last
    /// file: 100k files found at start must not leave their room behind for good.
    pub fn pop(&mut self) -> Option<Queued> {
        let queued = self.queue.pop_front()?;
        self.queued.remove(&queued.found.path);
        if self.queue.is_empty() {
            self.queue.shrink_to_fit();
            self.queued.shrink_to_fit();
        }
        Some(queued)
    }

    /// A file that got no descriptor goes back to the head of the queue.
    pub fn requeue(&mut self, queued: Queued) {
        if self.queued.insert(queued.found.path.clone()) {
            self.queue.push_front(queued);
        }
    }

    /// Files never opened that wait.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Forgets the queue (the inputs changed: the next scan finds what still matches).
    pub fn clear(&mut self) {
        self.queue = VecDeque::new();
        self.queued = HashSet::new();
    }

    /// The process ran out of descriptors with `open` files open: keep fewer from now on.
    pub fn ran_out(&mut self, open: usize) {
        let max = open.saturating_sub(SHORTAGE_MARGIN).max(1);
        if max < self.max {
            tracing::warn!(
                open_files = open,
                max_open_files = max,
                "out of file descriptors below max_open_files (raise LimitNOFILE); keeping fewer files open"
            );
            self.max = max;
        }
    }

    /// A file got its descriptor after waiting since `since`.
    pub fn served(&mut self, since: Moment) {
        self.longest = self.longest.max(since.elapsed());
    }

    /// After files were given descriptors: `waiting` still wait. Starts or ends an outage,
    /// each said once.
    pub fn report(&mut self, waiting: usize, open: usize, metrics: &Metrics) {
        metrics
            .files_waiting
            .store(waiting as u64, Ordering::Relaxed);
        metrics.files_open.store(open as u64, Ordering::Relaxed);
        match (&mut self.outage, waiting) {
            (None, 0) => {}
            (None, _) => {
                let said = self.ended_at.is_none_or(|at| at.elapsed() >= OUTAGE_QUIET);
                if said {
                    tracing::warn!(
                        waiting,
                        open_files = open,
                        max_open_files = self.max,
                        "descriptor budget reached: files wait for a descriptor and are read in turn"
                    );
                }
                self.longest = Duration::ZERO;
                self.outage = Some(Outage {
                    since: Instant::now(),
                    said,
                    most: waiting,
                });
            }
            (Some(outage), 0) => {
                let (secs, most) = (outage.since.elapsed().as_secs_f64(), outage.most);
                let longest_wait_secs = self.longest.as_secs_f64();
                if outage.said {
                    tracing::info!(
                        outage_secs = secs,
                        most_waiting = most,
                        longest_wait_secs,
                        "every file waiting for a descriptor has had its turn"
                    );
                } else {
                    tracing::debug!(
                        outage_secs = secs,
                        most_waiting = most,
                        longest_wait_secs,
                        "every file waiting for a descriptor has had its turn"
                    );
                }
                self.outage = None;
                self.ended_at = Some(Instant::now());
            }
            (Some(outage), _) => outage.most = outage.most.max(waiting),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_caps_the_budget_and_keeps_a_reserve() {
        assert_eq!(Budget::new(None, Some(512)).max(), 448);
        assert_eq!(Budget::new(Some(100), Some(512)).max(), 100);
        assert_eq!(Budget::new(Some(1000), Some(512)).max(), 448);
        assert_eq!(Budget::new(None, Some(100)).max(), 50);
        assert_eq!(Budget::new(Some(7), None).max(), 7);
        assert_eq!(Budget::new(None, None).max(), usize::MAX);
    }

    #[test]
    fn running_out_lowers_the_budget_below_what_was_open() {
        let mut budget = Budget::new(None, Some(1024));
        budget.ran_out(300);
        assert_eq!(budget.max(), 300 - SHORTAGE_MARGIN);
        assert!(!budget.has_room(300 - SHORTAGE_MARGIN));
    }
}
