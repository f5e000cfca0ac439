//! A Prometheus histogram with fixed buckets, lock-free: observations are atomic adds, and the
//! page is rendered from the counts (cumulated then, as Prometheus wants `le` buckets).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A histogram of seconds over fixed upper bounds (ascending; `+Inf` is implicit).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// `counts[i]`: observations in `(bounds[i-1], bounds[i]]`; the last one past every bound.
    counts: Vec<AtomicU64>,
    /// The sum of observations, in microseconds (an integer, so it can be an atomic add).
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `seconds`; a negative one (a clock behind the source's) counts
    /// as 0.
    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        let bucket = self.bounds.partition_point(|&bound| bound < seconds);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Appends the histogram in Prometheus text format: `_bucket{le=...}`, `_sum`, `_count`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (index, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match self.bounds.get(index) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let histogram = Histogram::new(&[0.1, 1.0]);
        for seconds in [0.05, 0.1, 0.5, 2.0, -3.0] {
            histogram.observe(seconds);
        }
        let mut out = String::new();
        histogram.render(&mut out, "d", "help");
        assert!(out.contains("d_bucket{le=\"0.1\"} 3\n"), "{out}");
        assert!(out.contains("d_bucket{le=\"1\"} 4\n"), "{out}");
        assert!(out.contains("d_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("d_sum 2.65\nd_count 5\n"), "{out}");
        assert_eq!(histogram.count(), 5);
    }
}
