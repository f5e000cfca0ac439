//! Drop ranges, their markers, and `drop_oldest` carrying every drop to the collector.

use logship_config::agent::WhenFull;
use logship_runtime::FileId;

use super::*;

const FILE: FileId = FileId {
    dev: 1,
    ino: 2,
    fp: 3,
};

fn message(path: &str, ino: u64, offset: u64, line: &str) -> Message {
    let envelope = EnvelopeRef {
        host: "h",
        path,
        file: FileId { ino, ..FILE },
        generation: 0,
        offset,
        timestamp_ms: 0,
        line: line.as_bytes(),
        fields: &BTreeMap::new(),
        kind: SourceKind::File,
    };
    Message::of(&envelope)
}

fn spans(ranges: &[DroppedRange]) -> Vec<(&str, u64, u64, u64, Cause)> {
    ranges
        .iter()
        .map(|r| (r.path.as_str(), r.from, r.to, r.lines, r.cause))
        .collect()
}

/// The ranges the markers among `messages` give up, merged.
fn given_up(messages: &[Message]) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    let mut all: Vec<(u64, u64)> = messages
        .iter()
        .filter_map(|message| Envelope::from_json(&message.body).ok())
        .filter(|e| matches!(e.kind, SourceKind::Dropped { .. }))
        .map(|e| e.extent())
        .collect();
    all.sort_unstable();
    for (from, to) in all {
        match merged.last_mut() {
            Some(last) if last.1 >= from => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

#[test]
fn lines_of_each_file_merge_into_ranges_by_cause() {
    let mut ranges = Vec::new();
    let lines = add(
        &mut ranges,
        &[
            message("/a", 1, 0, "abc"),
            message("/b", 2, 10, "x"),
            message("/a", 1, 4, "de"),
        ],
        true,
    );
    assert_eq!(lines, 3);
    add(
        &mut ranges,
        &[message("/a", 1, 7, "f"), message("/a", 1, 20, "g")],
        false,
    );
    assert_eq!(
        spans(&ranges),
        [
            ("/a", 0, 7, 2, Cause::Unconfirmed),
            ("/b", 10, 12, 1, Cause::Unconfirmed),
            ("/a", 7, 9, 1, Cause::Unpublished),
            ("/a", 20, 22, 1, Cause::Unpublished),
        ]
    );
    // One marker per contiguous piece, whatever the causes.
    let markers = markers(&ranges, 5);
    let pieces: Vec<(String, (u64, u64))> = markers
        .iter()
        .map(|message| Envelope::from_json(&message.body).unwrap())
        .map(|e| (e.path.clone(), e.extent()))
        .collect();
    assert_eq!(
        pieces,
        [
            ("/a".to_string(), (0, 9)),
            ("/a".to_string(), (20, 22)),
            ("/b".to_string(), (10, 12))
        ]
    );
    // A dropped marker is carried, merged with the lines that continue it, and not counted.
    let mut carried = Vec::new();
    let lines = add(
        &mut carried,
        &[markers[0].clone(), message("/a", 1, 9, "hij")],
        false,
    );
    assert_eq!(lines, 1);
    assert_eq!(
        spans(&carried),
        [
            ("/a", 0, 9, 0, Cause::Marker),
            ("/a", 9, 13, 1, Cause::Unpublished)
        ]
    );
    assert_eq!(given_up(&super::markers(&carried, 6)), [(0, 13)]);
}

/// Ten lines of `/a` from line `first` on, each 9 bytes and a newline.
fn ten(first: u64) -> Vec<Message> {
    (first..first + 10)
        .map(|i| message("/a", 1, i * 10, "123456789"))
        .collect()
}

#[test]
fn drop_oldest_carries_every_drop_in_markers_that_survive_a_reopen_and_their_own_drop() {
    let dir = tempfile::tempdir().unwrap();
    let segment = {
        let probe = Spool::open(&dir.path().join("probe"), 1 << 20, WhenFull::Block).unwrap();
        probe.append(&ten(0), &[]).unwrap();
        probe.bytes()
    };
    // Room for two segments of lines and their markers.
    let spool = Spool::open(dir.path(), 2 * segment + 700, WhenFull::DropOldest).unwrap();
    spool.append(&ten(0), &[]).unwrap();
    spool.append(&ten(10), &[]).unwrap();
    // The publisher loaded the first segment: what is dropped of it may have been delivered.
    assert_eq!(spool.page(0, 1).unwrap().len(), 1);
    let mut logged = Vec::new();
    for first in (20..100).step_by(10) {
        let dropped = spool.append(&ten(first), &[]).unwrap();
        logged.extend(dropped.ranges);
    }
    assert_eq!(spool.dropped(), 80, "eight segments of lines dropped");
    let said: Vec<_> = logged.iter().filter(|r| r.cause != Cause::Marker).collect();
    assert_eq!(
        (said[0].from, said[0].to, said[0].cause),
        (0, 100, Cause::Unconfirmed)
    );
    assert!(said[1..].iter().all(|r| r.cause == Cause::Unpublished));
    assert_eq!(said.last().map(|r| r.to), Some(800));
    // The spool holds lines 800.. and markers giving up all of 0..800, markers first.
    let check = |spool: &Spool| {
        let all: Vec<Message> = spool
            .page(0, 100)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.lines)
            .collect();
        assert_eq!(given_up(&all), [(0, 800)]);
        let first_line = all
            .iter()
            .map(|message| Envelope::from_json(&message.body).unwrap())
            .find(|e| e.kind == SourceKind::File)
            .unwrap();
        assert_eq!(first_line.offset, 800);
        assert!(spool.bytes() <= 2 * segment + 700);
    };
    check(&spool);
    drop(spool);
    let spool = Spool::open(dir.path(), 2 * segment + 700, WhenFull::DropOldest).unwrap();
    check(&spool);
}

#[test]
fn dropped_journal_entries_travel_as_a_marker_in_sequence_numbers() {
    let entry = |seqnum: u64, skipped: u64| {
        let envelope = EnvelopeRef {
            host: "h",
            path: "journal",
            file: FILE,
            generation: 0,
            offset: seqnum,
            timestamp_ms: 0,
            line: b"started",
            fields: &BTreeMap::new(),
            kind: SourceKind::Journal { skipped },
        };
        Message::of(&envelope)
    };
    let mut ranges = Vec::new();
    // Entries 10 (after 3 of other units) and 11.
    add(&mut ranges, &[entry(10, 3), entry(11, 0)], false);
    assert_eq!(spans(&ranges), [("journal", 7, 12, 2, Cause::Unpublished)]);
    assert_eq!(ranges[0].unit(), "sequence numbers");
    let marker = Envelope::from_json(&markers(&ranges, 0)[0].body).unwrap();
    assert_eq!(
        marker.kind,
        SourceKind::Dropped {
            lost: 5,
            journal: true
        }
    );
    assert_eq!(marker.extent(), (7, 12));
}
