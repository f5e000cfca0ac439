//! The write-ahead log (the "commit journal" of the logs and the README; named `wal` here so
//! that `journal` means one thing, the agent's systemd input): where a batch becomes committed. One append-only file
//! `journal-<generation>.log` in `state_dir`, of records `<payload length: u32 BE><CRC-32 of
//! the payload: u32 BE><payload>`; a payload is one of
//! - a batch: `1 <at: ms, i64 BE><ids: u32 BE><id hash: 16 bytes>*<ops: u32 BE><op>*`, an op
//!   being `<key length: u32 BE><key><value length: u32 BE, u32::MAX for a removal><value>`:
//!   the message ids the batch wrote, and its changes to the commit record's sled tree;
//! - the seen ids a compaction kept: `2 <ids: u32 BE>(<id hash: 16 bytes><at: ms, i64 BE>)*`,
//!   the first record of a generation.
//!
//! Invariants:
//! - A batch is committed once its record is synced: one `fdatasync` of this file per batch,
//!   where the seen-id log and a sled flush took two. Its ops are applied to sled without a
//!   flush; sled is flushed now and then (a checkpoint, see `commit`), and a start replays every
//!   op past the last checkpoint.
//! - A record that does not check (a torn tail after a crash) ends the journal: it and
//!   everything after it are cut on open. Its batch was never acked.
//! - A failed append is cut back before the error is returned; when even that fails, the record
//!   may or may not be there ([`AppendError::Unsure`]).

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::commit::seen::IdHash;

/// The payload kinds.
const BATCH: u8 = 1;
const SEEN: u8 = 2;
/// A record's header: payload length and checksum.
const HEADER: usize = 8;
/// An op's value length that means "remove the key".
const REMOVED: u32 = u32::MAX;
/// A journal shorter than this is never compacted.
const COMPACT_MIN_BYTES: u64 = 4 << 20;
/// Bytes of one id in a compacted journal.
const SEEN_ID_BYTES: u64 = 24;

/// One change to the commit record's sled tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub key: Vec<u8>,
    /// `None` removes the key.
    pub value: Option<Vec<u8>>,
}

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every id it holds, with when it was recorded, in order.
    pub ids: Vec<(IdHash, i64)>,
    /// The ops of the batches at or past the replay offset, in order.
    pub ops: Vec<Op>,
    /// Bytes of a torn or unreadable tail cut off.
    pub cut: u64,
}

