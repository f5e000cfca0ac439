//! Counters an operator (and the tests) can read. Passed around as a handle, never global.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::outage::Cause;

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
    /// Lines in committed batches (with `batches`: the mean batch size).
    pub batch_lines: AtomicU64,
    /// Microseconds spent writing and fsyncing output files, and how many times.
    pub fsync_micros: AtomicU64,
    pub fsyncs: AtomicU64,
    /// Failed attempts to write a batch, by cause (in [`Cause::ALL`]'s order).
    pub write_errors: [AtomicU64; 4],
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counter of failed writes for `cause`.
    pub fn write_errors(&self, cause: Cause) -> &AtomicU64 {
        &self.write_errors[cause as usize]
    }

    /// The Prometheus text page.
    pub fn render(&self) -> String {
        use logship_config::http::metric;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        metric(
            &mut out,
            "logship_collector_received_total",
            "counter",
            "Deliveries taken from the queue.",
            get(&self.received),
        );
        metric(
            &mut out,
            "logship_collector_written_total",
            "counter",
            "Lines written, fsync'd and committed.",
            get(&self.written),
        );
        metric(
            &mut out,
            "logship_collector_duplicates_total",
            "counter",
            "Lines dropped as already written.",
            get(&self.duplicates),
        );
        metric(
            &mut out,
            "logship_collector_dead_lettered_total",
            "counter",
            "Messages rejected to the dead-letter exchange.",
            get(&self.dead_lettered),
        );
        metric(
            &mut out,
            "logship_collector_reconnects_total",
            "counter",
            "Broker connections re-established.",
            get(&self.reconnects),
        );
        metric(
            &mut out,
            "logship_collector_batches_total",
            "counter",
            "Batches committed and acked.",
            get(&self.batches),
        );
        metric(
            &mut out,
            "logship_collector_batch_lines_total",
            "counter",
            "Deliveries in committed batches.",
            get(&self.batch_lines),
        );
        metric(
            &mut out,
            "logship_collector_fsync_seconds_total",
            "counter",
            "Time writing and fsyncing output files.",
            get(&self.fsync_micros) as f64 / 1e6,
        );
        metric(
            &mut out,
            "logship_collector_fsyncs_total",
            "counter",
            "Batches written and fsync'd.",
            get(&self.fsyncs),
        );
        out.push_str(
            "# HELP logship_collector_write_errors_total Failed attempts to write a batch, by cause.\n\
             # TYPE logship_collector_write_errors_total counter\n",
        );
        for cause in Cause::ALL {
            out.push_str(&format!(
                "logship_collector_write_errors_total{{cause=\"{}\"}} {}\n",
                cause.label(),
                get(self.write_errors(cause))
            ));
        }
        out
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "received={} written={} duplicates={} dead_lettered={} batches={} reconnects={} write_errors(disk_full={} open_files={} io={} other={})",
            get(&self.received),
            get(&self.written),
            get(&self.duplicates),
            get(&self.dead_lettered),
            get(&self.batches),
            get(&self.reconnects),
            get(self.write_errors(Cause::DiskFull)),
            get(self.write_errors(Cause::OpenFiles)),
            get(self.write_errors(Cause::Io)),
            get(self.write_errors(Cause::Other)),
        )
    }
}
