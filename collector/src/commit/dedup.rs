//! Dropping lines already written: committed source positions and ids in the commit record, and
//! repeats within one batch.
//!
//! Together with truncate-on-start (see `sink`) this makes the output exactly-once: the committed
//! positions (and, within its window, the seen-id set) catch what the agent sent twice or the
//! broker redelivered after an ack was lost, at any age; the truncation catches what was written
//! but never acked.

use crate::commit::Commit;
use crate::commit::seen::IdSet;
use crate::consumer::validate::Line;

/// The lines of `lines` to write, in order, with their position in the batch; and the number of
/// duplicates dropped.
pub fn fresh<'a>(lines: &'a [Line], commit: &Commit) -> (Vec<(usize, &'a Line)>, u64) {
    let mut in_batch = IdSet::with_capacity_and_hasher(lines.len(), Default::default());
    let mut fresh = Vec::with_capacity(lines.len());
    let mut duplicates = 0;
    for (position, line) in lines.iter().enumerate() {
        if in_batch.contains(&line.id)
            || commit.is_committed(&line.claim())
            || commit.is_seen(line.id)
        {
            duplicates += 1;
            continue;
        }
        in_batch.insert(line.id);
        fresh.push((position, line));
    }
    (fresh, duplicates)
}
