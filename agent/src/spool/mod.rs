//! The spool: every line read, until the broker confirms it; and every file's checkpoint.
//! The only code that touches sled.
//!
//! Lines live in segment files ([`segment`]); sled holds only small records, so memory stays
//! small whatever the backlog. One sled tree, keys by prefix:
//! - `q<seq: u64 BE>` -> `<lines: u32 BE><bytes: u64 BE>`: the index of segment `seq`, the lines
//!   one reader turn produced (of any number of files, each file's in order).
//! - `c<dev: u64 BE><ino: u64 BE>` -> checkpoint (see [`Checkpoint`]).
//! - `j<journal input: u64 BE>` -> the cursor (text) of the last entry of that journal input
//!   spooled (or, read from the end, the entry it starts after).
//! - `n` -> next sequence number (u64 BE), so numbers are never reused.
//! - `h` -> `<seq: u64 BE><lines: u64 BE>`: lines of the head segment already confirmed, saved
//!   every few hundred confirms and on shutdown, so a restart resends fewer of them.
//!
//! Invariants:
//! - A segment file is durable before its index record; the record and the checkpoint advance
//!   of every file it holds lines of (or the journal cursor of the entries it holds) go in one
//!   sled batch. After a crash (sled keeps a prefix of its writes) a checkpoint never passes a
//!   line, and a cursor never passes an entry, that is not spooled.
//! - A segment is written only while it leaves [`RESERVE`] bytes free on the state disk, so
//!   sled can always record removals and the publisher can free space.
//! - Segments are appended under one lock, so sequence numbers become visible in order and the
//!   publisher, reading forward, never skips one.
//! - A segment is removed only after a clean ack of its every line, or by `drop_oldest`,
//!   counted, in the same sled batch as the record of the segment that holds its drop markers
//!   ([`dropped`]). A segment confirmed in part is sent again whole after a restart; the collector
//!   drops the lines it already has by id. Its file is deleted only once the removal of its
//!   record is flushed ([`Spool::collect`]): a record without its file means real loss.
//! - A file's descriptor is closed only after [`Spool::flush`], so lines of a rotated or deleted
//!   file are durable before the file can vanish.

pub mod checkpoint;
pub mod dropped;
mod error;
mod index;
pub mod segment;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use logship_config::agent::WhenFull;
use tokio::sync::Notify;

use crate::identity::FileKey;
pub use checkpoint::Checkpoint;
use checkpoint::{checkpoint_key, decode_checkpoint, decode_file_key, encode_checkpoint};
pub use error::SpoolError;
use index::{decode_index, decode_seq, encode_index, seq_key};
use segment::Segments;

/// Position of an entry in the spool.
pub type Seq = u64;
/// A byte offset in a file.
pub type Offset = u64;

/// sled's page cache: it holds only checkpoints and segment index records.
const CACHE_BYTES: u64 = 4 << 20;
/// The index's directory (sled) in the state directory.
const INDEX: &str = "agent.sled";
/// The segment files' directory in the state directory.
const SEGMENTS: &str = "spool";
/// sled's background flush: the group commit of appends. A crash loses at most this much of
/// the spool *together with* the checkpoint advances, and the lines are read again.
const FLUSH_EVERY_MS: u64 = 500;

/// Free space a segment write always leaves on the state disk, so that sled can still record
/// removals (and the publisher free space) when the disk is otherwise full.
pub const RESERVE: u64 = 4 << 20;

fn journal_key(input: u64) -> [u8; 9] {
    let mut key = [b'j'; 9];
    key[1..].copy_from_slice(&input.to_be_bytes());
    key
}

/// A spooled line as it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its message id: a pure function of where the line came from.
    pub id: String,
    /// Its envelope, as JSON.
    pub body: Vec<u8>,
}

impl Message {
    /// The message of `envelope`.
    pub fn of(envelope: &logship_runtime::EnvelopeRef<'_>) -> Message {
        Message {
            id: envelope.message_id(),
            body: envelope.to_json(),
        }
    }
}

/// One spooled segment, as the publisher reads it.
pub struct Segment {
    pub seq: Seq,
    pub lines: Vec<Message>,
}

