//! Compressed output files (`output.compression = "zstd"`): one zstd frame per batch per file,
//! and the small frames of a file's tail compacted into one.
//!
//! Why frames per batch: the committed length of a file must always be the end of a valid zstd
//! stream, so that a kill -9 at any instant leaves files `zstdcat` reads whole, and so that the
//! files can be read while the collector writes them. Ending a frame at every commit does that
//! with no repair at all: truncating to the committed length is the whole recovery. A streaming
//! context per file that flushes a block per commit would keep one compressor's window and
//! tables per open file (hundreds of KiB each: too much for 400 open files) and leave every live
//! file an unterminated frame.
//!
//! Why compaction: a batch often holds one line per file (400 files at 10 lines/s), and a frame
//! of one line hardly compresses. So the frames after the file's last sealed frame form its
//! tail; each time the tail's lines cross a multiple of [`COMPACT_STEP`], the tail is rewritten
//! as one frame, and once that frame holds [`SEAL_PLAIN`] it is sealed (never rewritten again).
//! About `COMPACT_STEP` of lines (plus what arrives until the next compaction round, at most a
//! second's worth: `compact`) thus sit in small frames, and a line is recompressed about
//! `SEAL_PLAIN / COMPACT_STEP` times. A compaction is crash-safe:
//! 1. the tail is decompressed and compressed again as one frame, which is appended inside a
//!    skippable frame (readers ignore it), synced, and recorded as `staged` in the commit record;
//! 2. the frame is copied over the tail's start, synced, and the file cut right after it; the
//!    record then says the file ends there.
//!
//! A crash before step 1's record leaves bytes past the committed length (truncated as usual);
//! a crash after it is finished by [`settle`] on start, which redoes step 2 from the copy still
//! inside the file. Step 2 is idempotent, and the source never overlaps the destination (the
//! compacted frame is smaller than the tail it replaces).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

use crate::commit::file_record::FileRecord;

/// A frame holding this many bytes of lines is sealed: never compacted again. At 128 KiB of
/// log text zstd level 3 is within a few percent of its ratio on a whole file.
pub const SEAL_PLAIN: u64 = 128 << 10;

/// The tail is compacted each time its lines cross a multiple of this: it bounds what sits in
/// poorly compressed small frames (per file) against how often a tail is rewritten.
pub const COMPACT_STEP: u64 = 16 << 10;

/// The first of zstd's skippable-frame magic numbers (little-endian on disk).
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

/// The zstd contexts, shared by every file: compressing one batch's lines at a time.
pub struct Frames {
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl Frames {
    /// Contexts compressing at `level`, with a checksum in every frame (`zstd -t` checks it).
    pub fn new(level: i32) -> io::Result<Frames> {
        let mut compressor = zstd::bulk::Compressor::new(level)?;
        compressor.include_checksum(true)?;
        Ok(Frames {
            compressor,
            decompressor: zstd::bulk::Decompressor::new()?,
        })
    }

    /// One complete frame holding `plain`.
    pub fn frame(&mut self, plain: &[u8]) -> io::Result<Vec<u8>> {
        self.compressor.compress(plain)
    }

    /// Step 1 of a compaction of `record`'s tail in `file`: the bytes to append at
    /// `record.len` and the record saying they are staged; `None` if one frame would not be
    /// smaller than the tail (it then stays as it is).
    pub fn stage(
        &mut self,
        file: &File,
        record: &FileRecord,
    ) -> io::Result<Option<(Vec<u8>, FileRecord)>> {
        let tail_len = record.len - record.tail_start;
        let mut tail = vec![0; usize_of(tail_len)?];
        file.read_exact_at(&mut tail, record.tail_start)?;
        let plain = self
            .decompressor
            .decompress(&tail, usize_of(record.tail_plain)?)?;
        if plain.len() as u64 != record.tail_plain {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the tail at {} holds {} bytes of lines, the record says {}",
                    record.tail_start,
                    plain.len(),
                    record.tail_plain
                ),
            ));
        }
        let frame = self.frame(&plain)?;
        let frame_len = frame.len() as u64;
        if frame_len >= tail_len {
            return Ok(None);
        }
        let size = u32::try_from(frame.len()).map_err(io::Error::other)?;
        let mut staged = Vec::with_capacity(frame.len() + 8);
        staged.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        staged.extend_from_slice(&size.to_le_bytes());
        staged.extend_from_slice(&frame);
        let record = FileRecord {
            len: record.len + staged.len() as u64,
            staged: Some((record.len + 8, frame_len)),
            ..*record
        };
        Ok(Some((staged, record)))
    }
}

/// Whether a file whose last frame of `plain` bytes (taking it from `old_len` to `record.len`)
/// was just appended needs its tail compacted; updates the tail in `record`.
pub fn appended(record: &mut FileRecord, old_len: u64, plain: u64) -> bool {
    let before = record.tail_plain;
    record.tail_plain += plain;
    if record.tail_start == old_len {
        // The tail is this one frame: nothing to merge; sealed if large enough.
        if record.tail_plain >= SEAL_PLAIN {
            *record = FileRecord::at(record.len);
        }
        return false;
    }
    before / COMPACT_STEP != record.tail_plain / COMPACT_STEP
}

