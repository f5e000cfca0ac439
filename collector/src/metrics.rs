//! Counters an operator (and the tests) can read. Passed around as a handle, never global.

use std::sync::atomic::{AtomicU64, Ordering};

/// The collector's counters; all monotonic.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Deliveries taken from the queue, valid or not.
    pub received: AtomicU64,
    /// Lines appended, fsync'd and committed.
    pub written: AtomicU64,
    /// Lines dropped because their id was already written.
    pub duplicates: AtomicU64,
    /// Messages rejected without requeue (to the dead-letter exchange when one is set).
    pub dead_lettered: AtomicU64,
    /// Batches committed and acked.
    pub batches: AtomicU64,
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
            "received={} written={} duplicates={} dead_lettered={} batches={} reconnects={}",
            get(&self.received),
            get(&self.written),
            get(&self.duplicates),
            get(&self.dead_lettered),
            get(&self.batches),
            get(&self.reconnects)
        )
    }
}