/// The spool: segment files and their sled index, shared by the reader thread and the
/// publisher.
pub struct Spool {
    db: sled::Db,
    segments: Segments,
    /// Next sequence number; held while appending (see the module invariants).
    next_seq: Mutex<Seq>,
    bytes: AtomicU64,
    /// Lines (not segments) spooled.
    lines: AtomicU64,
    dropped: AtomicU64,
    /// Segments below this number may have been loaded by the publisher, and so published:
    /// what `drop_oldest` drops of them may have been delivered. At open, every segment there
    /// is (an earlier process may have published them).
    loaded_to: AtomicU64,
    /// Held while a segment's record is removed and counted, so a drop and a confirm never both
    /// count one segment.
    removing: Mutex<()>,
    /// Segments whose records are removed but whose files wait for a durable flush.
    doomed: Mutex<Vec<Seq>>,
    state_dir: PathBuf,
    max_bytes: u64,
    when_full: WhenFull,
    /// Wakes the publisher when segments are appended.
    pub appended: Notify,
}

impl Spool {
    /// The error of the index failing to `op`.
    fn index_failed(&self, op: &'static str) -> impl FnOnce(sled::Error) -> SpoolError + '_ {
        move |source| SpoolError::Index {
            path: self.state_dir.join(INDEX),
            op,
            source,
        }
    }

    /// The error of segment `seq` failing.
    fn segment_failed(&self, seq: Seq) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
        move |source| SpoolError::Segment {
            dir: self.state_dir.join(SEGMENTS),
            seq,
            source,
        }
    }

    /// Opens (or creates) the spool in `state_dir`, counts what it holds, and deletes segment
    /// files no record points at (written just before a crash; their lines are read again).
    pub fn open(
        state_dir: &Path,
        max_bytes: u64,
        when_full: WhenFull,
    ) -> Result<Spool, SpoolError> {
        let path = state_dir.join(INDEX);
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()
            .map_err(|source| SpoolError::Open {
                path: path.clone(),
                source,
            })?;
        let index_failed = |op| {
            let path = path.clone();
            move |source| SpoolError::Index { path, op, source }
        };
        let segments_dir = state_dir.join(SEGMENTS);
        let segment_failed = |seq| {
            let dir = segments_dir.clone();
            move |source| SpoolError::Segment { dir, seq, source }
        };
        let segments = Segments::open(&segments_dir).map_err(segment_failed(0))?;
        let (mut bytes, mut count, mut next_seq) = (0, 0, 0);
        let mut indexed = std::collections::HashSet::new();
        for item in db.scan_prefix(b"q") {
            let (key, value) = item.map_err(index_failed("read the segment records"))?;
            let (lines, size) = decode_index(&value);
            bytes += size;
            count += u64::from(lines);
            next_seq = decode_seq(&key) + 1;
            indexed.insert(decode_seq(&key));
        }
        let floor = db
            .get(b"n")
            .map_err(index_failed("read the next sequence number"))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        next_seq = next_seq.max(floor);
        let listed = segments.list().map_err(segment_failed(0))?;
        for seq in listed.into_iter().filter(|seq| !indexed.contains(seq)) {
            segments.remove(seq).map_err(segment_failed(seq))?;
        }
        Ok(Spool {
            db,
            segments,
            next_seq: Mutex::new(next_seq),
            bytes: AtomicU64::new(bytes),
            lines: AtomicU64::new(count),
            dropped: AtomicU64::new(0),
            loaded_to: AtomicU64::new(next_seq),
            removing: Mutex::new(()),
            doomed: Mutex::new(Vec::new()),
            state_dir: state_dir.to_path_buf(),
            max_bytes,
            when_full,
            appended: Notify::new(),
        })
    }

    /// Appends what one reader turn read (lines of any number of files, each file's lines in
    /// order) as one segment, durable with one fsync, then its index record and every file's
    /// new checkpoint in one sled batch. With `drop_oldest`, the oldest segments make room: their
    /// drop markers go first into this segment and their records go in the same batch; returns
    /// what was dropped, for the caller to log.
    pub fn append(
        &self,
        lines: &[Message],
        checkpoints: &[(FileKey, Checkpoint)],
    ) -> Result<dropped::Dropped, SpoolError> {
        self.append_with(lines, |batch| {
            for (key, checkpoint) in checkpoints {
                batch.insert(&checkpoint_key(*key), encode_checkpoint(checkpoint));
            }
        })
    }