/// The record of a file whose tail is now the one frame `[record.tail_start, end)`: sealed if
/// it holds enough lines.
fn compacted(record: &FileRecord, end: u64) -> FileRecord {
    if record.tail_plain >= SEAL_PLAIN {
        FileRecord::at(end)
    } else {
        FileRecord {
            len: end,
            staged: None,
            ..*record
        }
    }
}

/// Step 2 of a compaction (and its redo after a crash): copies the staged frame over the tail's
/// start, makes it durable, and cuts the file after it; returns the record to commit. `file`
/// is open for reading and writing.
pub fn settle(file: &File, record: &FileRecord) -> io::Result<FileRecord> {
    let settled = copy_staged(file, record)?;
    if file.metadata()?.len() != settled.len {
        file.sync_data()?;
    }
    cut(file, &settled)?;
    file.sync_all()?;
    Ok(settled)
}

/// The copy of step 2, not yet durable (nothing if the file was already cut: a file that long
/// is a finished compaction); returns the record once the file is cut.
pub fn copy_staged(file: &File, record: &FileRecord) -> io::Result<FileRecord> {
    let Some((source, length)) = record.staged else {
        return Ok(*record);
    };
    let end = record.tail_start + length;
    if file.metadata()?.len() != end {
        let mut frame = vec![0; usize_of(length)?];
        file.read_exact_at(&mut frame, source)?;
        file.write_all_at(&frame, record.tail_start)?;
    }
    Ok(compacted(record, end))
}

/// Cuts the file after its compacted frame: only once the copy is durable.
pub fn cut(file: &File, settled: &FileRecord) -> io::Result<()> {
    file.set_len(settled.len)
}

fn usize_of(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// Appends frames of `lines` to `file` as the sink does; returns the record.
    fn write_frames(frames: &mut Frames, file: &mut File, lines: &[String]) -> FileRecord {
        let mut record = FileRecord::at(0);
        for line in lines {
            let frame = frames.frame(line.as_bytes()).unwrap();
            file.write_all(&frame).unwrap();
            let old = record.len;
            record.len += frame.len() as u64;
            appended(&mut record, old, line.len() as u64);
        }
        record
    }

    fn lines(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "2026-12-02T10:00:{:02}Z INFO request id={i} path=/api/v1/items status=200\n",
                    i % 60
                )
            })
            .collect()
    }

    #[test]
    fn a_compaction_redone_from_any_point_leaves_the_same_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.zst");
        let mut frames = Frames::new(3).unwrap();
        let lines = lines(200);
        let expected = lines.concat();
        let mut file = File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .unwrap();
        let mut record = write_frames(&mut frames, &mut file, &lines);
        // As if the whole file were a tail (it may have been compacted on the way).
        record.tail_start = 0;
        record.tail_plain = expected.len() as u64;
        let before = record.len;
        let (staged, staged_record) = frames.stage(&file, &record).unwrap().unwrap();
        file.write_all(&staged).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        // Readers skip the staged copy.
        let read = zstd::stream::decode_all(&std::fs::read(&path).unwrap()[..]).unwrap();
        assert_eq!(String::from_utf8(read).unwrap(), expected);
        // A crash halfway through the copy: the redo finishes it.
        let (source, length) = staged_record.staged.unwrap();
        let mut half = vec![0; length as usize / 2];
        file.read_exact_at(&mut half, source).unwrap();
        file.write_all_at(&half, staged_record.tail_start).unwrap();
        let settled = settle(&file, &staged_record).unwrap();
        assert_eq!(
            settle(&file, &staged_record).unwrap(),
            settled,
            "idempotent"
        );
        assert!(settled.len < before / 3, "{} vs {before}", settled.len);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), settled.len);
        let read = zstd::stream::decode_all(&std::fs::read(&path).unwrap()[..]).unwrap();
        assert_eq!(String::from_utf8(read).unwrap(), expected);
    }

    #[test]
    fn a_large_frame_is_sealed_and_tails_compact_at_each_step() {
        let mut record = FileRecord::at(10);
        record.len = 500;
        assert!(!appended(&mut record, 10, SEAL_PLAIN));
        assert_eq!(record, FileRecord::at(500));
        record.len = 600;
        assert!(!appended(&mut record, 500, 10));
        record.len = 700;
        assert!(!appended(&mut record, 600, COMPACT_STEP - 11));
        record.len = 800;
        assert!(appended(&mut record, 700, 1));
        assert_eq!(compacted(&record, 650).tail_start, 500);
        record.tail_plain = SEAL_PLAIN;
        assert_eq!(compacted(&record, 650), FileRecord::at(650));
    }
}
