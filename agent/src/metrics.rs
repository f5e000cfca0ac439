//! Counters an operator (and the tests) can read. Passed around as a handle, never global.

use std::sync::atomic::{AtomicU64, Ordering};

/// The agent's counters; all monotonic but `files_watched`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Files open for reading now.
    pub files_watched: AtomicU64,
    /// Lines (and parts of long lines) read and spooled.
    pub lines_read: AtomicU64,
    /// Lines longer than `max_line_bytes`, shipped in parts.
    pub lines_split: AtomicU64,
    /// Spooled lines dropped by `when_full = "drop_oldest"`.
    pub dropped: AtomicU64,
    /// Publishes sent (resends included).
    pub published: AtomicU64,
    /// Publishes the broker confirmed cleanly; their entries left the spool.
    pub confirmed: AtomicU64,
    /// Publishes returned as unroutable (no queue bound); held and retried.
    pub returned: AtomicU64,
    /// Publishes the broker nacked; retried.
    pub nacked: AtomicU64,
    /// Connections lost and re-established.
    pub reconnects: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "files={} read={} split={} dropped={} published={} confirmed={} returned={} nacked={} reconnects={}",
            get(&self.files_watched),
            get(&self.lines_read),
            get(&self.lines_split),
            get(&self.dropped),
            get(&self.published),
            get(&self.confirmed),
            get(&self.returned),
            get(&self.nacked),
            get(&self.reconnects)
        )
    }
}
