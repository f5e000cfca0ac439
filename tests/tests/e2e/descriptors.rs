//! The agent within a descriptor budget (issue 18): more matched files than descriptors never
//! stops shipping. The agent runs under an open-file limit it cannot raise (as `prlimit
//! --nofile=N:N`); every line of every file arrives once, in order, lines appended later
//! included, with a few warning lines at most, and the agent never exits.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logship_tests::broker::amqp_url;
use logship_tests::daemon::Daemon;
use logship_tests::fixture::{Agent, Setup};
use logship_tests::lines::{
    append, assert_delivered_once_in_order, expected, read_lines, text, wait_for_delivery,
};

use crate::rotation::{copytruncate_writer, rename_rotation_expected, rename_rotation_writer};

/// Lines each file holds before the agent starts.
const FIRST_LINES: usize = 10;
/// Lines appended to every file once the first ones arrived.
const LATER_LINES: usize = 5;
/// The longest wait for every file's lines.
const ARRIVAL: Duration = Duration::from_secs(300);

/// The source name of file `i`: its lines are texts no other file has.
fn source(i: usize) -> String {
    format!("f{i:05}")
}

/// Creates `n` files `f00000.log`... in `dir`, each with lines `0..lines` of its source.
fn create_files(dir: &Path, n: usize, lines: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("{}.log", source(i)));
            append(&path, &source(i), 0..lines);
            path
        })
        .collect()
}

/// Bytes of lines `0..n` of `source`, one per line.
fn length(source: &str, n: usize) -> u64 {
    (0..n).map(|i| text(source, i).len() as u64 + 1).sum()
}

