//! Counters an operator (and the tests) can read, and what `/status` shows. Passed around as a
//! handle, never global.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use logship_runtime::histogram::Histogram;
use logship_runtime::status::{BrokerState, CollectorStatus, Gap};

use crate::archive::retention::Retained;
use crate::consumer::validate::Reason;
use crate::hosts::HostsSeen;
use crate::outage::Cause;
use crate::upload::backlog::Backlog;
use crate::writer::Outcome;

/// Upper bounds of `logship_collector_delay_seconds`: from a healthy pipeline (tens of
/// milliseconds) to a backlog drained after an outage (hours, a day).
pub const DELAY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    21600.0, 86400.0,
];

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
        /// Output files deleted by retention (`output.retention`).
        retention_deleted => "logship_collector_retention_deleted_total", "counter", "retention_deleted";
        /// Bytes of the output files deleted by retention.
        retention_deleted_bytes => "logship_collector_retention_deleted_bytes_total", "counter", "";
        /// Bytes uploaded to the object store (`[upload]`), confirmed by it.
        uploaded_bytes => "logship_collector_uploaded_bytes_total", "counter", "uploaded_bytes";
        /// Objects uploaded to the object store, confirmed by it.
        uploaded_objects => "logship_collector_uploaded_objects_total", "counter", "uploaded_objects";
        /// Failed uploads (every failed attempt).
        upload_errors => "logship_collector_upload_errors_total", "counter", "upload_errors";
        /// Attempts after a failed one within the same outage of the store.
        upload_retries => "logship_collector_upload_retries_total", "counter", "upload_retries";
    }
}

/// The collector's counters, its failed writes by cause, how late lines arrive and from which
/// hosts, and the live state `/status` shows.
#[derive(Debug)]
pub struct Metrics {
    /// Every counter but the failed writes.
    pub counters: Counters,
    /// Failed attempts to write a batch, by cause (in [`Cause::ALL`]'s order).
    write_errors: [AtomicU64; 4],
    /// Messages rejected (dead-lettered), by reason (in [`Reason::ALL`]'s order).
    rejected: [AtomicU64; Reason::ALL.len()],
    /// Commit time minus the envelope's `ts` of every line written.
    delay: Histogram,
    hosts: Mutex<HostsSeen>,
    /// Output files open after the last batch.
    open_files: AtomicU64,
    /// Whether a consumer is registered on the queue now.
    consuming: AtomicBool,
    /// The consumer stands by behind another consumer of the queue (its single active one).
    standby: AtomicBool,
    /// The broker connection, kept by the consumer.
    pub broker: BrokerState,
    /// Every hole between committed ranges, as of the last batch that changed one.
    gaps: Mutex<Vec<Gap>>,
    /// `audit.gap_after`: holes open longer are losses (counted, listed on `/status`).
    gap_after: Duration,
    /// The upload backlog, read when the gauges are (`[upload]` only).
    backlog: OnceLock<Arc<Backlog>>,
    /// Uploads are failing now (an outage of the store).
    upload_failing: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(
            Duration::from_secs(7 * 24 * 3600),
            logship_config::archive::DEFAULT_GAP_AFTER,
        )
    }
}

impl Metrics {
    /// Metrics that forget a host silent for `host_max_age` (`dedup.max_age`) and count holes
    /// open longer than `gap_after` (`audit.gap_after`).
    pub fn new(host_max_age: Duration, gap_after: Duration) -> Metrics {
        Metrics {
            counters: Counters::default(),
            write_errors: Default::default(),
            rejected: Default::default(),
            delay: Histogram::new(DELAY_BUCKETS),
            hosts: Mutex::new(HostsSeen::new(host_max_age)),
            open_files: AtomicU64::new(0),
            consuming: AtomicBool::new(false),
            standby: AtomicBool::new(false),
            broker: BrokerState::default(),
            gaps: Mutex::new(Vec::new()),
            gap_after,
            backlog: OnceLock::new(),
            upload_failing: AtomicBool::new(false),
        }
    }

    /// The holes between committed ranges are now `gaps`.
    pub fn set_gaps(&self, gaps: Vec<Gap>) {
        if let Ok(mut held) = self.gaps.lock() {
            *held = gaps;
        }
    }

    /// The holes open longer than `audit.gap_after` now.
    fn overdue_gaps(&self) -> Vec<Gap> {
        let now = logship_runtime::clock::now_ms();
        self.gaps.lock().map_or_else(
            |_| Vec::new(),
            |gaps| {
                crate::archive::audit::overdue(&gaps, self.gap_after, now)
                    .cloned()
                    .collect()
            },
        )
    }

