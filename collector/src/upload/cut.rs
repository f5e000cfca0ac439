//! Where an object ends: at most `upload.object_bytes` after its start, at the end of a zstd
//! frame (compressed files) or of a line (plain files), so that every object is a valid stream
//! on its own.
//!
//! A compressed file's frames are found by walking their headers and block headers from the
//! object's start (a frame's size is not in its header): a few bytes read per block, nothing of
//! the file held in memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

/// A zstd frame's magic number.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames' magic numbers: `0x184D2A50` to `0x184D2A5F`.
const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

/// How far back from the limit a plain file's object looks for a line's end.
const LINE_LOOKBACK: u64 = 64 << 10;

/// The end of the object of a compressed file starting at `start` (a frame's start), given
/// that `[start, end)` holds whole frames: the last frame end at most `object_bytes` past
/// `start`, or the end of the first frame if that one alone is larger.
pub fn zstd_end(file: &File, start: u64, end: u64, object_bytes: u64) -> io::Result<u64> {
    let mut at = start;
    while at < end {
        let next = at + frame_size(file, at)?;
        if next > end {
            return Err(invalid(format!(
                "a frame at {at} ends at {next}, past the committed frames' end {end}"
            )));
        }
        if next - start > object_bytes && at > start {
            return Ok(at);
        }
        at = next;
    }
    Ok(at)
}

/// The end of the object of a plain file starting at `start`, given `[start, end)`: `end` if
/// it is at most `object_bytes` away, else the last line's end before the limit (or the limit
/// itself in a line longer than [`LINE_LOOKBACK`]).
pub fn plain_end(file: &File, start: u64, end: u64, object_bytes: u64) -> io::Result<u64> {
    let limit = start + object_bytes;
    if end <= limit {
        return Ok(end);
    }
    let from = limit.saturating_sub(LINE_LOOKBACK).max(start);
    let mut window = vec![0; usize::try_from(limit - from).map_err(io::Error::other)?];
    file.read_exact_at(&mut window, from)?;
    Ok(match window.iter().rposition(|&b| b == b'\n') {
        Some(newline) => from + newline as u64 + 1,
        None => limit,
    })
}

/// The size of the frame (zstd or skippable) starting at `at`.
fn frame_size(file: &File, at: u64) -> io::Result<u64> {
    let mut head = [0u8; 5];
    file.read_exact_at(&mut head, at)?;
    let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC {
        let mut size = [0u8; 4];
        file.read_exact_at(&mut size, at + 4)?;
        return Ok(8 + u64::from(u32::from_le_bytes(size)));
    }
    if magic != ZSTD_MAGIC {
        return Err(invalid(format!("no zstd frame starts at {at}")));
    }
    let descriptor = head[4];
    let single_segment = (descriptor >> 5) & 1 == 1;
    let window = if single_segment { 0 } else { 1 };
    let dictionary = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let content_size = match descriptor >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let checksum = if (descriptor >> 2) & 1 == 1 { 4 } else { 0 };
    let mut block_at = at + 5 + window + dictionary + content_size;
    loop {
        let mut header = [0u8; 3];
        file.read_exact_at(&mut header, block_at)?;
        let value = u32::from(header[0]) | u32::from(header[1]) << 8 | u32::from(header[2]) << 16;
        let last = value & 1 == 1;
        let content = match (value >> 1) & 3 {
            // An RLE block holds its one repeated byte.
            1 => 1,
            3 => return Err(invalid(format!("a reserved block type at {block_at}"))),
            _ => u64::from(value >> 3),
        };
        block_at += 3 + content;
        if last {
            return Ok(block_at + checksum - at);
        }
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn objects_end_at_frame_ends_within_the_size_or_after_one_large_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.zst");
        let mut file = File::create(&path).unwrap();
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        compressor.include_checksum(true).unwrap();
        let mut ends = vec![0u64];
        let mut write = |bytes: &[u8], file: &mut File| {
            file.write_all(bytes).unwrap();
            ends.push(ends.last().unwrap() + bytes.len() as u64);
        };
        for i in 0..20 {
            let lines: String = (0..i * 50)
                .map(|n| format!("line {n} of frame {i}\n"))
                .collect();
            let frame = compressor.compress(lines.as_bytes()).unwrap();
            write(&frame, &mut file);
        }
        // A skippable frame, and an incompressible one (raw blocks).
        let mut skippable = 0x184D_2A50u32.to_le_bytes().to_vec();
        skippable.extend(3u32.to_le_bytes());
        skippable.extend(b"abc");
        write(&skippable, &mut file);
        let noise: Vec<u8> = (0..300_000u32)
            .map(|n| (n.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        write(&compressor.compress(&noise).unwrap(), &mut file);
        let file = File::open(&path).unwrap();
        let end = *ends.last().unwrap();
        // Walking every frame one by one finds every end.
        let mut at = 0;
        let mut found = vec![0];
        while at < end {
            at = zstd_end(&file, at, end, 1024).unwrap();
            found.push(at);
        }
        assert!(
            found.iter().all(|f| ends.contains(f)),
            "{found:?} vs {ends:?}"
        );
        assert_eq!(zstd_end(&file, 0, end, u64::MAX).unwrap(), end);
        let some = zstd_end(&file, 0, end, 4000).unwrap();
        assert!(some <= 4000 && ends.contains(&some), "{some}");
        // An end that is not a frame's end is an error, not a cut inside a frame.
        assert!(zstd_end(&file, 0, end - 1, u64::MAX).is_err());
    }

    #[test]
    fn plain_objects_end_at_a_line_end_within_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "aaaa\nbbbb\ncccc\n").unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(plain_end(&file, 0, 15, 100).unwrap(), 15);
        assert_eq!(plain_end(&file, 0, 15, 12).unwrap(), 10);
        assert_eq!(
            plain_end(&file, 5, 15, 3).unwrap(),
            8,
            "no line end: the limit"
        );
    }
}
