//! Envelope round trips, versions, extents and message ids.

use super::*;

fn sample(line: &[u8]) -> Envelope {
    Envelope {
        host: "web-1".into(),
        path: "/var/log/app.log".into(),
        file: FileId {
            dev: 2049,
            ino: 131,
            fp: 0x00c0_ffee_00c0_ffee,
        },
        generation: 0,
        offset: 1024,
        timestamp_ms: 1_764_028_800_123,
        line: line.to_vec(),
        fields: BTreeMap::new(),
        kind: SourceKind::File,
    }
}

#[test]
fn journal_entries_are_v2_and_claim_their_sequence_numbers() {
    let mut entry = sample(b"started");
    entry.kind = SourceKind::Journal { skipped: 3 };
    let json = entry.to_json();
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(text.starts_with(r#"{"v":2,"#), "{text}");
    assert!(
        text.ends_with(r#","kind":"journal","skipped":3}"#),
        "{text}"
    );
    assert_eq!(Envelope::from_json(&json).unwrap(), entry);
    assert_eq!(entry.extent(), (1021, 1025));
    assert_eq!(sample(b"abc").extent(), (1024, 1028));
    // A kind that does not match the version, or skips below zero, is refused.
    for body in [
        text.replace(r#""v":2"#, r#""v":1"#),
        text.replace(r#""kind":"journal""#, r#""kind":"file""#),
        text.replace(r#""skipped":3"#, r#""skipped":2000"#),
    ] {
        assert!(Envelope::from_json(body.as_bytes()).is_err(), "{body}");
    }
}

#[test]
fn loss_markers_are_v3_give_up_the_bytes_below_the_end_and_carry_no_line() {
    let mut marker = sample(b"");
    marker.kind = SourceKind::Lost { bytes: 24 };
    let json = marker.to_json();
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(text.starts_with(r#"{"v":3,"#), "{text}");
    assert!(
        text.ends_with(r#","line":"","kind":"lost","lost":24}"#),
        "{text}"
    );
    assert_eq!(Envelope::from_json(&json).unwrap(), marker);
    // The range given up: the 24 bytes below the end.
    assert_eq!(marker.extent(), (1000, 1024));
    // The same id as a line at its offset would have: a resend is a duplicate.
    assert_eq!(marker.message_id(), sample(b"x").message_id());
    // A marker with a line, with nothing or more than its offset lost, or a kind that does
    // not match the version, is refused.
    for body in [
        text.replace(r#""line":"""#, r#""line":"x""#),
        text.replace(r#""lost":24"#, r#""lost":0"#),
        text.replace(r#""lost":24"#, r#""lost":1025"#),
        text.replace(r#""v":3"#, r#""v":1"#),
        text.replace(r#""v":3"#, r#""v":2"#),
        text.replace(r#""kind":"lost""#, r#""kind":"journal""#),
        text.replace(r#","kind":"lost""#, ""),
    ] {
        assert!(Envelope::from_json(body.as_bytes()).is_err(), "{body}");
    }
}

#[test]
fn drop_markers_are_v3_give_up_their_range_and_never_share_a_line_id() {
    let mut marker = sample(b"");
    marker.offset = 0x4000;
    marker.kind = SourceKind::Dropped {
        lost: 0x1000,
        journal: false,
    };
    let json = marker.to_json();
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(text.starts_with(r#"{"v":3,"#), "{text}");
    assert!(
        text.ends_with(r#","line":"","kind":"dropped","lost":4096}"#),
        "{text}"
    );
    assert_eq!(Envelope::from_json(&json).unwrap(), marker);
    assert_eq!(marker.extent(), (0x3000, 0x4000));
    assert_eq!(
        marker.message_id(),
        "801.83.00c0ffee00c0ffee.0.3000-4000@web-1"
    );
    // Neither the first dropped line's id nor the next line's.
    for offset in [0x3000, 0x4000] {
        let mut line = sample(b"x");
        line.offset = offset;
        assert_ne!(marker.message_id(), line.message_id());
    }
    // At the head of a file: the range from byte 0.
    let mut head = marker.clone();
    head.kind = SourceKind::Dropped {
        lost: 0x4000,
        journal: false,
    };
    assert_eq!(head.extent(), (0, 0x4000));
    assert_eq!(Envelope::from_json(&head.to_json()).unwrap(), head);
    // A journal's: sequence numbers.
    let mut entries = marker.clone();
    entries.kind = SourceKind::Dropped {
        lost: 3,
        journal: true,
    };
    let entries_json = String::from_utf8(entries.to_json()).unwrap();
    assert!(
        entries_json.contains(r#""kind":"dropped_journal""#),
        "{entries_json}"
    );
    let decoded = Envelope::from_json(entries_json.as_bytes()).unwrap();
    assert_eq!(decoded, entries);
    assert!(decoded.kind.counts_sequence());
    // With a line, with nothing or more than its offset given up, or in another version:
    // refused.
    for body in [
        text.replace(r#""line":"""#, r#""line":"x""#),
        text.replace(r#""lost":4096"#, r#""lost":0"#),
        text.replace(r#""lost":4096"#, r#""lost":16385"#),
        text.replace(r#""v":3"#, r#""v":1"#),
        text.replace(r#""v":3"#, r#""v":2"#),
    ] {
        assert!(Envelope::from_json(body.as_bytes()).is_err(), "{body}");
    }
}

#[test]
fn fields_travel_when_set_and_are_omitted_when_empty() {
    let mut envelope = sample(b"first\n  at second");
    assert!(
        !String::from_utf8(envelope.to_json())
            .unwrap()
            .contains("fields")
    );
    envelope.fields.insert("service".into(), "web".into());
    let json = envelope.to_json();
    assert!(
        String::from_utf8(json.clone())
            .unwrap()
            .contains(r#""fields":{"service":"web"}"#)
    );
    assert_eq!(Envelope::from_json(&json).unwrap(), envelope);
}

#[test]
fn non_utf8_bytes_survive_the_round_trip() {
    let bytes = b"caf\xe9 \xff\x00 end\r".to_vec();
    let envelope = sample(&bytes);
    let json = envelope.to_json();
    assert!(std::str::from_utf8(&json).unwrap().contains("line_b64"));
    assert_eq!(Envelope::from_json(&json).unwrap(), envelope);
}

#[test]
fn utf8_lines_travel_as_text() {
    let envelope = sample("héllo \"quoted\" \\ tab\t".as_bytes());
    let json = envelope.to_json();
    assert!(!std::str::from_utf8(&json).unwrap().contains("line_b64"));
    assert_eq!(Envelope::from_json(&json).unwrap(), envelope);
}

#[test]
fn message_id_depends_on_source_only() {
    let a = sample(b"one");
    let mut b = sample(b"two");
    b.timestamp_ms += 5;
    assert_eq!(a.message_id(), b.message_id());
    assert_eq!(a.message_id(), "801.83.00c0ffee00c0ffee.0.400@web-1");
    b.offset += 1;
    assert_ne!(a.message_id(), b.message_id());
    let mut c = sample(b"one");
    c.generation = 1;
    assert_ne!(a.message_id(), c.message_id());
}

#[test]
fn bad_bodies_are_errors_not_panics() {
    let cases: [&[u8]; 7] = [
        b"",
        b"not json",
        b"{\"v\":5}",
        b"{\"v\":1}",
        b"[1,2,3]",
        br#"{"v":1,"host":"h","path":"/p","file":{"dev":1,"ino":2,"fp":"zz"},"gen":0,"offset":0,"ts":0,"line":"x"}"#,
        br#"{"v":1,"host":"h","path":"/p","file":{"dev":1,"ino":2,"fp":"01"},"gen":0,"offset":0,"ts":0}"#,
    ];
    for body in cases {
        assert!(Envelope::from_json(body).is_err(), "{body:?}");
    }
    assert!(matches!(
        Envelope::from_json(b"{\"v\":5}"),
        Err(EnvelopeError::Version(5))
    ));
}

#[test]
fn a_container_line_claims_its_entries_and_round_trips() {
    let fields = std::collections::BTreeMap::from([("stream".to_string(), "stderr".to_string())]);
    let line = EnvelopeRef {
        host: "h",
        path: "docker/web",
        file: FileId {
            dev: 1,
            ino: 2,
            fp: 3,
        },
        generation: 0,
        offset: 100,
        timestamp_ms: 0,
        line: b"joined",
        fields: &fields,
        kind: SourceKind::Entry { end: 400 },
    };
    let decoded = Envelope::from_json(&line.to_json()).unwrap();
    assert_eq!(decoded.kind, SourceKind::Entry { end: 400 });
    assert_eq!(decoded.extent(), (100, 400));
    assert_eq!(decoded.path, "docker/web");
    let json = String::from_utf8(line.to_json()).unwrap();
    assert!(
        json.contains(r#""v":4"#) && json.contains(r#""kind":"container""#),
        "{json}"
    );
    let backwards = json.replace(r#""end":400"#, r#""end":100"#);
    assert!(matches!(
        Envelope::from_json(backwards.as_bytes()),
        Err(EnvelopeError::Extent { .. })
    ));
    // A v1 line with an `end` is not one.
    let v1 = json
        .replace(r#""v":4"#, r#""v":1"#)
        .replace(r#","kind":"container""#, "");
    assert!(Envelope::from_json(v1.as_bytes()).is_err());
}