    /// A batch of `deliveries` was committed and acked: every counter a batch moves (lines
    /// written, duplicates, the lines refused for their path, the batch and its fsync), its
    /// lines' delays, its hosts' last-seen time, the open files.
    pub fn committed(&self, outcome: &Outcome, deliveries: usize) {
        let counters = &self.counters;
        Counters::add(&counters.written, outcome.written);
        Counters::add(&counters.duplicates, outcome.duplicates);
        let refused = outcome.refused.len() as u64;
        Counters::add(&counters.dead_lettered, refused);
        Counters::add(self.rejected(Reason::UnsafePath), refused);
        Counters::add(&counters.batches, 1);
        Counters::add(&counters.batch_lines, deliveries as u64);
        Counters::add(&counters.fsync_micros, outcome.fsync.as_micros() as u64);
        Counters::add(&counters.fsyncs, 1);
        let now_ms = outcome.committed_at_ms;
        for ts_ms in &outcome.line_ts_ms {
            self.delay.observe((now_ms - ts_ms) as f64 / 1000.0);
        }
        if let Ok(mut hosts) = self.hosts.lock() {
            let now = u64::try_from(now_ms / 1000).unwrap_or(0);
            hosts.committed(outcome.hosts.iter().map(String::as_str), now);
        }
        self.open_files
            .store(outcome.open_files as u64, Ordering::Relaxed);
        if let Some(gaps) = &outcome.gaps {
            self.set_gaps(gaps.clone());
        }
    }

    /// A retention pass deleted these files.
    pub fn retained(&self, retained: Retained) {
        Counters::add(&self.counters.retention_deleted, retained.files);
        Counters::add(&self.counters.retention_deleted_bytes, retained.bytes);
    }

    /// The upload backlog whose gauges are shown.
    pub fn show_backlog(&self, backlog: Arc<Backlog>) {
        let _ = self.backlog.set(backlog);
    }

    /// Uploads are failing now (an outage of the store), or no longer.
    pub fn set_upload_failing(&self, failing: bool) {
        self.upload_failing.store(failing, Ordering::Relaxed);
    }

    /// The upload gauges as `(metric, help, value)`; none without `[upload]`.
    fn upload_gauges(&self) -> Vec<(&'static str, &'static str, u64)> {
        let Some(backlog) = self.backlog.get() else {
            return Vec::new();
        };
        let gauges = backlog.gauges();
        let failing = self.upload_failing.load(Ordering::Relaxed);
        vec![
            (
                "logship_collector_upload_backlog_bytes",
                "Committed bytes not yet in the object store.",
                gauges.bytes,
            ),
            (
                "logship_collector_upload_backlog_oldest_seconds",
                "How long the oldest committed byte not in the object store has waited.",
                gauges.oldest.as_secs(),
            ),
            (
                "logship_collector_upload_paused",
                "1 while deliveries are paused: the upload backlog is over upload.max_backlog.",
                u64::from(gauges.paused),
            ),
            (
                "logship_collector_upload_failing",
                "1 while uploads fail (an outage of the object store).",
                u64::from(failing),
            ),
        ]
    }

    /// A consumer is registered on the queue (`true`), or no longer.
    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    /// The consumer stands by behind another consumer of the queue (`true`), or no longer.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Relaxed);
    }

    /// The `/status` page; `queue` is the queue consumed.
    pub fn status(&self, queue: &str) -> CollectorStatus {
        let mut counters: std::collections::BTreeMap<String, f64> = self
            .counters
            .counters()
            .iter()
            .map(|(c, v)| (c.metric.to_string(), *v as f64 / c.per_unit))
            .collect();
        for cause in Cause::ALL {
            counters.insert(
                format!("logship_collector_write_errors_total.{}", cause.label()),
                self.write_errors(cause).load(Ordering::Relaxed) as f64,
            );
        }
        for (metric, _, value) in self.upload_gauges() {
            counters.insert(metric.to_string(), value as f64);
        }
        CollectorStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            queue: queue.to_string(),
            consuming: self.consuming.load(Ordering::Relaxed),
            standby: self.standby.load(Ordering::Relaxed),
            broker: self.broker.snapshot(),
            open_files: self.open_files.load(Ordering::Relaxed),
            hosts: self.hosts.lock().map_or(0, |h| h.len() as u64),
            counters,
            gaps: self.overdue_gaps(),
        }
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
        self.delay.render(
            &mut out,
            "logship_collector_delay_seconds",
            "Commit time minus the line's envelope ts (read time at the agent), per line written.",
        );
        if let Ok(hosts) = self.hosts.lock() {
            hosts.render(&mut out, "logship_collector_host_last_seen_seconds");
        }
        logship_runtime::http::metric(
            &mut out,
            "logship_collector_open_files",
            "gauge",
            "Output files open.",
            self.open_files.load(Ordering::Relaxed),
        );
        for (metric, help, value) in self.upload_gauges() {
            logship_runtime::http::metric(&mut out, metric, "gauge", help, value);
        }
        let overdue = self.overdue_gaps();
        logship_runtime::http::metric(
            &mut out,
            "logship_collector_gaps",
            "gauge",
            "Holes between committed ranges of a source open longer than audit.gap_after: pieces that never arrived.",
            overdue.len() as u64,
        );
        logship_runtime::http::metric(
            &mut out,
            "logship_collector_gap_bytes",
            "gauge",
            "Bytes in those holes (sources whose offsets are byte positions).",
            overdue
                .iter()
                .filter(|g| crate::archive::audit::is_bytes(g))
                .map(|g| g.end - g.start)
                .sum::<u64>(),
        );
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
