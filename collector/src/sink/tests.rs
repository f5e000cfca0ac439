//! The sink against real files: the open-file budget, chunked syncs, recovery.

use std::time::Duration;

use logship_config::collector::DedupSettings;

use super::*;

fn commit(state: &Path) -> Commit {
    let bounds = DedupSettings {
        max_ids: 1000,
        max_age: Duration::from_secs(60),
    };
    Commit::open(state, &bounds, 0).unwrap()
}

#[test]
fn the_budget_leaves_room_under_the_open_file_limit() {
    assert_eq!(budget(256, None), 256);
    assert_eq!(budget(256, Some(65536)), 256);
    assert_eq!(budget(256, Some(256)), 192);
    assert_eq!(budget(256, Some(100)), 50);
    assert_eq!(budget(256, Some(1)), 1);
}

#[test]
fn a_batch_over_more_files_than_may_be_open_is_written_whole() {
    let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut commit = commit(state.path());
    let mut sink = Sink::open(out.path(), &commit, 4).unwrap();
    let files: Vec<PathBuf> = (0..10).map(|i| format!("h/{i}.log").into()).collect();
    for round in 0..3 {
        let refused = sink
            .open_all(files.iter().map(PathBuf::as_path), &commit)
            .unwrap();
        assert!(refused.is_empty());
        for file in files.iter().rev() {
            sink.append(file, format!("{round}").as_bytes());
            sink.append(file, b"x");
        }
        let lengths = sink.sync(&commit).unwrap();
        assert_eq!(lengths.len(), files.len());
        assert!(sink.open_count() <= 4);
        assert!(lengths.iter().all(|(_, len)| *len == 4 * (round + 1)));
        commit.record(&[], &[], &lengths, 0).unwrap();
    }
    for file in &files {
        let text = std::fs::read_to_string(out.path().join(file)).unwrap();
        assert_eq!(text, "0\nx\n1\nx\n2\nx\n");
    }
}

#[test]
fn bytes_synced_but_never_committed_are_truncated_on_recovery() {
    let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut commit = commit(state.path());
    let mut sink = Sink::open(out.path(), &commit, 2).unwrap();
    let files: Vec<PathBuf> = (0..5).map(|i| format!("h/{i}.log").into()).collect();
    sink.open_all(files.iter().map(PathBuf::as_path), &commit)
        .unwrap();
    files.iter().for_each(|f| sink.append(f, b"kept"));
    let lengths = sink.sync(&commit).unwrap();
    commit.record(&[], &[], &lengths, 0).unwrap();
    // A second batch reaches the disk but its commit never happens.
    files.iter().for_each(|f| sink.append(f, b"lost"));
    sink.sync(&commit).unwrap();
    sink.recover(&commit).unwrap();
    for file in &files {
        assert_eq!(
            std::fs::read_to_string(out.path().join(file)).unwrap(),
            "kept\n"
        );
    }
}
