//! The reader thread: finds files, wakes on inotify events (or polls), steps every [`Source`]
//! that may have changed, and spools what one turn read with one durable write. Blocking file
//! I/O and fsyncs, so it runs on its own OS thread.
//!
//! Invariants:
//! - A file seen under a matching name is opened at once (an event, a rename followed to the
//!   file's new name, or the safety rescan), and its descriptor is held until it is drained.
//! - One turn is one spool append: one segment file, one fsync, and one sled batch holding its
//!   index record and every checkpoint the turn advanced. A checkpoint never passes a line that
//!   is not spooled.
//! - A spool write that fails because the state disk is full or failing pauses reading: the
//!   sources go back to their spooled checkpoints (the lines are still in the files), the
//!   reader says why once, retries with backoff, and says when it resumes. Any other failure
//!   ends the thread with an error, and the agent with exit 1.
//! - A drained file is closed only after the spool is flushed.
//! - At most `max_open_files` watched files hold a descriptor (see [`budget`]): idle ones are
//!   closed, least recently active first, when others wait for one, and reopened when they
//!   change; files waiting for a descriptor get theirs in turn, oldest first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use logship_config::agent::{Input, WatchMode};
use tokio_util::sync::CancellationToken;

use crate::identity::FileKey;
use crate::line_rules::LineRules;
use crate::metrics::Metrics;
use crate::source::{Source, Step};
use crate::spool::{Checkpoint, Spool, SpoolError};
use crate::status::{Snapshots, Status};
use crate::wakeup::{Wake, Wakeups};
use budget::Budget;
use logship_runtime::error_chain as chain;
use pause::DiskPause;
use sources::Sources;

/// Polling interval: files inotify cannot see, and files draining after a rotation.
const POLL: Duration = Duration::from_millis(100);
/// The safety net under inotify (lost events): globs expanded and every file looked at this
/// often. An overflow of inotify's queue is reported, and asks for a pass at once.
const SAFETY_SCAN: Duration = Duration::from_secs(5);
/// The longest the reader sleeps: how soon it notices it is asked to stop.
const WAIT_MAX: Duration = Duration::from_millis(250);
/// Globs expanded this often when polling.
const POLL_SCAN: Duration = Duration::from_secs(1);
/// Events are gathered this long after a turn, so a busy host makes one turn (one fsync) per
/// window rather than one per write.
const COALESCE: Duration = Duration::from_millis(5);
/// Bytes read from one file per turn, so one busy file cannot starve the others.
const FILE_BUDGET: usize = 512 << 10;
/// Bytes read per turn in all: bounds a segment, and the memory holding it.
const TURN_BUDGET: usize = 2 << 20;
/// Bytes of messages (ids and envelopes) one turn makes at most, give or take one file's
/// step: a segment is held whole in memory, by the reader while it spools it and by the
/// publisher (two at a time) while it publishes it. Short lines grow several times over in
/// their envelopes (a 50-byte line is a 300-byte message), so [`TURN_BUDGET`] alone let a
/// segment of 100k files' short lines hold 12 MiB of messages, and the agent's RSS follow.
const TURN_MESSAGES: usize = 2 << 20;
/// Removed segments' files are deleted (after a flush) at most this often.
const COLLECT_EVERY: Duration = Duration::from_millis(100);

/// Why the reader stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("injected reader fault (LOGSHIP_TEST_FAULT=reader)")]
    Injected,
}

/// The reader's state.
pub struct Reader {
    host: String,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    inputs: Vec<Input>,
    /// Each input's rules, made once and shared by all its files (`rules[i]` is `inputs[i]`'s).
    rules: Vec<Arc<LineRules>>,
    /// Oldest first: of several files of one path, the first is read, the others wait.
    sources: Sources,
    /// `max_open_files` as configured; the budget is worked out from it when reading starts.
    max_open_files: Option<usize>,
    budget: Budget,
    wakeups: Wakeups,
    /// `read_from` applies to files without a checkpoint found by the first scan of a config.
    first_scan: bool,
    /// Paths already warned about, so a permanently unreadable file warns once.
    warned: HashSet<PathBuf>,
    /// Files whose inode a decompressed source's key still names (see [`Sources::borrowed`]),
    /// held open until that source is closed.
    deferred: Vec<opening::Deferred>,
    /// Since when `block` has stopped reading because the spool is full.
    full_since: Option<Instant>,
    pause: DiskPause,
    /// Where the next turn starts (the last one ran out of budget there).
    resume_at: usize,
    last_collect: Instant,
    /// Where the files are shown to `/status` (the list made when a page asks) and the lag
    /// gauge (refreshed by `snapshots`).
    status: Arc<Status>,
    snapshots: Snapshots,
}