/// Waits until the collector's copy of every file holds `counts[i]` lines (by size, cheap), or
/// panics after [`ARRIVAL`]; `watch` runs on each look.
fn wait_all(
    setup: &Setup,
    agent: &Agent,
    files: &[PathBuf],
    counts: &[usize],
    daemon: &Daemon,
    mut watch: impl FnMut(),
) -> Duration {
    let started = Instant::now();
    let want: Vec<u64> = (0..files.len())
        .map(|i| length(&source(i), counts[i]))
        .collect();
    let mut first_missing = 0;
    loop {
        watch();
        while first_missing < files.len() {
            let out = setup.collector.file(&agent.host, &files[first_missing]);
            let len = std::fs::metadata(&out).map_or(0, |m| m.len());
            if len < want[first_missing] {
                break;
            }
            first_missing += 1;
        }
        if first_missing == files.len() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < ARRIVAL,
            "{} of {} files complete after {ARRIVAL:?}; {} incomplete:\n{}",
            first_missing,
            files.len(),
            files[first_missing].display(),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Asserts the collector's copy of every file is exactly its lines `0..counts[i]`.
fn assert_every_file_once_in_order(
    setup: &Setup,
    agent: &Agent,
    files: &[PathBuf],
    counts: &[usize],
) {
    for (i, path) in files.iter().enumerate() {
        let lines = read_lines(&setup.collector.file(&agent.host, path));
        assert_eq!(
            lines,
            expected(&source(i), 0..counts[i]),
            "{} arrived wrong",
            path.display()
        );
    }
}

/// Asserts the agent is still running, then stops it and the collector cleanly.
fn stop(agent: &mut Daemon, collector: &mut Daemon) {
    assert!(
        agent.wait_exit(Duration::ZERO).is_none(),
        "the agent exited:\n{}",
        agent.log_text()
    );
    assert!(agent.stop(Duration::from_secs(30)).success());
    assert!(collector.stop(Duration::from_secs(30)).success());
}

#[test]
fn three_thousand_files_under_a_512_descriptor_limit_are_all_shipped_and_the_agent_never_exits() {
    const FILES: usize = 3000;
    let setup = Setup::new("fds");
    let files = create_files(&setup.logs, FILES, FIRST_LINES);
    let mut collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", "");
    let mut daemon = agent.start_with_nofile(512);
    let logs = std::fs::canonicalize(&setup.logs).expect("logs dir");
    let mut most_open = 0;
    let mut counts = vec![FIRST_LINES; FILES];
    let took = wait_all(&setup, &agent, &files, &counts, &daemon, || {
        most_open = most_open.max(daemon.open_under(&logs));
    });
    eprintln!(
        "fds: {FILES} files x {FIRST_LINES} lines shipped in {took:?}, at most {most_open} open"
    );
    // Lines appended later to every file, closed or not, arrive too.
    for (i, path) in files.iter().enumerate() {
        append(path, &source(i), FIRST_LINES..FIRST_LINES + LATER_LINES);
    }
    counts.fill(FIRST_LINES + LATER_LINES);
    let took = wait_all(&setup, &agent, &files, &counts, &daemon, || {
        most_open = most_open.max(daemon.open_under(&logs));
    });
    eprintln!(
        "fds: {LATER_LINES} more lines in each file shipped in {took:?}, at most {most_open} open"
    );
    assert_every_file_once_in_order(&setup, &agent, &files, &counts);
    let log = daemon.log_text();
    assert!(log.contains("max_open_files=448"), "{log}");
    assert!(most_open <= 448, "{most_open} files open at once");
    assert!(!log.contains("ERROR"), "{log}");
    let warned = daemon.warnings();
    assert!(
        !warned.is_empty() && warned.len() <= 3,
        "the budget is said once per outage: {warned:#?}"
    );
    assert!(
        warned[0].contains("descriptor budget reached"),
        "{warned:#?}"
    );
    stop(&mut daemon, &mut collector);
}

#[test]
fn files_rotating_by_rename_and_copytruncate_under_the_budget_lose_nothing() {
    const FILES: usize = 600;
    const GENERATIONS: usize = 4;
    const COPIED: usize = 20_000;
    let setup = Setup::new("fds-rotate");
    let files = create_files(&setup.logs, FILES, FIRST_LINES);
    let mut collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", "");
    // 192 files open at most: the idle files keep the budget full while two files rotate.
    let mut daemon = agent.start_with_nofile(256);
    let renamed = rename_rotation_writer(setup.log("app.log"), GENERATIONS, false);
    let copied = copytruncate_writer(
        setup.log("copied.log"),
        "copied",
        COPIED,
        4,
        Duration::from_millis(50),
    );
    // Meanwhile a line goes to one idle file after another, so closed files keep asking for
    // their descriptor back.
    let mut counts = vec![FIRST_LINES; FILES];
    let mut next = 0;
    while !(renamed.is_finished() && copied.is_finished()) {
        let i = next % FILES;
        append(&files[i], &source(i), counts[i]..counts[i] + 1);
        counts[i] += 1;
        next += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    renamed.join().expect("rename writer");
    copied.join().expect("copytruncate writer");
    eprintln!("fds-rotate: {next} lines appended to idle files meanwhile");
    let want = rename_rotation_expected(GENERATIONS);
    let stall = Duration::from_secs(30);
    let lines = wait_for_delivery(&setup.out(&agent, "app.log"), &want, stall, ARRIVAL);
    assert_delivered_once_in_order(&lines, &want, "renamed under the budget");
    let want = expected("copied", 0..COPIED);
    let lines = wait_for_delivery(&setup.out(&agent, "copied.log"), &want, stall, ARRIVAL);
    assert_delivered_once_in_order(&lines, &want, "copytruncated under the budget");
    wait_all(&setup, &agent, &files, &counts, &daemon, || {});
    assert_every_file_once_in_order(&setup, &agent, &files, &counts);
    let log = daemon.log_text();
    assert!(log.contains("max_open_files=192"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert!(daemon.warnings().len() <= 3, "{:#?}", daemon.warnings());
    stop(&mut daemon, &mut collector);
}
