//! Which file a descriptor is: (device, inode) plus a fingerprint of its first bytes.
//!
//! The fingerprint is FNV-1a 64 over the first `min(1024, first line + newline)` bytes. It is
//! taken from bytes that can no longer change (a complete first line, or 1 KiB), so it is stable
//! while the file grows, and it is only needed once a line is shipped. Its length is kept with
//! the checkpoint, so the same bytes can be hashed again after a restart.
//!
//! Identity also finds a file again after it left its name: by key (rotated while the agent was
//! stopped) or by head (the copy a copytruncate left next to the file).

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

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

/// Whether `head` (a file's first bytes, as many as `expected` covers) is what `expected` was
/// taken from.
pub fn matches_bytes(head: &[u8], expected: Fingerprint) -> bool {
    head.len() == expected.len as usize && fnv1a(head) == expected.hash
}

/// Looks in `path`'s directory for the file with `key` (a file rotated while the agent was
/// stopped); returns it open, with its size.
pub fn find_by_key(path: &Path, key: FileKey) -> Option<(File, u64)> {
    find_named_by_key(path, key).map(|(file, size, _)| (file, size))
}

/// [`find_by_key`], with the name the file was found under.
pub fn find_named_by_key(path: &Path, key: FileKey) -> Option<(File, u64, PathBuf)> {
    let dir = path.parent()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && FileKey::of(&meta) == key {
            let file = File::open(entry.path()).ok()?;
            return Some((file, meta.len(), entry.path()));
        }
    }
    None
}

/// A copytruncate copy found next to a truncated file.
pub struct Copy {
    pub path: PathBuf,
    pub file: File,
    pub size: u64,
}

/// Looks in `path`'s directory for the copy of a file that was just truncated: another regular
/// file starting with the bytes `head` was taken from. When several do (files whose first line
/// repeats), the most recently modified one is the copy just made.
pub fn find_copy(path: &Path, key: FileKey, head: Fingerprint) -> Option<Copy> {
    let dir = path.parent()?;
    let mut candidates: Vec<(std::time::SystemTime, PathBuf, u64)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            let wanted =
                meta.is_file() && FileKey::of(&meta) != key && meta.len() >= u64::from(head.len);
            wanted.then_some((meta.modified().ok()?, entry.path(), meta.len()))
        })
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    candidates.into_iter().find_map(|(_, path, size)| {
        let file = File::open(&path).ok()?;
        matches(&file, head)
            .ok()?
            .then_some(Copy { path, file, size })
    })
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

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
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
    fn the_copy_of_a_truncated_file_is_found_by_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(dir.path().join("other.log"), b"another head\n").unwrap();
        std::fs::write(&path, b"first line\nsecond\n").unwrap();
        let file = File::open(&path).unwrap();
        let fp = fingerprint(&file, false).unwrap().unwrap();
        let key = FileKey::of(&file.metadata().unwrap());
        assert!(
            find_copy(&path, key, fp).is_none(),
            "the file itself is no copy"
        );
        std::fs::copy(&path, dir.path().join("app.log.1")).unwrap();
        std::fs::write(&path, b"").unwrap();
        let copy = find_copy(&path, key, fp).unwrap();
        assert_eq!(
            (copy.path.file_name().unwrap(), copy.size),
            ("app.log.1".as_ref(), 18)
        );
        assert_eq!(find_by_key(&dir.path().join("gone.log"), key).unwrap().1, 0);
    }

    #[test]
    fn long_first_lines_use_one_kib() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[b'x'; 5000]).unwrap();
        assert_eq!(fingerprint(&file, false).unwrap().unwrap().len, 1024);
    }
}
