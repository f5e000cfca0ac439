use super::*;

const S: SourceHash = 7;

fn ranges(list: &[(u64, u64)]) -> Ranges {
    let mut r = Ranges::default();
    list.iter().for_each(|&(s, e)| r.insert(s, e, 0));
    r
}

fn spans(r: &Ranges) -> Vec<(u64, u64)> {
    r.0.iter().map(|r| (r.start, r.end)).collect()
}

fn line(source: SourceHash, offset: u64, len: usize) -> Claim {
    Claim::line(source, offset, len)
}

fn commit(positions: &mut Positions, claims: &[Claim], now_ms: i64) -> bool {
    let staged = positions.stage(claims.iter().copied(), now_ms, 1000);
    positions.apply(staged, now_ms)
}

#[test]
fn ranges_merge_when_they_touch_or_overlap() {
    assert_eq!(spans(&ranges(&[(0, 5), (5, 9)])), [(0, 9)]);
    assert_eq!(
        spans(&ranges(&[(10, 20), (0, 5), (30, 40)])),
        [(0, 5), (10, 20), (30, 40)]
    );
    assert_eq!(
        spans(&ranges(&[(10, 20), (0, 5), (30, 40), (4, 31)])),
        [(0, 40)]
    );
    assert_eq!(spans(&ranges(&[(10, 20), (12, 15)])), [(10, 20)]);
    assert_eq!(spans(&ranges(&[(10, 20), (3, 3)])), [(10, 20)]);
    let r = ranges(&[(0, 10), (20, 30)]);
    assert!(r.contains(0, 10) && r.contains(22, 25) && r.contains(20, 30));
    assert!(!r.contains(5, 11) && !r.contains(10, 11) && !r.contains(9, 21) && !r.contains(30, 31));
}

#[test]
fn a_hole_keeps_its_age_when_it_shrinks_or_splits_and_a_new_one_is_new() {
    let mut r = Ranges::default();
    r.insert(0, 10, 1);
    r.insert(50, 60, 2);
    assert_eq!(r.holes().collect::<Vec<_>>(), [(10, 50, 2)]);
    r.insert(20, 30, 3);
    assert_eq!(r.holes().collect::<Vec<_>>(), [(10, 20, 2), (30, 50, 2)]);
    r.insert(30, 45, 4);
    assert_eq!(r.holes().collect::<Vec<_>>(), [(10, 20, 2), (45, 50, 2)]);
    r.insert(70, 80, 5);
    assert_eq!(r.holes().last(), Some((60, 70, 5)));
    // Below the lowest range: the hole above it opens now.
    let mut low = Ranges::default();
    low.insert(100, 110, 1);
    low.insert(0, 10, 9);
    assert_eq!(low.holes().collect::<Vec<_>>(), [(10, 100, 9)]);
    // Filled: gone.
    low.insert(10, 100, 10);
    assert_eq!(low.holes().count(), 0);
}

#[test]
fn lines_in_any_order_make_one_range_and_split_parts_are_not_duplicates() {
    // "abcd|efgh|ij\n" split in parts of 4 at 0, 4, 8; then "xy\n" at 11.
    let lines = [(8, 2), (0, 4), (11, 2), (4, 4)];
    let mut positions = Positions::default();
    for (i, &(offset, len)) in lines.iter().enumerate() {
        assert!(
            !positions.covers(&line(S, offset, len)),
            "line {i} before commit"
        );
        commit(&mut positions, &[line(S, offset, len)], 0);
        assert!(positions.covers(&line(S, offset, len)));
    }
    assert_eq!(spans(&positions.sources[&S].ranges), [(0, 14)]);
    assert!(positions.holes().is_empty());
    // The part at 4 is not covered by the part at 0 alone.
    let mut only_first = Positions::default();
    commit(&mut only_first, &[line(S, 0, 4)], 0);
    assert!(!only_first.covers(&line(S, 4, 4)) && !only_first.covers(&line(S + 1, 0, 4)));
    // An empty line right after a line is its own line.
    assert!(!positions.covers(&line(S, 14, 0)));
}

