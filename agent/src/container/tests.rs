use super::*;

/// What `Joiner` ships: (stream, at, end, text).
type Shipped = Vec<(Option<&'static str>, Offset, Offset, String)>;

/// Feeds CRI lines (each `consumed` = its length + 1) from `from` on.
fn feed(joiner: &mut Joiner, lines: &[&str], from: Offset, max_line: usize) -> (Shipped, u64) {
    let mut shipped = Shipped::new();
    let mut parts = 0;
    let mut at = from;
    for line in lines {
        let consumed = line.len() as u64 + 1;
        let (p, _) = joiner.entry(
            Format::Cri,
            line.as_bytes(),
            at,
            consumed,
            max_line,
            &mut |d| {
                shipped.push((
                    d.stream.map(Stream::name),
                    d.at,
                    d.end,
                    String::from_utf8(d.text.to_vec()).unwrap(),
                ))
            },
        );
        parts += p;
        at += consumed;
    }
    (shipped, parts)
}

const T: &str = "2026-12-07T05:00:00Z";

/// The extents `[start, end)` of `lines` fed from 0.
fn extents(lines: &[&str]) -> Vec<(Offset, Offset)> {
    let mut at = 0;
    lines
        .iter()
        .map(|l| {
            let start = at;
            at += l.len() as u64 + 1;
            (start, at)
        })
        .collect()
}

#[test]
fn pieces_join_per_stream_and_claims_never_overlap() {
    let lines = [
        format!("{T} stdout P ab"),  // 0..24
        format!("{T} stderr F err"), // 24..49
        format!("{T} stdout P cd"),  // 49..73
        format!("{T} stdout F ef"),  // 73..97
        format!("{T} stderr F e2"),  // 97..121
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut joiner = Joiner::default();
    let x = extents(&lines);
    let (shipped, parts) = feed(&mut joiner, &lines, 0, 100);
    assert_eq!(parts, 0);
    assert_eq!(
        shipped,
        [
            (Some("stderr"), x[1].0, x[1].1, "err".to_string()),
            // The stderr entry ended its claim at its first piece.
            (Some("stdout"), x[0].0, x[0].1, "abcdef".to_string()),
            (Some("stderr"), x[4].0, x[4].1, "e2".to_string()),
        ]
    );
    assert!(joiner.is_quiet());
    assert_eq!(joiner.take_held(), x[4].1);
}

#[test]
fn the_checkpoint_waits_for_a_quiet_point() {
    let lines = [
        format!("{T} stdout P a"),
        format!("{T} stderr P b"),
        format!("{T} stdout F c"),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut joiner = Joiner::default();
    let x = extents(&lines);
    let (shipped, _) = feed(&mut joiner, &lines, 0, 100);
    assert_eq!(shipped, [(Some("stdout"), 0, x[0].1, "ac".to_string())]);
    // stderr is still open: a restart must read from 0 again.
    assert!(!joiner.is_quiet());
    let mut finished = Shipped::new();
    joiner.finish(&mut |d| {
        finished.push((
            d.stream.map(Stream::name),
            d.at,
            d.end,
            String::from_utf8(d.text.to_vec()).unwrap(),
        ))
    });
    assert_eq!(
        finished,
        [(Some("stderr"), x[1].0, x[1].1, "b".to_string())]
    );
    assert!(joiner.is_quiet());
}

#[test]
fn long_lines_are_cut_and_bad_entries_shipped_as_they_are() {
    let lines = [
        format!("{T} stdout P abcd"),
        format!("{T} stdout F efgh"),
        "garbage".to_string(),
        format!("{T} stderr F 0123456789"),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut joiner = Joiner::default();
    let x = extents(&lines);
    let (shipped, parts) = feed(&mut joiner, &lines, 0, 6);
    assert_eq!(
        shipped,
        [
            (Some("stdout"), x[0].0, x[0].1, "abcd".to_string()),
            (Some("stdout"), x[1].0, x[1].1, "efgh".to_string()),
            (None, x[2].0, x[2].1, "garbage".to_string()),
            (Some("stderr"), x[3].0, x[3].0 + 1, "012345".to_string()),
            (Some("stderr"), x[3].0 + 1, x[3].1, "6789".to_string()),
        ]
    );
    assert_eq!(parts, 2);
    assert_eq!(joiner.take_invalid(), 1);
}

#[test]
fn docker_pieces_without_newline_join() {
    let mut joiner = Joiner::default();
    let mut shipped = Vec::new();
    let entries = [
        r#"{"log":"part one ","stream":"stdout","time":"t"}"#,
        r#"{"log":"alone\n","stream":"stderr","time":"t"}"#,
        r#"{"log":"part two\n","stream":"stdout","time":"t"}"#,
    ];
    let mut at = 0;
    for raw in entries {
        let consumed = raw.len() as u64 + 1;
        joiner.entry(
            Format::Docker,
            raw.as_bytes(),
            at,
            consumed,
            1 << 20,
            &mut |d| shipped.push((d.stream, d.at, String::from_utf8(d.text.to_vec()).unwrap())),
        );
        at += consumed;
    }
    assert_eq!(
        shipped,
        [
            (
                Some(Stream::Stderr),
                entries[0].len() as u64 + 1,
                "alone".to_string()
            ),
            (Some(Stream::Stdout), 0, "part one part two".to_string()),
        ]
    );
}
