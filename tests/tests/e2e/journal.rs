//! The journal input end to end (issue 15), on real journal files written by
//! `systemd-journal-remote` while the agent reads them: every entry once and in order per unit
//! across kill -9s, a second file (rotation) with the first deleted, a vacuumed cursor (a
//! counted gap, no duplicate), `read_from = "end"`, a binary MESSAGE and an entry without a unit,
//! an entry read while its MESSAGE was half-linked (read again, arrives whole), and this
//! machine's own journal when journald runs here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use logship_tests::broker::amqp_url;
use logship_tests::daemon::{Daemon, children};
use logship_tests::fixture::{Agent, Setup};
use logship_tests::http::{free_addr, get};
use logship_tests::journal::{Entry, Feed, HalfLinked, available};
use logship_tests::lines::{assert_same_lines, read_lines, wait_for_lines};

const ARRIVAL: Duration = Duration::from_secs(120);

/// A journal input table (after the fixture's file input) reading `dir`.
fn journal_input(dir: &Path, extra: &str) -> String {
    format!(
        "\n[[inputs]]\ntype = \"journal\"\ndirectory = \"{}\"\n{extra}",
        dir.display()
    )
}

/// Where the collector writes the entries of `name` (a unit or identifier) of `agent`.
fn out(setup: &Setup, agent: &Agent, name: &str) -> PathBuf {
    setup
        .collector
        .output
        .join(&agent.host)
        .join("journal")
        .join(name)
}

fn message(unit: &str, i: usize) -> String {
    format!("{unit} entry {i:06} lorem ipsum dolor sit amet")
}

/// Entries `range` of unit `a.service`.
fn entries(range: std::ops::Range<usize>) -> Vec<Entry> {
    range
        .map(|i| Entry::of("a.service", &message("a.service", i)))
        .collect()
}

fn expected(unit: &str, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| message(unit, i).into_bytes()).collect()
}

/// Entries `range`, alternating between units `a.service` and `b.service` (even: a, odd: b);
/// each unit's entries numbered by `i`.
fn two_units(range: std::ops::Range<usize>) -> Vec<Entry> {
    range
        .map(|i| {
            let unit = if i % 2 == 0 { "a.service" } else { "b.service" };
            Entry::of(unit, &message(unit, i))
        })
        .collect()
}

fn unit_expected(unit: &str, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    let parity = usize::from(unit == "b.service");
    range
        .filter(|i| i % 2 == parity)
        .map(|i| message(unit, i).into_bytes())
        .collect()
}

#[test]
fn entries_of_two_units_arrive_once_in_order_across_five_agent_kill9s() {
    if !available("entries_of_two_units_arrive_once_in_order_across_five_agent_kill9s") {
        return;
    }
    const ENTRIES: usize = 50_000;
    let setup = Setup::new("journal-kill");
    let journal = setup.dir.path().join("journal");
    let mut feed = Feed::start(&journal, "app");
    let _collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", &journal_input(&journal, ""));
    let mut daemon = agent.start(true);

    // About 5000 entries a second, in writes of 250; the agent is killed -9 every ~2000 entries.
    let feeder = std::thread::spawn(move || {
        for chunk in (0..ENTRIES).step_by(250) {
            feed.write(&two_units(chunk..(chunk + 250).min(ENTRIES)));
            std::thread::sleep(Duration::from_millis(50));
        }
        feed
    });
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1500));
        daemon.kill9();
        std::thread::sleep(Duration::from_millis(200));
        daemon = agent.start(false);
    }
    let feed = feeder.join().expect("feeder");
    for unit in ["a.service", "b.service"] {
        let want = unit_expected(unit, 0..ENTRIES);
        let got = wait_for_lines(&out(&setup, &agent, unit), want.len(), ARRIVAL);
        assert_same_lines(&got, &want, unit);
    }
    // Nothing more comes (a duplicate would be late).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        read_lines(&out(&setup, &agent, "a.service")).len(),
        ENTRIES / 2
    );
    daemon.stop(Duration::from_secs(30));
    feed.finish();
}

