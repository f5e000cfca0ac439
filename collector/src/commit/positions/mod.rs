//! Committed source positions: for each source (host, file identity, generation), the ranges
//! of the source whose lines are written for good, the ranges its agent gave up (loss and drop
//! markers), and the holes (what the audit reports): between two committed ranges, and what
//! of a given-up range no committed range covers, also below the first committed byte. A line
//! whose range is committed
//! is a duplicate however long ago it was written; memory grows with the number of sources, not
//! of lines, since a source's lines almost always commit as one contiguous range (a gap appears
//! only while a resend after a nack or a return is outstanding).
//!
//! A line at `offset` with `len` bytes claims `[offset, offset + len + 1)`: its bytes and the one
//! after them, which is its newline or the first byte of the line's next part. The wire contract
//! this relies on: within a generation, lines do not overlap, and a part of a split line is never
//! empty, so no other line can start inside a committed range.
//!
//! A source's offsets are byte positions ([`OffsetKind::Bytes`], files) or sequence numbers
//! ([`OffsetKind::Sequence`], e.g. a journal: an entry claims `[offset - skipped, offset + 1)`);
//! the claim is made by the caller ([`Claim`]), and the audit says which kind a hole is in.
//!
//! sled keys (in the commit record's tree): `p/<source hash: 16 bytes>` -> `<last committed at:
//! ms, i64 BE><kind: u8>` then `<start: u64 BE><end: u64 BE><hole below open since: ms, i64 BE>`
//! per range (records of older versions, `<last><start><end>*` with no kind, read as bytes with
//! holes open since their last commit). A source with given-up ranges has `<committed ranges:
//! u32 BE>` after its kind, then its committed ranges, then its given-up ranges as
//! `<start><end><given up at: ms>` (13 + 24n bytes: a release before given-up ranges skips the
//! record, and its lines fall back to the seen-id set). The source hash is the 128-bit FNV-1a of
//! `<dev>.<ino>.<fp>.<gen>@<host>` (the message id without its offset).
//!
//! Invariants: a batch's ranges are in the same commit journal record as its file lengths, and
//! enter memory (and sled) only after that record is synced (see `commit`). Sources with no commit for
//! `dedup.max_age` are forgotten, in memory and in sled. A given-up range is never committed:
//! lines of it that arrive later are written (once) and shrink the hole; a given-up range that
//! committed ranges cover whole is forgotten.

use std::collections::{HashMap, HashSet};

use crate::commit::seen::{self, Hashing, IdHash};

mod ranges;

pub use ranges::{GivenUp, Range, Ranges};

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

/// What a source's offsets count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetKind {
    /// Byte positions in a file: a hole is missing bytes.
    #[default]
    Bytes = 0,
    /// Sequence numbers (a journal's): a hole is missing entries, not bytes.
    Sequence = 1,
}

impl OffsetKind {
    fn from_byte(byte: u8) -> Option<OffsetKind> {
        match byte {
            0 => Some(OffsetKind::Bytes),
            1 => Some(OffsetKind::Sequence),
            _ => None,
        }
    }

    /// How the audit names the unit of a hole.
    pub fn unit(self) -> &'static str {
        match self {
            OffsetKind::Bytes => "bytes",
            OffsetKind::Sequence => "sequence numbers",
        }
    }
}

/// What a written line claims of its source: `[start, end)` in its kind of offsets; or, for a
/// loss or drop marker, the range its agent gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub source: SourceHash,
    pub start: u64,
    pub end: u64,
    pub kind: OffsetKind,
    /// A marker's range: recorded as given up, never as committed, and never covered (see
    /// [`Positions::covers`]), so lines of it that still arrive are written.
    pub given_up: bool,
}

impl Claim {
    /// A line of `len` bytes at byte `offset`: its bytes and the one after them (see the module
    /// doc).
    pub fn line(source: SourceHash, offset: u64, len: usize) -> Claim {
        Claim {
            source,
            start: offset,
            end: offset.saturating_add(len as u64).saturating_add(1),
            kind: OffsetKind::Bytes,
            given_up: false,
        }
    }

    /// `[start, end)` of bytes given up by a marker.
    pub fn given_up(source: SourceHash, start: u64, end: u64) -> Claim {
        Claim {
            source,
            start,
            end,
            kind: OffsetKind::Bytes,
            given_up: true,
        }
    }
}

/// Where a source's lines come from, as the audit names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceName {
    pub host: String,
    pub path: String,
}

impl SourceName {
    /// The stored form: `<host>\0<path>` (a host never holds a NUL).
    pub fn encode(&self) -> Vec<u8> {
        [self.host.as_bytes(), b"\0", self.path.as_bytes()].concat()
    }

    /// Reads a stored name.
    pub fn decode(value: &[u8]) -> Option<SourceName> {
        let text = std::str::from_utf8(value).ok()?;
        let (host, path) = text.split_once('\0')?;
        Some(SourceName {
            host: host.to_string(),
            path: path.to_string(),
        })
    }
}

