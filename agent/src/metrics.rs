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
    /// Truncations with no copy found next to the file: lines written since the last read may
    /// be lost.
    pub truncated_without_copy: AtomicU64,
    /// Spells of reading paused because the state disk failed (full, I/O error).
    pub disk_pauses: AtomicU64,
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
    /// Milliseconds the broker kept publishing blocked (resource alarms), finished spells only.
    pub blocked_ms: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text page; the spool's gauges are passed in.
    pub fn render(&self, spool_bytes: u64, spool_entries: u64) -> String {
        use logship_config::http::metric;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        metric(
            &mut out,
            "logship_agent_files_watched",
            "gauge",
            "Files open for reading.",
            get(&self.files_watched),
        );
        metric(
            &mut out,
            "logship_agent_lines_read_total",
            "counter",
            "Lines read and spooled.",
            get(&self.lines_read),
        );
        metric(
            &mut out,
            "logship_agent_lines_split_total",
            "counter",
            "Parts of lines longer than max_line_bytes.",
            get(&self.lines_split),
        );
        metric(
            &mut out,
            "logship_agent_dropped_total",
            "counter",
            "Spooled lines dropped by drop_oldest.",
            get(&self.dropped),
        );
        metric(
            &mut out,
            "logship_agent_truncated_without_copy_total",
            "counter",
            "Truncations with no copy found next to the file (lines may be lost).",
            get(&self.truncated_without_copy),
        );
        metric(
            &mut out,
            "logship_agent_disk_pauses_total",
            "counter",
            "Times reading paused because the state disk failed (full, I/O error).",
            get(&self.disk_pauses),
        );
        metric(
            &mut out,
            "logship_agent_published_total",
            "counter",
            "Publishes sent, resends included.",
            get(&self.published),
        );
        metric(
            &mut out,
            "logship_agent_confirmed_total",
            "counter",
            "Publishes the broker confirmed.",
            get(&self.confirmed),
        );
        metric(
            &mut out,
            "logship_agent_returned_total",
            "counter",
            "Publishes returned unroutable (no queue bound).",
            get(&self.returned),
        );
        metric(
            &mut out,
            "logship_agent_nacked_total",
            "counter",
            "Publishes the broker nacked.",
            get(&self.nacked),
        );
        metric(
            &mut out,
            "logship_agent_reconnects_total",
            "counter",
            "Broker connections re-established.",
            get(&self.reconnects),
        );
        metric(
            &mut out,
            "logship_agent_blocked_seconds_total",
            "counter",
            "Time the broker blocked publishing.",
            get(&self.blocked_ms) as f64 / 1000.0,
        );
        metric(
            &mut out,
            "logship_agent_spool_bytes",
            "gauge",
            "Bytes of lines in the spool.",
            spool_bytes,
        );
        metric(
            &mut out,
            "logship_agent_spool_entries",
            "gauge",
            "Lines in the spool.",
            spool_entries,
        );
        out
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "files={} read={} split={} dropped={} truncated_without_copy={} disk_pauses={} published={} confirmed={} returned={} nacked={} reconnects={}",
            get(&self.files_watched),
            get(&self.lines_read),
            get(&self.lines_split),
            get(&self.dropped),
            get(&self.truncated_without_copy),
            get(&self.disk_pauses),
            get(&self.published),
            get(&self.confirmed),
            get(&self.returned),
            get(&self.nacked),
            get(&self.reconnects)
        )
    }
}
