//! Committed source positions: for each source (host, file identity, generation), the byte
//! ranges of the source file whose lines are written for good. A line whose range is committed
//! is a duplicate however long ago it was written; memory grows with the number of sources, not
//! of lines, since a source's lines almost always commit as one contiguous range (a gap appears
//! only while a resend after a nack or a return is outstanding).
//!
//! A message claims its [`Envelope::extent`](logship_runtime::Envelope::extent): a line at
//! `offset` with `len` bytes claims `[offset, offset + len + 1)`, its bytes and the one after
//! them (its newline or the first byte of the line's next part); a journal entry claims its
//! sequence number and those its input skipped just before it. The wire contract this relies
//! on: within a generation, extents do not overlap (a part of a split line is never empty), so
//! no other message can start inside a committed range.
//!
//! sled keys (in the commit record's tree): `p/<source hash: 16 bytes>` -> `<last committed at:
//! ms, i64 BE>` then `<start: u64 BE><end: u64 BE>` per range. The source hash is the 128-bit
//! FNV-1a of `<dev>.<ino>.<fp>.<gen>@<host>` (the message id without its offset).
//!
//! Invariants: a batch's ranges are written in the same sled batch as its file lengths, and enter
//! memory only after that batch is flushed (see `commit`). Sources with no commit for
//! `dedup.max_age` are forgotten, in memory and in sled.

use std::collections::HashMap;

/// The key of one source (host, file identity, generation).
pub type SourceHash = u128;

/// At most one pass over all sources to forget idle ones per this many milliseconds.
const PRUNE_INTERVAL_MS: i64 = 60_000;

/// Ranges kept per source at most. A well-behaved agent leaves one (a few while resends are
/// outstanding); a producer whose offsets leave gaps would otherwise make every batch copy and
/// store a record as large as its history. Past the cap the lowest (oldest) ranges are
/// forgotten: their lines fall back to the seen-id set, which can only let a duplicate through,
/// never drop a line.
const MAX_RANGES: usize = 256;