#[test]
fn holes_are_listed_with_their_kind_and_disappear_when_filled() {
    let mut positions = Positions::default();
    assert!(
        !commit(&mut positions, &[line(S, 0, 9)], 1),
        "in order: no hole"
    );
    assert!(commit(&mut positions, &[line(S, 30, 9)], 2));
    let journal = Claim {
        source: 9,
        start: 5,
        end: 6,
        kind: OffsetKind::Sequence,
        given_up: false,
    };
    commit(
        &mut positions,
        &[
            journal,
            Claim {
                start: 8,
                end: 9,
                ..journal
            },
        ],
        3,
    );
    let mut holes = positions.holes();
    holes.sort_by_key(|h| h.source);
    assert_eq!(
        holes,
        [
            Hole {
                source: S,
                kind: OffsetKind::Bytes,
                start: 10,
                end: 30,
                since_ms: 2
            },
            Hole {
                source: 9,
                kind: OffsetKind::Sequence,
                start: 6,
                end: 8,
                since_ms: 3
            },
        ]
    );
    assert!(
        commit(&mut positions, &[line(S, 10, 19)], 4),
        "a late resend fills it"
    );
    assert_eq!(positions.holes().len(), 1);
}

#[test]
fn a_source_full_of_gaps_keeps_only_its_highest_ranges() {
    let mut positions = Positions::default();
    let lines: Vec<Claim> = (0..MAX_RANGES as u64 + 10)
        .map(|i| line(S, i * 100, 9))
        .collect();
    commit(&mut positions, &lines, 0);
    assert_eq!(positions.sources[&S].ranges.len(), MAX_RANGES);
    assert!(!positions.covers(&line(S, 900, 9)) && positions.covers(&line(S, 1000, 9)));
    assert!(positions.covers(&line(S, (MAX_RANGES as u64 + 9) * 100, 9)));
}

#[test]
fn staging_changes_nothing_until_applied_and_idle_sources_are_forgotten() {
    let mut positions = Positions::default();
    commit(&mut positions, &[line(1, 0, 9), line(2, 0, 9)], 0);
    let staged = positions.stage([line(2, 10, 9)].into_iter(), 70_000, 1000);
    assert!(!positions.covers(&line(2, 10, 9)));
    assert_eq!(staged.forgotten, [1]);
    assert_eq!(staged.updates.len(), 1);
    assert!(staged.new.is_empty());
    positions.apply(staged, 70_000);
    assert!(positions.covers(&line(2, 10, 9)) && !positions.covers(&line(1, 0, 9)));
    assert_eq!(positions.len(), 1);
}

#[test]
fn records_round_trip_old_ones_read_as_bytes_and_garbage_is_skipped() {
    let mut positions = Positions::default();
    let journal = Claim {
        source: S + 1,
        start: 3,
        end: 4,
        kind: OffsetKind::Sequence,
        given_up: false,
    };
    let staged = positions.stage(
        [line(S, 0, 9), line(S, 100, 9), journal].into_iter(),
        5,
        1000,
    );
    assert_eq!(staged.new.len(), 2);
    // A record as an older version wrote it: last_ms, then start and end per range.
    let old: Vec<u8> = [
        5i64.to_be_bytes(),
        0u64.to_be_bytes(),
        10u64.to_be_bytes(),
        20u64.to_be_bytes(),
        30u64.to_be_bytes(),
    ]
    .concat();
    let records: Vec<(Vec<u8>, Vec<u8>)> = staged
        .updates
        .iter()
        .map(|(hash, value)| (hash.to_be_bytes().to_vec(), value.clone()))
        .chain([
            (vec![1, 2], vec![]),
            ((S + 2).to_be_bytes().to_vec(), vec![0; 9 + 24]),
            ((S + 3).to_be_bytes().to_vec(), old),
        ])
        .collect();
    positions.apply(staged, 5);
    let loaded = Positions::load(records.into_iter());
    assert_eq!(loaded.sources[&S].ranges, positions.sources[&S].ranges);
    assert_eq!(loaded.sources[&S].last_ms, 5);
    assert_eq!(loaded.sources[&(S + 1)].kind, OffsetKind::Sequence);
    assert_eq!(loaded.len(), 3);
    let mut holes = loaded.holes();
    holes.sort_by_key(|h| h.source);
    assert_eq!(
        holes[0],
        Hole {
            source: S,
            kind: OffsetKind::Bytes,
            start: 10,
            end: 100,
            since_ms: 5
        }
    );
    assert_eq!(
        holes[1],
        Hole {
            source: S + 3,
            kind: OffsetKind::Bytes,
            start: 10,
            end: 20,
            since_ms: 5
        }
    );
}

#[test]
fn the_source_hash_is_the_message_id_without_its_offset() {
    let a = source_hash("web-1", 1, 2, 3, 0);
    assert_eq!(a, crate::commit::seen::hash("1.2.0000000000000003.0@web-1"));
    assert_ne!(a, source_hash("web-1", 1, 2, 3, 1));
    assert_ne!(a, source_hash("web-2", 1, 2, 3, 0));
}

