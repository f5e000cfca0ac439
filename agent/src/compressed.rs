//! A rotated file that exists only compressed: the runtimes gzip their rotated logs (Docker's
//! `compress=true` turns `<id>-json.log.1` into `.1.gz`; the kubelet gzips every rotated
//! `N.log.<time>` but the newest) and delete the original. If the agent was stopped (or fell
//! that far behind) the lines past the checkpoint are only in the `.gz`.
//!
//! At start, a checkpoint whose file is gone is looked for among the `.gz` files beside its
//! path: one whose decompressed head matches the checkpoint's fingerprint and which is, once
//! decompressed, at least as long as the checkpoint's offset. It is decompressed into an
//! unnamed file in the state directory, sparse: its head at 0 (to check the fingerprint) and
//! its bytes from the checkpoint on at their own offsets (offsets count decompressed bytes);
//! the spooled bytes in between are skipped, never stored. The reader drains that file as the
//! original: same key, generation, offsets, and so the same message ids.
//!
//! Invariant: the checkpoint is not touched here; if the agent stops again before the file is
//! drained, the `.gz` is found and decompressed again.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use flate2::read::MultiGzDecoder;

use crate::identity::{self, FileKey, Fingerprint};
use crate::spool::Checkpoint;

/// Bytes decompressed per read.
const CHUNK: usize = 64 << 10;

/// A `.gz` found to hold a checkpoint's file, decompressed.
#[derive(Debug)]
pub struct Recovered {
    /// The decompressed file (unlinked: it goes when it is closed).
    pub file: File,
    /// The `.gz` it came from.
    pub gz: PathBuf,
    /// When the `.gz` was last modified (the reader drains older rotated files first).
    pub modified: Option<SystemTime>,
    /// The `.gz` ended early (it was cut, or is corrupt past the checkpoint): the reason.
    pub cut_short: Option<String>,
}

/// Why a `.gz` could not be decompressed into the state directory.
#[derive(Debug, thiserror::Error)]
pub enum CompressedError {
    #[error("cannot decompress {gz} into {dir}")]
    Scratch {
        gz: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The `.gz` beside `checkpoint.path` that holds the file `key` was, decompressed into an
/// unlinked file in `scratch` (the state directory); `None` if no `.gz` there matches.
pub fn recover(
    checkpoint: &Checkpoint,
    key: FileKey,
    scratch: &Path,
) -> Result<Option<Recovered>, CompressedError> {
    let Some(head) = checkpoint.fingerprint else {
        return Ok(None);
    };
    for (gz, modified) in candidates(&checkpoint.path) {
        if !starts_with(&gz, head) {
            continue;
        }
        let file = scratch_file(&gz, key, scratch)?;
        let scratch_error = |source| CompressedError::Scratch {
            gz: gz.clone(),
            dir: scratch.to_path_buf(),
            source,
        };
        match decompress(&gz, head, checkpoint.offset, &file).map_err(scratch_error)? {
            Some(cut_short) => {
                return Ok(Some(Recovered {
                    file,
                    gz,
                    modified,
                    cut_short,
                }));
            }
            // Shorter than the checkpoint: another file with the same head.
            None => continue,
        }
    }
    Ok(None)
}

/// The whole of `gz` (a rotated file the agent never saw, keyed `key`), decompressed into an
/// unlinked file in `scratch`; and why it ended early, if it did.
pub fn decompress_whole(
    gz: &Path,
    key: FileKey,
    scratch: &Path,
) -> Result<(File, Option<String>), CompressedError> {
    let file = scratch_file(gz, key, scratch)?;
    let none = Fingerprint { hash: 0, len: 0 };
    let ended = decompress(gz, none, 0, &file).map_err(|source| CompressedError::Scratch {
        gz: gz.to_path_buf(),
        dir: scratch.to_path_buf(),
        source,
    })?;
    Ok((file, ended.flatten()))
}

/// A new file in `scratch` for the decompressed `gz`, unlinked at once: nothing is left
/// behind, whatever happens next.
fn scratch_file(gz: &Path, key: FileKey, scratch: &Path) -> Result<File, CompressedError> {
    let scratch_error = |source| CompressedError::Scratch {
        gz: gz.to_path_buf(),
        dir: scratch.to_path_buf(),
        source,
    };
    let name = scratch.join(format!(".gunzip-{:x}-{:x}", key.dev, key.ino));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&name)
        .map_err(scratch_error)?;
    std::fs::remove_file(&name).map_err(scratch_error)?;
    Ok(file)
}

/// The `.gz` files beside `path`, most recently modified first.
fn candidates(path: &Path) -> Vec<(PathBuf, Option<SystemTime>)> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, Option<SystemTime>)> = entries
        .flatten()
        .filter(|e| e.file_name().as_encoded_bytes().ends_with(b".gz"))
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some((e.path(), meta.modified().ok()))
        })
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.1));
    found
}

