//! The seen-id set: what dedup asks. Message ids are kept as 128-bit FNV-1a hashes (a collision
//! among a million ids has odds of about 10^-26), in memory, bounded by `dedup.max_ids` and
//! `dedup.max_age`. They are made durable in the commit journal (see [`crate::commit::wal`]).
//!
//! Invariant: ids enter the set only once their batch committed, so a failed commit leaves
//! nothing behind that could make a redelivered line look written.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use logship_config::collector::DedupSettings;

/// Bytes of one record of the seen-id log of earlier versions.
const LEGACY_RECORD: usize = 24;

/// An id's key in the set.
pub type IdHash = u128;

/// The set, oldest first.
#[derive(Default)]
pub struct Seen {
    set: IdSet,
    /// The same hashes, oldest first, with when they were recorded.
    order: VecDeque<(IdHash, i64)>,
}

impl Seen {
    /// Whether `hash` was written.
    pub fn contains(&self, hash: IdHash) -> bool {
        self.set.contains(&hash)
    }

    /// Adds an id recorded at `at` (unix milliseconds); an id already held keeps its age.
    pub fn insert(&mut self, hash: IdHash, at: i64) {
        if self.set.insert(hash) {
            self.order.push_back((hash, at));
        }
    }

    /// Forgets the oldest ids past the bounds.
    pub fn prune(&mut self, now_ms: i64, bounds: &DedupSettings) {
        let oldest_allowed = now_ms.saturating_sub(bounds.max_age.as_millis() as i64);
        while let Some(&(hash, at)) = self.order.front() {
            if self.order.len() as u64 <= bounds.max_ids && at >= oldest_allowed {
                break;
            }
            self.order.pop_front();
            self.set.remove(&hash);
        }
    }

    /// Every id held with when it was recorded, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (IdHash, i64)> + '_ {
        self.order.iter().copied()
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A set of ids, hashed by [`Folded`].
pub type IdSet = HashSet<IdHash, BuildHasherDefault<Folded>>;

/// The ids are already FNV-1a hashes: a set of them folds their two halves instead of hashing
/// them again.
#[derive(Default)]
pub struct Folded(u64);

impl Hasher for Folded {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 ^= value as u64 ^ (value >> 64) as u64;
    }
}

/// The ids of the seen-id log `seen-<generation>.log` that versions before the commit journal
/// kept (`committed` bytes of 24-byte records `<hash: 16 bytes><recorded at: ms, i64 BE>`).
pub fn read_legacy(
    dir: &Path,
    generation: u64,
    committed: u64,
) -> std::io::Result<Vec<(IdHash, i64)>> {
    let bytes = match std::fs::read(legacy_path(dir, generation)) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err),
    };
    let committed = usize::try_from(committed).unwrap_or(usize::MAX);
    Ok(bytes[..committed.min(bytes.len())]
        .chunks_exact(LEGACY_RECORD)
        .map(|record| {
            let (hash, at) = record.split_at(16);
            (
                IdHash::from_be_bytes(hash.try_into().unwrap_or([0; 16])),
                i64::from_be_bytes(at.try_into().unwrap_or([0; 8])),
            )
        })
        .collect())
}

/// Deletes every seen-id log of earlier versions in `dir`.
pub fn remove_legacy(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("seen-") && name.ends_with(".log") {
            std::fs::remove_file(dir.join(&*name))?;
        }
    }
    Ok(())
}

fn legacy_path(dir: &Path, generation: u64) -> std::path::PathBuf {
    dir.join(format!("seen-{generation}.log"))
}

/// FNV-1a, 128 bits: stable across builds and platforms, unlike std's hasher.
pub fn hash(id: &str) -> IdHash {
    hash_bytes(OFFSET, id.as_bytes())
}

/// FNV-1a of formatted text, without the text: `write!` into it.
pub struct Hashing(pub IdHash);

impl Default for Hashing {
    fn default() -> Hashing {
        Hashing(OFFSET)
    }
}

impl std::fmt::Write for Hashing {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0 = hash_bytes(self.0, text.as_bytes());
        Ok(())
    }
}

/// The FNV-1a basis: the hash of no bytes.
pub const OFFSET: IdHash = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;

/// Continues an FNV-1a hash over more bytes.
pub fn hash_bytes(hash: IdHash, bytes: &[u8]) -> IdHash {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(hash, |hash, &b| (hash ^ u128::from(b)).wrapping_mul(PRIME))
}
