//! A source's committed ranges, each with the time the hole below it opened.

/// One committed range `[start, end)`, and since when the hole below it (between the range
/// before it and this one) has been open; meaningless for the lowest range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub since_ms: i64,
}

/// Sorted, disjoint, non-adjacent half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(pub(super) Vec<Range>);

impl Ranges {
    /// Adds `[start, end)` at `now_ms`, merging with every range it overlaps or touches. A hole
    /// it shrinks or splits keeps its age; a hole it opens (above the highest range, or below
    /// the lowest) is new.
    pub fn insert(&mut self, start: u64, end: u64, now_ms: i64) {
        if start >= end {
            return;
        }
        // The first range that ends at or after `start` may merge; so may those that follow
        // while they begin at or before `end`.
        let first = self.0.partition_point(|r| r.end < start);
        let mut last = first;
        let (mut lo, mut hi) = (start, end);
        while let Some(r) = self.0.get(last) {
            if r.start > end {
                break;
            }
            lo = lo.min(r.start);
            hi = hi.max(r.end);
            last += 1;
        }
        let since_ms = match self.0.get(first) {
            // Merged, or inside a hole: the hole below is the one that was there.
            Some(r) if first > 0 || first < last => r.since_ms,
            // A new lowest range: the hole between it and the old lowest opens now.
            Some(_) => {
                self.0[first].since_ms = now_ms;
                now_ms
            }
            // Above the highest range (or the first range of all).
            None => now_ms,
        };
        self.0.splice(
            first..last,
            [Range {
                start: lo,
                end: hi,
                since_ms,
            }],
        );
    }

    /// Whether all of `[start, end)` is inside one range.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        let i = self.0.partition_point(|r| r.end < end);
        self.0
            .get(i)
            .is_some_and(|r| r.start <= start && end <= r.end)
    }

    /// Forgets the lowest ranges beyond the `keep` highest.
    pub fn keep_highest(&mut self, keep: usize) {
        let excess = self.0.len().saturating_sub(keep);
        self.0.drain(..excess);
    }

    /// The holes between committed ranges: `(start, end, since_ms)`.
    pub fn holes(&self) -> impl Iterator<Item = (u64, u64, i64)> + '_ {
        self.0
            .windows(2)
            .map(|w| (w[0].end, w[1].start, w[1].since_ms))
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Ranges {
    /// The lowest start and the highest end, if there is a range.
    pub fn span(&self) -> Option<(u64, u64)> {
        Some((self.0.first()?.start, self.0.last()?.end))
    }

    /// The pieces of `[start, end)` inside no range, in order.
    pub fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut pieces = Vec::new();
        let mut at = start;
        for r in &self.0[self.0.partition_point(|r| r.end <= start)..] {
            if r.start >= end {
                break;
            }
            if r.start > at {
                pieces.push((at, r.start));
            }
            at = at.max(r.end);
        }
        if at < end {
            pieces.push((at, end));
        }
        pieces
    }
}

/// Ranges of a source its agent gave up (loss and drop markers), each with the time it was
/// given up (`since_ms`): sorted, disjoint, non-adjacent. Only what no committed range covers
/// is kept (see [`GivenUp::retain_missing`]): lines published before a drop may still arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GivenUp(pub(super) Vec<Range>);

impl GivenUp {
    /// Adds `[start, end)` given up at `now_ms`, merging with every range it overlaps or
    /// touches; a merged range keeps the earliest time.
    pub fn insert(&mut self, start: u64, end: u64, now_ms: i64) {
        if start >= end {
            return;
        }
        let first = self.0.partition_point(|r| r.end < start);
        let last = first + self.0[first..].partition_point(|r| r.start <= end);
        let merged = self.0[first..last]
            .iter()
            .fold((start, end, now_ms), |(lo, hi, since), r| {
                (lo.min(r.start), hi.max(r.end), since.min(r.since_ms))
            });
        self.0.splice(
            first..last,
            [Range {
                start: merged.0,
                end: merged.1,
                since_ms: merged.2,
            }],
        );
    }

    /// Forgets the ranges `committed` covers whole: everything of them arrived after all.
    pub fn retain_missing(&mut self, committed: &Ranges) {
        self.0
            .retain(|r| !committed.missing(r.start, r.end).is_empty());
    }

    /// Forgets the lowest ranges beyond the `keep` highest.
    pub fn keep_highest(&mut self, keep: usize) {
        let excess = self.0.len().saturating_sub(keep);
        self.0.drain(..excess);
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Range> {
        self.0.iter()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}