impl Reader {
    /// A reader for these inputs.
    pub fn new(
        host: String,
        inputs: Vec<Input>,
        watch: WatchMode,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
    ) -> Reader {
        Reader {
            host,
            spool,
            metrics,
            rules: shared_rules(&inputs),
            inputs,
            sources: Sources::default(),
            max_open_files: None,
            budget: Budget::default(),
            wakeups: Wakeups::new(watch),
            first_scan: true,
            warned: HashSet::new(),
            deferred: Vec::new(),
            full_since: None,
            pause: DiskPause::default(),
            resume_at: 0,
            last_collect: Instant::now(),
            status: Arc::default(),
            snapshots: Snapshots::default(),
        }
    }

    /// Shows the files in `status` (refreshed at the end of a turn, at most every second).
    pub fn with_status(mut self, status: Arc<Status>) -> Reader {
        self.status = status;
        self
    }

    /// Keeps at most `max` watched files open (`None`: what the open-file limit leaves).
    pub fn with_max_open_files(mut self, max: Option<usize>) -> Reader {
        self.max_open_files = max;
        self
    }

    /// Reads until `stop` is cancelled, then flushes the spool.
    pub fn run(
        mut self,
        stop: CancellationToken,
        reload: Receiver<Vec<Input>>,
    ) -> Result<(), ReaderError> {
        if std::env::var_os("LOGSHIP_TEST_FAULT").is_some_and(|v| v == "reader") {
            return Err(ReaderError::Injected);
        }
        self.budget = Budget::new(
            self.max_open_files,
            logship_runtime::rlimit::open_file_limit(),
        );
        self.resume_rotated()?;
        self.wakeups.set_inputs(&self.inputs);
        let mut last_scan: Option<Instant> = None;
        let mut last_turn = Instant::now();
        while !stop.is_cancelled() {
            if let Some(inputs) = reload.try_iter().last() {
                self.rules = shared_rules(&inputs);
                self.inputs = inputs;
                self.wakeups.set_inputs(&self.inputs);
                self.first_scan = true;
                self.budget.clear();
                last_scan = None;
                tracing::info!(inputs = self.inputs.len(), "inputs reloaded");
            }
            let every = if self.wakeups.polling() {
                POLL_SCAN
            } else {
                SAFETY_SCAN
            };
            if last_scan.is_none_or(|at| at.elapsed() >= every) {
                self.scan()?;
                self.sources.iter_mut().for_each(Source::mark_changed);
                last_scan = Some(Instant::now());
            }
            last_turn = self.turn(last_turn)?;
            if self.snapshots.due() {
                self.status.record_gauges(&self.sources);
            }
            self.status.answer(&self.sources);
            self.collect()?;
            let timeout = self.timeout(last_scan, every).min(WAIT_MAX);
            let settle = COALESCE.saturating_sub(last_turn.elapsed());
            let wake = self.wakeups.wait(timeout, settle);
            if wake.rescan {
                last_scan = None;
            }
            self.apply(wake)?;
        }
        match self.spool.flush() {
            Err(err) if err.is_disk_failure() => {
                tracing::warn!(error = %chain(&err), "cannot flush the spool on the way out; lines not flushed are read again on start");
                Ok(())
            }
            other => Ok(other?),
        }
    }

