//! The commit record: the only code that touches sled.
//!
//! One sled tree, keys by prefix:
//! - `f/<output file, relative to output.dir>` -> committed length (u64 BE): every byte before it
//!   was fsync'd and its message acked or about to be; bytes past it were never acked.
//! - `s/<id hash>` -> sequence number (u64 BE): ids already written, for dedup. The id is kept
//!   as its 128-bit FNV-1a hash (16 bytes instead of ~60), which keeps the database, and sled's
//!   memory, small; a collision among a million ids has odds of about 10^-26.
//! - `a/<sequence (u64 BE)>` -> time recorded (ms, i64 BE) + id hash: the same ids in the order
//!   they were recorded, so the oldest can be pruned.
//! - `m/seq`, `m/count`: next sequence number and number of ids held (sled's `len()` walks the tree).
//!
//! Invariants: a batch's ids and file lengths go in one sled batch, flushed before the batch is
//! acked. A file's length is recorded before the first byte is appended to it, so bytes that a
//! crash leaves past the committed length are always truncated on start.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use logship_config::collector::DedupSettings;

/// At most this many ids are pruned per commit, so one commit never stalls on a big backlog.
const PRUNE_PER_COMMIT: usize = 4096;

/// sled's page cache; the default (1 GiB) is far more than a seen-set needs.
const CACHE_BYTES: u64 = 64 << 20;

/// A failure of the commit record.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("cannot open state in \"{}\"", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("state database failed")]
    Sled(#[from] sled::Error),
}

/// The sled-backed record of written ids and committed file lengths.
pub struct Commit {
    tree: sled::Db,
    next_seq: u64,
    count: u64,
}

