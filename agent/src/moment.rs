//! A monotonic instant in 8 bytes ([`Moment`]), for what is kept per followed file: std's
//! `Instant` takes 16 bytes, and 16 again inside an `Option`, and a `Source` holds four of
//! them (issue 27 item 4: 100k files).
//!
//! Invariant: moments are nanoseconds since one process-wide epoch (the first moment taken),
//! so they compare and subtract as the `Instant`s they stand for.

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// A point in monotonic time; an `Option<Moment>` is 8 bytes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(NonZeroU64);

impl Moment {
    /// Now.
    pub fn now() -> Moment {
        let epoch = *EPOCH.get_or_init(Instant::now);
        // 584 years of nanoseconds fit; saturate past that rather than wrap.
        let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Moment(NonZeroU64::MIN.saturating_add(nanos))
    }

    /// Time since this moment (zero for a moment not yet come).
    pub fn elapsed(self) -> Duration {
        Duration::from_nanos(Moment::now().0.get().saturating_sub(self.0.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_order_and_measure_like_instants() {
        let first = Moment::now();
        std::thread::sleep(Duration::from_millis(20));
        let second = Moment::now();
        assert!(first < second);
        assert!(first.elapsed() >= Duration::from_millis(20));
        assert!(second.elapsed() < first.elapsed());
        assert_eq!(std::mem::size_of::<Option<Moment>>(), 8);
    }
}
