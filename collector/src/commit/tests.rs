//! The commit record's tests: ids, lengths and positions across reopens, pruning, a torn
//! journal tail, a crash replayed from the journal, and the legacy seen-id log moved in.

use std::time::Duration;

use super::legacy::LEGACY_SEEN_KEY;
use super::*;

fn ids(names: &[&str]) -> Vec<seen::IdHash> {
    names.iter().map(|name| seen::hash(name)).collect()
}

fn bounds(max_ids: u64, max_age: Duration) -> DedupSettings {
    DedupSettings { max_ids, max_age }
}

/// Opens the record, waiting out the lock of one just dropped in this process (sled
/// releases it from a background thread).
fn open(dir: &Path, bounds: &DedupSettings, now_ms: i64) -> Commit {
    for _ in 0..100 {
        match Commit::open(dir, bounds, now_ms) {
            Ok(commit) => return commit,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Commit::open(dir, bounds, now_ms).unwrap()
}

#[test]
fn ids_and_lengths_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wide = bounds(10, Duration::from_secs(60));
    {
        let mut commit = open(dir.path(), &wide, 1_000);
        let ids = ids(&["a", "b"]);
        let lengths = vec![(PathBuf::from("h/x.log"), FileRecord::at(42))];
        commit.record(&ids, &[], &lengths, 1_000).unwrap();
    }
    let commit = open(dir.path(), &wide, 1_000);
    assert!(commit.is_seen(seen::hash("a")) && commit.is_seen(seen::hash("b")));
    assert!(!commit.is_seen(seen::hash("c")));
    assert_eq!(
        commit.files().unwrap(),
        vec![(PathBuf::from("h/x.log"), FileRecord::at(42))]
    );
    assert_eq!(commit.seen_count(), 2);
}

#[test]
fn positions_outlive_the_id_window_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = bounds(2, Duration::from_secs(3600));
    let source = crate::commit::positions::source_hash("h", 1, 2, 3, 0);
    {
        let mut commit = open(dir.path(), &tiny, 0);
        let name = SourceName {
            host: "h".into(),
            path: "/var/log/x.log".into(),
        };
        for i in (0..10u64).filter(|i| *i != 4) {
            let id = format!("line-{i}");
            let claim = Claim::line(source, i * 10, 9);
            commit
                .record(&[seen::hash(&id)], &[(claim, &name)], &[], 0)
                .unwrap();
        }
        assert!(!commit.is_seen(seen::hash("line-0")));
        assert!(commit.is_committed(&Claim::line(source, 0, 9)));
    }
    let commit = open(dir.path(), &tiny, 0);
    assert_eq!(commit.source_count(), 1);
    let covered = |i: u64| commit.is_committed(&Claim::line(source, i * 10, 9));
    assert!((0..10).all(|i| covered(i) == (i != 4)));
    assert!(!covered(10));
    let holes = commit.holes().unwrap();
    assert_eq!(holes.len(), 1);
    assert_eq!((holes[0].0.start, holes[0].0.end), (40, 50));
    assert_eq!(holes[0].1.as_ref().unwrap().path, "/var/log/x.log");
}

#[test]
fn oldest_ids_are_pruned_by_count_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let by_count = bounds(3, Duration::from_secs(3600));
    let mut commit = open(dir.path(), &by_count, 1_000);
    for (i, id) in ["1", "2", "3", "4", "5"].iter().enumerate() {
        commit
            .record(&[seen::hash(id)], &[], &[], 1_000 + i as i64)
            .unwrap();
    }
    assert_eq!(commit.seen_count(), 3);
    assert!(!commit.is_seen(seen::hash("1")) && !commit.is_seen(seen::hash("2")));
    assert!(commit.is_seen(seen::hash("3")) && commit.is_seen(seen::hash("5")));
    drop(commit);
    let by_age = bounds(100, Duration::from_millis(10));
    let mut commit = open(dir.path(), &by_age, 1_004);
    commit.record(&ids(&["6"]), &[], &[], 1_013).unwrap();
    assert!(!commit.is_seen(seen::hash("3")) && commit.is_seen(seen::hash("4")));
    assert_eq!(commit.seen_count(), 3);
}

