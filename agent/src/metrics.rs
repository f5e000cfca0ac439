//! Counters an operator (and the tests) can read. Passed around as a handle, never global.
//!
//! Each counter is described once, in the table below: its doc comment is also its Prometheus
//! help text, next to its metric name, type and key in the one-line summary.

logship_runtime::counters! {
    /// The agent's counters; all monotonic but the `files_*` gauges.
    pub struct Metrics {
        /// Files followed: open, closed for the descriptor budget, or waiting for a descriptor.
        files_watched => "logship_agent_files_watched", "gauge", "files";
        /// Lines (and parts of long lines) read and spooled.
        lines_read => "logship_agent_lines_read_total", "counter", "read";
        /// Parts of lines longer than max_line_bytes.
        lines_split => "logship_agent_lines_split_total", "counter", "split";
        /// Entries of container logs (type = "docker" or "cri") that are not the runtime's
        /// format (not a json-file entry, not a CRI line, another stream): shipped as they are.
        container_entries_invalid => "logship_agent_container_entries_invalid_total", "counter", "container_invalid";
        /// Spooled lines dropped by when_full = "drop_oldest".
        dropped => "logship_agent_dropped_total", "counter", "dropped";
        /// Truncations with no copy found next to the file (lines written since the last read may
        /// be lost).
        truncated_without_copy => "logship_agent_truncated_without_copy_total", "counter", "truncated_without_copy";
        /// Times reading paused because the state disk failed (full, I/O error).
        disk_pauses => "logship_agent_disk_pauses_total", "counter", "disk_pauses";
        /// Journal entries read and spooled.
        journal_entries => "logship_agent_journal_entries_total", "counter", "journal";
        /// Saved journal cursors found gone (vacuumed): reading resumed at the first entry after.
        journal_gaps => "logship_agent_journal_gaps_total", "counter", "journal_gaps";
        /// journalctl children restarted (they exited or wrote what cannot be read).
        journal_restarts => "logship_agent_journal_restarts_total", "counter", "journal_restarts";
        /// Journal entries without a usable cursor, export streams that could not be read, and
        /// lines journalctl printed on stderr (a corrupt file it skips, say).
        journal_errors => "logship_agent_journal_errors_total", "counter", "journal_errors";
        /// Young journal entries shown without MESSAGE and so read again (one may have been read
        /// while it was being written).
        journal_rereads => "logship_agent_journal_rereads_total", "counter", "journal_rereads";
        /// Journal entries whose MESSAGE was cut to max_line_bytes.
        journal_truncated => "logship_agent_journal_truncated_total", "counter", "journal_truncated";
        /// Publishes sent, resends included.
        published => "logship_agent_published_total", "counter", "published";
        /// Publishes of lines this process had published before (after a nack, a return, a lost
        /// connection): the resend share of `published`.
        republished => "logship_agent_republished_total", "counter", "republished";
        /// Publishes the broker confirmed cleanly.
        confirmed => "logship_agent_confirmed_total", "counter", "confirmed";
        /// Publishes returned unroutable (no queue bound); held and retried.
        returned => "logship_agent_returned_total", "counter", "returned";
        /// Publishes the broker nacked; retried.
        nacked => "logship_agent_nacked_total", "counter", "nacked";
        /// Broker connections lost and re-established.
        reconnects => "logship_agent_reconnects_total", "counter", "reconnects";
        /// Time the broker blocked publishing (resource alarms), finished spells only; counted in
        /// milliseconds.
        blocked_ms => "logship_agent_blocked_seconds_total", "counter", "" / 1000;
        /// Watched files holding a descriptor (at most max_open_files, files in transit aside).
        files_open => "logship_agent_files_open", "gauge", "open";
        /// Files waiting for a descriptor (the budget is reached); read in turn.
        files_waiting => "logship_agent_files_waiting", "gauge", "waiting";
    }
}

/// The gauges `/metrics` shows that the spool and the reader keep, not the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub spool_bytes: u64,
    pub spool_lines: u64,
    /// 0 when the spool is empty.
    pub spool_oldest_seconds: f64,
    pub lag_bytes: u64,
    /// The largest journal input's lag; 0 without journal inputs.
    pub journal_lag_seconds: f64,
    /// Containers followed (container inputs).
    pub containers: u64,
    /// Bytes of the heap in live blocks (see [`crate::trim::heap_in_use`]).
    pub heap_bytes: u64,
}

impl Metrics {
    /// The Prometheus text page; the gauges others keep are passed in.
    pub fn render(&self, gauges: Gauges) -> String {
        use logship_runtime::http::{metric, render_counters};
        let mut out = String::with_capacity(2048);
        render_counters(&mut out, &self.counters());
        metric(
            &mut out,
            "logship_agent_spool_bytes",
            "gauge",
            "Bytes of lines in the spool.",
            gauges.spool_bytes,
        );
        metric(
            &mut out,
            "logship_agent_spool_lines",
            "gauge",
            "Lines in the spool.",
            gauges.spool_lines,
        );
        metric(
            &mut out,
            "logship_agent_spool_oldest_seconds",
            "gauge",
            "Age of the oldest unconfirmed line (its spool segment's write time); 0 when the spool is empty.",
            gauges.spool_oldest_seconds,
        );
        metric(
            &mut out,
            "logship_agent_lag_bytes",
            "gauge",
            "Bytes in watched files not yet read (size minus read position, summed over open files).",
            gauges.lag_bytes,
        );
        metric(
            &mut out,
            "logship_agent_journal_lag_seconds",
            "gauge",
            "How old the last journal entry spooled was when it was spooled (the largest over journal inputs).",
            gauges.journal_lag_seconds,
        );
        metric(
            &mut out,
            "logship_agent_containers",
            "gauge",
            "Containers followed: distinct container sources (docker/<name>, pods/.../<restart>.log) among the files open.",
            gauges.containers,
        );
        metric(
            &mut out,
            "logship_agent_heap_bytes",
            "gauge",
            "Bytes of the heap in live blocks (glibc's count; 0 with another C library): the agent's memory without the free pages that its RSS also counts.",
            gauges.heap_bytes,
        );
        out
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        logship_runtime::http::summarize(&self.counters())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_rendered_once_with_its_help_and_summarised() {
        let metrics = Metrics::default();
        Metrics::add(&metrics.lines_read, 7);
        let page = metrics.render(Gauges {
            spool_bytes: 1,
            spool_lines: 2,
            ..Gauges::default()
        });
        assert!(page.contains("# HELP logship_agent_lines_read_total Lines (and parts of long lines) read and spooled.\n"));
        assert!(page.contains("\nlogship_agent_lines_read_total 7\n"));
        assert!(page.contains("logship_agent_spool_lines 2"));
        assert_eq!(page.matches("# TYPE").count(), metrics.counters().len() + 7);
        assert!(metrics.summary().starts_with("files=0 read=7 split=0 "));
    }
}
