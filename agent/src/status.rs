//! What the agent says about itself on `GET /status`, and the lag gauges of `/metrics`.
//!
//! The reader thread owns the files. At the end of a turn (at most every [`SNAPSHOT_EVERY`]) it
//! sums each one's unread bytes and counts the container sources for the gauges, which costs one
//! `fstat` per open file per second and keeps nothing per file. The list of files is made only
//! when a page asks for it: the page raises a flag, the reader answers at the end of its next
//! pass (at most a quarter of a second when idle) with a compact record per file that shares the
//! file's path, and the page takes the list and frees it. So 100k files cost no memory between
//! pages (the list is 5.6 MiB while one is made), and the reader never waits on a page.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use logship_runtime::status::{AgentStatus, BrokerState, FileStatus, JournalStatus, SpoolStatus};

use crate::journal::JournalState;
use crate::source::{Lifecycle, Source};
use crate::spool::Spool;

/// How often the reader refreshes the gauges: often enough for a scrape, rarely enough that a
/// thousand files cost nothing.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// How long a page waits for the reader's list of files; past it, the page lists none (the
/// reader is stuck in one pass: its log says why). Well under the `status` client's 5 s.
const PAGE_WAIT: Duration = Duration::from_secs(2);

/// The agent's live state for `/status` and the lag gauges; shared by the reader (files), the
/// publisher (broker) and the metrics listener.
#[derive(Debug, Default)]
pub struct Status {
    /// The list of files the reader made for a page, and when; taken by the page. A list left
    /// by a page that gave up is dropped at the next refresh of the gauges.
    files: Mutex<Option<(Instant, Vec<FileSnapshot>)>>,
    /// Signalled when the reader leaves a list in `files`.
    filled: Condvar,
    /// A page waits for the list of files.
    wanted: AtomicBool,
    /// Bytes in watched files not yet read, summed; as of the last refresh.
    lag_bytes: AtomicU64,
    /// Distinct container sources among the files; as of the last refresh.
    containers: AtomicU64,
    /// The journal inputs, each kept by its reader.
    journals: Mutex<Vec<std::sync::Arc<JournalState>>>,
    /// The broker connection, kept by the publisher.
    pub broker: BrokerState,
}

impl Status {
    /// Refreshes the gauges from the reader's `sources` (reads each open one's size); drops a
    /// list of files that no page took.
    pub fn record_gauges(&self, sources: &[Source]) {
        self.store_gauges(sources.iter().map(|source| {
            (
                size_of(source).saturating_sub(source.read_position()),
                source.source_name().map(|name| &**name),
            )
        }));
        if let Ok(mut files) = self.files.try_lock()
            && files
                .as_ref()
                .is_some_and(|(made, _)| made.elapsed() > SNAPSHOT_EVERY)
        {
            *files = None;
        }
    }

    /// Makes the list of files from the reader's `sources` if a page waits for it, and the
    /// gauges from that list (the page shows one view of the files); otherwise costs one
    /// atomic load. Call at the end of each of the reader's passes.
    pub fn answer(&self, sources: &[Source]) {
        if !self.wanted.load(Ordering::Acquire) || !self.wanted.swap(false, Ordering::AcqRel) {
            return;
        }
        let list: Vec<FileSnapshot> = sources.iter().map(FileSnapshot::of).collect();
        self.store_gauges(
            list.iter()
                .map(|f| (f.size.saturating_sub(f.offset), f.source.as_deref())),
        );
        if let Ok(mut files) = self.files.lock() {
            *files = Some((Instant::now(), list));
            self.filled.notify_all();
        }
    }

    /// Stores the gauges of `files`: each one's unread bytes and container source.
    fn store_gauges<'a>(&self, files: impl Iterator<Item = (u64, Option<&'a str>)>) {
        let mut containers = std::collections::HashSet::new();
        let mut lag = 0;
        for (unread, source) in files {
            lag += unread;
            containers.extend(source);
        }
        self.lag_bytes.store(lag, Ordering::Relaxed);
        self.containers
            .store(containers.len() as u64, Ordering::Relaxed);
    }

    /// Waits up to `wait` for the reader's list of files and takes it (`None`: no answer in
    /// time). A list made for another page that is still there is taken instead if it is
    /// fresh; a stale one is dropped and a new one asked for.
    fn take_files(&self, wait: Duration) -> Option<Vec<FileSnapshot>> {
        let deadline = Instant::now() + wait;
        let mut files = self.files.lock().ok()?;
        loop {
            match files.take() {
                Some((made, list)) if made.elapsed() <= SNAPSHOT_EVERY => return Some(list),
                _ => self.wanted.store(true, Ordering::Release),
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            files = self.filled.wait_timeout(files, left).ok()?.0;
        }
    }

    /// Shows a journal input.
    pub fn add_journal(&self, journal: std::sync::Arc<JournalState>) {
        if let Ok(mut journals) = self.journals.lock() {
            journals.push(journal);
        }
    }

    /// The journal inputs as `/status` shows them.
    fn journal_status(&self) -> Vec<JournalStatus> {
        let Ok(journals) = self.journals.lock() else {
            return Vec::new();
        };
        journals
            .iter()
            .map(|j| JournalStatus {
                input: j.key.clone(),
                directory: j.directory.as_ref().map(|d| d.display().to_string()),
                units: j.units.clone(),
                reading: j.reading.load(Ordering::Relaxed),
                cursor: j.cursor.lock().ok().and_then(|c| c.clone()),
                entries: j.entries.load(Ordering::Relaxed),
                lag_seconds: j.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            })
            .collect()
    }

    /// `logship_agent_journal_lag_seconds`: the largest of the journal inputs' lags.
    pub fn journal_lag_seconds(&self) -> f64 {
        self.journals.lock().map_or(0.0, |journals| {
            journals
                .iter()
                .map(|j| j.lag_ms.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0) as f64
                / 1000.0
        })
    }

    /// `logship_agent_containers`: containers followed (distinct container sources).
    pub fn containers(&self) -> u64 {
        self.containers.load(Ordering::Relaxed)
    }

    /// `logship_agent_lag_bytes`.
    pub fn lag_bytes(&self) -> u64 {
        self.lag_bytes.load(Ordering::Relaxed)
    }

    /// The whole page.
    pub fn page(&self, host: &str, spool: &Spool) -> AgentStatus {
        // First: the gauges are refreshed with the list.
        let files = self
            .take_files(PAGE_WAIT)
            .map(|files| files.iter().map(FileSnapshot::status).collect())
            .unwrap_or_default();
        AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            host: host.to_string(),
            lag_bytes: self.lag_bytes(),
            files,
            containers: self.containers(),
            journals: self.journal_status(),
            spool: SpoolStatus {
                lines: spool.lines(),
                bytes: spool.bytes(),
                oldest_seconds: oldest_seconds(spool),
            },
            broker: self.broker.snapshot(),
        }
    }
}

