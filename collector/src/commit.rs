//! The commit record: which bytes of each output file, and which message ids, are written for
//! good. The only code that touches sled and the commit journal.
//!
//! A batch commits in the journal (see [`wal`]): one synced record with its message
//! ids and its changes to one sled tree, whose keys are, by prefix:
//! - `f/<output file, relative to output.dir>` -> its [`FileRecord`]: the committed length (every
//!   byte before it was fsync'd and its message acked or about to be; bytes past it were never
//!   acked) and, for compressed files, its tail of small frames.
//! - `p/<source hash>` -> the source's committed ranges (see [`positions`]): one small
//!   record per source, not per line.
//! - `n/<source hash>` -> the source's host and path (see [`SourceName`]), written with its first
//!   range and forgotten with it: what the audit names a hole by.
//! - `m/journal` -> `<generation: u64 BE><checkpoint: u64 BE>`: the journal in use, and the
//!   offset in it up to which every batch's changes are flushed in sled.
//!
//! The ids live in the journal and in memory only, which keeps sled small (a seen-set inside
//! sled cost about 200 MiB of RSS for 500k ids).
//!
//! A line is a duplicate if its source range is committed, or (for lines committed before
//! positions were recorded, i.e. by an older version, and as a second net) if its id is in the
//! seen set.
//!
//! Invariants:
//! - A batch is committed when its journal record is synced; then its changes go to sled
//!   (one by one, without a flush: sled may hold part of a batch until the next checkpoint) and
//!   to memory, and only then may it be acked.
//! - sled is flushed at a checkpoint (at most [`CHECKPOINT_INTERVAL`] apart, and with every
//!   change made outside a batch, see [`Commit::set_records`]) together with the journal offset
//!   it covers; a start replays into sled every batch past that offset. So after any crash sled
//!   holds exactly the committed batches, and a change made outside a batch is never undone by
//!   a replay of an older batch.
//! - A file's length is recorded before the first byte is appended to it, so bytes that a crash
//!   leaves past the committed length are always truncated on start.
//! - sled never meets a full disk: no batch commits while fewer than [`RESERVE`] bytes are free
//!   on the state disk (sled fails for good once a write of its hits ENOSPC).

pub(crate) mod dedup;
mod error;
pub(crate) mod file_record;
mod legacy;
pub mod positions;
pub(crate) mod seen;
pub(crate) mod wal;

use std::cell::Cell;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logship_config::collector::DedupSettings;
use logship_runtime::Throttle;

use error::At;
pub use error::CommitError;
use file_record::FileRecord;
use legacy::migrate;
use positions::{Claim, Hole, Positions, SourceHash, SourceName};
use seen::Seen;
use wal::{Op, Wal};

/// sled's page cache: it holds only file lengths, the sources' committed position ranges and the
/// journal's position.
const CACHE_BYTES: u64 = 8 << 20;
/// The state database's directory (sled) in the state directory.
const DATABASE: &str = "collector.sled";

/// sled is flushed (a checkpoint) at least this often while batches commit: a start replays at
/// most this much of the journal.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes kept free on the state disk: a batch is not committed while fewer are free. sled
/// fails for good (until a restart) once one of its writes hits ENOSPC, so it must never meet a
/// full disk; this leaves room for its log segments and a checkpoint.
pub const RESERVE: u64 = 4 << 20;

/// A failed checkpoint or compaction (the batch itself committed) is said at most this often.
const MAINTENANCE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// The journal key.
const JOURNAL_KEY: &[u8] = b"m/journal";

/// The record of written ids and committed file lengths.
pub struct Commit {
    tree: sled::Db,
    wal: Wal,
    seen: Seen,
    positions: Positions,
    bounds: DedupSettings,
    /// `state_dir`, where the journal lives.
    dir: PathBuf,
    /// When sled was last flushed with the journal offset it covers.
    checkpointed: Cell<Instant>,
    /// Failed checkpoints and compactions, said once per [`MAINTENANCE_LOG_INTERVAL`].
    maintenance_failures: Throttle,
}