    /// How long to wait for an event.
    fn timeout(&self, last_scan: Option<Instant>, every: Duration) -> Duration {
        if let Some(wait) = self.pause.wait() {
            return wait;
        }
        if self.full_since.is_some()
            || self.wakeups.polling()
            || self.budget.queued() > 0
            || self
                .sources
                .iter()
                .any(|s| s.busy() || s.woken_at().is_some())
        {
            return POLL;
        }
        if self
            .sources
            .iter()
            .any(|s| s.may_have_changed() && !s.waiting() && s.is_open())
        {
            return Duration::ZERO;
        }
        let next_scan = last_scan.map_or(Duration::ZERO, |at| every.saturating_sub(at.elapsed()));
        // A file that may be read once it settled.
        (0..self.sources.len())
            .filter(|&i| self.sources[i].waiting() && !self.sources[i].is_held())
            .map(|i| self.sources[i].settling())
            .fold(next_scan, Duration::min)
    }

    /// Folds what the events said into the sources.
    ///
    /// The files the watcher opened at their creation are adopted first, in the order they
    /// were created, before any rename is followed: each descriptor is the very file created,
    /// while a rename's new name is looked at only now and, when the reader is a rotation or
    /// more behind, may name a newer file of the path (the older one shifted on meanwhile).
    /// Followed first, that newer file would be placed, and read, before the older ones it
    /// was created after.
    fn apply(&mut self, wake: Wake) -> Result<(), ReaderError> {
        if wake.all {
            self.sources.iter_mut().for_each(Source::mark_changed);
        }
        // Watched before the rescan expands the globs: a file created in one meanwhile is
        // seen by one or the other (a pod's container directory comes a level further down).
        for dir in &wake.directories {
            if crate::discover::may_hold_matches(&self.inputs, dir) {
                self.wakeups.watch(dir);
            }
        }
        for opened in wake.opened {
            if let Some((path, file)) = opened.take() {
                self.adopt(&path, file)?;
            }
        }
        for (from, to) in &wake.renamed {
            self.follow(from, to)?;
        }
        for path in &wake.appeared {
            if let Some(found) = self.matching(path) {
                self.open(found)?;
            }
        }
        if !wake.changed.is_empty() {
            for source in self.sources.iter_mut() {
                if wake.changed.contains(source.path()) {
                    source.mark_changed();
                    source.wake();
                }
            }
        }
        Ok(())
    }

