//! The agent's own failures (issue 8): a full state disk pauses reading, says why, and resumes
//! by itself with nothing lost, and SIGTERM still exits 0 while it is full; any other failure of
//! the reader ends the process with exit 1 and the cause, never a running agent that stopped
//! reading.
//!
//! The disk tests mount a small tmpfs as the agent's `state_dir` and skip themselves (with a
//! message) where that is not possible: not root, or no tmpfs mounts in this container.

use std::time::{Duration, Instant};

use logship_tests::broker::amqp_url;
use logship_tests::daemon::{Daemon, binary};
use logship_tests::fixture::{Agent, Setup};
use logship_tests::lines::{assert_delivered_once_in_order, text, wait_for_delivery};
use logship_tests::proxy::Proxy;
use logship_tests::tmpfs::Tmpfs;

/// The state disk: far smaller than the lines written, so it fills before anything else does.
const STATE_DISK: &str = "16m";
/// Lines written while the broker is away; with [`PADDING`], about 22 MB.
const FLOOD_LINES: usize = 150_000;
/// Bytes added to every line, so the lines alone outgrow [`STATE_DISK`] whatever the spool's
/// format.
const PADDING: usize = 100;
/// What the agent logs when the state disk refuses a spool write.
const DISK_PAUSED: &str = "cannot write the spool, reading paused";
const STALL: Duration = Duration::from_secs(45);
const ARRIVAL: Duration = Duration::from_secs(180);

/// Flood line `i`.
fn flood_line(i: usize) -> Vec<u8> {
    let mut line = text("flood", i);
    line.push(b' ');
    line.extend(std::iter::repeat_n(b'p', PADDING));
    line
}

/// Everything a full-disk test holds. Fields drop in order: the agent is killed, the proxy
/// stops, the tmpfs is unmounted, then the tempdir goes.
struct FullDisk {
    daemon: Daemon,
    proxy: Proxy,
    agent: Agent,
    _disk: Tmpfs,
    setup: Setup,
}

/// An agent whose state disk is a small tmpfs and whose broker is away (the spool cap is 1 GiB,
/// so the disk fills, not the cap), with more lines written than the disk holds, once it has
/// said it paused reading. `None` when no tmpfs can be mounted.
async fn fill_state_disk(label: &str) -> Option<FullDisk> {
    let setup = Setup::new(label);
    let proxy = Proxy::start("127.0.0.1:5672".parse().expect("addr")).await;
    proxy.cut();
    let agent = setup.agent(&proxy.url(), "[buffer]\nmax_bytes = \"1GiB\"", "");
    let disk = match Tmpfs::mount(&agent.state, STATE_DISK) {
        Ok(disk) => disk,
        Err(why) => {
            logship_tests::skip(label, &format!("needs a tmpfs as the state disk ({why})"));
            return None;
        }
    };
    let mut daemon = agent.start(false);
    let want: Vec<Vec<u8>> = (0..FLOOD_LINES).map(flood_line).collect();
    let mut bytes = Vec::new();
    for line in &want {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    std::fs::write(setup.log("flood.log"), &bytes).expect("flood");
    // The agent logs `cannot write the spool, reading paused; retrying`, with the state dir and
    // the cause (not `spool full, reading paused ...`, which is the spool's own limit).
    let deadline = Instant::now() + Duration::from_secs(90);
    while !daemon.log_text().contains(DISK_PAUSED) {
        if Instant::now() > deadline {
            let (used, all) = disk.usage();
            panic!(
                "no \"{DISK_PAUSED}\" in the agent log within 90 s; state disk {used} of {all} bytes used, agent {}:\n{}",
                match daemon.wait_exit(Duration::ZERO) {
                    Some(status) => format!("exited ({status})"),
                    None => "running".into(),
                },
                daemon.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{label}: {}",
        daemon
            .log_text()
            .lines()
            .find(|l| l.contains(DISK_PAUSED))
            .unwrap_or_default()
    );
    let mut full = FullDisk {
        daemon,
        proxy,
        agent,
        _disk: disk,
        setup,
    };
    // Still running some seconds later, retrying: a paused reader is not a dead agent.
    assert!(
        full.daemon.wait_exit(Duration::from_secs(3)).is_none(),
        "the agent exited while its state disk was full"
    );
    Some(full)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_disk_full_pauses_reading_then_resumes_and_loses_nothing() {
    let Some(mut full) = fill_state_disk("diskfull").await else {
        return;
    };
    let mut collector = full.setup.collector.start();
    full.proxy.restore();
    let want: Vec<Vec<u8>> = (0..FLOOD_LINES).map(flood_line).collect();
    let out = full.setup.out(&full.agent, "flood.log");
    let lines = tokio::task::block_in_place(|| wait_for_delivery(&out, &want, STALL, ARRIVAL));
    let status = full.daemon.stop(Duration::from_secs(30));
    assert!(collector.stop(Duration::from_secs(30)).success());
    assert_delivered_once_in_order(&lines, &want, "diskfull");
    assert!(status.success(), "exit {status}");
    let log = full.daemon.log_text();
    assert!(
        log.contains("spool writable again, reading resumed"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_state_disk_is_full_exits_zero() {
    let Some(mut full) = fill_state_disk("diskfull-term").await else {
        return;
    };
    let status = full.daemon.stop(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", full.daemon.log_text());
}

#[test]
fn reader_failure_ends_the_agent_with_exit_1() {
    let setup = Setup::new("readerfault");
    std::fs::write(setup.log("app.log"), b"one line\n").expect("log");
    let agent = setup.agent(&amqp_url(), "", "");
    // A test-only fault: the reader thread fails on its first turn.
    let mut daemon = Daemon::start_with_env(
        &binary("logship-agent"),
        &agent.config,
        &agent.log,
        &[("LOGSHIP_TEST_FAULT", "reader")],
    );
    let status = daemon
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| {
            panic!(
                "the agent kept running with a failed reader:\n{}",
                daemon.log_text()
            )
        });
    let log = daemon.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("injected reader fault"), "{log}");
}
