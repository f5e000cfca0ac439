//! What the commit record holds for one output file: its committed length and, for compressed
//! files, where its tail of small frames starts and a compaction in progress.
//!
//! Encoding (the value of `f/<file>` in the commit record's tree), all u64 big-endian:
//! `<len>` (a plain file, and every record written before compression existed), or
//! `<len><tail start><tail plain bytes>`, or that plus `<staged source><staged length>` while a
//! compaction is in progress.
//!
//! Invariants (compressed files): `len` is the end of a complete zstd frame (or 0), so the
//! committed file always decompresses whole; `[tail_start, len)` holds the frames written since
//! the last sealed frame (at most one compacted frame, then small ones), `tail_plain` bytes
//! once decompressed. While `staged` is
//! set, `[source, source + length)` is one compacted frame (inside a skippable frame ending at
//! `len`) holding exactly the tail's lines; recovery copies it to `tail_start` and ends the file
//! there (see `sink::frames`).

/// One output file's committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileRecord {
    /// Every byte before it is fsync'd and belongs to committed lines; bytes past it were
    /// never acked and are truncated.
    pub len: u64,
    /// Compressed files: where the frames after the last sealed one start (`len`: none).
    pub tail_start: u64,
    /// Compressed files: what those frames hold once decompressed.
    pub tail_plain: u64,
    /// A compaction in progress: `(source, length)` of its compacted frame.
    pub staged: Option<(u64, u64)>,
}

impl FileRecord {
    /// A file of `len` bytes with no tail of small frames (a plain file, or a compressed one
    /// just opened at a frame boundary).
    pub fn at(len: u64) -> FileRecord {
        FileRecord {
            len,
            tail_start: len,
            tail_plain: 0,
            staged: None,
        }
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut fields = vec![self.len];
        if self.tail_start != self.len || self.tail_plain != 0 || self.staged.is_some() {
            fields.extend([self.tail_start, self.tail_plain]);
        }
        if let Some((source, length)) = self.staged {
            fields.extend([source, length]);
        }
        fields.iter().flat_map(|f| f.to_be_bytes()).collect()
    }

    /// Reads a stored record; `None` if it is not one.
    pub fn decode(value: &[u8]) -> Option<FileRecord> {
        if !value.len().is_multiple_of(8) {
            return None;
        }
        let fields: Vec<u64> = value
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
            .collect();
        match fields[..] {
            [len] => Some(FileRecord::at(len)),
            [len, tail_start, tail_plain] => Some(FileRecord {
                len,
                tail_start,
                tail_plain,
                staged: None,
            }),
            [len, tail_start, tail_plain, source, length] => Some(FileRecord {
                len,
                tail_start,
                tail_plain,
                staged: Some((source, length)),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_old_ones_read_as_plain() {
        let plain = FileRecord::at(42);
        assert_eq!(plain.encode(), 42u64.to_be_bytes());
        assert_eq!(FileRecord::decode(&42u64.to_be_bytes()), Some(plain));
        let tail = FileRecord {
            len: 100,
            tail_start: 60,
            tail_plain: 300,
            staged: None,
        };
        let staged = FileRecord {
            staged: Some((108, 20)),
            ..tail
        };
        for record in [tail, staged] {
            assert_eq!(FileRecord::decode(&record.encode()), Some(record));
        }
        assert_eq!(FileRecord::decode(&[0; 7]), None);
        assert_eq!(FileRecord::decode(&[0; 16]), None);
    }
}