/// One file as the reader last saw it; made a [`FileStatus`] only when the page is asked for.
#[derive(Debug)]
struct FileSnapshot {
    /// The file's own path, shared.
    path: Arc<Path>,
    state: Lifecycle,
    offset: u64,
    size: u64,
    generation: u32,
    /// The container source its lines are shipped as, shared with its tailer.
    source: Option<Arc<str>>,
}

impl FileSnapshot {
    /// The file's snapshot (its size: see [`size_of`]).
    fn of(source: &Source) -> FileSnapshot {
        FileSnapshot {
            path: source.shared_path().clone(),
            state: source.lifecycle(),
            offset: source.read_position(),
            size: size_of(source),
            generation: source.generation(),
            source: source.source_name().cloned(),
        }
    }

    /// As `/status` shows it.
    fn status(&self) -> FileStatus {
        FileStatus {
            path: self.path.display().to_string(),
            state: self.state.name().to_string(),
            offset: self.offset,
            size: self.size,
            generation: u64::from(self.generation),
            source: self.source.as_deref().map(str::to_string),
        }
    }
}

/// A file's size: that of the descriptor being read (the copy while a copytruncate copy is
/// read); else its read position (a file closed for the budget was read to its end when it
/// was closed; one that cannot be stat'ed shows no lag).
fn size_of(source: &Source) -> u64 {
    source.size().unwrap_or_else(|| source.read_position())
}

/// Age of the oldest unconfirmed line: how long its segment has been in the spool.
pub fn oldest_seconds(spool: &Spool) -> Option<f64> {
    let written = spool.oldest_written()?;
    Some(
        SystemTime::now()
            .duration_since(written)
            .unwrap_or_default()
            .as_secs_f64(),
    )
}

/// Throttles the reader's gauge refreshes to [`SNAPSHOT_EVERY`].
#[derive(Debug, Default)]
pub struct Snapshots {
    last: Option<Instant>,
}

impl Snapshots {
    /// Whether a refresh is due now; if so, counts it as made.
    pub fn due(&mut self) -> bool {
        if self.last.is_some_and(|at| at.elapsed() < SNAPSHOT_EVERY) {
            return false;
        }
        self.last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path, name: &str, ino: u64) -> Source {
        Source::written(&dir.join(name), ino)
    }

    /// Two files of one 7-byte line each, not read yet.
    fn two_files() -> (tempfile::TempDir, Vec<Source>) {
        let dir = tempfile::tempdir().unwrap();
        let sources = vec![
            source(dir.path(), "a.log", 2),
            source(dir.path(), "b.log", 3),
        ];
        (dir, sources)
    }

    #[test]
    fn a_page_takes_the_list_the_reader_makes_for_it_and_nothing_stays() {
        let (dir, sources) = two_files();
        let status = Arc::new(Status::default());

        // No list is made unless a page asks for one.
        status.answer(&sources);
        assert!(status.files.lock().unwrap().is_none());

        // A reader that never answers: the page gives up and lists nothing.
        assert!(status.take_files(Duration::from_millis(20)).is_none());
        // Its answer, made later, is left for no one: dropped once stale.
        status.answer(&sources);
        assert!(status.files.lock().unwrap().is_some());
        status.files.lock().unwrap().as_mut().unwrap().0 -= SNAPSHOT_EVERY * 2;
        status.record_gauges(&sources);
        assert!(status.files.lock().unwrap().is_none());

        // A page waiting while the reader passes gets every file, and takes the list away.
        let page = {
            let status = Arc::clone(&status);
            std::thread::spawn(move || status.take_files(Duration::from_secs(30)))
        };
        while !page.is_finished() {
            status.answer(&sources);
            std::thread::sleep(Duration::from_millis(1));
        }
        let files = page.join().unwrap().expect("the reader's list");
        let mut paths: Vec<_> = files.iter().map(|f| f.status().path).collect();
        paths.sort();
        assert_eq!(
            paths,
            ["a.log", "b.log"].map(|n| dir.path().join(n).display().to_string())
        );
        assert!(status.files.lock().unwrap().is_none(), "the list is freed");
    }

    #[test]
    fn the_gauges_sum_what_is_not_read_yet() {
        let (_dir, sources) = two_files();
        let status = Status::default();
        status.record_gauges(&sources);
        assert_eq!(status.lag_bytes(), 14, "two files of 7 unread bytes");
        assert_eq!(status.containers(), 0);
    }
}