/// Whether the decompressed `gz` starts with the bytes `head` was taken from.
pub fn starts_with(gz: &Path, head: Fingerprint) -> bool {
    let Ok(file) = File::open(gz) else {
        return false;
    };
    let mut bytes = vec![0; head.len as usize];
    MultiGzDecoder::new(file).read_exact(&mut bytes).is_ok()
        && identity::matches_bytes(&bytes, head)
}

/// Decompresses `gz` into `out`: its head, then its bytes from `offset` on at their offsets.
/// `None` if it is shorter than `offset`; `Some(reason)` if it ended in an error past it.
fn decompress(
    gz: &Path,
    head: Fingerprint,
    offset: u64,
    out: &File,
) -> std::io::Result<Option<Option<String>>> {
    let mut reader = MultiGzDecoder::new(File::open(gz)?);
    let mut buf = vec![0; CHUNK];
    let mut at: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) if at >= offset => return Ok(Some(Some(err.to_string()))),
            Err(_) => return Ok(None),
        };
        let chunk = &buf[..n];
        let end = at + n as u64;
        // The head (for the fingerprint) and what lies past the checkpoint are kept.
        for (from, to) in [(0, u64::from(head.len)), (offset, u64::MAX)] {
            let (lo, hi) = (at.max(from), end.min(to));
            if lo < hi {
                out.write_all_at(&chunk[(lo - at) as usize..(hi - at) as usize], lo)?;
            }
        }
        at = end;
    }
    if at < offset {
        return Ok(None);
    }
    // The file is as long as the decompressed stream (a hole where the spooled bytes were).
    out.set_len(at)?;
    Ok(Some(None))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    #[test]
    fn a_gzipped_rotated_file_is_found_and_read_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let text: Vec<u8> = (0..5000)
            .flat_map(|i| format!("2026-12-07T05:00:00Z stdout F line {i}\n").into_bytes())
            .collect();
        std::fs::write(&path, &text).unwrap();
        let original = File::open(&path).unwrap();
        let head = identity::fingerprint(&original, true).unwrap().unwrap();
        // Another rotated file, with another head, beside it.
        for (name, bytes) in [
            ("0.log.20261207-050000.gz", &text[..]),
            ("0.log.20261207-040000.gz", &b"older\n"[..]),
        ] {
            let mut gz = GzEncoder::new(
                File::create(dir.path().join(name)).unwrap(),
                Compression::fast(),
            );
            gz.write_all(bytes).unwrap();
            gz.finish().unwrap();
        }
        let offset = 100_000;
        let checkpoint = Checkpoint {
            offset,
            generation: 0,
            fingerprint: Some(head),
            path: path.clone(),
            finished: false,
            mid_event: false,
        };
        std::fs::remove_file(&path).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let key = FileKey { dev: 1, ino: 2 };
        let found = recover(&checkpoint, key, scratch.path())
            .unwrap()
            .expect("found");
        assert!(found.gz.ends_with("0.log.20261207-050000.gz"));
        assert!(found.cut_short.is_none());
        assert_eq!(found.file.metadata().unwrap().len(), text.len() as u64);
        assert!(identity::matches(&found.file, head).unwrap());
        let mut rest = vec![0; text.len() - offset as usize];
        found.file.read_exact_at(&mut rest, offset).unwrap();
        assert_eq!(rest, &text[offset as usize..]);
        // Nothing is left in the state directory.
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
        // A checkpoint past the end: not this file.
        let past = Checkpoint {
            offset: text.len() as u64 + 1,
            ..checkpoint
        };
        assert!(recover(&past, key, scratch.path()).unwrap().is_none());
    }
}
