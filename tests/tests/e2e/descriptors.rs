//! The agent within a descriptor budget (issue 18): more matched files than descriptors never
//! stops shipping. The agent runs under an open-file limit it cannot raise (as `prlimit
//! --nofile=N:N`); every line of every file arrives once, in order, lines appended later
//! included, with a few warning lines at most, and the agent never exits.

use std::path::PathBuf;
use std::time::Duration;

use logship_tests::broker::amqp_url;
use logship_tests::daemon::Daemon;
use logship_tests::fixture::{Agent, Setup};
use logship_tests::lines::{append, assert_delivered_once_in_order, expected, wait_for_delivery};
use logship_tests::many::{self, create_files, source};

use crate::rotation::{copytruncate_writer, rename_rotation_expected, rename_rotation_writer};

/// Lines each file holds before the agent starts.
const FIRST_LINES: usize = 10;
/// Lines appended to every file once the first ones arrived.
const LATER_LINES: usize = 5;
/// The longest wait for every file's lines.
const ARRIVAL: Duration = Duration::from_secs(300);

/// Waits until the collector's copy of every file holds `counts[i]` lines, or panics after
/// [`ARRIVAL`]; `look` runs on each look.
fn wait_all(
    setup: &Setup,
    agent: &Agent,
    files: &[PathBuf],
    counts: &[usize],
    daemon: &Daemon,
    look: impl FnMut(),
) -> Duration {
    many::wait_all(&setup.collector, &agent.host, files, counts, ARRIVAL, look).unwrap_or_else(
        |missing| {
            panic!(
                "{missing} of {} files complete after {ARRIVAL:?}; {} incomplete:\n{}",
                files.len(),
                files[missing].display(),
                daemon.log_text()
            )
        },
    )
}

/// Asserts the collector's copy of every file is exactly its lines `0..counts[i]`.
fn assert_every_file_once_in_order(
    setup: &Setup,
    agent: &Agent,
    files: &[PathBuf],
    counts: &[usize],
) {
    let wrong = many::first_wrong(&setup.collector, &agent.host, files, counts);
    assert!(wrong.is_none(), "{wrong:?} arrived wrong");
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
    let renamed = rename_rotation_writer(setup.log("app.log"), GENERATIONS, 20_000, false);
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
    let want = rename_rotation_expected(GENERATIONS, 20_000);
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
