//! Counters an operator (and the tests) can read. Passed around as a handle, never global.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::outage::Cause;
use crate::validate::Reason;

logship_runtime::counters! {
    /// The collector's counters; all monotonic.
    pub struct Counters {
        /// Deliveries taken from the queue, valid or not.
        received => "logship_collector_received_total", "counter", "received";
        /// Lines written, fsync'd and committed.
        written => "logship_collector_written_total", "counter", "written";
        /// Lines dropped as already written (by source position, or by id).
        duplicates => "logship_collector_duplicates_total", "counter", "duplicates";
        /// Messages rejected without requeue, to the dead-letter exchange when one is set.
        dead_lettered => "logship_collector_dead_lettered_total", "counter", "dead_lettered";
        /// Broker connections re-established.
        reconnects => "logship_collector_reconnects_total", "counter", "reconnects";
        /// Batches committed and acked.
        batches => "logship_collector_batches_total", "counter", "batches";
        /// Deliveries in committed batches (with batches: the mean batch size).
        batch_lines => "logship_collector_batch_lines_total", "counter", "";
        /// Time writing and fsyncing output files; counted in microseconds.
        fsync_micros => "logship_collector_fsync_seconds_total", "counter", "" / 1000000;
        /// Batches written and fsync'd.
        fsyncs => "logship_collector_fsyncs_total", "counter", "";
    }
}

/// The collector's counters, and its failed writes by cause.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Every counter but the failed writes.
    pub counters: Counters,
    /// Failed attempts to write a batch, by cause (in [`Cause::ALL`]'s order).
    write_errors: [AtomicU64; 4],
    /// Messages rejected (dead-lettered), by reason (in [`Reason::ALL`]'s order).
    rejected: [AtomicU64; 3],
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

    /// The counter of rejected messages for `reason`.
    pub fn rejected(&self, reason: Reason) -> &AtomicU64 {
        &self.rejected[reason as usize]
    }

    /// The Prometheus text page.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        logship_runtime::http::render_counters(&mut out, &self.counters.counters());
        out.push_str(
            "# HELP logship_collector_write_errors_total Failed attempts to write a batch, by cause.\n\
             # TYPE logship_collector_write_errors_total counter\n",
        );
        for cause in Cause::ALL {
            out.push_str(&format!(
                "logship_collector_write_errors_total{{cause=\"{}\"}} {}\n",
                cause.label(),
                self.write_errors(cause).load(Ordering::Relaxed)
            ));
        }
        out.push_str(
            "# HELP logship_collector_rejected_total Messages rejected to the dead-letter exchange, by reason.\n\
             # TYPE logship_collector_rejected_total counter\n",
        );
        for reason in Reason::ALL {
            out.push_str(&format!(
                "logship_collector_rejected_total{{reason=\"{}\"}} {}\n",
                reason.label(),
                self.rejected(reason).load(Ordering::Relaxed)
            ));
        }
        out
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        let causes: Vec<String> = Cause::ALL
            .iter()
            .map(|&c| {
                format!(
                    "{}={}",
                    c.label(),
                    self.write_errors(c).load(Ordering::Relaxed)
                )
            })
            .collect();
        let reasons: Vec<String> = Reason::ALL
            .iter()
            .map(|&r| format!("{}={}", r.label(), self.rejected(r).load(Ordering::Relaxed)))
            .collect();
        format!(
            "{} write_errors({}) rejected({})",
            logship_runtime::http::summarize(&self.counters.counters()),
            causes.join(" "),
            reasons.join(" ")
        )
    }
}