/// A failed append.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The record is not in the journal: the batch is not committed.
    #[error("cannot append to the commit journal \"{}\"", path.display())]
    NotWritten {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The record could not be cut back after a failed write or sync: it may be committed.
    #[error("cannot append to the commit journal \"{}\", nor cut the failed record back", path.display())]
    Unsure {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The journal of one generation, open for appends.
pub struct Wal {
    dir: PathBuf,
    generation: u64,
    file: File,
    /// Bytes of whole records: the next record goes here.
    end: u64,
}

impl Wal {
    /// Opens generation `generation` in `dir` (an empty one if it does not exist), cuts a torn
    /// tail, and returns what it holds: its ids, and the ops of the batches starting at or past
    /// byte `replay_from`.
    pub fn open(dir: &Path, generation: u64, replay_from: u64) -> std::io::Result<(Wal, Replay)> {
        let path = path(dir, generation);
        let file = File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        let bytes = std::fs::read(&path)?;
        let mut replay = Replay::default();
        let mut at = 0;
        while let Some((payload, next)) = record_at(&bytes, at) {
            let Some(()) = decode(payload, at as u64 >= replay_from, &mut replay) else {
                break;
            };
            at = next;
        }
        let end = at as u64;
        if end < bytes.len() as u64 {
            replay.cut = bytes.len() as u64 - end;
            file.set_len(end)?;
            file.sync_all()?;
        }
        let journal = Wal {
            dir: dir.to_path_buf(),
            generation,
            file,
            end,
        };
        Ok((journal, replay))
    }

    /// Writes generation `generation` holding only `ids` (a compaction), synced with its
    /// directory entry. The journal in use is unchanged until the caller switches to it.
    pub fn create(
        dir: &Path,
        generation: u64,
        ids: impl ExactSizeIterator<Item = (IdHash, i64)>,
    ) -> std::io::Result<Wal> {
        let mut payload = Vec::with_capacity(5 + ids.len() * SEEN_ID_BYTES as usize);
        payload.push(SEEN);
        payload.extend_from_slice(&count(ids.len()).to_be_bytes());
        for (hash, at) in ids {
            payload.extend_from_slice(&hash.to_be_bytes());
            payload.extend_from_slice(&at.to_be_bytes());
        }
        let record = frame(&payload);
        let path = path(dir, generation);
        let file = File::create(&path)?;
        file.write_all_at(&record, 0)?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            generation,
            file,
            end: record.len() as u64,
        })
    }

    /// Appends a batch's record and syncs it: once this returns `Ok`, the batch is committed.
    pub fn append(&mut self, at_ms: i64, ids: &[IdHash], ops: &[Op]) -> Result<(), AppendError> {
        let size = 13
            + ids.len() * 16
            + ops
                .iter()
                .map(|op| 8 + op.key.len() + op.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        let mut payload = Vec::with_capacity(size);
        payload.push(BATCH);
        payload.extend_from_slice(&at_ms.to_be_bytes());
        payload.extend_from_slice(&count(ids.len()).to_be_bytes());
        for hash in ids {
            payload.extend_from_slice(&hash.to_be_bytes());
        }
        payload.extend_from_slice(&count(ops.len()).to_be_bytes());
        for op in ops {
            payload.extend_from_slice(&count(op.key.len()).to_be_bytes());
            payload.extend_from_slice(&op.key);
            match &op.value {
                Some(value) => {
                    payload.extend_from_slice(&count(value.len()).to_be_bytes());
                    payload.extend_from_slice(value);
                }
                None => payload.extend_from_slice(&REMOVED.to_be_bytes()),
            }
        }
        let record = frame(&payload);
        let written = self
            .file
            .write_all_at(&record, self.end)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.end += record.len() as u64;
                Ok(())
            }
            Err(source) => {
                let path = path(&self.dir, self.generation);
                match self
                    .file
                    .set_len(self.end)
                    .and_then(|()| self.file.sync_all())
                {
                    Ok(()) => Err(AppendError::NotWritten { path, source }),
                    Err(_) => Err(AppendError::Unsure { path, source }),
                }
            }
        }
    }

    /// Whether the journal holds more than twice what a compaction to `live` ids would keep.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.end >= COMPACT_MIN_BYTES && self.end > 2 * live as u64 * SEEN_ID_BYTES
    }

    /// Deletes every journal in the directory but this one (the one a compaction replaced, or
    /// one a crash left half written).
    pub fn remove_others(&self) -> std::io::Result<()> {
        let keep = name(self.generation);
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("journal-") && name.ends_with(".log") && *name != *keep {
                std::fs::remove_file(self.dir.join(&*name))?;
            }
        }
        Ok(())
    }

    /// Its generation (its file name).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of whole records.
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// A length as stored: journal records never come near 4 GiB (a batch is at most a prefetch of
/// lines, and the ids a compaction keeps are bounded by `dedup.max_ids`).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&count(payload.len()).to_be_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    record.extend_from_slice(payload);
    record
}

/// The payload of the whole, checked record at `at`, and where the next one starts.
fn record_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[4..].try_into().ok()?);
    let start = at + HEADER;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some((payload, start + len))
}