/// A piece of a source that was not written: between two committed ranges, or given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hole {
    pub source: SourceHash,
    pub kind: OffsetKind,
    pub start: u64,
    pub end: u64,
    /// When it opened (unix milliseconds).
    pub since_ms: i64,
}

/// FNV-1a, 128 bits, of a source's canonical name.
pub fn source_hash(host: &str, dev: u64, ino: u64, fp: u64, generation: u32) -> SourceHash {
    hashes(host, dev, ino, fp, generation, None).0
}

/// The source's hash, and with an `offset`, also the hash of the message id of its line there
/// ([`logship_runtime::Envelope::message_id`]: `<dev>.<ino>.<fp>.<gen>.<offset>@<host>`, the
/// source's name with the offset inserted), computed without building either string.
pub fn hashes(
    host: &str,
    dev: u64,
    ino: u64,
    fp: u64,
    generation: u32,
    offset: Option<u64>,
) -> (SourceHash, IdHash) {
    use std::fmt::Write as _;
    let mut name = Hashing::default();
    // Writing into a hash cannot fail.
    let _ = write!(name, "{dev:x}.{ino:x}.{fp:016x}.{generation:x}");
    let prefix = name.0;
    let source = seen::hash_bytes(seen::hash_bytes(prefix, b"@"), host.as_bytes());
    let Some(offset) = offset else {
        return (source, seen::OFFSET);
    };
    let mut id = Hashing(prefix);
    let _ = write!(id, ".{offset:x}@{host}");
    (source, id.0)
}

#[derive(Debug, Clone)]
struct Source {
    ranges: Ranges,
    /// What its agent gave up and no committed range covers whole.
    given_up: GivenUp,
    /// When a batch last committed a line of it: idle sources are forgotten.
    last_ms: i64,
    kind: OffsetKind,
}

impl Source {
    /// Whether it has a hole: a given-up range kept is never covered whole.
    fn has_holes(&self) -> bool {
        self.ranges.len() > 1 || !self.given_up.is_empty()
    }

    /// Its holes, `(start, end, since_ms)` in order: those between committed ranges, and the
    /// pieces of given-up ranges below the lowest committed range or above the highest (those
    /// between two committed ranges are inside a hole already). A hole is as old as the
    /// oldest given-up range in it.
    fn holes(&self) -> Vec<(u64, u64, i64)> {
        let mut holes: Vec<(u64, u64, i64)> = self
            .ranges
            .holes()
            .map(|(start, end, since_ms)| {
                let given = self
                    .given_up
                    .iter()
                    .filter(|g| g.start < end && start < g.end);
                (start, end, given.fold(since_ms, |at, g| at.min(g.since_ms)))
            })
            .collect();
        let span = self.ranges.span();
        for given in self.given_up.iter() {
            for (start, end) in self.ranges.missing(given.start, given.end) {
                if span.is_none_or(|(lo, hi)| end <= lo || start >= hi) {
                    holes.push((start, end, given.since_ms));
                }
            }
        }
        holes.sort_unstable();
        holes
    }
}

/// What one batch changes: new ranges for the sources it touched, and idle sources to forget.
#[derive(Debug, Default)]
pub struct Staged {
    pub updates: Vec<(SourceHash, Vec<u8>)>,
    pub forgotten: Vec<SourceHash>,
    /// Sources not tracked before this batch (their names are recorded with them).
    pub new: Vec<SourceHash>,
    sources: Vec<(SourceHash, Source)>,
}