impl Commit {
    /// Opens (or creates) the record in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Commit, CommitError> {
        let path = state_dir.join("collector.sled");
        let tree = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| CommitError::Open { path, source })?;
        let next_seq = read_u64(tree.get(b"m/seq")?);
        let count = read_u64(tree.get(b"m/count")?);
        Ok(Commit {
            tree,
            next_seq,
            count,
        })
    }

    /// Whether `id` was already written.
    pub fn is_seen(&self, id: &str) -> Result<bool, CommitError> {
        Ok(self.tree.contains_key(seen_key(id))?)
    }

    /// Every file with a committed length.
    pub fn files(&self) -> Result<Vec<(PathBuf, u64)>, CommitError> {
        let mut files = Vec::new();
        for entry in self.tree.scan_prefix(b"f/") {
            let (key, value) = entry?;
            let path = Path::new(std::ffi::OsStr::from_bytes(&key[2..])).to_path_buf();
            files.push((path, read_u64(Some(value))));
        }
        Ok(files)
    }

    /// A file's committed length, if it has one.
    pub fn committed_len(&self, file: &Path) -> Result<Option<u64>, CommitError> {
        Ok(self.tree.get(file_key(file))?.map(|v| read_u64(Some(v))))
    }

    /// Records lengths (`None` forgets the file) and flushes, outside of a batch commit.
    pub fn set_lengths(&self, lengths: &[(PathBuf, Option<u64>)]) -> Result<(), CommitError> {
        let mut batch = sled::Batch::default();
        for (file, len) in lengths {
            match len {
                Some(len) => batch.insert(file_key(file), &len.to_be_bytes()),
                None => batch.remove(file_key(file)),
            }
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Records a written batch: its ids and the new file lengths, pruning the oldest ids past
    /// the dedup bounds, in one sled batch, then flushes. Only then may the batch be acked.
    pub fn record(
        &mut self,
        ids: &[String],
        lengths: &[(PathBuf, u64)],
        now_ms: i64,
        bounds: &DedupSettings,
    ) -> Result<(), CommitError> {
        let mut batch = sled::Batch::default();
        for id in ids {
            let seq = self.next_seq;
            self.next_seq += 1;
            batch.insert(seen_key(id), &seq.to_be_bytes());
            let mut value = Vec::with_capacity(8 + 16);
            value.extend_from_slice(&now_ms.to_be_bytes());
            value.extend_from_slice(&id_hash(id));
            batch.insert(&age_key(seq), value);
        }
        let mut count = self.count + ids.len() as u64;
        let oldest_allowed = now_ms.saturating_sub(bounds.max_age.as_millis() as i64);
        for entry in self.tree.scan_prefix(b"a/").take(PRUNE_PER_COMMIT) {
            let (key, value) = entry?;
            let recorded = i64::from_be_bytes(value[..8].try_into().unwrap_or([0; 8]));
            if count <= bounds.max_ids && recorded >= oldest_allowed {
                break;
            }
            batch.remove(key);
            batch.remove(seen_key_bytes(&value[8..]));
            count -= 1;
        }
        for (file, len) in lengths {
            batch.insert(file_key(file), &len.to_be_bytes());
        }
        batch.insert(b"m/seq", &self.next_seq.to_be_bytes());
        batch.insert(b"m/count", &count.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        self.count = count;
        Ok(())
    }

    /// Number of ids held for dedup.
    pub fn seen_count(&self) -> u64 {
        self.count
    }
}

fn read_u64(value: Option<sled::IVec>) -> u64 {
    value
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

fn file_key(file: &Path) -> Vec<u8> {
    [b"f/", file.as_os_str().as_bytes()].concat()
}

fn seen_key(id: &str) -> Vec<u8> {
    seen_key_bytes(&id_hash(id))
}

/// FNV-1a, 128 bits: stable across builds and platforms, unlike std's hasher.
fn id_hash(id: &str) -> [u8; 16] {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    id.bytes()
        .fold(OFFSET, |hash, b| (hash ^ u128::from(b)).wrapping_mul(PRIME))
        .to_be_bytes()
}

fn seen_key_bytes(id: &[u8]) -> Vec<u8> {
    [b"s/", id].concat()
}

fn age_key(seq: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[..2].copy_from_slice(b"a/");
    key[2..].copy_from_slice(&seq.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bounds(max_ids: u64, max_age: Duration) -> DedupSettings {
        DedupSettings { max_ids, max_age }
    }

    #[test]
    fn ids_and_lengths_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut commit = Commit::open(dir.path()).unwrap();
            let ids = vec!["a".to_string(), "b".to_string()];
            let lengths = vec![(PathBuf::from("h/x.log"), 42)];
            let wide = bounds(10, Duration::from_secs(60));
            commit.record(&ids, &lengths, 1_000, &wide).unwrap();
        }
        let commit = Commit::open(dir.path()).unwrap();
        assert!(commit.is_seen("a").unwrap() && commit.is_seen("b").unwrap());
        assert!(!commit.is_seen("c").unwrap());
        assert_eq!(
            commit.files().unwrap(),
            vec![(PathBuf::from("h/x.log"), 42)]
        );
        assert_eq!(commit.seen_count(), 2);
    }

    #[test]
    fn oldest_ids_are_pruned_by_count_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut commit = Commit::open(dir.path()).unwrap();
        let by_count = bounds(3, Duration::from_secs(3600));
        for (i, id) in ["1", "2", "3", "4", "5"].iter().enumerate() {
            commit
                .record(&[id.to_string()], &[], 1_000 + i as i64, &by_count)
                .unwrap();
        }
        assert_eq!(commit.seen_count(), 3);
        assert!(!commit.is_seen("1").unwrap() && !commit.is_seen("2").unwrap());
        assert!(commit.is_seen("3").unwrap() && commit.is_seen("5").unwrap());
        let by_age = bounds(100, Duration::from_millis(10));
        commit.record(&["6".into()], &[], 1_013, &by_age).unwrap();
        assert!(!commit.is_seen("3").unwrap() && commit.is_seen("4").unwrap());
        assert_eq!(commit.seen_count(), 3);
    }
}
