//! Segment files: the lines of one reader turn (of any number of files), one file per segment, named by sequence
//! number (`<seq as 16 hex digits>.seg`) in `<state_dir>/spool/`.
//!
//! Format: `<count: u32 BE>` then per line `<id length: u16 BE><message id><body length: u32
//! BE><envelope JSON>`.
//!
//! Invariant: [`Segments::write`] returns only once the file and its directory entry are on
//! disk, so the index record written after it never points at a segment a power loss could take.

use std::fs::File;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use super::{Message, Seq};

/// The directory of segment files.
pub struct Segments {
    dir: PathBuf,
    /// Kept open to fsync new directory entries.
    handle: File,
}

impl Segments {
    /// Opens (or creates) the directory.
    pub fn open(dir: &Path) -> std::io::Result<Segments> {
        std::fs::create_dir_all(dir)?;
        Ok(Segments {
            dir: dir.to_path_buf(),
            handle: File::open(dir)?,
        })
    }

    fn path(&self, seq: Seq) -> PathBuf {
        self.dir.join(format!("{seq:016x}.seg"))
    }

    /// When segment `seq`'s file was written (its mtime: it is written once, never changed).
    pub fn written_at(&self, seq: Seq) -> std::io::Result<std::time::SystemTime> {
        std::fs::metadata(self.path(seq))?.modified()
    }

    /// Writes a segment durably; returns its size in bytes.
    pub fn write(&self, seq: Seq, lines: &[Message]) -> std::io::Result<u64> {
        let bytes = encode(lines);
        let mut file = File::create(self.path(seq))?;
        file.write_all(&bytes)?;
        file.sync_data()?;
        self.handle.sync_all()?;
        Ok(bytes.len() as u64)
    }

    /// Reads a segment. `InvalidData` if it is damaged.
    pub fn read(&self, seq: Seq) -> std::io::Result<Vec<Message>> {
        let bytes = std::fs::read(self.path(seq))?;
        decode(&bytes).ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, "damaged segment"))
    }

    /// Deletes a segment; one already gone is fine.
    pub fn remove(&self, seq: Seq) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(seq)) {
            Err(err) if err.kind() != ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Bytes free for us on the directory's filesystem; `None` if it cannot be told.
    pub fn free_bytes(&self) -> Option<u64> {
        logship_runtime::disk::free_bytes(&self.dir)
    }

    /// Every segment file's sequence number.
    pub fn list(&self) -> std::io::Result<Vec<Seq>> {
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".seg")
                .and_then(|hex| Seq::from_str_radix(hex, 16).ok())
            {
                seqs.push(seq);
            }
        }
        Ok(seqs)
    }
}

/// Bytes a line takes in a segment: its two length prefixes, its id and its body.
pub fn framed_len(id: &str, body: &[u8]) -> u64 {
    (6 + id.len().min(u16::MAX as usize) + body.len()) as u64
}

fn encode(lines: &[Message]) -> Vec<u8> {
    let size: u64 = lines
        .iter()
        .map(|line| framed_len(&line.id, &line.body))
        .sum();
    let mut value = Vec::with_capacity(4 + size as usize);
    value.extend_from_slice(&(lines.len() as u32).to_be_bytes());
    for Message { id, body } in lines {
        // Ids are short (a host name plus numbers); a longer one is cut, never mis-framed.
        let id = &id.as_bytes()[..id.len().min(u16::MAX as usize)];
        value.extend_from_slice(&(id.len() as u16).to_be_bytes());
        value.extend_from_slice(id);
        value.extend_from_slice(&(body.len() as u32).to_be_bytes());
        value.extend_from_slice(body);
    }
    value
}

fn decode(value: &[u8]) -> Option<Vec<Message>> {
    let count = u32::from_be_bytes(value.get(..4)?.try_into().ok()?) as usize;
    let mut lines = Vec::with_capacity(count.min(1 << 16));
    let mut rest = value.get(4..)?;
    for _ in 0..count {
        let id_len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let id = String::from_utf8(rest.get(2..2 + id_len)?.to_vec()).ok()?;
        rest = &rest[2 + id_len..];
        let body_len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let body = rest.get(4..4 + body_len)?.to_vec();
        rest = &rest[4 + body_len..];
        lines.push(Message { id, body });
    }
    rest.is_empty().then_some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path()).unwrap();
        let lines: Vec<Message> = vec![
            Message {
                id: "a".into(),
                body: b"{}".to_vec(),
            },
            Message {
                id: "b".into(),
                body: vec![0xff; 3],
            },
        ];
        assert_eq!(
            segments.write(7, &lines).unwrap(),
            4 + 6 + 1 + 2 + 6 + 1 + 3
        );
        assert_eq!(segments.read(7).unwrap(), lines);
        assert_eq!(segments.list().unwrap(), [7]);
        let path = dir.path().join(format!("{:016x}.seg", 7));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(segments.read(7).unwrap_err().kind(), ErrorKind::InvalidData);
        segments.remove(7).unwrap();
        segments.remove(7).unwrap();
        assert!(segments.list().unwrap().is_empty());
    }
}
