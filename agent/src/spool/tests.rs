//! The spool's unit tests.

use super::*;
use crate::identity::Fingerprint;

fn checkpoint(offset: Offset) -> Checkpoint {
    Checkpoint {
        offset,
        generation: 3,
        fingerprint: Some(Fingerprint { hash: 42, len: 7 }),
        path: PathBuf::from("/var/log/a.log"),
        finished: false,
        mid_event: false,
    }
}

const KEY: FileKey = FileKey { dev: 1, ino: 2 };

/// Opens a spool, waiting out the lock of one just dropped in this process (sled releases
/// it from a background thread).
fn open(dir: &std::path::Path, max_bytes: u64, when_full: WhenFull) -> Spool {
    for _ in 0..100 {
        match Spool::open(dir, max_bytes, when_full) {
            Ok(spool) => return spool,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    Spool::open(dir, max_bytes, when_full).unwrap()
}

fn lines(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message {
            id: format!("id{i}"),
            body: vec![b'x'; 10],
        })
        .collect()
}

#[test]
fn segments_and_checkpoints_survive_a_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(dir.path(), 1 << 20, WhenFull::Block);
        spool.append(&lines(3), &[(KEY, checkpoint(33))]).unwrap();
        spool.append(&lines(2), &[(KEY, checkpoint(44))]).unwrap();
        spool.append(&[], &[(KEY, checkpoint(55))]).unwrap();
        assert_eq!(spool.lines(), 5);
        assert_eq!(spool.remove(0).unwrap(), 3);
        spool.flush().unwrap();
    }
    let spool = open(dir.path(), 1 << 20, WhenFull::Block);
    assert_eq!(spool.lines(), 2);
    let page = spool.page(0, 10).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].seq, 1);
    assert_eq!(page[0].lines, lines(2));
    assert_eq!(spool.checkpoint(KEY).unwrap(), Some(checkpoint(55)));
    spool.append(&lines(1), &[(KEY, checkpoint(66))]).unwrap();
    assert_eq!(spool.page(2, 10).unwrap()[0].seq, 2);
}

#[test]
fn sequence_numbers_are_never_reused_and_the_head_position_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(dir.path(), 1 << 20, WhenFull::Block);
        spool.append(&lines(3), &[(KEY, checkpoint(1))]).unwrap();
        spool.set_head_confirmed(Some((0, 2))).unwrap();
        spool.remove(0).unwrap();
        spool.flush().unwrap();
    }
    let spool = open(dir.path(), 1 << 20, WhenFull::Block);
    assert_eq!(spool.head_confirmed().unwrap(), Some((0, 2)));
    spool.append(&lines(1), &[(KEY, checkpoint(2))]).unwrap();
    assert_eq!(spool.page(0, 10).unwrap()[0].seq, 1);
}

#[test]
fn block_reports_full_and_drop_oldest_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), 100, WhenFull::Block);
    for _ in 0..4 {
        spool.append(&lines(2), &[(KEY, checkpoint(1))]).unwrap();
    }
    // 4 segments of 4 + 2 * (6 + 3 + 10) = 42 bytes
    assert_eq!(spool.bytes(), 168);
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
        4
    );
    assert!(!spool.has_room());
    drop(spool);
    let spool = open(dir.path(), 100, WhenFull::DropOldest);
    let dropped = spool.append(&lines(2), &[(KEY, checkpoint(2))]).unwrap();
    assert_eq!(dropped.lines, 6);
    assert!(spool.bytes() <= 100);
    assert_eq!(spool.page(0, 1).unwrap()[0].seq, 3);
}

#[test]
fn a_journal_cursor_moves_with_its_entries_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(dir.path(), 1 << 20, WhenFull::Block);
        assert_eq!(spool.journal_cursor(7).unwrap(), None);
        spool.set_journal_cursor(7, "s=1;i=1").unwrap();
        spool.append_journal(&lines(2), 7, "s=1;i=3").unwrap();
        assert_eq!(spool.lines(), 2);
        spool.flush().unwrap();
    }
    let spool = open(dir.path(), 1 << 20, WhenFull::Block);
    assert_eq!(spool.journal_cursor(7).unwrap().as_deref(), Some("s=1;i=3"));
    assert_eq!(spool.journal_cursor(8).unwrap(), None);
    // File checkpoints do not see journal records.
    assert!(spool.checkpoints().unwrap().is_empty());
    assert_eq!(spool.page(0, 10).unwrap()[0].lines.len(), 2);
}

#[test]
fn an_index_failure_names_the_index_and_what_failed_and_a_full_disk_pauses() {
    let err = SpoolError::Index {
        path: "/var/lib/logship/agent.sled".into(),
        op: "save a checkpoint",
        source: sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)),
    };
    assert_eq!(
        err.to_string(),
        "the spool's index \"/var/lib/logship/agent.sled\" failed to save a checkpoint"
    );
    assert!(err.is_disk_failure(), "ENOSPC pauses reading");
}
