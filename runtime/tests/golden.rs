//! The envelope's wire format is a contract between agents and collectors of different
//! versions: these fixtures pin it byte for byte.

use std::path::Path;

use logship_runtime::{Envelope, FileId, SourceKind};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let mut bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    while bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    bytes
}

fn envelope(line: &[u8]) -> Envelope {
    Envelope {
        host: "web-1".into(),
        path: "/var/log/app/access.log".into(),
        file: FileId {
            dev: 2049,
            ino: 1_048_577,
            fp: 0x9f86_d081_884c_7d65,
        },
        generation: 2,
        offset: 73_400_320,
        timestamp_ms: 1_764_028_800_123,
        line: line.to_vec(),
        fields: Default::default(),
        kind: Default::default(),
    }
}

#[test]
fn utf8_line_matches_golden_json() {
    let expected = envelope("GET /index.html 200 \"Mozilla\" é".as_bytes());
    assert_eq!(expected.to_json(), fixture("envelope-v1-text.json"));
    assert_eq!(
        Envelope::from_json(&fixture("envelope-v1-text.json")).unwrap(),
        expected
    );
}

#[test]
fn non_utf8_line_matches_golden_json() {
    let expected = envelope(b"bin\xff\xfe\x00data\r");
    assert_eq!(expected.to_json(), fixture("envelope-v1-bytes.json"));
    assert_eq!(
        Envelope::from_json(&fixture("envelope-v1-bytes.json")).unwrap(),
        expected
    );
}

#[test]
fn message_id_is_stable() {
    assert_eq!(
        envelope(b"x").message_id(),
        "801.100001.9f86d081884c7d65.2.4600000@web-1"
    );
}

#[test]
fn multiline_event_with_fields_matches_golden_json() {
    let mut expected = envelope(b"2026-12-01 boom\n  at a()\n  at b()");
    expected.fields.insert("service".into(), "web".into());
    expected.fields.insert("env".into(), "prod".into());
    assert_eq!(expected.to_json(), fixture("envelope-v1-fields.json"));
    assert_eq!(
        Envelope::from_json(&fixture("envelope-v1-fields.json")).unwrap(),
        expected
    );
}

#[test]
fn journal_entry_matches_golden_json() {
    let mut expected = envelope(b"Started nginx.service.");
    expected.path = "journal/nginx.service".into();
    expected.file = FileId {
        dev: 0x0aad_8d5b_af4c_4232,
        ino: 0xa337_69b2_d24e_d1d8,
        fp: 0x1234_5678_9abc_def0,
    };
    expected.generation = 0;
    expected.offset = 4242;
    expected.kind = SourceKind::Journal { skipped: 3 };
    expected
        .fields
        .insert("_SYSTEMD_UNIT".into(), "nginx.service".into());
    expected.fields.insert("PRIORITY".into(), "6".into());
    assert_eq!(expected.to_json(), fixture("envelope-v2-journal.json"));
    assert_eq!(
        Envelope::from_json(&fixture("envelope-v2-journal.json")).unwrap(),
        expected
    );
    assert_eq!(expected.extent(), (4239, 4243));
}

#[test]
fn loss_marker_matches_golden_json() {
    let mut expected = envelope(b"");
    expected.kind = SourceKind::Lost { bytes: 4096 };
    assert_eq!(expected.to_json(), fixture("envelope-v3-lost.json"));
    assert_eq!(
        Envelope::from_json(&fixture("envelope-v3-lost.json")).unwrap(),
        expected
    );
    // The range given up: the 4096 bytes below the end.
    assert_eq!(expected.extent(), (73_396_224, 73_400_320));
}

#[test]
fn drop_marker_matches_golden_json() {
    let mut expected = envelope(b"");
    expected.kind = SourceKind::Dropped {
        lost: 4096,
        journal: false,
    };
    assert_eq!(expected.to_json(), fixture("envelope-v3-dropped.json"));
    assert_eq!(
        Envelope::from_json(&fixture("envelope-v3-dropped.json")).unwrap(),
        expected
    );
    assert_eq!(expected.extent(), (73_396_224, 73_400_320));
    assert_eq!(
        expected.message_id(),
        "801.100001.9f86d081884c7d65.2.45ff000-4600000@web-1"
    );
}

#[test]
fn container_line_matches_golden_json() {
    let mut expected = envelope(b"GET / 200");
    expected.path = "docker/web".into();
    expected.fields = [
        ("container_id", "4f1c"),
        ("container_name", "web"),
        ("image", "nginx:1"),
        ("stream", "stdout"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    expected.kind = SourceKind::Entry { end: 73_449_600 };
    assert_eq!(expected.to_json(), fixture("envelope-v4-container.json"));
    assert_eq!(
        Envelope::from_json(&fixture("envelope-v4-container.json")).unwrap(),
        expected
    );
    // Its entries in the file, not its decoded text: the pieces it was joined from.
    assert_eq!(expected.extent(), (73_400_320, 73_449_600));
    assert_eq!(
        expected.message_id(),
        "801.100001.9f86d081884c7d65.2.4600000@web-1"
    );
}
