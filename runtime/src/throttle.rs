//! Warnings about an event that may repeat many times a second (a nack, a rejected message):
//! said at once, then at most once per interval with how many came since, never a line per
//! event.

use std::time::{Duration, Instant};

/// One kind of repeated event. Invariant: every event is counted in exactly one warning's
/// count, the first warning comes with the first event, and two warnings are at least `every`
/// apart.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    said: Option<Instant>,
    /// Events since the last warning.
    unsaid: u64,
}

impl Throttle {
    /// Warnings at most once per `every`.
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            said: None,
            unsaid: 0,
        }
    }

    /// Counts one event. `Some(n)` when a warning is due now: `n` events since the last one,
    /// this one included.
    pub fn event(&mut self) -> Option<u64> {
        self.event_at(Instant::now())
    }

    fn event_at(&mut self, now: Instant) -> Option<u64> {
        self.unsaid += 1;
        if self
            .said
            .is_some_and(|at| now.saturating_duration_since(at) < self.every)
        {
            return None;
        }
        self.said = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_is_said_then_one_count_per_interval() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut throttle = Throttle::new(Duration::from_secs(1));
        assert_eq!(throttle.event_at(at(0)), Some(1));
        assert_eq!(throttle.event_at(at(10)), None);
        assert_eq!(throttle.event_at(at(999)), None);
        assert_eq!(throttle.event_at(at(1000)), Some(3));
        assert_eq!(throttle.event_at(at(5000)), Some(1));
    }
}
