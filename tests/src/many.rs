//! Many files at once (the descriptor budget's tests and benchmark): files `f00000.log`... with
//! lines of their own, waiting until a collector holds every one, and checking each.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fixture::Collector;
use crate::lines::{append, expected, read_lines, text};

/// The source name of file `i`: its lines are texts no other file has.
pub fn source(i: usize) -> String {
    format!("f{i:05}")
}

/// Creates `n` files `f00000.log`... in `dir`, each with lines `0..lines` of its source.
pub fn create_files(dir: &Path, n: usize, lines: usize) -> Vec<PathBuf> {
    create_range(dir, 0..n, lines)
}

/// Creates the files of sources `range` in `dir` (as [`create_files`] names them), each with
/// lines `0..lines` of its source.
pub fn create_range(dir: &Path, range: std::ops::Range<usize>, lines: usize) -> Vec<PathBuf> {
    range
        .map(|i| {
            let path = dir.join(format!("{}.log", source(i)));
            append(&path, &source(i), 0..lines);
            path
        })
        .collect()
}

/// Bytes of lines `0..n` of `source`, one per line.
fn length(source: &str, n: usize) -> u64 {
    (0..n).map(|i| text(source, i).len() as u64 + 1).sum()
}

/// Waits until the collector's copy (for `host`) of every file `files[i]` holds `counts[i]`
/// lines, judged by size (cheap); `look` runs on each look. Returns how long it took, or the
/// index of the first incomplete file after `timeout`.
pub fn wait_all(
    collector: &Collector,
    host: &str,
    files: &[PathBuf],
    counts: &[usize],
    timeout: Duration,
    mut look: impl FnMut(),
) -> Result<Duration, usize> {
    let started = Instant::now();
    let mut first_missing = 0;
    loop {
        look();
        while first_missing < files.len() {
            let out = collector.file(host, &files[first_missing]);
            let len = std::fs::metadata(&out).map_or(0, |m| m.len());
            if len < length(&source(first_missing), counts[first_missing]) {
                break;
            }
            first_missing += 1;
        }
        if first_missing == files.len() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(first_missing);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The first file whose copy is not exactly its lines `0..counts[i]`, once each, in order.
pub fn first_wrong(
    collector: &Collector,
    host: &str,
    files: &[PathBuf],
    counts: &[usize],
) -> Option<PathBuf> {
    files.iter().enumerate().find_map(|(i, path)| {
        let lines = read_lines(&collector.file(host, path));
        (lines != expected(&source(i), 0..counts[i])).then(|| path.clone())
    })
}
