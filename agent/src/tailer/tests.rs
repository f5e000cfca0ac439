//! The tailer's unit tests: line cutting, parts, ids, truncation.

use std::io::{Seek, Write};

use logship_runtime::Envelope;

use super::*;

fn tailer(file: &File, max_line: usize) -> Tailer {
    let checkpoint = Checkpoint::start(Path::new("/t.log"));
    Tailer::new(
        Path::new("/t.log"),
        file.try_clone().unwrap(),
        FileKey { dev: 1, ino: 2 },
        &checkpoint,
        Arc::new(LineRules::plain(max_line)),
    )
}

fn lines(out: &[Message]) -> Vec<(u64, Vec<u8>)> {
    out.iter()
        .map(|Message { body: json, .. }| {
            let e = Envelope::from_json(json).unwrap();
            (e.offset, e.line)
        })
        .collect()
}

#[test]
fn partial_lines_wait_for_their_newline() {
    let mut file = tempfile::tempfile().unwrap();
    let mut t = tailer(&file, 1 << 20);
    let mut out = Vec::new();
    file.write_all(b"one\ntw").unwrap();
    t.read("h", usize::MAX, &mut out).unwrap();
    assert_eq!(lines(&out), [(0, b"one".to_vec())]);
    assert_eq!(t.checkpoint().offset, 4);
    file.write_all(b"o\r\n\xff\xfe\n").unwrap();
    t.read("h", usize::MAX, &mut out).unwrap();
    assert_eq!(
        lines(&out),
        [
            (0, b"one".to_vec()),
            (4, b"two\r".to_vec()),
            (9, b"\xff\xfe".to_vec())
        ]
    );
    assert_eq!(t.checkpoint().offset, 12);
}

#[test]
fn long_lines_are_split_into_parts() {
    let mut file = tempfile::tempfile().unwrap();
    let mut t = tailer(&file, 4);
    let mut out = Vec::new();
    file.write_all(b"abcdefghij\nxy\nabcd\n").unwrap();
    t.read("h", usize::MAX, &mut out).unwrap();
    assert_eq!(
        lines(&out),
        [
            (0, b"abcd".to_vec()),
            (4, b"efgh".to_vec()),
            (8, b"ij".to_vec()),
            (11, b"xy".to_vec()),
            (14, b"abcd".to_vec()),
        ]
    );
    assert_eq!(t.checkpoint().offset, 19);
}

#[test]
fn a_part_cut_does_not_depend_on_read_boundaries() {
    let mut file = tempfile::tempfile().unwrap();
    let mut t = tailer(&file, 4);
    let mut out = Vec::new();
    file.write_all(b"abcd").unwrap();
    t.read("h", usize::MAX, &mut out).unwrap();
    assert!(out.is_empty());
    file.write_all(
        b"
efghi
",
    )
    .unwrap();
    t.read("h", usize::MAX, &mut out).unwrap();
    assert_eq!(
        lines(&out),
        [
            (0, b"abcd".to_vec()),
            (5, b"efgh".to_vec()),
            (9, b"i".to_vec())
        ]
    );
}

#[test]
fn ids_are_the_same_when_read_again() {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(b"a\nb\n").unwrap();
    let (mut first, mut again) = (Vec::new(), Vec::new());
    tailer(&file, 100)
        .read("h", usize::MAX, &mut first)
        .unwrap();
    tailer(&file, 100)
        .read("h", usize::MAX, &mut again)
        .unwrap();
    let ids = |out: &[Message]| {
        out.iter()
            .map(|message| message.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&again));
}

#[test]
fn truncation_is_detected_and_starts_a_generation() {
    let mut file = tempfile::tempfile().unwrap();
    let mut t = tailer(&file, 100);
    let mut out = Vec::new();
    file.write_all(b"first\nsecond\n").unwrap();
    t.read("h", usize::MAX, &mut out).unwrap();
    assert!(!t.truncated().unwrap());
    file.set_len(0).unwrap();
    file.rewind().unwrap();
    assert!(t.truncated().unwrap());
    t.restart();
    file.write_all(b"new\n").unwrap();
    out.clear();
    t.read("h", usize::MAX, &mut out).unwrap();
    let e = Envelope::from_json(&out[0].body).unwrap();
    assert_eq!(
        (e.generation, e.offset, e.line.as_slice()),
        (1, 0, &b"new"[..])
    );
}