/// Every source's committed ranges, in memory.
#[derive(Debug, Default)]
pub struct Positions {
    sources: HashMap<SourceHash, Source>,
    /// Sources with at least one hole.
    holed: HashSet<SourceHash>,
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
                let hash = SourceHash::from_be_bytes(hash);
                if source.has_holes() {
                    positions.holed.insert(hash);
                }
                positions.sources.insert(hash, source);
            }
        }
        positions
    }

    /// Whether all of `claim` is already committed; a marker's given-up range never is (a
    /// marker sent twice is caught by its id, and recording it again changes nothing).
    pub fn covers(&self, claim: &Claim) -> bool {
        !claim.given_up
            && self
                .sources
                .get(&claim.source)
                .is_some_and(|s| s.ranges.contains(claim.start, claim.end))
    }

    /// Whether `source` is tracked.
    pub fn contains(&self, source: SourceHash) -> bool {
        self.sources.contains_key(&source)
    }

    /// Every hole of every source, in no particular order.
    pub fn holes(&self) -> Vec<Hole> {
        let mut holes = Vec::new();
        for hash in &self.holed {
            if let Some(source) = self.sources.get(hash) {
                holes.extend(
                    source
                        .holes()
                        .into_iter()
                        .map(|(start, end, since_ms)| Hole {
                            source: *hash,
                            kind: source.kind,
                            start,
                            end,
                            since_ms,
                        }),
                );
            }
        }
        holes
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The records a batch of written lines' claims changes, and the idle sources (older than
    /// `max_age_ms`) to forget; memory is unchanged until [`Positions::apply`].
    pub fn stage(
        &self,
        claims: impl Iterator<Item = Claim>,
        now_ms: i64,
        max_age_ms: i64,
    ) -> Staged {
        let mut touched: HashMap<SourceHash, Source> = HashMap::new();
        for claim in claims {
            let source = touched.entry(claim.source).or_insert_with(|| {
                let known = self.sources.get(&claim.source);
                Source {
                    ranges: known.map(|s| s.ranges.clone()).unwrap_or_default(),
                    given_up: known.map(|s| s.given_up.clone()).unwrap_or_default(),
                    last_ms: now_ms,
                    kind: claim.kind,
                }
            });
            source.kind = claim.kind;
            if claim.given_up {
                source.given_up.insert(claim.start, claim.end, now_ms);
            } else {
                source.ranges.insert(claim.start, claim.end, now_ms);
            }
        }
        for source in touched.values_mut() {
            source.ranges.keep_highest(MAX_RANGES);
            source.given_up.keep_highest(MAX_RANGES);
            source.given_up.retain_missing(&source.ranges);
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
            if !self.sources.contains_key(&hash) {
                staged.new.push(hash);
            }
            staged.updates.push((hash, encode(&source)));
            staged.sources.push((hash, source));
        }
        staged
    }

    /// The batch `staged` came from is committed: its ranges are now the truth. Returns whether
    /// any hole opened, changed or closed.
    pub fn apply(&mut self, staged: Staged, now_ms: i64) -> bool {
        if now_ms >= self.next_prune_ms {
            self.next_prune_ms = now_ms + PRUNE_INTERVAL_MS;
        }
        let mut holes_changed = false;
        for hash in staged.forgotten {
            self.sources.remove(&hash);
            holes_changed |= self.holed.remove(&hash);
        }
        for (hash, source) in staged.sources {
            let has = source.has_holes();
            let had = if has {
                !self.holed.insert(hash)
            } else {
                self.holed.remove(&hash)
            };
            // Lines arriving in order only grow the highest range: the holes stay as they were.
            if had || has {
                let before = self.sources.get(&hash).map(Source::holes);
                holes_changed |= before.is_none_or(|b| b != source.holes());
            }
            self.sources.insert(hash, source);
        }
        holes_changed
    }
}

fn encode(source: &Source) -> Vec<u8> {
    let ranges = source.ranges.len() + source.given_up.len();
    let mut value = Vec::with_capacity(13 + 24 * ranges);
    value.extend_from_slice(&source.last_ms.to_be_bytes());
    value.push(source.kind as u8);
    // Without given-up ranges, the record of the release before them.
    if !source.given_up.is_empty() {
        value.extend_from_slice(&(source.ranges.len() as u32).to_be_bytes());
    }
    for range in source.ranges.0.iter().chain(source.given_up.iter()) {
        value.extend_from_slice(&range.start.to_be_bytes());
        value.extend_from_slice(&range.end.to_be_bytes());
        value.extend_from_slice(&range.since_ms.to_be_bytes());
    }
    value
}

fn decode(value: &[u8]) -> Option<Source> {
    let (head, rest) = value.split_at_checked(8)?;
    let last_ms = i64::from_be_bytes(head.try_into().ok()?);
    let word = |bytes: &[u8]| -> Option<u64> { Some(u64::from_be_bytes(bytes.try_into().ok()?)) };
    let mut ranges = Vec::new();
    // Records of older versions: 8 + 16n bytes; ours: 9 + 24n, or 13 + 24n with given-up
    // ranges after the committed ones.
    let (kind, rest, width, committed) = match value.len() % 8 {
        1 => (OffsetKind::from_byte(rest[0])?, &rest[1..], 24, None),
        5 => {
            let count = u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?);
            let count = usize::try_from(count).ok()?;
            (OffsetKind::from_byte(rest[0])?, &rest[5..], 24, Some(count))
        }
        _ => (OffsetKind::Bytes, rest, 16, None),
    };
    if rest.len() % width != 0 {
        return None;
    }
    for range in rest.chunks_exact(width) {
        let since_ms = match width {
            24 => word(&range[16..24])? as i64,
            _ => last_ms,
        };
        ranges.push(Range {
            start: word(&range[..8])?,
            end: word(&range[8..16])?,
            since_ms,
        });
    }
    let given_up = match committed {
        Some(count) if count <= ranges.len() => ranges.split_off(count),
        Some(_) => return None,
        None => Vec::new(),
    };
    // Each list stored sorted and disjoint; anything else is not a record of ours.
    let ordered = |list: &[Range]| {
        list.windows(2).all(|w| w[0].end < w[1].start) && list.iter().all(|r| r.start < r.end)
    };
    if !ordered(&ranges) || !ordered(&given_up) {
        return None;
    }
    Some(Source {
        ranges: Ranges(ranges),
        given_up: GivenUp(given_up),
        last_ms,
        kind,
    })
}

#[cfg(test)]
mod tests;
