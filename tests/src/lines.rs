//! Test lines, envelopes, and reading what a collector wrote.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logship_runtime::{Envelope, FileId};

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
                fields: Default::default(),
                kind: Default::default(),
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

/// Appends lines `range` of `source` to `file` in one write, as a logger holding its descriptor
/// does (the write lands wherever the descriptor's file now is: renamed, truncated or deleted).
pub fn write_lines(file: &mut std::fs::File, source: &str, range: std::ops::Range<usize>) {
    use std::io::Write as _;
    let mut buf = Vec::new();
    for i in range {
        buf.extend_from_slice(&text(source, i));
        buf.push(b'\n');
    }
    file.write_all(&buf).expect("write test lines");
}

/// Opens `path` for appending, creating it.
pub fn open_append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log for appending")
}

/// Appends lines `range` of `source` to `path`.
pub fn append(path: &Path, source: &str, range: std::ops::Range<usize>) {
    write_lines(&mut open_append(path), source, range);
}

/// Lines `range` of `source`, as [`append`] writes them.
pub fn expected(source: &str, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| text(source, i)).collect()
}

/// Waits until `path` is as long as `expected` written one per line, or has not grown for
/// `stall`, or `timeout` passed; returns its lines. Watching the size is cheap, so a file of
/// 200k lines is not read and split 20 times a second while the daemons need the CPU; the
/// stall ends the wait early when lines were lost, instead of waiting out the whole timeout.
pub fn wait_for_delivery(
    path: &Path,
    expected: &[Vec<u8>],
    stall: Duration,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let want: u64 = expected.iter().map(|l| l.len() as u64 + 1).sum();
    let deadline = Instant::now() + timeout;
    let (mut last_len, mut last_growth) = (0, Instant::now());
    loop {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len != last_len {
            (last_len, last_growth) = (len, Instant::now());
        }
        if len >= want || last_growth.elapsed() > stall || Instant::now() > deadline {
            return read_lines(path);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints how many of `expected` arrived, were lost and were duplicated (what a note on a
/// failing run needs), then asserts every line arrived once, in order.
pub fn assert_delivered_once_in_order(actual: &[Vec<u8>], expected: &[Vec<u8>], what: &str) {
    let mut seen: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for line in actual {
        *seen.entry(line.as_slice()).or_default() += 1;
    }
    let lost = expected
        .iter()
        .filter(|l| !seen.contains_key(l.as_slice()))
        .count();
    let duplicated: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{what}: written={} arrived={} lost={lost} duplicated={duplicated}",
        expected.len(),
        actual.len()
    );
    assert_same_lines(actual, expected, what);
}
