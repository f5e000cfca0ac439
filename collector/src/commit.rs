//! The commit record: which bytes of each output file, and which message ids, are written for
//! good. The only code that touches sled.
//!
//! One sled tree, keys by prefix:
//! - `f/<output file, relative to output.dir>` -> its [`FileRecord`]: the committed length (every
//!   byte before it was fsync'd and its message acked or about to be; bytes past it were never
//!   acked) and, for compressed files, its tail of small frames.
//! - `m/seen` -> `<generation: u64 BE><committed length: u64 BE>` of the seen-id log (see
//!   [`crate::seen`]); the ids themselves live in that log and in memory, which keeps sled small
//!   (a seen-set inside sled cost about 200 MiB of RSS for 500k ids).
//! - `p/<source hash>` -> the source's committed ranges (see [`crate::positions`]): one small
//!   record per source, not per line.
//! - `n/<source hash>` -> the source's host and path (see [`SourceName`]), written with its first
//!   range and forgotten with it: what the audit names a hole by.
//!
//! A line is a duplicate if its source range is committed, or (for lines committed before
//! positions were recorded, i.e. by an older version, and as a second net) if its id is in the
//! seen set.
//!
//! Invariants: a batch's id records are synced to the seen log first; then its file lengths,
//! its sources' new ranges and the log's new length go in one sled batch, flushed before the
//! batch is acked. A file's length is
//! recorded before the first byte is appended to it, so bytes that a crash leaves past the
//! committed length are always truncated on start.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use logship_config::collector::DedupSettings;

use crate::file_record::FileRecord;
use crate::positions::{Claim, Hole, Positions, SourceHash, SourceName};
use crate::seen::{self, Seen};

/// sled's page cache: it holds only file lengths, the sources' committed position ranges and the
/// seen log's position.
const CACHE_BYTES: u64 = 8 << 20;

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
    #[error("seen-id log failed")]
    Seen(#[from] std::io::Error),
}

/// The record of written ids and committed file lengths.
pub struct Commit {
    tree: sled::Db,
    seen: Seen,
    positions: Positions,
    bounds: DedupSettings,
}

impl Commit {
    /// Opens (or creates) the record in `state_dir`; `bounds` limit the seen-id set.
    pub fn open(
        state_dir: &Path,
        bounds: &DedupSettings,
        now_ms: i64,
    ) -> Result<Commit, CommitError> {
        let path = state_dir.join("collector.sled");
        let tree = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| CommitError::Open { path, source })?;
        let (generation, len) = decode_seen(tree.get(b"m/seen")?.as_deref());
        let seen = Seen::open(state_dir, generation, len, bounds, now_ms)?;
        let mut records = Vec::new();
        for entry in tree.scan_prefix(b"p/") {
            let (key, value) = entry?;
            records.push((key[2..].to_vec(), value.to_vec()));
        }
        let positions = Positions::load(records.into_iter());
        Ok(Commit {
            tree,
            seen,
            positions,
            bounds: bounds.clone(),
        })
    }

    /// Whether `id` was already written.
    pub fn is_seen(&self, id: &str) -> bool {
        self.seen.contains(seen::hash(id))
    }

    /// Whether all of `claim` was already written.
    pub fn is_committed(&self, claim: &Claim) -> bool {
        self.positions.covers(claim)
    }

    /// Every hole between committed ranges, with its source's name when known.
    pub fn holes(&self) -> Result<Vec<(Hole, Option<SourceName>)>, CommitError> {
        let mut named = Vec::new();
        for hole in self.positions.holes() {
            let name = self.tree.get(name_key(hole.source))?;
            named.push((hole, name.and_then(|n| SourceName::decode(&n))));
        }
        Ok(named)
    }

    /// Every file with a committed length (records that do not decode read as length 0).
    pub fn files(&self) -> Result<Vec<(PathBuf, FileRecord)>, CommitError> {
        let mut files = Vec::new();
        for entry in self.tree.scan_prefix(b"f/") {
            let (key, value) = entry?;
            let path = Path::new(std::ffi::OsStr::from_bytes(&key[2..])).to_path_buf();
            files.push((path, FileRecord::decode(&value).unwrap_or_default()));
        }
        Ok(files)
    }

    /// A file's committed record, if it has one.
    pub fn committed(&self, file: &Path) -> Result<Option<FileRecord>, CommitError> {
        Ok(self
            .tree
            .get(file_key(file))?
            .map(|v| FileRecord::decode(&v).unwrap_or_default()))
    }

    /// Records files (`None` forgets the file) and flushes, outside of a batch commit.
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
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Records a written batch: its ids, its lines' claims (with the names of their sources)
    /// and the new file records. Only then may it be acked. Returns whether a hole opened,
    /// changed or closed.
    pub fn record(
        &mut self,
        ids: &[&str],
        claims: &[(Claim, &SourceName)],
        lengths: &[(PathBuf, FileRecord)],
        now_ms: i64,
    ) -> Result<bool, CommitError> {
        let hashes: Vec<seen::IdHash> = ids.iter().map(|id| seen::hash(id)).collect();
        let seen_len = self.seen.write(&hashes, now_ms)?;
        let max_age_ms = i64::try_from(self.bounds.max_age.as_millis()).unwrap_or(i64::MAX);
        let staged =
            self.positions
                .stage(claims.iter().map(|(claim, _)| *claim), now_ms, max_age_ms);
        let mut batch = sled::Batch::default();
        for (file, record) in lengths {
            batch.insert(file_key(file), record.encode());
        }
        for (source, value) in &staged.updates {
            batch.insert(position_key(*source), value.as_slice());
        }
        for source in &staged.forgotten {
            batch.remove(position_key(*source));
            batch.remove(name_key(*source));
        }
        for source in &staged.new {
            if let Some((_, name)) = claims.iter().find(|(c, _)| c.source == *source) {
                batch.insert(name_key(*source), name.encode());
            }
        }
        batch.insert(b"m/seen", &encode_seen(self.seen.generation(), seen_len));
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        let holes_changed = self.positions.apply(staged, now_ms);
        self.seen.committed(&hashes, seen_len, now_ms, &self.bounds);
        if self.seen.wants_compaction() {
            self.compact()?;
        }
        Ok(holes_changed)
    }

    /// Rewrites the seen log with only the live ids.
    fn compact(&mut self) -> Result<(), CommitError> {
        let (generation, len) = self.seen.compact()?;
        self.tree.insert(b"m/seen", &encode_seen(generation, len))?;
        self.tree.flush()?;
        self.seen.switched(generation, len)?;
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

fn encode_seen(generation: u64, len: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&generation.to_be_bytes());
    value[8..].copy_from_slice(&len.to_be_bytes());
    value
}