/// The loss marker in `out`, if any: (offset, lost bytes).
fn marker(out: &[Message]) -> Option<(u64, u64)> {
    out.iter().find_map(|Message { body: json, .. }| {
        let e = Envelope::from_json(json).unwrap();
        match e.kind {
            logship_runtime::SourceKind::Lost { bytes } => Some((e.offset, bytes)),
            _ => None,
        }
    })
}

/// Truncates `file` to nothing, as a copytruncate does.
fn truncate(file: &mut File) {
    file.set_len(0).unwrap();
    file.rewind().unwrap();
}

#[test]
fn bytes_seen_but_never_read_before_a_truncation_get_a_loss_marker() {
    let mut file = tempfile::tempfile().unwrap();
    let mut t = tailer(&file, 100);
    let mut out = Vec::new();
    file.write_all(b"first\nsecond\n").unwrap();
    t.read("h", usize::MAX, &mut out).unwrap();
    t.spooled();
    // Seen at 28 bytes, read to 13, then truncated.
    file.write_all(b"third\nfourth\nfi").unwrap();
    assert!(!t.truncated().unwrap());
    truncate(&mut file);
    assert!(t.truncated().unwrap());
    out.clear();
    assert_eq!(t.mark_lost("h", &mut out).unwrap(), Some((13, 28)));
    assert_eq!(marker(&out), Some((28, 15)));
    let e = Envelope::from_json(&out[0].body).unwrap();
    assert_eq!((e.generation, e.line.len()), (0, 0));
    // Sent again after a rewind (a failed spool write), with the same id.
    let id = out[0].id.clone();
    t.restart();
    t.rewind();
    assert!(t.truncated().unwrap());
    out.clear();
    assert_eq!(t.mark_lost("h", &mut out).unwrap(), Some((13, 28)));
    assert_eq!(out[0].id, id);
}

#[test]
fn a_truncation_after_everything_seen_was_read_loses_nothing_provable() {
    let mut file = tempfile::tempfile().unwrap();
    let mut t = tailer(&file, 100);
    let mut out = Vec::new();
    file.write_all(b"first\nlast without newline").unwrap();
    assert!(!t.truncated().unwrap());
    t.read("h", usize::MAX, &mut out).unwrap();
    truncate(&mut file);
    assert!(t.truncated().unwrap());
    out.clear();
    assert_eq!(t.mark_lost("h", &mut out).unwrap(), None);
    assert!(out.is_empty());
    // The last line is still shipped as the file's last.
    t.ship_partial("h", &mut out).unwrap();
    assert_eq!(lines(&out), [(6, b"last without newline".to_vec())]);
}

#[test]
fn a_lost_partial_line_is_dropped_and_the_hole_starts_where_the_last_claim_ends() {
    // A line whose rest is lost: dropped, its bytes are part of the hole.
    let mut file = tempfile::tempfile().unwrap();
    let mut t = tailer(&file, 100);
    let mut out = Vec::new();
    file.write_all(b"one\ntw").unwrap();
    t.read("h", usize::MAX, &mut out).unwrap();
    file.write_all(b"o\nthree\n").unwrap();
    assert!(!t.truncated().unwrap());
    truncate(&mut file);
    assert!(t.truncated().unwrap());
    out.clear();
    assert_eq!(t.mark_lost("h", &mut out).unwrap(), Some((4, 14)));
    assert_eq!(lines(&out), [(14, Vec::new())]);
    // A part of a split line claims the first byte of the next: the hole starts after it.
    let mut file = tempfile::tempfile().unwrap();
    let mut t = tailer(&file, 4);
    out.clear();
    file.write_all(b"abcdefg").unwrap();
    t.read("h", usize::MAX, &mut out).unwrap();
    assert_eq!(lines(&out), [(0, b"abcd".to_vec())]);
    file.write_all(b"hij\n").unwrap();
    assert!(!t.truncated().unwrap());
    truncate(&mut file);
    assert!(t.truncated().unwrap());
    out.clear();
    assert_eq!(t.mark_lost("h", &mut out).unwrap(), Some((5, 11)));
}

#[test]
fn a_file_rewritten_in_place_past_the_offset_is_not_seen_as_larger() {
    let mut file = tempfile::tempfile().unwrap();
    let mut t = tailer(&file, 100);
    let mut out = Vec::new();
    file.write_all(b"first\n").unwrap();
    t.read("h", usize::MAX, &mut out).unwrap();
    assert!(!t.truncated().unwrap());
    // Another head, longer than what was read: a new generation, not lost bytes of the old.
    truncate(&mut file);
    file.write_all(b"other head\nand more\n").unwrap();
    assert!(t.truncated().unwrap());
    assert_eq!(t.mark_lost("h", &mut out).unwrap(), None);
}
