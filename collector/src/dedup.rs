//! Dropping lines already written: ids in the commit record, and repeats within one batch.
//!
//! Together with truncate-on-start (see `sink`) this makes the output exactly-once: the seen
//! set catches what the agent sent twice or the broker redelivered after an ack was lost; the
//! truncation catches what was written but never acked.

use std::collections::HashSet;

use crate::commit::Commit;
use crate::validate::Line;

/// Splits numbered `lines` into those to write (in order, numbers kept) and the number of
/// duplicates dropped.
pub fn fresh(lines: Vec<(usize, Line)>, commit: &Commit) -> (Vec<(usize, Line)>, u64) {
    let mut in_batch = HashSet::with_capacity(lines.len());
    let mut fresh = Vec::with_capacity(lines.len());
    let mut duplicates = 0;
    for (position, line) in lines {
        if in_batch.contains(line.id.as_str()) || commit.is_seen(&line.id) {
            duplicates += 1;
            continue;
        }
        in_batch.insert(line.id.clone());
        fresh.push((position, line));
    }
    (fresh, duplicates)
}
