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
    let mut sink = Sink::open(out.path(), &commit, 4, Compression::None).unwrap();
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
        assert!(lengths.iter().all(|(_, r)| r.len == 4 * (round + 1)));
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
    let mut sink = Sink::open(out.path(), &commit, 2, Compression::None).unwrap();
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

/// Reads a compressed output file whole, as `zstdcat` would.
fn unzstd(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    String::from_utf8(zstd::stream::decode_all(&bytes[..]).unwrap()).unwrap()
}

#[test]
fn compressed_files_stay_whole_through_compactions_and_an_interrupted_one() {
    let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut commit = commit(state.path());
    let zstd = Compression::Zstd { level: 3 };
    let mut sink = Sink::open(out.path(), &commit, 4, zstd).unwrap();
    let files: Vec<PathBuf> = (0..3).map(|i| format!("h/{i}.log.zst").into()).collect();
    let mut expected = String::new();
    let mut compactions = 0;
    for n in 0..2000 {
        let line =
            format!("2026-12-02T10:00:00.{n:03}Z INFO worker=3 request={n} status=200 bytes=512");
        for file in &files {
            sink.append(file, line.as_bytes());
        }
        expected.push_str(&line);
        expected.push('\n');
        let records = sink.sync(&commit).unwrap();
        commit.record(&[], &[], &records, 0).unwrap();
        // Every batch may compact here (rounds are otherwise at most once a second).
        sink.next_compaction = std::time::Instant::now();
        compactions += sink.compact(&commit).unwrap().len();
    }
    assert!(compactions >= 3, "{compactions}");
    let plain = expected.len() as u64;
    for file in &files {
        let path = out.path().join(file);
        assert_eq!(unzstd(&path), expected);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size * 4 < plain, "{size} bytes for {plain}");
    }
    // A compaction staged and committed, then a crash before it is settled.
    let file = &files[0];
    let record = commit.committed(file).unwrap().unwrap();
    assert!(record.len > record.tail_start);
    let handle = File::options()
        .read(true)
        .append(true)
        .open(out.path().join(file))
        .unwrap();
    let (bytes, staged) = sink
        .frames
        .as_mut()
        .unwrap()
        .stage(&handle, &record)
        .unwrap()
        .unwrap();
    (&handle).write_all(&bytes).unwrap();
    commit.set_records(&[(file.clone(), Some(staged))]).unwrap();
    drop((sink, handle));
    let sink = Sink::open(out.path(), &commit, 4, zstd).unwrap();
    let settled = commit.committed(file).unwrap().unwrap();
    assert_eq!(settled.staged, None);
    assert!(settled.len < record.len);
    assert_eq!(unzstd(&out.path().join(file)), expected);
    drop(sink);
}

/// Writes one batch of `line` to each of `files` and commits it.
fn write_batch(sink: &mut Sink, commit: &mut Commit, files: &[&str], line: &str) {
    let paths: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    let refused = sink
        .open_all(paths.iter().map(PathBuf::as_path), commit)
        .unwrap();
    assert!(refused.is_empty());
    paths.iter().for_each(|p| sink.append(p, line.as_bytes()));
    let lengths = sink.sync(commit).unwrap();
    commit.record(&[], &[], &lengths, 0).unwrap();
}

/// Issue 27 (item 5): the next batch's new files are made while the current one is written.
#[test]
fn a_file_made_ahead_is_recorded_before_its_first_byte_and_its_entry_synced_with_its_batch() {
    let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut commit = commit(state.path());
    let mut sink = Sink::open(out.path(), &commit, 8, Compression::None).unwrap();
    write_batch(&mut sink, &mut commit, &["h/a.log"], "a");
    // A record at 0 whose file is gone (its batch failed, the file was removed since): the
    // batch that opens it sees its length as recorded, so only the note of what was made
    // ahead makes its new entry durable.
    commit
        .set_records(&[("h/gone.log".into(), Some(FileRecord::at(0)))])
        .unwrap();
    let mut ahead = sink.ahead().unwrap();
    let mut made = Made::default();
    let files: Vec<PathBuf> = ["h/b.log", "h/gone.log", "new/c.log"]
        .iter()
        .map(PathBuf::from)
        .collect();
    ahead.create(&files, &mut made);
    assert!(!made.is_empty());
    assert_eq!(std::fs::read(out.path().join("h/b.log")).unwrap(), b"");
    assert!(
        !out.path().join("new").exists(),
        "no directory is made ahead"
    );
    assert_eq!(commit.committed(Path::new("h/b.log")).unwrap(), None);
    sink.made_ahead(made);
    sink.open_all([Path::new("h/gone.log")].into_iter(), &commit)
        .unwrap();
    assert!(!sink.entries.is_empty(), "the entry made ahead is noted");
    sink.open_all([Path::new("h/b.log")].into_iter(), &commit)
        .unwrap();
    assert_eq!(
        commit.committed(Path::new("h/b.log")).unwrap(),
        Some(FileRecord::at(0)),
        "intent recorded before the first byte"
    );
    write_batch(
        &mut sink,
        &mut commit,
        &["h/b.log", "h/gone.log", "new/c.log"],
        "b",
    );
    assert!(sink.entries.is_empty() && sink.made_ahead.is_empty());
    for (file, text) in [
        ("h/b.log", "b\n"),
        ("h/gone.log", "b\n"),
        ("new/c.log", "b\n"),
    ] {
        assert_eq!(
            std::fs::read_to_string(out.path().join(file)).unwrap(),
            text
        );
    }
}

#[test]
fn a_file_made_ahead_survives_a_failed_batch_and_a_crash_without_a_record() {
    let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut commit = commit(state.path());
    let mut sink = Sink::open(out.path(), &commit, 8, Compression::None).unwrap();
    write_batch(&mut sink, &mut commit, &["h/a.log"], "a");
    let mut ahead = sink.ahead().unwrap();
    let mut made = Made::default();
    ahead.create(&["h/b.log".into(), "h/c.log".into()], &mut made);
    sink.made_ahead(made);
    // The batch that uses h/b.log reaches the disk but fails before its commit.
    sink.open_all([Path::new("h/b.log")].into_iter(), &commit)
        .unwrap();
    sink.append(Path::new("h/b.log"), b"lost");
    sink.sync(&commit).unwrap();
    sink.recover(&commit).unwrap();
    assert_eq!(std::fs::read(out.path().join("h/b.log")).unwrap(), b"");
    // A crash: h/c.log was made ahead and never recorded; the start leaves it as it is.
    drop((sink, ahead));
    let mut sink = Sink::open(out.path(), &commit, 8, Compression::None).unwrap();
    assert_eq!(commit.committed(Path::new("h/c.log")).unwrap(), None);
    write_batch(&mut sink, &mut commit, &["h/b.log", "h/c.log"], "again");
    for file in ["h/b.log", "h/c.log"] {
        assert_eq!(
            std::fs::read_to_string(out.path().join(file)).unwrap(),
            "again\n"
        );
        assert_eq!(
            commit.committed(Path::new(file)).unwrap(),
            Some(FileRecord::at(6))
        );
    }
}