#[test]
fn a_torn_journal_tail_is_ignored_and_compaction_keeps_the_live_ids() {
    let dir = tempfile::tempdir().unwrap();
    let small = bounds(1000, Duration::from_secs(3600));
    let mut commit = open(dir.path(), &small, 0);
    // Enough ids to compact several times: only the last 1000 stay.
    for round in 0..300 {
        let ids: Vec<String> = (0..1000).map(|i| format!("{round}-{i}")).collect();
        let ids: Vec<_> = ids.iter().map(|id| seen::hash(id)).collect();
        commit.record(&ids, &[], &[], 0).unwrap();
    }
    let journals = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("journal-")
            })
            .count()
    };
    assert_eq!(journals(), 1);
    assert!(commit.wal.generation() > 0);
    // A crash in the middle of the next record: its id is not seen.
    let end = commit.wal.end();
    let generation = commit.wal.generation();
    drop(commit);
    let path = dir.path().join(format!("journal-{generation}.log"));
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0, 0, 0, 9, 0, 0], end).unwrap();
    let commit = open(dir.path(), &small, 0);
    assert!(commit.is_seen(seen::hash("299-999")) && !commit.is_seen(seen::hash("298-999")));
    assert_eq!(commit.seen_count(), 1000);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
}

/// A copy of a state directory taken while its commit record is open: what a kill -9 would
/// leave (sled holds only what was flushed).
fn crash_image(state: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let mut dirs = vec![(state.to_path_buf(), copy.path().to_path_buf())];
    while let Some((from, to)) = dirs.pop() {
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                dirs.push((entry.path(), target));
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    copy
}

#[test]
fn a_crash_before_the_checkpoint_is_replayed_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let wide = bounds(10, Duration::from_secs(3600));
    let source = crate::commit::positions::source_hash("h", 1, 2, 3, 0);
    let name = SourceName {
        host: "h".into(),
        path: "/var/log/x.log".into(),
    };
    let mut commit = open(dir.path(), &wide, 0);
    // Outside a batch, flushed: the file's intent.
    let file = PathBuf::from("h/var/log/x.log");
    commit
        .set_records(&[(file.clone(), Some(FileRecord::at(0)))])
        .unwrap();
    commit
        .record(
            &ids(&["line-0"]),
            &[(Claim::line(source, 0, 9), &name)],
            &[(file.clone(), FileRecord::at(10))],
            0,
        )
        .unwrap();
    let image = crash_image(dir.path());
    {
        // sled alone lost the batch: it was never flushed.
        let tree = sled::open(image.path().join("collector.sled")).unwrap();
        let length = tree.get(file_key(&file)).unwrap().unwrap();
        assert_eq!(FileRecord::decode(&length), Some(FileRecord::at(0)));
        assert!(tree.get(position_key(source)).unwrap().is_none());
    }
    let crashed = open(image.path(), &wide, 0);
    assert_eq!(crashed.committed(&file).unwrap(), Some(FileRecord::at(10)));
    assert!(crashed.is_committed(&Claim::line(source, 0, 9)));
    assert!(crashed.is_seen(seen::hash("line-0")));
    assert_eq!(crashed.source_count(), 1);
}

#[test]
fn a_change_outside_a_batch_is_not_undone_by_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let wide = bounds(10, Duration::from_secs(3600));
    let mut commit = open(dir.path(), &wide, 0);
    let file = PathBuf::from("h/old.log");
    commit
        .record(&ids(&["a"]), &[], &[(file.clone(), FileRecord::at(42))], 0)
        .unwrap();
    // Retention deletes the file and forgets it.
    commit.set_records(&[(file.clone(), None)]).unwrap();
    let image = crash_image(dir.path());
    let crashed = open(image.path(), &wide, 0);
    assert_eq!(crashed.committed(&file).unwrap(), None);
    assert!(crashed.is_seen(seen::hash("a")));
}

#[test]
fn the_seen_id_log_of_an_older_version_moves_into_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Vec::new();
    for id in ["old-1", "old-2"] {
        log.extend_from_slice(&seen::hash(id).to_be_bytes());
        log.extend_from_slice(&5i64.to_be_bytes());
    }
    // A record past the committed length: never committed.
    log.extend_from_slice(&seen::hash("ghost").to_be_bytes());
    log.extend_from_slice(&5i64.to_be_bytes());
    std::fs::write(dir.path().join("seen-3.log"), &log).unwrap();
    {
        let tree = sled::open(dir.path().join("collector.sled")).unwrap();
        tree.insert(LEGACY_SEEN_KEY, &encode_pair(3, 48)).unwrap();
        tree.insert(file_key(Path::new("h/x.log")), FileRecord::at(7).encode())
            .unwrap();
        tree.flush().unwrap();
    }
    let wide = bounds(10, Duration::from_secs(3600));
    let commit = open(dir.path(), &wide, 10);
    assert!(commit.is_seen(seen::hash("old-1")) && commit.is_seen(seen::hash("old-2")));
    assert!(!commit.is_seen(seen::hash("ghost")));
    assert!(!dir.path().join("seen-3.log").exists());
    assert_eq!(
        commit.committed(Path::new("h/x.log")).unwrap(),
        Some(FileRecord::at(7))
    );
    drop(commit);
    let commit = open(dir.path(), &wide, 10);
    assert!(commit.is_seen(seen::hash("old-2")));
}
