//! What `drop_oldest` drops, as ranges of sources, and the drop markers (envelope v3, see
//! [`logship_runtime::envelope`]) that carry each range to the collector, whose audit then lists
//! what of it never arrived, also at a file's head where nothing was committed before it.
//!
//! Invariants:
//! - A drop and its markers are one: the markers go first into the segment appended with the
//!   drop, and the dropped segments' index records are removed in the same sled batch as that
//!   segment's record. After a crash either the dropped lines are still spooled or their
//!   markers are.
//! - A marker is never dropped silently: a dropped segment's markers are read like its lines,
//!   and their ranges go into the next markers, merged with what they continue.
//! - A line the publisher may have loaded (and so published) is said to be dropped "before
//!   confirmation": it may have been delivered. Only a line it never loaded is certainly lost.
//!   Both are in the markers: the collector records the whole range as given up and subtracts
//!   what did arrive.

use std::borrow::Cow;
use std::collections::BTreeMap;

use logship_runtime::{Envelope, EnvelopeRef, FileId, SourceKind};

use super::index::{decode_index, decode_seq};
use super::segment::framed_len;
use super::{Message, Seq, Spool, SpoolError};

/// Why a range's lines are gone, which says what the collector may still get of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The publisher had loaded them: they may have been published, and delivered.
    Unconfirmed,
    /// Never published: lost for good.
    Unpublished,
    /// A marker of an earlier drop, dropped in turn: carried into the new markers (its range
    /// was said when it was first dropped).
    Marker,
}

/// A contiguous piece of one source (path, file identity, generation) dropped from the spool:
/// the part `[from, to)` that its lines claim at the collector ([`Envelope::extent`]: bytes of
/// a file, sequence numbers of a journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    pub host: String,
    pub path: String,
    pub file: FileId,
    pub generation: u32,
    /// The input's labels: the collector's output layout may name them.
    pub fields: BTreeMap<String, String>,
    /// Offsets are a journal's sequence numbers, not bytes.
    pub journal: bool,
    pub from: u64,
    pub to: u64,
    /// Lines (or entries) in it; 0 for a carried marker.
    pub lines: u64,
    pub cause: Cause,
}

impl DroppedRange {
    /// Whether `other` is of the same source (path, file identity, generation).
    fn same_source(&self, other: &DroppedRange) -> bool {
        (
            &self.host,
            &self.path,
            self.file,
            self.generation,
            self.journal,
        ) == (
            &other.host,
            &other.path,
            other.file,
            other.generation,
            other.journal,
        )
    }

    /// Whether `other` is of the same source and starts where this one ends.
    fn continued_by(&self, other: &DroppedRange) -> bool {
        self.same_source(other) && self.to == other.from
    }

    /// What the audit counts its offsets in.
    pub fn unit(&self) -> &'static str {
        if self.journal {
            "sequence numbers"
        } else {
            "bytes"
        }
    }
}

/// What one append dropped, for the input that appended to log.
#[derive(Debug, Default)]
pub struct Dropped {
    /// Lines (and entries) dropped, markers not counted.
    pub lines: u64,
    pub ranges: Vec<DroppedRange>,
}

impl Dropped {
    /// Logs the drop: one line for the whole, then one per range of lines, saying which may
    /// have been delivered. `total` is the lines dropped since start.
    pub fn log(&self, total: u64) {
        if self.lines == 0 {
            return;
        }
        tracing::warn!(
            dropped = self.lines,
            total,
            "spool full, dropped the oldest lines"
        );
        // Each piece by name: the collector's audit shows what of it never arrived.
        for range in &self.ranges {
            let DroppedRange {
                path,
                from,
                to,
                lines,
                generation,
                ..
            } = range;
            let unit = range.unit();
            match range.cause {
                Cause::Unpublished => tracing::warn!(%path, from, to, lines, generation, unit,
                    "spool full: dropped lines of this source never published (a hole in the collector's audit)"),
                Cause::Unconfirmed => tracing::warn!(%path, from, to, lines, generation, unit,
                    "spool full: dropped before confirmation, lines of this source that may have been delivered (the collector's audit shows what was not)"),
                Cause::Marker => {}
            }
        }
    }
}