/// Reads a payload into `replay` (its ops only if `with_ops`); `None` if it is not one of ours.
fn decode(payload: &[u8], with_ops: bool, replay: &mut Replay) -> Option<()> {
    let mut reader = Reader(payload);
    match reader.u8()? {
        BATCH => {
            let at = reader.u64()? as i64;
            let ids = reader.u32()?;
            for _ in 0..ids {
                replay.ids.push((reader.u128()?, at));
            }
            let ops = reader.u32()?;
            for _ in 0..ops {
                let key_len = reader.u32()?;
                let key = reader.take(key_len as usize)?.to_vec();
                let value = match reader.u32()? {
                    REMOVED => None,
                    len => Some(reader.take(len as usize)?.to_vec()),
                };
                if with_ops {
                    replay.ops.push(Op { key, value });
                }
            }
        }
        SEEN => {
            let ids = reader.u32()?;
            for _ in 0..ids {
                let hash = reader.u128()?;
                replay.ids.push((hash, reader.u64()? as i64));
            }
        }
        _ => return None,
    }
    reader.0.is_empty().then_some(())
}

/// Big-endian fields off the front of a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }

    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_be_bytes(self.array()?))
    }
}

fn name(generation: u64) -> String {
    format!("journal-{generation}.log")
}

fn path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(name(generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, value: Option<&str>) -> Op {
        Op {
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn batches_replay_past_the_offset_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, replay) = Wal::open(dir.path(), 0, 0).unwrap();
        assert!(replay.ids.is_empty() && replay.ops.is_empty());
        journal
            .append(10, &[1, 2], &[op("f/a", Some("x"))])
            .unwrap();
        let checkpoint = journal.end();
        journal
            .append(20, &[3], &[op("f/a", None), op("p/b", Some("y"))])
            .unwrap();
        let whole = journal.end();
        drop(journal);
        // A crash in the middle of a third record.
        let file = File::options()
            .write(true)
            .open(path(dir.path(), 0))
            .unwrap();
        file.write_all_at(&[0, 0, 0, 40, 1, 2, 3, 4, 1, 0], whole)
            .unwrap();
        drop(file);
        let (journal, replay) = Wal::open(dir.path(), 0, checkpoint).unwrap();
        assert_eq!(replay.ids, [(1, 10), (2, 10), (3, 20)]);
        assert_eq!(replay.ops, [op("f/a", None), op("p/b", Some("y"))]);
        assert_eq!((replay.cut, journal.end()), (10, whole));
        assert_eq!(std::fs::metadata(path(dir.path(), 0)).unwrap().len(), whole);
    }

    #[test]
    fn a_flipped_byte_ends_the_journal_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Wal::open(dir.path(), 3, 0).unwrap();
        journal.append(1, &[7], &[]).unwrap();
        let first = journal.end();
        journal.append(2, &[8], &[]).unwrap();
        journal.append(3, &[9], &[]).unwrap();
        drop(journal);
        let file = File::options()
            .write(true)
            .open(path(dir.path(), 3))
            .unwrap();
        file.write_all_at(&[0xff], first + HEADER as u64 + 3)
            .unwrap();
        drop(file);
        let (journal, replay) = Wal::open(dir.path(), 3, 0).unwrap();
        assert_eq!(replay.ids, [(7, 1)]);
        assert_eq!(journal.end(), first);
    }

    #[test]
    fn a_compacted_generation_holds_its_ids_and_replaces_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (mut old, _) = Wal::open(dir.path(), 0, 0).unwrap();
        old.append(5, &[1, 2, 3], &[op("f/a", Some("x"))]).unwrap();
        let new = Wal::create(dir.path(), 1, [(2, 5), (3, 5)].into_iter()).unwrap();
        new.remove_others().unwrap();
        assert!(!path(dir.path(), 0).exists());
        let (journal, replay) = Wal::open(dir.path(), 1, new.end()).unwrap();
        assert_eq!(replay.ids, [(2, 5), (3, 5)]);
        assert!(replay.ops.is_empty());
        assert_eq!(journal.generation(), 1);
    }
}