impl Commit {
    /// Opens (or creates) the record in `state_dir`, replaying into sled what the journal holds
    /// past the last checkpoint; `bounds` limit the seen-id set.
    pub fn open(
        state_dir: &Path,
        bounds: &DedupSettings,
        now_ms: i64,
    ) -> Result<Commit, CommitError> {
        let path = state_dir.join(DATABASE);
        let tree = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_BYTES)
            // Checkpoints flush it; a background flusher would only add wake-ups.
            .flush_every_ms(None)
            .open()
            .map_err(|source| CommitError::Open { path, source })?;
        let checkpoint = tree
            .get(JOURNAL_KEY)
            .at(state_dir, "read the journal checkpoint")?;
        let (generation, checkpoint) = match checkpoint {
            Some(value) => decode_pair(&value),
            None => migrate(&tree, state_dir, bounds, now_ms)?,
        };
        let (journal, replay) =
            Wal::open(state_dir, generation, checkpoint).at(state_dir, "open and replay")?;
        if replay.cut > 0 {
            tracing::info!(
                bytes = replay.cut,
                "cut the commit journal's torn tail (a batch never acked)"
            );
        }
        let mut batch = sled::Batch::default();
        for op in replay.ops {
            match op.value {
                Some(value) => batch.insert(op.key, value),
                None => batch.remove(op.key),
            }
        }
        batch.insert(JOURNAL_KEY, &encode_pair(generation, journal.end()));
        tree.apply_batch(batch).at(state_dir, "take the replay")?;
        tree.flush().at(state_dir, "flush")?;
        journal
            .remove_others()
            .at(state_dir, "remove older generations")?;
        seen::remove_legacy(state_dir).at(state_dir, "remove the legacy seen-id log")?;
        let mut ids = Seen::default();
        for (hash, at) in replay.ids {
            ids.insert(hash, at);
        }
        ids.prune(now_ms, bounds);
        let mut records = Vec::new();
        for entry in tree.scan_prefix(b"p/") {
            let (key, value) = entry.at(state_dir, "read the positions")?;
            records.push((key[2..].to_vec(), value.to_vec()));
        }
        let positions = Positions::load(records.into_iter());
        Ok(Commit {
            tree,
            wal: journal,
            seen: ids,
            positions,
            bounds: bounds.clone(),
            dir: state_dir.to_path_buf(),
            checkpointed: Cell::new(Instant::now()),
            maintenance_failures: Throttle::new(MAINTENANCE_LOG_INTERVAL),
        })
    }

    /// Whether the message id whose hash is `id` was already written.
    pub fn is_seen(&self, id: seen::IdHash) -> bool {
        self.seen.contains(id)
    }

    /// Whether all of `claim` was already written.
    pub fn is_committed(&self, claim: &Claim) -> bool {
        self.positions.covers(claim)
    }

    /// Every hole between committed ranges, with its source's name when known.
    pub fn holes(&self) -> Result<Vec<(Hole, Option<SourceName>)>, CommitError> {
        let mut named = Vec::new();
        for hole in self.positions.holes() {
            let name = self
                .tree
                .get(name_key(hole.source))
                .at(&self.dir, "read a source's name")?;
            named.push((hole, name.and_then(|n| SourceName::decode(&n))));
        }
        Ok(named)
    }

    /// Every file with a committed length (records that do not decode read as length 0).
    pub fn files(&self) -> Result<Vec<(PathBuf, FileRecord)>, CommitError> {
        let mut files = Vec::new();
        for entry in self.tree.scan_prefix(b"f/") {
            let (key, value) = entry.at(&self.dir, "read the file records")?;
            let path = Path::new(std::ffi::OsStr::from_bytes(&key[2..])).to_path_buf();
            files.push((path, FileRecord::decode(&value).unwrap_or_default()));
        }
        Ok(files)
    }

    /// A file's committed record, if it has one.
    pub fn committed(&self, file: &Path) -> Result<Option<FileRecord>, CommitError> {
        Ok(self
            .tree
            .get(file_key(file))
            .at(&self.dir, "read a file record")?
            .map(|v| FileRecord::decode(&v).unwrap_or_default()))
    }

    /// Records files (`None` forgets the file) outside of a batch, durable when this returns:
    /// sled is flushed with them, a checkpoint (so no replay of an older batch undoes them).
    pub fn set_records(
        &self,
        records: &[(PathBuf, Option<FileRecord>)],
    ) -> Result<(), CommitError> {
        let mut batch = sled::Batch::default();
        for (file, record) in records {
            match record {
                Some(record) => batch.insert(file_key(file), record.encode()),
                None => batch.remove(file_key(file)),
            }
        }
        batch.insert(
            JOURNAL_KEY,
            &encode_pair(self.wal.generation(), self.wal.end()),
        );
        self.tree.apply_batch(batch).at(&self.dir, "record files")?;
        self.tree.flush().at(&self.dir, "flush")?;
        self.checkpointed.set(Instant::now());
        Ok(())
    }

    /// Records a written batch: its ids (hashes of message ids), its lines' claims (with the
    /// names of their sources) and the new file records. Only then may it be acked. Returns
    /// whether a hole opened, changed or closed. Refused, with nothing written, while fewer
    /// than [`RESERVE`] bytes are free on the state disk. Once the journal holds the batch, a
    /// failing checkpoint or compaction does not fail it: it is said, and tried again with
    /// the next batch (a start replays whatever sled lacks).
    pub fn record(
        &mut self,
        ids: &[seen::IdHash],
        claims: &[(Claim, &SourceName)],
        lengths: &[(PathBuf, FileRecord)],
        now_ms: i64,
    ) -> Result<bool, CommitError> {
        self.check_space()?;
        let max_age_ms = i64::try_from(self.bounds.max_age.as_millis()).unwrap_or(i64::MAX);
        let mut staged =
            self.positions
                .stage(claims.iter().map(|(claim, _)| *claim), now_ms, max_age_ms);
        let mut ops = Vec::with_capacity(lengths.len() + staged.updates.len() + staged.new.len());
        for (file, record) in lengths {
            ops.push(Op {
                key: file_key(file),
                value: Some(record.encode()),
            });
        }
        for (source, value) in std::mem::take(&mut staged.updates) {
            ops.push(Op {
                key: position_key(source),
                value: Some(value),
            });
        }
        for source in &staged.forgotten {
            for key in [position_key(*source), name_key(*source)] {
                ops.push(Op { key, value: None });
            }
        }
        for source in &staged.new {
            if let Some((_, name)) = claims.iter().find(|(c, _)| c.source == *source) {
                ops.push(Op {
                    key: name_key(*source),
                    value: Some(name.encode()),
                });
            }
        }
        self.wal.append(now_ms, ids, &ops)?;
        // Committed: from here on nothing of the batch may be undone. The ops go in one by one,
        // not as a sled batch: the journal already makes them atomic (a start replays them all),
        // and a sled batch writes sled's log buffer out twice, on its thread pool, every time.
        for op in ops {
            match op.value {
                Some(value) => self.tree.insert(op.key, value).map(drop),
                None => self.tree.remove(op.key).map(drop),
            }
            .map_err(CommitError::Committed)?;
        }
        let holes_changed = self.positions.apply(staged, now_ms);
        for &hash in ids {
            self.seen.insert(hash, now_ms);
        }
        self.seen.prune(now_ms, &self.bounds);
        let maintained = if self.wal.wants_compaction(self.seen.len()) {
            self.compact()
        } else if self.checkpointed.get().elapsed() >= CHECKPOINT_INTERVAL {
            self.checkpoint()
        } else {
            Ok(())
        };
        if let Err(err) = maintained
            && let Some(failures) = self.maintenance_failures.event()
        {
            tracing::warn!(error = %logship_runtime::error_chain(&err), failures,
                "cannot checkpoint the commit record; batches still commit in the journal, a start replays it");
        }
        Ok(holes_changed)
    }

    /// Fails with `LowSpace` while fewer than [`RESERVE`] bytes are free on the state disk.
    fn check_space(&self) -> Result<(), CommitError> {
        match logship_runtime::disk::free_bytes(&self.dir) {
            Some(free) if free < RESERVE => Err(CommitError::LowSpace {
                path: self.dir.clone(),
                free,
            }),
            _ => Ok(()),
        }
    }

    /// Flushes sled with the journal offset it now covers.
    fn checkpoint(&mut self) -> Result<(), CommitError> {
        self.tree
            .insert(
                JOURNAL_KEY,
                &encode_pair(self.wal.generation(), self.wal.end()),
            )
            .at(&self.dir, "save a checkpoint")?;
        self.tree.flush().at(&self.dir, "flush")?;
        self.checkpointed.set(Instant::now());
        Ok(())
    }

    /// Starts the next journal generation with only the live ids; the switch is a checkpoint.
    fn compact(&mut self) -> Result<(), CommitError> {
        let next = Wal::create(&self.dir, self.wal.generation() + 1, self.seen.iter())
            .at(&self.dir, "start a generation")?;
        self.tree
            .insert(JOURNAL_KEY, &encode_pair(next.generation(), next.end()))
            .at(&self.dir, "save a checkpoint")?;
        self.tree.flush().at(&self.dir, "flush")?;
        self.checkpointed.set(Instant::now());
        self.wal = next;
        self.wal
            .remove_others()
            .at(&self.dir, "remove older generations")?;
        Ok(())
    }

    /// Number of ids held for dedup.
    pub fn seen_count(&self) -> usize {
        self.seen.len()
    }

    /// Number of sources whose committed positions are held.
    pub fn source_count(&self) -> usize {
        self.positions.len()
    }
}

impl Drop for Commit {
    /// A clean stop leaves sled whole (a checkpoint): a start replays nothing, and a version
    /// before the journal, started on this state, finds every committed length and position.
    fn drop(&mut self) {
        if let Err(err) = self.checkpoint() {
            tracing::warn!(error = %logship_runtime::error_chain(&err), "cannot flush the commit record at stop; the next start replays the journal");
        }
    }
}

fn encode_pair(first: u64, second: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&first.to_be_bytes());
    value[8..].copy_from_slice(&second.to_be_bytes());
    value
}

/// Two u64s; a field missing from a short value reads as 0.
fn decode_pair(value: &[u8]) -> (u64, u64) {
    let field = |range: std::ops::Range<usize>| {
        value
            .get(range)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes)
    };
    (field(0..8), field(8..16))
}

fn file_key(file: &Path) -> Vec<u8> {
    [b"f/", file.as_os_str().as_bytes()].concat()
}

fn position_key(source: SourceHash) -> Vec<u8> {
    [&b"p/"[..], &source.to_be_bytes()].concat()
}

fn name_key(source: SourceHash) -> Vec<u8> {
    [&b"n/"[..], &source.to_be_bytes()].concat()
}

#[cfg(test)]
mod tests;