/// Adds the lines of one dropped segment to `ranges`, merging each with the range of its source
/// it continues, if dropped for the same cause; `loaded` says whether the publisher had loaded
/// the segment. Returns the number of lines (markers not counted). A body that is not an
/// envelope is skipped (it is counted as dropped all the same).
pub fn add(ranges: &mut Vec<DroppedRange>, messages: &[Message], loaded: bool) -> u64 {
    let mut lines = 0;
    for Message { body, .. } in messages {
        let Ok(envelope) = Envelope::from_json(body) else {
            lines += 1;
            continue;
        };
        let marker = envelope.kind.given_up().is_some();
        let cause = match (marker, loaded) {
            (true, _) => Cause::Marker,
            (false, true) => Cause::Unconfirmed,
            (false, false) => Cause::Unpublished,
        };
        lines += u64::from(!marker);
        let (from, to) = envelope.extent();
        let range = DroppedRange {
            journal: envelope.kind.counts_sequence(),
            host: envelope.host,
            path: envelope.path,
            file: envelope.file,
            generation: envelope.generation,
            fields: envelope.fields,
            from,
            to,
            lines: u64::from(!marker),
            cause,
        };
        let continued = ranges
            .iter_mut()
            .rev()
            .find(|r| r.cause == cause && r.continued_by(&range));
        match continued {
            Some(last) => {
                last.to = range.to;
                last.lines += range.lines;
            }
            None => ranges.push(range),
        }
    }
    lines
}

/// The drop markers for `ranges`: one per contiguous piece of a source, whatever the causes
/// (overlapping or touching ranges merge), sources in the order they were first dropped, each
/// source's pieces in offset order. Each is stamped `now_ms`.
pub fn markers(ranges: &[DroppedRange], now_ms: i64) -> Vec<Message> {
    let mut order: Vec<&DroppedRange> = ranges.iter().filter(|r| r.from < r.to).collect();
    // First-seen order of sources, then offsets; `sort_by_key` is stable.
    let first_seen = |r: &DroppedRange| ranges.iter().position(|s| s.same_source(r));
    order.sort_by_key(|r| (first_seen(r), r.from));
    let mut pieces: Vec<Cow<'_, DroppedRange>> = Vec::new();
    for range in order {
        match pieces.last_mut() {
            Some(piece) if piece.same_source(range) && range.from <= piece.to => {
                let to = piece.to.max(range.to);
                piece.to_mut().to = to;
            }
            _ => pieces.push(Cow::Borrowed(range)),
        }
    }
    pieces
        .iter()
        .map(|piece| {
            let marker = EnvelopeRef {
                host: &piece.host,
                path: &piece.path,
                file: piece.file,
                generation: piece.generation,
                offset: piece.to,
                timestamp_ms: now_ms,
                line: b"",
                fields: &piece.fields,
                kind: SourceKind::Dropped {
                    lost: piece.to - piece.from,
                    journal: piece.journal,
                },
            };
            Message::of(&marker)
        })
        .collect()
}

/// A segment chosen to be dropped.
pub(super) struct Doomed {
    pub seq: Seq,
    /// Messages and bytes, as its index record counts them (markers included).
    pub index_lines: u32,
    pub bytes: u64,
    /// Lines (and entries) in it, markers not counted.
    pub lines: u64,
    pub ranges: Vec<DroppedRange>,
}

/// Segments chosen to be dropped, oldest first, and the markers that replace them.
#[derive(Default)]
pub(super) struct Plan {
    pub segments: Vec<Doomed>,
    pub markers: Vec<Message>,
}

impl Plan {
    /// Bytes its markers take in a segment.
    pub fn marker_bytes(&self) -> u64 {
        self.markers
            .iter()
            .map(|marker| framed_len(&marker.id, &marker.body))
            .sum()
    }
}

impl Spool {
    /// Chooses the oldest segments to drop so that `incoming` bytes and the markers of the drop
    /// fit under the cap; reads each for its ranges. Nothing is removed yet (see
    /// [`Spool::append`]).
    pub(super) fn plan_drop(&self, incoming: u64) -> Result<Plan, SpoolError> {
        let mut plan = Plan::default();
        let mut freed = 0;
        let mut all: Vec<DroppedRange> = Vec::new();
        let loaded_to = self.loaded_to();
        for item in self.db.scan_prefix(b"q") {
            if self.bytes().saturating_sub(freed) + incoming + plan.marker_bytes() <= self.max_bytes
            {
                break;
            }
            let (key, value) = item.map_err(self.index_failed("read the segment records"))?;
            let seq = decode_seq(&key);
            let (index_lines, size) = decode_index(&value);
            let mut ranges = Vec::new();
            let lines = match self.segments.read(seq) {
                Ok(messages) => add(&mut ranges, &messages, seq < loaded_to),
                // A damaged segment is dropped all the same; only its ranges go unnamed.
                Err(err) => {
                    tracing::error!(segment = seq, error = %err, "spool segment unreadable while dropping it, its lines are lost unnamed");
                    u64::from(index_lines)
                }
            };
            all.extend(ranges.iter().cloned());
            plan.markers = markers(&all, logship_runtime::clock::now_ms());
            freed += size;
            plan.segments.push(Doomed {
                seq,
                index_lines,
                bytes: size,
                lines,
                ranges,
            });
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests;