    /// Steps every source that may have changed and spools what they read; returns when the
    /// turn started.
    fn turn(&mut self, last_turn: Instant) -> Result<Instant, ReaderError> {
        let now = Instant::now();
        if !self.has_room() {
            return Ok(last_turn);
        }
        if self.pause.holds(now) {
            return Ok(last_turn);
        }
        self.admit()?;
        self.sources.relink_if_due();
        let (mut lines, mut finished) = (Vec::new(), Vec::new());
        // A segment is dropped whole by `drop_oldest`: keep it a small part of the cap (an
        // envelope is a few times the size of its line).
        let cap = usize::try_from(self.spool.max_bytes() / 16).unwrap_or(usize::MAX);
        let mut budget = TURN_BUDGET.min(cap.max(4096));
        let mut room = TURN_MESSAGES;
        let poll_all = self.wakeups.polling();
        // Each turn starts where the last one ran out of budget, so a backlog in the first
        // files cannot starve the others.
        let count = self.sources.len();
        let start = self.resume_at.min(count);
        self.resume_at = 0;
        for index in (start..count).chain(0..start) {
            if budget == 0 || room == 0 {
                self.resume_at = index;
                break;
            }
            let source = &mut self.sources[index];
            // An older file of its path is still open: its lines come first. A file closed
            // for the budget waits for its descriptor.
            if source.is_held() || !source.is_open() {
                continue;
            }
            source.activate();
            if source.waiting() || !(source.may_have_changed() || source.busy() || poll_all) {
                continue;
            }
            if source.draining() {
                let moved_on = self.sources.successor_grew(index);
                let successor = self.sources.has_successor(index);
                self.sources[index].set_moved_on(moved_on);
                self.sources[index].set_successor(successor);
            }
            let source = &mut self.sources[index];
            let before = lines.len();
            // A message is larger than its line: reading at most `room` bytes keeps one step's
            // messages within a few times the room left.
            match source.step(
                &self.host,
                budget.min(FILE_BUDGET).min(room),
                &mut lines,
                &self.metrics,
            ) {
                Ok(Step::Read(read)) => budget -= read.min(budget),
                Ok(Step::Finished) => finished.push(index),
                Err(err) => {
                    let path = source.path().to_path_buf();
                    source.retry_later();
                    self.warn_once(&path, "read failed, will retry", &err);
                }
            }
            let made: usize = lines[before..]
                .iter()
                .map(|message| message.id.len() + message.body.len())
                .sum();
            room = room.saturating_sub(made);
            let (parts, invalid) = self.sources[index].take_counts();
            Metrics::add(&self.metrics.lines_split, parts);
            Metrics::add(&self.metrics.container_entries_invalid, invalid);
        }
        if self.spool_turn(lines)? {
            finished.sort_unstable();
            self.close(finished)?;
        }
        self.metrics.files_watched.store(
            (self.sources.len() + self.budget.queued()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(now)
    }

    /// Spools one turn; `false` if the disk failed (reading is paused, the sources rewound).
    fn spool_turn(&mut self, lines: Vec<crate::spool::Message>) -> Result<bool, ReaderError> {
        let touched: Vec<usize> = (0..self.sources.len())
            .filter(|&i| self.sources[i].unspooled())
            .collect();
        if touched.is_empty() {
            return Ok(true);
        }
        let mut checkpoints: Vec<(FileKey, Checkpoint)> = touched
            .iter()
            .map(|&i| (self.sources[i].key(), self.sources[i].checkpoint()))
            .collect();
        // Older files whose lines carried over are complete: finished in the same batch.
        for &i in &touched {
            checkpoints.extend_from_slice(self.sources[i].settled_predecessors());
        }
        match self.spool.append(&lines, &checkpoints) {
            Ok(dropped) => {
                touched.iter().for_each(|&i| self.sources[i].spooled());
                Metrics::add(&self.metrics.lines_read, lines.len() as u64);
                Metrics::add(&self.metrics.dropped, dropped.lines);
                dropped.log(self.spool.dropped());
                self.pause.succeeded();
                Ok(true)
            }
            Err(err) if err.is_disk_failure() => {
                if err.is_out_of_descriptors() {
                    self.budget.ran_out(self.sources.open());
                }
                for &i in &touched {
                    self.sources[i].reread_unspooled();
                }
                self.pause.failed(&err, self.spool.dir(), &self.metrics);
                Ok(false)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Whether the spool's cap lets reading go on (`block`), said once each way.
    fn has_room(&mut self) -> bool {
        if !self.spool.has_room() {
            if self.full_since.is_none() {
                tracing::warn!(
                    bytes = self.spool.bytes(),
                    lines = self.spool.lines(),
                    "spool full, reading paused until the broker drains it"
                );
                self.full_since = Some(Instant::now());
            }
            return false;
        }
        if let Some(since) = self.full_since.take() {
            tracing::info!(
                paused_secs = since.elapsed().as_secs(),
                "spool has room, reading resumed"
            );
        }
        true
    }

    /// Deletes the files of segments the publisher removed, once that is durable.
    fn collect(&mut self) -> Result<(), ReaderError> {
        if self.spool.uncollected() == 0 || self.last_collect.elapsed() < COLLECT_EVERY {
            return Ok(());
        }
        self.last_collect = Instant::now();
        match self.spool.collect() {
            Err(err) if err.is_disk_failure() => Ok(()),
            other => Ok(other?),
        }
    }

    fn warn_once(&mut self, path: &Path, what: &str, err: &std::io::Error) {
        if self.warned.insert(path.to_path_buf()) {
            tracing::warn!(path = %path.display(), error = %err, "{what}");
        }
    }
}

/// Each input's rules, in the inputs' order.
fn shared_rules(inputs: &[Input]) -> Vec<Arc<LineRules>> {
    inputs
        .iter()
        .map(|input| Arc::new(LineRules::of(input)))
        .collect()
}

mod budget;
mod opening;
mod outcome;
pub(crate) mod pause;
mod reopen;
mod resume;
mod sources;
#[cfg(test)]
mod tests;
