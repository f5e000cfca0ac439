//! Which file a descriptor is: (device, inode) plus a fingerprint of its first bytes.
//!
//! The fingerprint is FNV-1a 64 over the first `min(1024, first line + newline)` bytes. It is
//! taken from bytes that can no longer change (a complete first line, or 1 KiB), so it is stable
//! while the file grows, and it is only needed once a line is shipped. Its length is kept with
//! the checkpoint, so the same bytes can be hashed again after a restart.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

/// The most bytes fingerprinted.
pub const FINGERPRINT_MAX: usize = 1024;

/// (device, inode): how the kernel names a file, whatever its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

impl FileKey {
    /// The key of an open file or of `stat(path)`.
    pub fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A fingerprint and how many leading bytes it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub hash: u64,
    pub len: u32,
}

/// Fingerprints a file's head by the rule above. `None` while the file holds less than a line
/// and less than 1 KiB, unless `finished` (then whatever is there counts).
pub fn fingerprint(file: &File, finished: bool) -> std::io::Result<Option<Fingerprint>> {
    let mut head = [0u8; FINGERPRINT_MAX];
    let read = read_head(file, &mut head)?;
    let len = match head[..read].iter().position(|&b| b == b'\n') {
        Some(newline) => newline + 1,
        None if read == FINGERPRINT_MAX || (finished && read > 0) => read,
        None => return Ok(None),
    };
    Ok(Some(Fingerprint {
        hash: fnv1a(&head[..len]),
        len: len as u32,
    }))
}

/// Whether the file still starts with the bytes `expected` was taken from.
pub fn matches(file: &File, expected: Fingerprint) -> std::io::Result<bool> {
    let mut head = [0u8; FINGERPRINT_MAX];
    let len = (expected.len as usize).min(FINGERPRINT_MAX);
    let read = read_head(file, &mut head[..len])?;
    Ok(read == len && fnv1a(&head[..len]) == expected.hash)
}

fn read_head(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn fingerprint_is_stable_as_the_file_grows() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"partial").unwrap();
        assert_eq!(fingerprint(&file, false).unwrap(), None);
        assert!(fingerprint(&file, true).unwrap().is_some());
        file.write_all(b" first\nsecond\n").unwrap();
        let first = fingerprint(&file, false).unwrap().unwrap();
        assert_eq!(first.len, 14);
        file.write_all(b"more lines\n").unwrap();
        assert_eq!(fingerprint(&file, false).unwrap(), Some(first));
        assert!(matches(&file, first).unwrap());
    }

    #[test]
    fn a_different_head_does_not_match() {
        let mut a = tempfile::tempfile().unwrap();
        a.write_all(b"alpha\n").unwrap();
        let mut b = tempfile::tempfile().unwrap();
        b.write_all(b"bravo\n").unwrap();
        let fp = fingerprint(&a, false).unwrap().unwrap();
        assert!(!matches(&b, fp).unwrap());
        let empty = tempfile::tempfile().unwrap();
        assert!(!matches(&empty, fp).unwrap());
    }

    #[test]
    fn long_first_lines_use_one_kib() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[b'x'; 5000]).unwrap();
        assert_eq!(fingerprint(&file, false).unwrap().unwrap().len, 1024);
    }
}
