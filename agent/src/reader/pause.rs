//! Reading paused because the state disk failed (full, quota, I/O error, read only): the
//! spool write is tried again with backoff, and an outage is said once, with its end.

use std::path::Path;
use std::time::{Duration, Instant};

use logship_runtime::Backoff;

use crate::metrics::Metrics;
use crate::spool::SpoolError;

/// First and last wait before a spool write is tried again on a failing disk.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A pause that starts this soon after the last one ended is the same outage: not said again
/// (a disk that the spool refills as fast as the publisher empties it flaps).
const OUTAGE_QUIET: Duration = Duration::from_secs(60);

/// One pause.
struct Pause {
    since: Instant,
    /// Whether this pause was said (the first of an outage).
    said: bool,
    retry_at: Instant,
}

/// Whether reading is paused for the state disk, and since when it last was.
pub struct DiskPause {
    pause: Option<Pause>,
    /// When the last pause ended.
    resumed_at: Option<Instant>,
    /// [`RETRY_MIN`] doubling to [`RETRY_MAX`], started over by a success; no jitter: only
    /// this process retries its disk.
    backoff: Backoff,
}

impl Default for DiskPause {
    fn default() -> DiskPause {
        DiskPause {
            pause: None,
            resumed_at: None,
            backoff: Backoff::between(RETRY_MIN, RETRY_MAX).without_jitter(),
        }
    }
}

impl DiskPause {
    /// How long until a write may be tried again; `None` when not paused.
    pub fn wait(&self) -> Option<Duration> {
        self.pause
            .as_ref()
            .map(|p| p.retry_at.saturating_duration_since(Instant::now()))
    }

    /// Whether reading must still wait.
    pub fn holds(&self, now: Instant) -> bool {
        self.pause.as_ref().is_some_and(|p| now < p.retry_at)
    }

    /// A spool write failed: pause (said once per outage), or back off further.
    pub fn failed(&mut self, err: &SpoolError, state_dir: &Path, metrics: &Metrics) {
        let now = Instant::now();
        if let Some(pause) = &mut self.pause {
            pause.retry_at = now + self.backoff.next_delay();
            return;
        }
        let said = self
            .resumed_at
            .is_none_or(|at| at.elapsed() >= OUTAGE_QUIET);
        if said {
            Metrics::add(&metrics.disk_pauses, 1);
            tracing::warn!(state_dir = %state_dir.display(), error = %logship_runtime::error_chain(err),
                "cannot write the spool, reading paused; retrying");
        } else {
            tracing::debug!(error = %logship_runtime::error_chain(err), "cannot write the spool, reading paused again");
        }
        self.pause = Some(Pause {
            since: now,
            said,
            retry_at: now + self.backoff.next_delay(),
        });
    }

    /// A spool write succeeded: the pause, if any, is over (said if its start was).
    pub fn succeeded(&mut self) {
        let Some(pause) = self.pause.take() else {
            return;
        };
        self.backoff.reset();
        self.resumed_at = Some(Instant::now());
        let paused_secs = pause.since.elapsed().as_secs();
        if pause.said {
            tracing::info!(paused_secs, "spool writable again, reading resumed");
        } else {
            tracing::debug!(paused_secs, "spool writable again, reading resumed");
        }
    }
}
