//! The seen-id set: what dedup asks. Message ids are kept as 128-bit FNV-1a hashes (a collision
//! among a million ids has odds of about 10^-26), in memory, bounded by `dedup.max_ids` and
//! `dedup.max_age`, and logged to an append-only file `seen-<generation>.log` of 24-byte records
//! `<hash: 16 bytes><recorded at: ms, i64 BE>`.
//!
//! Invariants: the log's committed length is part of the commit record (see `commit`); bytes past
//! it are ignored and cut on open. Ids enter the in-memory set only once their batch committed,
//! so a failed commit leaves nothing behind that could make a redelivered line look written.
//! The log is rewritten from memory (a new generation) when it holds twice what is live.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use logship_config::collector::DedupSettings;

/// Bytes of one log record.
const RECORD: u64 = 24;
/// A log with fewer records than this is never compacted.
const COMPACT_MIN_RECORDS: u64 = 100_000;

/// An id's key in the set.
pub type IdHash = u128;

/// The set and its log.
pub struct Seen {
    dir: PathBuf,
    generation: u64,
    file: File,
    /// Bytes of the log covered by the commit record.
    committed: u64,
    set: HashSet<IdHash>,
    /// The same hashes, oldest first, with when they were recorded.
    order: VecDeque<(IdHash, i64)>,
}

impl Seen {
    /// Opens log `generation` at its committed length, loads what the bounds keep, and deletes
    /// the logs of other generations (left by a compaction a crash interrupted).
    pub fn open(
        dir: &Path,
        generation: u64,
        committed: u64,
        bounds: &DedupSettings,
        now_ms: i64,
    ) -> std::io::Result<Seen> {
        let path = log_path(dir, generation);
        let file = File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        if file.metadata()?.len() != committed {
            file.set_len(committed)?;
        }
        let bytes = std::fs::read(&path)?;
        let mut seen = Seen {
            dir: dir.to_path_buf(),
            generation,
            file,
            committed,
            set: HashSet::new(),
            order: VecDeque::new(),
        };
        for record in bytes.chunks_exact(RECORD as usize) {
            let hash = IdHash::from_be_bytes(record[..16].try_into().unwrap_or([0; 16]));
            let at = i64::from_be_bytes(record[16..].try_into().unwrap_or([0; 8]));
            seen.insert(hash, at);
        }
        seen.prune(now_ms, bounds);
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("seen-") && name.ends_with(".log") && *name != *log_name(generation)
            {
                std::fs::remove_file(dir.join(&*name))?;
            }
        }
        Ok(seen)
    }

    /// Whether `hash` was written.
    pub fn contains(&self, hash: IdHash) -> bool {
        self.set.contains(&hash)
    }

    /// Writes records for `hashes` past the committed length and syncs them; returns the length
    /// to commit. Nothing changes in memory until [`Seen::committed`].
    pub fn write(&mut self, hashes: &[IdHash], now_ms: i64) -> std::io::Result<u64> {
        let mut bytes = Vec::with_capacity(hashes.len() * RECORD as usize);
        for hash in hashes {
            bytes.extend_from_slice(&hash.to_be_bytes());
            bytes.extend_from_slice(&now_ms.to_be_bytes());
        }
        self.file.write_all_at(&bytes, self.committed)?;
        self.file.sync_data()?;
        Ok(self.committed + bytes.len() as u64)
    }

    /// The commit record now covers `len` bytes, holding `hashes`: they join the set.
    pub fn committed(&mut self, hashes: &[IdHash], len: u64, now_ms: i64, bounds: &DedupSettings) {
        self.committed = len;
        for &hash in hashes {
            self.insert(hash, now_ms);
        }
        self.prune(now_ms, bounds);
    }

    fn insert(&mut self, hash: IdHash, at: i64) {
        if self.set.insert(hash) {
            self.order.push_back((hash, at));
        }
    }

    /// Forgets the oldest ids past the bounds.
    fn prune(&mut self, now_ms: i64, bounds: &DedupSettings) {
        let oldest_allowed = now_ms.saturating_sub(bounds.max_age.as_millis() as i64);
        while let Some(&(hash, at)) = self.order.front() {
            if self.order.len() as u64 <= bounds.max_ids && at >= oldest_allowed {
                break;
            }
            self.order.pop_front();
            self.set.remove(&hash);
        }
    }

    /// Whether the log holds more than twice what is live.
    pub fn wants_compaction(&self) -> bool {
        let records = self.committed / RECORD;
        records >= COMPACT_MIN_RECORDS && records > 2 * self.order.len() as u64
    }

    /// Writes the live ids to the next generation's log and syncs it; returns (generation,
    /// length) for the commit record. The old log stays until [`Seen::switched`].
    pub fn compact(&self) -> std::io::Result<(u64, u64)> {
        let generation = self.generation + 1;
        let path = log_path(&self.dir, generation);
        let mut bytes = Vec::with_capacity(self.order.len() * RECORD as usize);
        for (hash, at) in &self.order {
            bytes.extend_from_slice(&hash.to_be_bytes());
            bytes.extend_from_slice(&at.to_be_bytes());
        }
        let mut file = File::create(&path)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        File::open(&self.dir)?.sync_all()?;
        Ok((generation, bytes.len() as u64))
    }

    /// The commit record now names the compacted log: use it, delete the old one.
    pub fn switched(&mut self, generation: u64, len: u64) -> std::io::Result<()> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(log_path(&self.dir, generation))?;
        let old = log_path(&self.dir, self.generation);
        self.file = file;
        self.generation = generation;
        self.committed = len;
        match std::fs::remove_file(old) {
            Err(err) if err.kind() != ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// The log's generation (its file name).
    pub fn generation(&self) -> u64 {
        self.generation
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

/// FNV-1a, 128 bits: stable across builds and platforms, unlike std's hasher.
pub fn hash(id: &str) -> IdHash {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    id.bytes()
        .fold(OFFSET, |hash, b| (hash ^ u128::from(b)).wrapping_mul(PRIME))
}

fn log_name(generation: u64) -> String {
    format!("seen-{generation}.log")
}

fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(log_name(generation))
}
