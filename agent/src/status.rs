//! What the agent says about itself on `GET /status`, and the lag gauges of `/metrics`.
//!
//! The reader thread owns the files: at the end of a turn (at most every [`SNAPSHOT_EVERY`])
//! it copies each one's path, state, offset, size and generation into [`Status`], which the
//! metrics listener reads. So the page costs the reader one `fstat` per open file per second, and
//! never a wait: a snapshot the listener is reading is left for the next turn. A file's snapshot
//! is a compact record that shares the file's path (no copy of it), rewritten in place: 100k
//! files cost one list of 56-byte records (5.6 MiB), never two, not three strings each.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use logship_runtime::status::{AgentStatus, BrokerState, FileStatus, JournalStatus, SpoolStatus};

use crate::journal::JournalState;
use crate::source::{Lifecycle, Source};
use crate::spool::Spool;

/// How often the reader refreshes the snapshot: often enough for a scrape, rarely enough that
/// a thousand files cost nothing.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// The agent's live state for `/status` and the lag gauges; shared by the reader (files), the
/// publisher (broker) and the metrics listener.
#[derive(Debug, Default)]
pub struct Status {
    files: Mutex<Vec<FileSnapshot>>,
    /// Bytes in watched files not yet read, summed; as of the last snapshot.
    lag_bytes: AtomicU64,
    /// Distinct container sources among the files; as of the last snapshot.
    containers: AtomicU64,
    /// The journal inputs, each kept by its reader.
    journals: Mutex<Vec<std::sync::Arc<JournalState>>>,
    /// The broker connection, kept by the publisher.
    pub broker: BrokerState,
}

impl Status {
    /// Rewrites the files' snapshot from the reader's `sources` (reads each one's size), in
    /// place. Returns `false`, having done nothing, while the listener reads the snapshot: the
    /// reader never waits on a page being made.
    pub fn record_files(&self, sources: &[Source]) -> bool {
        let Ok(mut files) = self.files.try_lock() else {
            return false;
        };
        files.clear();
        // Exactly what 100k files need, not a doubled list.
        files.reserve_exact(sources.len());
        files.extend(sources.iter().map(FileSnapshot::of));
        files.shrink_to(sources.len() + sources.len() / 8);
        let lag = files.iter().map(|f| f.size.saturating_sub(f.offset)).sum();
        self.lag_bytes.store(lag, Ordering::Relaxed);
        let containers: std::collections::HashSet<&str> =
            files.iter().filter_map(|f| f.source.as_deref()).collect();
        self.containers
            .store(containers.len() as u64, Ordering::Relaxed);
        true
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
        AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            host: host.to_string(),
            lag_bytes: self.lag_bytes(),
            files: self
                .files
                .lock()
                .map(|files| files.iter().map(FileSnapshot::status).collect())
                .unwrap_or_default(),
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
    /// The file's snapshot. Its size is that of the descriptor being read (the copy while a
    /// copytruncate copy is read); 0 if it cannot be stat'ed.
    fn of(source: &Source) -> FileSnapshot {
        let tailer = source.tailer();
        FileSnapshot {
            path: source.shared_path().clone(),
            state: source.lifecycle(),
            offset: tailer.read_position(),
            // A file closed for the budget was read to its end when it was closed.
            size: tailer.size().unwrap_or_else(|| tailer.read_position()),
            generation: tailer.generation(),
            source: tailer.source_name().cloned(),
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

/// Throttles the reader's snapshots to [`SNAPSHOT_EVERY`].
#[derive(Debug, Default)]
pub struct Snapshots {
    last: Option<Instant>,
}

impl Snapshots {
    /// Whether a snapshot is due now; if so, counts it as taken.
    pub fn due(&mut self) -> bool {
        if self.last.is_some_and(|at| at.elapsed() < SNAPSHOT_EVERY) {
            return false;
        }
        self.last = Some(Instant::now());
        true
    }

    /// The snapshot due was not taken (the listener was reading the last one): due again at
    /// the next turn.
    pub fn missed(&mut self) {
        self.last = None;
    }
}