#[test]
fn a_journalctl_killed_under_the_agent_is_restarted_without_loss_or_duplicate() {
    if !available("a_journalctl_killed_under_the_agent_is_restarted_without_loss_or_duplicate") {
        return;
    }
    let setup = Setup::new("journal-child");
    let journal = setup.dir.path().join("journal");
    let mut feed = Feed::start(&journal, "app");
    let _collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", &journal_input(&journal, ""));
    let mut daemon = agent.start(true);
    let path = out(&setup, &agent, "a.service");
    for round in 0..3 {
        // The (restarted) child reads: this round's entries arrive; then it is killed.
        feed.write(&entries(round * 1000..round * 1000 + 1000));
        wait_for_lines(&path, round * 1000 + 1000, ARRIVAL);
        let deadline = std::time::Instant::now() + ARRIVAL;
        let children = loop {
            let children = children(daemon.pid());
            if !children.is_empty() || std::time::Instant::now() > deadline {
                break children;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!children.is_empty(), "no journalctl under the agent");
        for child in children {
            // SAFETY: kill(2) on a pid just read from /proc.
            unsafe { libc::kill(child as i32, libc::SIGKILL) };
        }
    }
    feed.write(&entries(3000..3500));
    let want = expected("a.service", 0..3500);
    assert_same_lines(
        &wait_for_lines(&path, want.len(), ARRIVAL),
        &want,
        "a.service",
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(read_lines(&path).len(), want.len(), "no duplicate");
    // Said once, not once per restart; the agent is still up.
    assert_eq!(
        daemon
            .log_text()
            .matches("journal reader stopped, restarting it")
            .count(),
        1,
        "{}",
        daemon.log_text()
    );
    assert!(daemon.wait_exit(Duration::ZERO).is_none());
    daemon.stop(Duration::from_secs(30));
    feed.finish();
}

#[test]
fn a_second_journal_file_is_followed_and_the_first_deleted_without_loss() {
    if !available("a_second_journal_file_is_followed_and_the_first_deleted_without_loss") {
        return;
    }
    let setup = Setup::new("journal-rotate");
    let journal = setup.dir.path().join("journal");
    let mut first = Feed::start(&journal, "system@0001");
    let _collector = setup.collector.start();
    let agent = setup.agent(
        &amqp_url(),
        "",
        &journal_input(&journal, "units = [\"a.service\"]"),
    );
    let mut daemon = agent.start(true);
    for chunk in (0..4000).step_by(500) {
        first.write(&two_units(chunk..chunk + 500));
        std::thread::sleep(Duration::from_millis(50));
    }
    let path = out(&setup, &agent, "a.service");
    wait_for_lines(&path, 2000, ARRIVAL);
    // Rotation: a new file appears and takes the writes; the first is deleted while the agent
    // reads the second.
    let mut second = Feed::start(&journal, "system@0002");
    for chunk in (4000..8000).step_by(500) {
        second.write(&two_units(chunk..chunk + 500));
        if chunk == 5000 {
            std::fs::remove_file(&first.path).expect("delete the first file");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let want = unit_expected("a.service", 0..8000);
    assert_same_lines(
        &wait_for_lines(&path, want.len(), ARRIVAL),
        &want,
        "a.service",
    );
    // Only the unit asked for was shipped.
    assert!(!out(&setup, &agent, "b.service").exists());
    daemon.stop(Duration::from_secs(30));
    first.finish();
    second.finish();
}

#[test]
fn a_vacuumed_cursor_is_a_counted_gap_not_a_restart_at_now_or_a_reread() {
    if !available("a_vacuumed_cursor_is_a_counted_gap_not_a_restart_at_now_or_a_reread") {
        return;
    }
    let setup = Setup::new("journal-gap");
    let journal = setup.dir.path().join("journal");
    let metrics = free_addr();
    let _collector = setup.collector.start();
    let agent = setup.agent(
        &amqp_url(),
        &format!("[metrics]\nlisten = \"{metrics}\""),
        &journal_input(&journal, ""),
    );
    let mut old = Feed::start(&journal, "old");
    old.write(&entries(0..100));
    let mut daemon = agent.start(true);
    let path = out(&setup, &agent, "a.service");
    wait_for_lines(&path, 100, ARRIVAL);
    daemon.stop(Duration::from_secs(30));
    old.finish();

    // While the agent is stopped: entries it never saw, then the file vacuumed away; a new file
    // holds what came after.
    let mut lost = Feed::start(&journal, "old");
    lost.write(&entries(100..150));
    lost.finish();
    std::fs::remove_file(journal.join("old.journal")).expect("vacuum");
    std::thread::sleep(Duration::from_millis(20));
    let mut new = Feed::start(&journal, "new");
    new.write(&entries(150..200));

    let mut daemon = agent.start(true);
    let mut want = expected("a.service", 0..100);
    want.extend(expected("a.service", 150..200));
    assert_same_lines(
        &wait_for_lines(&path, want.len(), ARRIVAL),
        &want,
        "a.service",
    );
    daemon.wait_for_log("journal cursor no longer in the journal", 1, ARRIVAL);
    let (_, page) = get(&metrics, "/metrics");
    assert!(
        page.contains("\nlogship_agent_journal_gaps_total 1\n"),
        "{page}"
    );
    let (_, status) = get(&metrics, "/status");
    assert!(status.contains("\"journals\""), "{status}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(read_lines(&path).len(), want.len(), "no duplicate");
    assert_eq!(
        daemon
            .log_text()
            .matches("journal cursor no longer")
            .count(),
        1
    );
    daemon.stop(Duration::from_secs(30));
    new.finish();
}

#[test]
fn the_tail_of_the_previous_boot_is_read_after_a_reboot() {
    if !available("the_tail_of_the_previous_boot_is_read_after_a_reboot") {
        return;
    }
    let setup = Setup::new("journal-boots");
    let journal = setup.dir.path().join("journal");
    let mut feed = Feed::start(&journal, "app");
    feed.write(&entries(0..100));
    let _collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", &journal_input(&journal, ""));
    let mut daemon = agent.start(true);
    let path = out(&setup, &agent, "a.service");
    wait_for_lines(&path, 100, ARRIVAL);
    // The agent stops for the reboot; the old boot still logs, then the new boot starts.
    daemon.stop(Duration::from_secs(30));
    feed.write(&entries(100..150));
    feed.boot = "6c0ffee0000000000000000000000002".into();
    feed.write(&entries(150..200));
    let mut daemon = agent.start(true);
    feed.write(&entries(200..250));
    let want = expected("a.service", 0..250);
    assert_same_lines(
        &wait_for_lines(&path, want.len(), ARRIVAL),
        &want,
        "a.service",
    );
    assert!(!daemon.log_text().contains("cursor no longer"));
    daemon.stop(Duration::from_secs(30));
    feed.finish();
}

#[test]
fn read_from_end_ships_only_what_comes_later_and_keeps_its_place_across_a_restart() {
    if !available("read_from_end_ships_only_what_comes_later_and_keeps_its_place_across_a_restart")
    {
        return;
    }
    let setup = Setup::new("journal-end");
    let journal = setup.dir.path().join("journal");
    let mut feed = Feed::start(&journal, "app");
    feed.write(&entries(0..50));
    let _collector = setup.collector.start();
    let agent = setup.agent(
        &amqp_url(),
        "",
        &journal_input(&journal, "read_from = \"end\""),
    );
    let mut daemon = agent.start(true);
    daemon.wait_for_log("journal reading", 1, ARRIVAL);
    daemon.stop(Duration::from_secs(30));
    // Written while the agent is stopped, after its first start: shipped.
    feed.write(&entries(50..60));
    let mut daemon = agent.start(true);
    feed.write(&entries(60..70));
    let path = out(&setup, &agent, "a.service");
    let want = expected("a.service", 50..70);
    assert_same_lines(
        &wait_for_lines(&path, want.len(), ARRIVAL),
        &want,
        "a.service",
    );
    daemon.stop(Duration::from_secs(30));
    feed.finish();
}

#[test]
fn a_binary_message_is_byte_exact_and_an_entry_without_unit_is_filed_by_identifier_or_unknown() {
    if !available(
        "a_binary_message_is_byte_exact_and_an_entry_without_unit_is_filed_by_identifier_or_unknown",
    ) {
        return;
    }
    let setup = Setup::new("journal-binary");
    let journal = setup.dir.path().join("journal");
    let mut feed = Feed::start(&journal, "app");
    let binary = b"bin\x00ary \xff\xfe end\r".to_vec();
    feed.write(&[
        Entry {
            unit: Some("a.service".into()),
            identifier: Some("ignored".into()),
            message: Some(binary.clone()),
        },
        Entry {
            unit: None,
            identifier: Some("cron".into()),
            message: Some(b"from cron".to_vec()),
        },
        Entry {
            unit: None,
            identifier: None,
            message: Some(b"from nobody".to_vec()),
        },
        Entry {
            unit: Some("../../etc".into()),
            identifier: None,
            message: Some(b"hostile unit".to_vec()),
        },
    ]);
    let _collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", &journal_input(&journal, ""));
    let mut daemon = agent.start(true);
    let got = wait_for_lines(&out(&setup, &agent, "a.service"), 1, ARRIVAL);
    assert_eq!(got, [binary]);
    assert_eq!(
        wait_for_lines(&out(&setup, &agent, "cron"), 1, ARRIVAL),
        [b"from cron".to_vec()]
    );
    assert_eq!(
        wait_for_lines(&out(&setup, &agent, "unknown"), 1, ARRIVAL),
        [b"from nobody".to_vec()]
    );
    assert_eq!(
        wait_for_lines(&out(&setup, &agent, ".._.._etc"), 1, ARRIVAL),
        [b"hostile unit".to_vec()]
    );
    daemon.stop(Duration::from_secs(30));
    feed.finish();
}

#[test]
fn an_entry_read_while_its_message_was_half_linked_is_read_again_and_arrives_whole() {
    if !available("an_entry_read_while_its_message_was_half_linked_is_read_again_and_arrives_whole")
    {
        return;
    }
    let setup = Setup::new("journal-half");
    let journal = setup.dir.path().join("journal");
    let mut feed = Feed::start(&journal, "app");
    let half = "a.service entry read while being written";
    feed.write(&[
        Entry::of("a.service", "before"),
        Entry::of("a.service", half),
        Entry::without_message("a.service"),
        Entry::without_message("a.service"),
        Entry::of("a.service", "after"),
    ]);
    let file = feed.path.clone();
    feed.finish();
    // As journalctl sees an entry whose writer has not linked its new MESSAGE yet: without it.
    let halfway = HalfLinked::message(&file, half);
    let metrics = free_addr();
    let _collector = setup.collector.start();
    let agent = setup.agent(
        &amqp_url(),
        &format!("[metrics]\nlisten = \"{metrics}\""),
        &journal_input(&journal, ""),
    );
    // The writer finishes the link as soon as the agent decided to read the entry again (it
    // waits 200 ms before it does).
    let watcher = {
        let metrics = metrics.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + ARRIVAL;
            while std::time::Instant::now() < deadline {
                let page = logship_tests::http::try_get(&metrics, "/metrics").unwrap_or_default();
                if page.contains("\nlogship_agent_journal_rereads_total 1\n") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            halfway.restore();
        })
    };
    let mut daemon = agent.start(true);
    let path = out(&setup, &agent, "a.service");
    let want: Vec<Vec<u8>> = vec![
        b"before".to_vec(),
        half.as_bytes().to_vec(),
        // Entries that truly have no MESSAGE: the first is read again once (and shows none
        // again), the next is not (one re-read per 10 s confirms), both ship an empty line.
        Vec::new(),
        Vec::new(),
        b"after".to_vec(),
    ];
    assert_same_lines(
        &wait_for_lines(&path, want.len(), ARRIVAL),
        &want,
        "a.service",
    );
    watcher.join().expect("watcher");
    let (_, page) = get(&metrics, "/metrics");
    assert!(
        page.contains("\nlogship_agent_journal_rereads_total 2\n"),
        "{page}"
    );
    assert!(
        page.contains("\nlogship_agent_journal_restarts_total 0\n"),
        "{page}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(read_lines(&path).len(), want.len(), "no duplicate");
    // Re-reads are quiet: no restart warning, the start said once.
    assert!(!daemon.log_text().contains("journal reader stopped"));
    assert_eq!(daemon.log_text().matches("journal reading").count(), 1);
    daemon.stop(Duration::from_secs(30));
}

#[test]
fn this_machines_own_journal_is_read_when_journald_runs() {
    let journald = Path::new("/run/systemd/journal/socket").exists()
        && std::process::Command::new("systemd-cat")
            .arg("--version")
            .output()
            .is_ok();
    if !journald {
        eprintln!(
            "SKIPPED this_machines_own_journal_is_read_when_journald_runs: journald does not run here (no /run/systemd/journal/socket)"
        );
        return;
    }
    let setup = Setup::new("journal-own");
    let _collector = setup.collector.start();
    let agent = setup.agent(
        &amqp_url(),
        "",
        "\n[[inputs]]\ntype = \"journal\"\nread_from = \"end\"\n",
    );
    let mut daemon: Daemon = agent.start(true);
    daemon.wait_for_log("journal reading", 1, ARRIVAL);
    let tag = logship_tests::broker::unique("logship-test");
    let status = std::process::Command::new("systemd-cat")
        .args(["-t", &tag, "echo", "hello from the machine's journal"])
        .status()
        .expect("systemd-cat");
    assert!(status.success());
    let got = wait_for_lines(&out(&setup, &agent, &tag), 1, ARRIVAL);
    assert_eq!(got, [b"hello from the machine's journal".to_vec()]);
    daemon.stop(Duration::from_secs(30));
}
