//! An outage of the object store: said once with its cause (and again when its kind of cause
//! changes), every failed attempt counted, retried with a backoff that stays short so that
//! uploads resume within seconds of the store's return.

use std::time::{Duration, Instant};

use logship_runtime::backoff::Backoff;

use crate::metrics::{Counters, Metrics};
use crate::upload::error::UploadError;

/// Retries of a failing store start at this delay and double up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two tries: a store back after an outage is used again within it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether the store is failing now.
#[derive(Debug)]
pub struct StoreOutage {
    backoff: Backoff,
    /// When the outage began and the kind of its cause, said once.
    current: Option<(Instant, &'static str)>,
}

impl Default for StoreOutage {
    fn default() -> StoreOutage {
        StoreOutage {
            backoff: Backoff::between(FIRST_BACKOFF, MAX_BACKOFF),
            current: None,
        }
    }
}

impl StoreOutage {
    /// Whether uploads are failing now.
    pub fn is_failing(&self) -> bool {
        self.current.is_some()
    }

    /// An attempt failed with `err`: said at the outage's start (and when its kind of cause
    /// changes), counted in `metrics`; returns the delay before the next try.
    pub fn failed(&mut self, err: &UploadError, metrics: &Metrics) -> Duration {
        Counters::add(&metrics.counters.upload_errors, 1);
        let kind = err.kind();
        match self.current {
            Some((_, said)) if said == kind => {
                Counters::add(&metrics.counters.upload_retries, 1);
                tracing::debug!(error = %logship_runtime::error_chain(err), "upload failed again");
            }
            Some((since, _)) => {
                Counters::add(&metrics.counters.upload_retries, 1);
                tracing::warn!(error = %logship_runtime::error_chain(err), "uploads failing, retrying");
                self.current = Some((since, kind));
            }
            None => {
                tracing::warn!(error = %logship_runtime::error_chain(err), "uploads failing, retrying");
                self.current = Some((Instant::now(), kind));
            }
        }
        self.backoff.next_delay()
    }

    /// An attempt succeeded: the outage, if there was one, is over (said, with its length).
    pub fn healed(&mut self, bucket: &str) {
        self.backoff.reset();
        if let Some((since, _)) = self.current.take() {
            tracing::info!(outage_secs = since.elapsed().as_secs(), bucket = %bucket, "uploads resumed");
        }
    }
}