#[test]
fn the_id_hash_is_the_hash_of_the_envelopes_message_id() {
    let envelope = logship_runtime::Envelope {
        host: "web-1".into(),
        path: "/var/log/app.log".into(),
        file: logship_runtime::FileId {
            dev: 0x801,
            ino: 0x83,
            fp: 0xc0ffee,
        },
        generation: 2,
        offset: 0x400,
        timestamp_ms: 0,
        line: b"x".to_vec(),
        fields: Default::default(),
        kind: Default::default(),
    };
    let (source, id) = super::hashes("web-1", 0x801, 0x83, 0xc0ffee, 2, Some(0x400));
    assert_eq!(id, crate::commit::seen::hash(&envelope.message_id()));
    assert_eq!(source, source_hash("web-1", 0x801, 0x83, 0xc0ffee, 2));
}

#[test]
fn lines_after_a_hole_change_no_hole() {
    let mut positions = Positions::default();
    commit(&mut positions, &[line(S, 0, 9)], 1);
    assert!(commit(&mut positions, &[line(S, 30, 9)], 2));
    assert!(!commit(&mut positions, &[line(S, 40, 9)], 3));
}

#[test]
fn given_up_ranges_are_holes_also_below_the_first_committed_byte_until_they_arrive() {
    let mut positions = Positions::default();
    // A drop marker gives up [0, 40) (the file's head) and [60, 80); the lines at 40..60 and
    // 80..90 arrived.
    assert!(commit(
        &mut positions,
        &[
            Claim::given_up(S, 0, 40),
            line(S, 40, 19),
            Claim::given_up(S, 60, 80),
            line(S, 80, 9),
        ],
        1,
    ));
    let holes = |positions: &Positions| {
        let mut holes: Vec<(u64, u64, i64)> = positions
            .holes()
            .iter()
            .map(|h| (h.start, h.end, h.since_ms))
            .collect();
        holes.sort_unstable();
        holes
    };
    assert_eq!(holes(&positions), [(0, 40, 1), (60, 80, 1)]);
    // Never covered: a line published before the drop that arrives late is written.
    assert!(!positions.covers(&Claim::given_up(S, 0, 40)));
    assert!(!positions.covers(&line(S, 10, 9)));
    // It shrinks the hole; a resent marker changes nothing.
    assert!(commit(&mut positions, &[line(S, 10, 9)], 2));
    assert!(!commit(&mut positions, &[Claim::given_up(S, 0, 40)], 3));
    assert_eq!(holes(&positions), [(0, 10, 1), (20, 40, 1), (60, 80, 1)]);
    // Given up above the highest committed range: a hole too.
    assert!(commit(&mut positions, &[Claim::given_up(S, 90, 95)], 4));
    assert_eq!(holes(&positions).last(), Some(&(90, 95, 4)));
    // Records round-trip with their given-up ranges; a release before them skipped such a
    // record (13 + 24n bytes), and ours still read theirs.
    let staged = positions.stage([line(S, 95, 4)].into_iter(), 5, 1000);
    let (key, value) = staged.updates[0].clone();
    assert_eq!(value.len() % 8, 5);
    positions.apply(staged, 5);
    let loaded = Positions::load([(key.to_be_bytes().to_vec(), value)].into_iter());
    assert_eq!(holes(&loaded), holes(&positions));
    // Everything arrives: no hole, and the given-up ranges are forgotten.
    let rest = [
        line(S, 0, 9),
        line(S, 20, 19),
        line(S, 60, 19),
        line(S, 90, 4),
    ];
    assert!(commit(&mut positions, &rest, 6));
    assert!(positions.holes().is_empty());
    let staged = positions.stage([line(S, 100, 4)].into_iter(), 7, 1000);
    assert_eq!(staged.updates[0].1.len() % 8, 1, "back to the plain record");
}

#[test]
fn given_up_ranges_merge_and_keep_their_first_time() {
    let mut given = GivenUp::default();
    given.insert(10, 20, 5);
    given.insert(30, 40, 6);
    given.insert(20, 30, 7);
    assert_eq!(
        given
            .iter()
            .map(|r| (r.start, r.end, r.since_ms))
            .collect::<Vec<_>>(),
        [(10, 40, 5)]
    );
    given.insert(0, 5, 8);
    given.retain_missing(&ranges(&[(0, 5)]));
    assert_eq!(given.len(), 1);
    assert_eq!(
        ranges(&[(0, 5), (8, 12)]).missing(3, 20),
        [(5, 8), (12, 20)]
    );
    assert_eq!(ranges(&[(0, 5)]).missing(0, 5), []);
}