/// Sorted, disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Adds `[start, end)`, merging with every range it overlaps or touches.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // The first range that ends at or after `start` may merge; so may those that follow
        // while they begin at or before `end`.
        let first = self.0.partition_point(|&(_, e)| e < start);
        let mut last = first;
        let (mut lo, mut hi) = (start, end);
        while let Some(&(s, e)) = self.0.get(last) {
            if s > end {
                break;
            }
            lo = lo.min(s);
            hi = hi.max(e);
            last += 1;
        }
        self.0.splice(first..last, [(lo, hi)]);
    }

    /// Whether all of `[start, end)` is inside one range.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e < end);
        self.0.get(i).is_some_and(|&(s, e)| s <= start && end <= e)
    }

    /// Forgets the lowest ranges beyond the `keep` highest.
    pub fn keep_highest(&mut self, keep: usize) {
        let excess = self.0.len().saturating_sub(keep);
        self.0.drain(..excess);
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

/// The half-open part `[start, end)` of its source a message claims (see the module doc).
pub type Extent = (u64, u64);

/// FNV-1a, 128 bits, of a source's canonical name.
pub fn source_hash(host: &str, dev: u64, ino: u64, fp: u64, generation: u32) -> SourceHash {
    crate::seen::hash(&format!("{dev:x}.{ino:x}.{fp:016x}.{generation:x}@{host}"))
}

#[derive(Debug, Clone)]
struct Source {
    ranges: Ranges,
    /// When a batch last committed a line of it: idle sources are forgotten.
    last_ms: i64,
}

/// What one batch changes: new ranges for the sources it touched, and idle sources to forget.
#[derive(Debug, Default)]
pub struct Staged {
    pub updates: Vec<(SourceHash, Vec<u8>)>,
    pub forgotten: Vec<SourceHash>,
    sources: Vec<(SourceHash, Source)>,
}

/// Every source's committed ranges, in memory.
#[derive(Debug, Default)]
pub struct Positions {
    sources: HashMap<SourceHash, Source>,
    /// Not before this instant is the next pass over idle sources.
    next_prune_ms: i64,
}

impl Positions {
    /// Loads records as stored in sled (key without its prefix, value); records that do not
    /// decode are skipped (their lines fall back to the seen-id set).
    pub fn load(records: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Positions {
        let mut positions = Positions::default();
        for (key, value) in records {
            if let (Ok(hash), Some(source)) = (<[u8; 16]>::try_from(key.as_slice()), decode(&value))
            {
                positions
                    .sources
                    .insert(SourceHash::from_be_bytes(hash), source);
            }
        }
        positions
    }

    /// Whether the message claiming `extent` of `source` is already committed.
    pub fn covers(&self, source: SourceHash, (start, end): Extent) -> bool {
        self.sources
            .get(&source)
            .is_some_and(|s| s.ranges.contains(start, end))
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The records a batch of written messages `(source, extent)` changes, and the idle sources
    /// (older than `max_age_ms`) to forget; memory is unchanged until [`Positions::apply`].
    pub fn stage(
        &self,
        lines: impl Iterator<Item = (SourceHash, Extent)>,
        now_ms: i64,
        max_age_ms: i64,
    ) -> Staged {
        let mut touched: HashMap<SourceHash, Source> = HashMap::new();
        for (hash, (start, end)) in lines {
            let source = touched.entry(hash).or_insert_with(|| Source {
                ranges: self
                    .sources
                    .get(&hash)
                    .map(|s| s.ranges.clone())
                    .unwrap_or_default(),
                last_ms: now_ms,
            });
            source.ranges.insert(start, end);
        }
        for source in touched.values_mut() {
            source.ranges.keep_highest(MAX_RANGES);
        }
        let mut staged = Staged::default();
        if now_ms >= self.next_prune_ms {
            let oldest = now_ms.saturating_sub(max_age_ms);
            staged.forgotten = self
                .sources
                .iter()
                .filter(|(hash, s)| s.last_ms < oldest && !touched.contains_key(*hash))
                .map(|(hash, _)| *hash)
                .collect();
        }
        for (hash, source) in touched {
            staged.updates.push((hash, encode(&source)));
            staged.sources.push((hash, source));
        }
        staged
    }

    /// The batch `staged` came from is committed: its ranges are now the truth.
    pub fn apply(&mut self, staged: Staged, now_ms: i64) {
        if now_ms >= self.next_prune_ms {
            self.next_prune_ms = now_ms + PRUNE_INTERVAL_MS;
        }
        for hash in staged.forgotten {
            self.sources.remove(&hash);
        }
        self.sources.extend(staged.sources);
    }
}

fn encode(source: &Source) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + 16 * source.ranges.len());
    value.extend_from_slice(&source.last_ms.to_be_bytes());
    for &(start, end) in &source.ranges.0 {
        value.extend_from_slice(&start.to_be_bytes());
        value.extend_from_slice(&end.to_be_bytes());
    }
    value
}

fn decode(value: &[u8]) -> Option<Source> {
    let (head, rest) = value.split_at_checked(8)?;
    if rest.len() % 16 != 0 {
        return None;
    }
    let last_ms = i64::from_be_bytes(head.try_into().ok()?);
    let mut ranges = Ranges::default();
    for pair in rest.chunks_exact(16) {
        let start = u64::from_be_bytes(pair[..8].try_into().ok()?);
        let end = u64::from_be_bytes(pair[8..].try_into().ok()?);
        ranges.insert(start, end);
    }
    Some(Source { ranges, last_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The extent of a file's line at `offset` of `len` bytes.
    fn line(offset: u64, len: usize) -> Extent {
        (offset, offset + len as u64 + 1)
    }

    const S: SourceHash = 7;

    fn ranges(list: &[(u64, u64)]) -> Ranges {
        let mut r = Ranges::default();
        list.iter().for_each(|&(s, e)| r.insert(s, e));
        r
    }

    #[test]
    fn ranges_merge_when_they_touch_or_overlap() {
        assert_eq!(ranges(&[(0, 5), (5, 9)]).0, [(0, 9)]);
        assert_eq!(
            ranges(&[(10, 20), (0, 5), (30, 40)]).0,
            [(0, 5), (10, 20), (30, 40)]
        );
        assert_eq!(ranges(&[(10, 20), (0, 5), (30, 40), (4, 31)]).0, [(0, 40)]);
        assert_eq!(ranges(&[(10, 20), (12, 15)]).0, [(10, 20)]);
        assert_eq!(ranges(&[(10, 20), (3, 3)]).0, [(10, 20)]);
        let r = ranges(&[(0, 10), (20, 30)]);
        assert!(r.contains(0, 10) && r.contains(22, 25) && r.contains(20, 30));
        assert!(
            !r.contains(5, 11) && !r.contains(10, 11) && !r.contains(9, 21) && !r.contains(30, 31)
        );
    }

    #[test]
    fn lines_in_any_order_make_one_range_and_split_parts_are_not_duplicates() {
        // "abcd|efgh|ij\n" split in parts of 4 at 0, 4, 8; then "xy\n" at 11.
        let lines = [(8, 2), (0, 4), (11, 2), (4, 4)];
        let mut positions = Positions::default();
        for (i, &(offset, len)) in lines.iter().enumerate() {
            assert!(
                !positions.covers(S, line(offset, len)),
                "line {i} before commit"
            );
            let staged = positions.stage([(S, line(offset, len))].into_iter(), 0, 1000);
            positions.apply(staged, 0);
            assert!(positions.covers(S, line(offset, len)));
        }
        assert_eq!(positions.sources[&S].ranges.0, [(0, 14)]);
        // The part at 4 is not covered by the part at 0 alone.
        let mut only_first = Positions::default();
        only_first.apply(only_first.stage([(S, line(0, 4))].into_iter(), 0, 1000), 0);
        assert!(!only_first.covers(S, line(4, 4)) && !only_first.covers(S + 1, line(0, 4)));
        // An empty line right after a line is its own line.
        assert!(!positions.covers(S, line(14, 0)));
    }

    #[test]
    fn a_source_full_of_gaps_keeps_only_its_highest_ranges() {
        let mut positions = Positions::default();
        let lines = (0..MAX_RANGES as u64 + 10).map(|i| (S, line(i * 100, 9)));
        positions.apply(positions.stage(lines, 0, 1000), 0);
        assert_eq!(positions.sources[&S].ranges.len(), MAX_RANGES);
        assert!(!positions.covers(S, line(900, 9)) && positions.covers(S, line(1000, 9)));
        assert!(positions.covers(S, line((MAX_RANGES as u64 + 9) * 100, 9)));
    }

    #[test]
    fn staging_changes_nothing_until_applied_and_idle_sources_are_forgotten() {
        let mut positions = Positions::default();
        positions.apply(
            positions.stage([(1, line(0, 9)), (2, line(0, 9))].into_iter(), 0, 1000),
            0,
        );
        let staged = positions.stage([(2, line(10, 9))].into_iter(), 70_000, 1000);
        assert!(!positions.covers(2, line(10, 9)));
        assert_eq!(staged.forgotten, [1]);
        assert_eq!(staged.updates.len(), 1);
        positions.apply(staged, 70_000);
        assert!(positions.covers(2, line(10, 9)) && !positions.covers(1, line(0, 9)));
        assert_eq!(positions.len(), 1);
    }

    #[test]
    fn records_round_trip_and_garbage_is_skipped() {
        let mut positions = Positions::default();
        let staged = positions.stage([(S, line(0, 9)), (S, line(100, 9))].into_iter(), 5, 1000);
        let records: Vec<(Vec<u8>, Vec<u8>)> = staged
            .updates
            .iter()
            .map(|(hash, value)| (hash.to_be_bytes().to_vec(), value.clone()))
            .chain([(vec![1, 2], vec![]), (S.to_be_bytes().to_vec(), vec![0; 9])])
            .collect();
        positions.apply(staged, 5);
        let loaded = Positions::load(records.into_iter());
        assert_eq!(loaded.sources[&S].ranges, positions.sources[&S].ranges);
        assert_eq!(loaded.sources[&S].last_ms, 5);
        assert_eq!(loaded.len(), 1);
    }

    #[test]
    fn the_source_hash_is_the_message_id_without_its_offset() {
        let a = source_hash("web-1", 1, 2, 3, 0);
        assert_eq!(a, crate::seen::hash("1.2.0000000000000003.0@web-1"));
        assert_ne!(a, source_hash("web-1", 1, 2, 3, 1));
        assert_ne!(a, source_hash("web-2", 1, 2, 3, 0));
    }
}