fn decode_seen(value: Option<&[u8]>) -> (u64, u64) {
    let field = |range: std::ops::Range<usize>| {
        value
            .and_then(|v| v.get(range))
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
mod tests {
    use std::time::Duration;

    use super::*;

    fn bounds(max_ids: u64, max_age: Duration) -> DedupSettings {
        DedupSettings { max_ids, max_age }
    }

    /// Opens the record, waiting out the lock of one just dropped in this process (sled
    /// releases it from a background thread).
    fn open(dir: &Path, bounds: &DedupSettings, now_ms: i64) -> Commit {
        for _ in 0..100 {
            match Commit::open(dir, bounds, now_ms) {
                Ok(commit) => return commit,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Commit::open(dir, bounds, now_ms).unwrap()
    }

    #[test]
    fn ids_and_lengths_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let wide = bounds(10, Duration::from_secs(60));
        {
            let mut commit = open(dir.path(), &wide, 1_000);
            let ids = ["a", "b"];
            let lengths = vec![(PathBuf::from("h/x.log"), FileRecord::at(42))];
            commit.record(&ids, &[], &lengths, 1_000).unwrap();
        }
        let commit = open(dir.path(), &wide, 1_000);
        assert!(commit.is_seen("a") && commit.is_seen("b"));
        assert!(!commit.is_seen("c"));
        assert_eq!(
            commit.files().unwrap(),
            vec![(PathBuf::from("h/x.log"), FileRecord::at(42))]
        );
        assert_eq!(commit.seen_count(), 2);
    }

    #[test]
    fn positions_outlive_the_id_window_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let tiny = bounds(2, Duration::from_secs(3600));
        let source = crate::positions::source_hash("h", 1, 2, 3, 0);
        {
            let mut commit = open(dir.path(), &tiny, 0);
            let name = SourceName {
                host: "h".into(),
                path: "/var/log/x.log".into(),
            };
            for i in (0..10u64).filter(|i| *i != 4) {
                let id = format!("line-{i}");
                let claim = Claim::line(source, i * 10, 9);
                commit
                    .record(&[id.as_str()], &[(claim, &name)], &[], 0)
                    .unwrap();
            }
            assert!(!commit.is_seen("line-0"));
            assert!(commit.is_committed(&Claim::line(source, 0, 9)));
        }
        let commit = open(dir.path(), &tiny, 0);
        assert_eq!(commit.source_count(), 1);
        let covered = |i: u64| commit.is_committed(&Claim::line(source, i * 10, 9));
        assert!((0..10).all(|i| covered(i) == (i != 4)));
        assert!(!covered(10));
        let holes = commit.holes().unwrap();
        assert_eq!(holes.len(), 1);
        assert_eq!((holes[0].0.start, holes[0].0.end), (40, 50));
        assert_eq!(holes[0].1.as_ref().unwrap().path, "/var/log/x.log");
    }

    #[test]
    fn oldest_ids_are_pruned_by_count_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let by_count = bounds(3, Duration::from_secs(3600));
        let mut commit = open(dir.path(), &by_count, 1_000);
        for (i, id) in ["1", "2", "3", "4", "5"].iter().enumerate() {
            commit.record(&[id], &[], &[], 1_000 + i as i64).unwrap();
        }
        assert_eq!(commit.seen_count(), 3);
        assert!(!commit.is_seen("1") && !commit.is_seen("2"));
        assert!(commit.is_seen("3") && commit.is_seen("5"));
        drop(commit);
        let by_age = bounds(100, Duration::from_millis(10));
        let mut commit = open(dir.path(), &by_age, 1_004);
        commit.record(&["6"], &[], &[], 1_013).unwrap();
        assert!(!commit.is_seen("3") && commit.is_seen("4"));
        assert_eq!(commit.seen_count(), 3);
    }

    #[test]
    fn an_uncommitted_log_tail_is_ignored_and_compaction_keeps_the_live_ids() {
        let dir = tempfile::tempdir().unwrap();
        let small = bounds(1000, Duration::from_secs(3600));
        let mut commit = open(dir.path(), &small, 0);
        // Enough ids to compact several times: only the last 1000 stay.
        for round in 0..300 {
            let ids: Vec<String> = (0..1000).map(|i| format!("{round}-{i}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            commit.record(&ids, &[], &[], 0).unwrap();
        }
        let logs = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("seen-")
            })
            .count();
        assert_eq!(logs, 1);
        // A crash after the log write but before the sled commit: the tail is not seen.
        commit.seen.write(&[seen::hash("ghost")], 0).unwrap();
        drop(commit);
        let commit = open(dir.path(), &small, 0);
        assert!(!commit.is_seen("ghost"));
        assert!(commit.is_seen("299-999") && !commit.is_seen("298-999"));
        assert_eq!(commit.seen_count(), 1000);
    }
}
