//! Checkpoints: where reading each file resumes, keyed by (device, inode), and their encoding
//! in the spool's sled tree (`c<dev: u64 BE><ino: u64 BE>`).

use std::path::{Path, PathBuf};

use super::Offset;
use crate::identity::{FileKey, Fingerprint};

/// Where reading a file resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// First byte not yet spooled.
    pub offset: Offset,
    /// Bumped on truncation, so offsets (and message ids) of a new generation never collide.
    pub generation: u32,
    /// Known once a line was shipped.
    pub fingerprint: Option<Fingerprint>,
    /// The path the file was read under (the envelope's `path`).
    pub path: PathBuf,
    /// Rotated away or deleted, drained, and closed.
    pub finished: bool,
    /// The line at `offset` continues a multiline event that was cut (see [`crate::line_rules`]):
    /// read again, it must not be taken for a line of its own.
    pub mid_event: bool,
}

impl Checkpoint {
    /// A file's first byte, in its first generation: where a file never read starts.
    pub fn start(path: &Path) -> Checkpoint {
        Checkpoint {
            offset: 0,
            generation: 0,
            fingerprint: None,
            path: path.to_path_buf(),
            finished: false,
            mid_event: false,
        }
    }
}

pub(super) fn checkpoint_key(key: FileKey) -> [u8; 17] {
    let mut out = [b'c'; 17];
    out[1..9].copy_from_slice(&key.dev.to_be_bytes());
    out[9..].copy_from_slice(&key.ino.to_be_bytes());
    out
}

pub(super) fn decode_file_key(key: &[u8]) -> Option<FileKey> {
    Some(FileKey {
        dev: u64::from_be_bytes(key.get(1..9)?.try_into().ok()?),
        ino: u64::from_be_bytes(key.get(9..17)?.try_into().ok()?),
    })
}

/// offset u64, generation u32, fingerprint hash u64, fingerprint length u32 (0: none),
/// flags u8 (1: finished, 2: mid event), then the path's bytes.
pub(super) fn encode_checkpoint(checkpoint: &Checkpoint) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let path = checkpoint.path.as_os_str().as_bytes();
    let mut value = Vec::with_capacity(25 + path.len());
    value.extend_from_slice(&checkpoint.offset.to_be_bytes());
    value.extend_from_slice(&checkpoint.generation.to_be_bytes());
    let fp = checkpoint
        .fingerprint
        .unwrap_or(Fingerprint { hash: 0, len: 0 });
    value.extend_from_slice(&fp.hash.to_be_bytes());
    value.extend_from_slice(&fp.len.to_be_bytes());
    value.push(u8::from(checkpoint.finished) | (u8::from(checkpoint.mid_event) << 1));
    value.extend_from_slice(path);
    value
}

pub(super) fn decode_checkpoint(value: &[u8]) -> Option<Checkpoint> {
    use std::os::unix::ffi::OsStrExt;
    let hash = u64::from_be_bytes(value.get(12..20)?.try_into().ok()?);
    let len = u32::from_be_bytes(value.get(20..24)?.try_into().ok()?);
    Some(Checkpoint {
        offset: u64::from_be_bytes(value.get(..8)?.try_into().ok()?),
        generation: u32::from_be_bytes(value.get(8..12)?.try_into().ok()?),
        fingerprint: (len > 0).then_some(Fingerprint { hash, len }),
        finished: *value.get(24)? & 1 != 0,
        mid_event: *value.get(24)? & 2 != 0,
        path: Path::new(std::ffi::OsStr::from_bytes(value.get(25..)?)).to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_and_old_records_read_as_before() {
        let mut checkpoint = Checkpoint {
            offset: 7,
            generation: 1,
            fingerprint: Some(Fingerprint { hash: 9, len: 3 }),
            path: PathBuf::from("/var/log/a.log"),
            finished: true,
            mid_event: true,
        };
        assert_eq!(
            decode_checkpoint(&encode_checkpoint(&checkpoint)),
            Some(checkpoint.clone())
        );
        // A record written before mid_event existed: its flags byte is 0 or 1.
        checkpoint.mid_event = false;
        let mut old = encode_checkpoint(&checkpoint);
        old[24] = 1;
        assert_eq!(decode_checkpoint(&old), Some(checkpoint));
    }
}
