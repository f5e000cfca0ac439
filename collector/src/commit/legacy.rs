//! State of versions before the commit journal: their seen-id log moves into a new journal.

use std::path::Path;

use logship_config::collector::DedupSettings;

use super::error::{At, CommitError};
use super::seen::{self, Seen};
use super::wal::Wal;
use super::{JOURNAL_KEY, decode_pair, encode_pair};

/// The seen-id log key of versions before the journal.
pub(super) const LEGACY_SEEN_KEY: &[u8] = b"m/seen";

/// Moves the ids of the seen-id log of versions before the journal into a new journal (a
/// fresh state directory gets an empty one); returns its generation and checkpoint.
pub(super) fn migrate(
    tree: &sled::Db,
    dir: &Path,
    bounds: &DedupSettings,
    now_ms: i64,
) -> Result<(u64, u64), CommitError> {
    let (generation, len) = tree
        .get(LEGACY_SEEN_KEY)
        .at(dir, "read the legacy seen-id log's length")?
        .map_or((0, 0), |v| decode_pair(&v));
    let mut ids = Seen::default();
    for (hash, at) in
        seen::read_legacy(dir, generation, len).at(dir, "read the legacy seen-id log")?
    {
        ids.insert(hash, at);
    }
    ids.prune(now_ms, bounds);
    let journal = Wal::create(dir, 0, ids.iter()).at(dir, "create")?;
    let mut batch = sled::Batch::default();
    batch.insert(JOURNAL_KEY, &encode_pair(0, journal.end()));
    batch.remove(LEGACY_SEEN_KEY);
    tree.apply_batch(batch).at(dir, "record the new journal")?;
    tree.flush().at(dir, "flush")?;
    if !ids.is_empty() {
        tracing::info!(
            ids = ids.len(),
            "moved the seen-id log into the commit journal"
        );
    }
    Ok((0, journal.end()))
}
