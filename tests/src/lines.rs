//! Test lines, envelopes, and reading what a collector wrote.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logship_config::{Envelope, FileId};

/// The text of test line `i` of a source: distinct, sortable, with some padding.
pub fn text(source: &str, i: usize) -> Vec<u8> {
    format!("{source} line {i:08} lorem ipsum dolor sit amet").into_bytes()
}

/// Envelopes for lines `range` of one source file, with offsets as the agent would give them.
pub fn envelopes(host: &str, path: &str, ino: u64, range: std::ops::Range<usize>) -> Vec<Envelope> {
    let mut offset: u64 = (0..range.start)
        .map(|i| text(path, i).len() as u64 + 1)
        .sum();
    range
        .map(|i| {
            let line = text(path, i);
            let envelope = Envelope {
                host: host.to_string(),
                path: path.to_string(),
                file: FileId {
                    dev: 1,
                    ino,
                    fp: 0xfeed_f00d,
                },
                generation: 0,
                offset,
                timestamp_ms: 1_764_028_800_000,
                line,
            };
            offset += envelope.line.len() as u64 + 1;
            envelope
        })
        .collect()
}

/// Where a collector writes `(host, path)`.
pub fn output_file(output_dir: &Path, host: &str, path: &str) -> PathBuf {
    output_dir.join(host).join(path.trim_start_matches('/'))
}

/// The lines of a file (without newlines); empty if it does not exist.
pub fn read_lines(path: &Path) -> Vec<Vec<u8>> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
}

/// Waits until `path` holds at least `n` lines, and returns them.
pub fn wait_for_lines(path: &Path, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = read_lines(path);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts `actual` is exactly `expected`, reporting the first difference, not 100k lines.
pub fn assert_same_lines(actual: &[Vec<u8>], expected: &[Vec<u8>], what: &str) {
    if let Some(i) = (0..actual.len().min(expected.len())).find(|&i| actual[i] != expected[i]) {
        panic!(
            "{what}: line {i} differs: got {:?}, expected {:?}",
            String::from_utf8_lossy(&actual[i]),
            String::from_utf8_lossy(&expected[i])
        );
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} lines, expected {}",
        actual.len(),
        expected.len()
    );
}