    /// Appends entries of the journal input `input` as one segment, with the cursor of the
    /// last of them in the same sled batch (see [`Spool::append`]).
    pub fn append_journal(
        &self,
        lines: &[Message],
        input: u64,
        cursor: &str,
    ) -> Result<dropped::Dropped, SpoolError> {
        self.append_with(lines, |batch| {
            batch.insert(&journal_key(input), cursor.as_bytes())
        })
    }

    /// Records where a journal input starts, before it spooled anything (`read_from = "end"`).
    pub fn set_journal_cursor(&self, input: u64, cursor: &str) -> Result<(), SpoolError> {
        self.db
            .insert(journal_key(input), cursor.as_bytes())
            .map_err(self.index_failed("save a journal cursor"))?;
        Ok(())
    }

    /// The cursor of the last entry of journal input `input` that is spooled.
    pub fn journal_cursor(&self, input: u64) -> Result<Option<String>, SpoolError> {
        Ok(self
            .db
            .get(journal_key(input))
            .map_err(self.index_failed("read a journal cursor"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// One segment of `lines` (after the markers of what `drop_oldest` drops for it) and, in
    /// the same sled batch, what `checkpoints` adds and the dropped segments' removal.
    fn append_with(
        &self,
        lines: &[Message],
        checkpoints: impl FnOnce(&mut sled::Batch),
    ) -> Result<dropped::Dropped, SpoolError> {
        let incoming: u64 = lines
            .iter()
            .map(|message| segment::framed_len(&message.id, &message.body))
            .sum();
        // unwrap: a poisoned lock means another append panicked; carrying on could reorder.
        let mut next_seq = self.next_seq.lock().expect("spool lock poisoned");
        let plan = match self.when_full {
            WhenFull::DropOldest => self.plan_drop(incoming)?,
            WhenFull::Block => dropped::Plan::default(),
        };
        let marked: Vec<Message>;
        let (lines, incoming) = if plan.markers.is_empty() {
            (lines, incoming)
        } else {
            marked = plan.markers.iter().chain(lines).cloned().collect();
            (marked.as_slice(), incoming + plan.marker_bytes())
        };
        let mut batch = sled::Batch::default();
        // unwrap: as in `remove`. Held from the check to the count (and so, only while
        // dropping, across the segment's fsync): a segment the publisher removed meanwhile was
        // confirmed, not dropped.
        let removing =
            (!plan.segments.is_empty()).then(|| self.removing.lock().expect("spool lock poisoned"));
        let mut dropped = dropped::Dropped::default();
        let mut gone = Vec::with_capacity(plan.segments.len());
        for segment in plan.segments {
            if self
                .db
                .contains_key(seq_key(segment.seq))
                .map_err(self.index_failed("look up a segment record"))?
            {
                batch.remove(&seq_key(segment.seq));
                dropped.lines += segment.lines;
                dropped.ranges.extend(segment.ranges);
                gone.push((segment.seq, segment.index_lines, segment.bytes));
            }
        }
        let mut written = 0;
        if !lines.is_empty() {
            self.check_space(incoming)?;
            let seq = *next_seq;
            written = self
                .segments
                .write(seq, lines)
                .map_err(self.segment_failed(seq))?;
            batch.insert(&seq_key(seq), &encode_index(lines.len() as u32, written));
            *next_seq += 1;
            // Sequence numbers are never reused, even once the spool is empty: a saved head
            // position ("h") can only ever name the segment it was saved for.
            batch.insert(b"n", &next_seq.to_be_bytes());
        }
        checkpoints(&mut batch);
        if let Err(err) = self.db.apply_batch(batch) {
            if written > 0 {
                // No record points at it: remove it now (or on the next open).
                let _ = self.segments.remove(*next_seq - 1);
                *next_seq -= 1;
            }
            return Err(self.index_failed("record a segment and its checkpoints")(
                err,
            ));
        }
        self.forget_removed(&gone);
        drop(removing);
        drop(next_seq);
        self.dropped.fetch_add(dropped.lines, Ordering::Relaxed);
        if written > 0 {
            self.bytes.fetch_add(written, Ordering::Relaxed);
            self.lines.fetch_add(lines.len() as u64, Ordering::Relaxed);
            self.appended.notify_one();
        }
        Ok(dropped)
    }

    /// Fails with `LowSpace` unless `incoming` bytes fit on the state disk above [`RESERVE`].
    fn check_space(&self, incoming: u64) -> Result<(), SpoolError> {
        match self.segments.free_bytes() {
            Some(free) if free < incoming.saturating_add(RESERVE) => Err(SpoolError::LowSpace {
                path: self.state_dir.clone(),
                free,
            }),
            _ => Ok(()),
        }
    }

    /// Records a checkpoint alone (a new generation, a file finished, a start at the end).
    pub fn set_checkpoint(&self, key: FileKey, checkpoint: &Checkpoint) -> Result<(), SpoolError> {
        self.db
            .insert(checkpoint_key(key), encode_checkpoint(checkpoint))
            .map_err(self.index_failed("save a checkpoint"))?;
        Ok(())
    }

    /// Forgets a file (deleted and drained).
    pub fn remove_checkpoint(&self, key: FileKey) -> Result<(), SpoolError> {
        self.db
            .remove(checkpoint_key(key))
            .map_err(self.index_failed("remove a checkpoint"))?;
        Ok(())
    }

    /// The checkpoint of a file, if any.
    pub fn checkpoint(&self, key: FileKey) -> Result<Option<Checkpoint>, SpoolError> {
        Ok(self
            .db
            .get(checkpoint_key(key))
            .map_err(self.index_failed("read a checkpoint"))?
            .and_then(|v| decode_checkpoint(&v)))
    }

    /// Every checkpoint.
    pub fn checkpoints(&self) -> Result<Vec<(FileKey, Checkpoint)>, SpoolError> {
        let mut all = Vec::new();
        for item in self.db.scan_prefix(b"c") {
            let (key, value) = item.map_err(self.index_failed("read the checkpoints"))?;
            if let (Some(file), Some(checkpoint)) =
                (decode_file_key(&key), decode_checkpoint(&value))
            {
                all.push((file, checkpoint));
            }
        }
        Ok(all)
    }

    /// Up to `limit` segments from `from` on, in order. A damaged or missing segment file is
    /// logged, counted as dropped, and skipped rather than blocking the spool forever.
    pub fn page(&self, from: Seq, limit: usize) -> Result<Vec<Segment>, SpoolError> {
        let mut page = Vec::with_capacity(limit.min(16));
        let keys: Vec<Seq> = self
            .db
            .range(seq_key(from)..=seq_key(Seq::MAX))
            .keys()
            .take(limit)
            .map(|key| key.map(|k| decode_seq(&k)))
            .collect::<Result<_, _>>()
            .map_err(self.index_failed("list the segment records"))?;
        for seq in keys {
            // From here on what `drop_oldest` drops of it may have been published.
            self.loaded_to.fetch_max(seq + 1, Ordering::Relaxed);
            match self.segments.read(seq) {
                Ok(lines) => page.push(Segment { seq, lines }),
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
                    ) =>
                {
                    let lost = self.remove(seq)?;
                    self.dropped.fetch_add(lost, Ordering::Relaxed);
                    tracing::error!(segment = seq, lines = lost, error = %err, "spool segment unreadable, its lines are lost");
                }
                Err(source) => return Err(self.segment_failed(seq)(source)),
            }
        }
        Ok(page)
    }

    /// Removes a confirmed (or dropped) segment's record; returns its number of lines, 0 if it
    /// was already gone. Its file is deleted by [`Spool::collect`] once the removal is durable:
    /// a segment file missing under a record then always means real loss.
    pub fn remove(&self, seq: Seq) -> Result<u64, SpoolError> {
        // unwrap: a poisoned lock means a panic elsewhere; the process is going down.
        let _removing = self.removing.lock().expect("spool lock poisoned");
        let Some(value) = self
            .db
            .remove(seq_key(seq))
            .map_err(self.index_failed("remove a segment record"))?
        else {
            return Ok(0);
        };
        let (lines, size) = decode_index(&value);
        self.forget_removed(&[(seq, lines, size)]);
        Ok(u64::from(lines))
    }

    /// Counts segments whose records were removed (`(seq, lines, bytes)` as in their records)
    /// out of the spool, and dooms their files (see [`Spool::collect`]).
    fn forget_removed(&self, removed: &[(Seq, u32, u64)]) {
        // unwrap: as in `remove`.
        let mut doomed = self.doomed.lock().expect("spool lock poisoned");
        for &(seq, lines, size) in removed {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.lines.fetch_sub(u64::from(lines), Ordering::Relaxed);
            doomed.push(seq);
        }
    }

    /// Segments below this number may have been loaded (and so published) by the publisher.
    fn loaded_to(&self) -> Seq {
        self.loaded_to.load(Ordering::Relaxed)
    }

    /// Makes the removals so far durable, then deletes their segment files. Until then the
    /// files stay, so a crash can only leave a file without a record (deleted on open), never
    /// a record without its file.
    pub fn collect(&self) -> Result<(), SpoolError> {
        // unwrap: as in `remove`.
        let doomed = std::mem::take(&mut *self.doomed.lock().expect("spool lock poisoned"));
        if doomed.is_empty() {
            return Ok(());
        }
        if let Err(err) = self.db.flush() {
            self.doomed
                .lock()
                .expect("spool lock poisoned")
                .extend_from_slice(&doomed);
            return Err(self.index_failed("flush")(err));
        }
        for seq in doomed {
            self.segments
                .remove(seq)
                .map_err(self.segment_failed(seq))?;
        }
        Ok(())
    }

    /// Segments removed whose files are not deleted yet.
    pub fn uncollected(&self) -> usize {
        self.doomed.lock().map_or(0, |d| d.len())
    }

    /// Whether the reader may append more (always, with `drop_oldest`).
    pub fn has_room(&self) -> bool {
        self.when_full == WhenFull::DropOldest || self.bytes() < self.max_bytes
    }

    /// The spool's cap, `buffer.max_bytes`.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes of spooled segments.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Number of spooled lines.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Lines dropped by `drop_oldest` since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Remembers how many lines of segment `seq` (the head) are confirmed, so a restart does
    /// not send them again; `None` forgets it.
    pub fn set_head_confirmed(&self, head: Option<(Seq, usize)>) -> Result<(), SpoolError> {
        match head {
            Some((seq, lines)) => {
                let mut value = [0u8; 16];
                value[..8].copy_from_slice(&seq.to_be_bytes());
                value[8..].copy_from_slice(&(lines as u64).to_be_bytes());
                self.db
                    .insert(b"h", &value)
                    .map_err(self.index_failed("save the confirmed head"))?;
            }
            None => {
                self.db
                    .remove(b"h")
                    .map_err(self.index_failed("remove the confirmed head"))?;
            }
        }
        Ok(())
    }

    /// What [`Spool::set_head_confirmed`] last remembered.
    pub fn head_confirmed(&self) -> Result<Option<(Seq, usize)>, SpoolError> {
        let head = self
            .db
            .get(b"h")
            .map_err(self.index_failed("read the confirmed head"))?;
        Ok(head.and_then(|v| {
            let seq = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            let lines = u64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
            Some((seq, usize::try_from(lines).ok()?))
        }))
    }

    /// Makes every write so far durable (and deletes the files of removed segments).
    pub fn flush(&self) -> Result<(), SpoolError> {
        self.db.flush().map_err(self.index_failed("flush"))?;
        self.collect()
    }

    /// When the oldest spooled segment was written: the age of the oldest unconfirmed line.
    /// `None` when the spool is empty (or the head's file cannot be read: no age to show).
    pub fn oldest_written(&self) -> Option<std::time::SystemTime> {
        let (key, _) = self.db.scan_prefix(b"q").next()?.ok()?;
        self.segments.written_at(decode_seq(&key)).ok()
    }

    /// The directory the spool lives in, for messages about a failing disk.
    pub fn dir(&self) -> &Path {
        &self.state_dir
    }
}

#[cfg(test)]
mod tests;
