//! logship-agent end to end: real files, the real agent and collector, the real broker.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use logship_tests::broker::{Broker, amqp_url};
use logship_tests::daemon::Daemon;
use logship_tests::fixture::{Agent, Setup};
use logship_tests::http::{counter, free_addr};
use logship_tests::lines::{assert_same_lines, read_lines, text, wait_for_lines};
use logship_tests::proxy::Proxy;

const ARRIVAL: Duration = Duration::from_secs(90);

/// Appends lines `range` of `source` to `path`.
fn append(path: &Path, source: &str, range: std::ops::Range<usize>) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = Vec::new();
    for i in range {
        buf.extend_from_slice(&text(source, i));
        buf.push(b'\n');
    }
    file.write_all(&buf).unwrap();
}

fn expected(source: &str, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| text(source, i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_new_and_two_hundred_files_arrive_exactly_once() {
    let setup = Setup::new("files");
    append(&setup.log("existing.log"), "existing", 0..1000);
    let mut collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", "");
    let mut daemon = agent.start(true);
    append(&setup.log("new.log"), "new", 0..500);
    for n in 0..200 {
        append(
            &setup.log(&format!("many-{n:03}.log")),
            &format!("many-{n}"),
            0..20,
        );
    }
    append(&setup.log("existing.log"), "existing", 1000..1100);
    assert_same_lines(
        &wait_for_lines(&setup.out(&agent, "existing.log"), 1100, ARRIVAL),
        &expected("existing", 0..1100),
        "existing",
    );
    assert_same_lines(
        &wait_for_lines(&setup.out(&agent, "new.log"), 500, ARRIVAL),
        &expected("new", 0..500),
        "new",
    );
    for n in 0..200 {
        let lines = wait_for_lines(&setup.out(&agent, &format!("many-{n:03}.log")), 20, ARRIVAL);
        assert_same_lines(&lines, &expected(&format!("many-{n}"), 0..20), "many");
    }
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    assert!(
        daemon.log_text().contains("files=202"),
        "{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_end_skips_old_lines_but_not_new_files() {
    let setup = Setup::new("end");
    append(&setup.log("old.log"), "old", 0..100);
    let mut collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", "read_from = \"end\"");
    let mut daemon = agent.start(true);
    daemon.wait_for_log("file opened", 1, Duration::from_secs(10));
    append(&setup.log("old.log"), "old", 100..110);
    append(&setup.log("fresh.log"), "fresh", 0..10);
    assert_same_lines(
        &wait_for_lines(&setup.out(&agent, "fresh.log"), 10, ARRIVAL),
        &expected("fresh", 0..10),
        "fresh",
    );
    assert_same_lines(
        &wait_for_lines(&setup.out(&agent, "old.log"), 10, ARRIVAL),
        &expected("old", 100..110),
        "old",
    );
    // A restart resumes at the checkpoint, whatever read_from says.
    assert!(daemon.stop(Duration::from_secs(20)).success());
    append(&setup.log("old.log"), "old", 110..120);
    let mut daemon = agent.start(true);
    assert_same_lines(
        &wait_for_lines(&setup.out(&agent, "old.log"), 20, ARRIVAL),
        &expected("old", 100..120),
        "old",
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_nine_five_times_mid_stream_loses_and_duplicates_nothing() {
    const PER_FILE: usize = 100_000;
    let setup = Setup::new("agentkill");
    let mut collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", "");
    let mut daemon = agent.start(true);
    let (a, b) = (setup.log("a.log"), setup.log("b.log"));
    let writer = std::thread::spawn(move || {
        for chunk in (0..PER_FILE).step_by(1000) {
            append(&a, "a", chunk..chunk + 1000);
            append(&b, "b", chunk..chunk + 1000);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    for kill in 0..5 {
        tokio::time::sleep(Duration::from_millis(500 + fastrand::u64(0..1200))).await;
        daemon.kill9();
        eprintln!(
            "agent kill {kill}: {} lines at the collector",
            read_lines(&setup.out(&agent, "a.log")).len()
        );
        daemon = agent.start(false);
    }
    writer.join().unwrap();
    for name in ["a", "b"] {
        let lines = wait_for_lines(
            &setup.out(&agent, &format!("{name}.log")),
            PER_FILE,
            Duration::from_secs(180),
        );
        assert!(lines.len() >= PER_FILE, "{name}: {} lines", lines.len());
    }
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    for name in ["a", "b"] {
        assert_same_lines(
            &read_lines(&setup.out(&agent, &format!("{name}.log"))),
            &expected(name, 0..PER_FILE),
            name,
        );
    }
}

/// Writes `total` lines of `source` to `path` in steps, calling `rotate` once after `at` lines.
fn write_with_rotation(
    path: &Path,
    source: &str,
    total: usize,
    at: usize,
    rotate: impl FnOnce(&Path),
) {
    let mut rotate = Some(rotate);
    for chunk in (0..total).step_by(100) {
        if chunk == at
            && let Some(rotate) = rotate.take()
        {
            rotate(path);
        }
        append(path, source, chunk..chunk + 100);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_copytruncate_rotation_under_writes_keep_every_line_in_order() {
    let setup = Setup::new("rotate");
    let mut collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", "");
    let mut daemon = agent.start(true);
    let (renamed, copied) = (setup.log("renamed.log"), setup.log("copied.log"));
    // Rotation happens to files the agent already follows: a file renamed away before the agent
    // ever saw it cannot be found (its new name matches no glob).
    let (renamed_out, copied_out) = (
        setup.out(&agent, "renamed.log"),
        setup.out(&agent, "copied.log"),
    );
    let rename_writer = std::thread::spawn(move || {
        write_with_rotation(&renamed, "renamed", 6000, 3000, |path| {
            wait_for_lines(&renamed_out, 1, ARRIVAL);
            // A logger still writes a little to the old file after the rename, then reopens.
            let old = path.with_extension("log.1");
            std::fs::rename(path, &old).unwrap();
            append(&old, "renamed", 3000..3100);
        });
    });
    let copy_writer = std::thread::spawn(move || {
        write_with_rotation(&copied, "copied", 6000, 3000, |path| {
            // copytruncate loses what the agent had not read at the copy (it is only in the
            // copy); logrotate runs it at a quiet moment, and so does this test.
            wait_for_lines(&copied_out, 3000, ARRIVAL);
            std::fs::copy(path, path.with_extension("log.1")).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(0)
                .unwrap();
        });
    });
    rename_writer.join().unwrap();
    copy_writer.join().unwrap();
    // The renamed file got 3000..3100 twice over: once after the rename, and the writer's own
    // chunk 3000..3100 went to the new file. Both are real lines, in the order written.
    let mut want: Vec<Vec<u8>> = expected("renamed", 0..3100);
    want.extend(expected("renamed", 3000..6000));
    assert_same_lines(
        &wait_for_lines(&setup.out(&agent, "renamed.log"), want.len(), ARRIVAL),
        &want,
        "renamed",
    );
    assert_same_lines(
        &wait_for_lines(&setup.out(&agent, "copied.log"), 6000, ARRIVAL),
        &expected("copied", 0..6000),
        "copied",
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    assert!(
        daemon.log_text().contains("file truncated"),
        "{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_of_twenty_seconds_with_rotation_and_deletion_loses_nothing() {
    let setup = Setup::new("outage");
    let mut collector = setup.collector.start();
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let agent = setup.agent(&proxy.url(), "", "");
    let mut daemon = agent.start(true);
    let path = setup.log("app.log");
    append(&path, "app", 0..2000);
    wait_for_lines(&setup.out(&agent, "app.log"), 2000, ARRIVAL);
    proxy.cut();
    daemon.wait_for_log("connection to broker lost", 1, Duration::from_secs(60));
    append(&path, "app", 2000..4000);
    // Rotate during the outage, keep writing, then delete the rotated file.
    std::fs::rename(&path, setup.log("app.log.1")).unwrap();
    append(&path, "app", 4000..6000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::remove_file(setup.log("app.log.1")).unwrap();
    tokio::time::sleep(Duration::from_secs(17)).await;
    assert_eq!(
        read_lines(&setup.out(&agent, "app.log")).len(),
        2000,
        "nothing passes during the outage"
    );
    proxy.restore();
    append(&path, "app", 6000..7000);
    let lines = wait_for_lines(&setup.out(&agent, "app.log"), 7000, ARRIVAL);
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    assert_same_lines(&lines, &expected("app", 0..7000), "app");
    assert!(
        daemon.log_text().contains("broker reachable again"),
        "{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_held_until_a_collector_binds_its_queue() {
    let setup = Setup::new("unbound");
    let agent = setup.agent(&amqp_url(), "", "");
    let mut daemon = agent.start(true);
    append(&setup.log("early.log"), "early", 0..300);
    daemon.wait_for_log("no queue is bound", 1, Duration::from_secs(30));
    let mut collector = setup.collector.start();
    append(&setup.log("early.log"), "early", 300..400);
    let lines = wait_for_lines(&setup.out(&agent, "early.log"), 400, ARRIVAL);
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    assert_same_lines(&lines, &expected("early", 0..400), "early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_publishes_are_resent_and_arrive_once_when_the_queue_takes_them_again() {
    let mut setup = Setup::new("nacked");
    let full = format!("{}.full", setup.topology.exchange);
    // Deleted with the topology, whatever happens to the test.
    setup.topology.queues.push(full.clone());
    let mut collector = setup.collector.start();
    let broker = Broker::connect().await;
    broker
        .bind_full_queue(&setup.topology.exchange, &full)
        .await;
    let metrics = free_addr();
    let agent = setup.agent(
        &amqp_url(),
        &format!("[metrics]\nlisten = \"{metrics}\""),
        "",
    );
    let mut daemon = agent.start(true);
    // Every publish is nacked (the full queue refuses it) though the collector's queue takes
    // it: the agent resends, on a new channel each time, and warns once, not per nack.
    append(&setup.log("app.log"), "app", 0..2000);
    daemon.wait_for_log("the broker nacked publishes", 1, ARRIVAL);
    tokio::time::sleep(Duration::from_secs(3)).await;
    append(&setup.log("app.log"), "app", 2000..3000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.delete_queue(&full).await;
    // Every line once and in order: the copies the collector's queue took of nacked publishes
    // are dropped as duplicates.
    let out = setup.out(&agent, "app.log");
    assert_same_lines(
        &wait_for_lines(&out, 3000, ARRIVAL),
        &expected("app", 0..3000),
        "app",
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(read_lines(&out).len(), 3000, "no duplicate");
    let warnings = daemon
        .log_text()
        .matches("the broker nacked publishes")
        .count();
    assert!(
        warnings <= 2,
        "one warning per 30 s, not one per nack: {warnings}"
    );
    // Resent, not taken for delivered: more publishes than lines.
    let (published, nacked) = (
        counter(&metrics, "logship_agent_published_total"),
        counter(&metrics, "logship_agent_nacked_total"),
    );
    assert!(
        nacked > 0 && published >= 3000 + nacked,
        "published {published}, nacked {nacked}"
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_shipped_byte_exact_or_split_never_crashes() {
    let setup = Setup::new("badinput");
    let mut collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", "");
    // Not readable: a socket (root can read any mode bits, but not open a socket).
    let _socket = std::os::unix::net::UnixListener::bind(setup.log("socket.log")).unwrap();
    let mut daemon = agent.start(true);
    let weird = b"caf\xe9 \xff\xfe\x00 latin-1\nwindows line\r\n\r\nlast\n".to_vec();
    std::fs::write(setup.log("weird.log"), &weird).unwrap();
    let mut binary: Vec<u8> = (0..65536).map(|_| fastrand::u8(..)).collect();
    binary.retain(|&b| b != b'\n' || fastrand::bool());
    binary.push(b'\n');
    std::fs::write(setup.log("binary.log"), &binary).unwrap();
    // 5 MiB with no newline: shipped as 1 MiB parts, the last once the file is rotated away.
    std::fs::write(setup.log("huge.log"), vec![b'x'; 5 << 20]).unwrap();
    let weird_out = setup.out(&agent, "weird.log");
    wait_for_lines(&weird_out, 4, ARRIVAL);
    assert_eq!(std::fs::read(&weird_out).unwrap(), weird);
    let binary_out = setup.out(&agent, "binary.log");
    let want = binary.iter().filter(|&&b| b == b'\n').count();
    wait_for_lines(&binary_out, want, ARRIVAL);
    assert_eq!(std::fs::read(&binary_out).unwrap(), binary);
    let huge_out = setup.out(&agent, "huge.log");
    assert_eq!(
        wait_for_lines(&huge_out, 4, ARRIVAL).len(),
        4,
        "four full parts before the end"
    );
    std::fs::rename(setup.log("huge.log"), setup.log("huge.log.1")).unwrap();
    let parts = wait_for_lines(&huge_out, 5, ARRIVAL);
    assert_eq!(parts.len(), 5);
    assert!(
        parts
            .iter()
            .all(|p| p.len() == 1 << 20 && p.iter().all(|&b| b == b'x'))
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    let log = daemon.log_text();
    assert!(
        log.contains("cannot read file") && log.contains("socket.log"),
        "{log}"
    );
    assert!(log.contains("split=4"), "{log}");
}

/// An agent whose broker is away, with a tiny spool, and what happens when it comes back.
async fn spool_full(label: &str, when_full: &str) -> (Setup, Agent, Daemon, Proxy) {
    let setup = Setup::new(label);
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    proxy.cut();
    let agent = setup.agent(
        &proxy.url(),
        &format!("[buffer]\nmax_bytes = \"64KiB\"\nwhen_full = \"{when_full}\""),
        "",
    );
    let daemon = agent.start(false);
    append(&setup.log("flood.log"), "flood", 0..5000);
    (setup, agent, daemon, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_full_with_block_pauses_reading_and_loses_nothing() {
    let (setup, agent, mut daemon, proxy) = spool_full("block", "block").await;
    daemon.wait_for_log("spool full, reading paused", 1, Duration::from_secs(30));
    let mut collector = setup.collector.start();
    proxy.restore();
    let lines = wait_for_lines(&setup.out(&agent, "flood.log"), 5000, ARRIVAL);
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    assert_same_lines(&lines, &expected("flood", 0..5000), "flood");
    assert!(
        daemon.log_text().contains("reading resumed"),
        "{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_full_with_drop_oldest_drops_counts_and_keeps_the_newest() {
    let (setup, agent, mut daemon, proxy) = spool_full("dropold", "drop_oldest").await;
    daemon.wait_for_log("dropped the oldest lines", 1, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut collector = setup.collector.start();
    proxy.restore();
    // The newest line always survives; wait for it, then for the broker to drain.
    let out = setup.out(&agent, "flood.log");
    let deadline = std::time::Instant::now() + ARRIVAL;
    while read_lines(&out).last() != Some(&text("flood", 4999)) {
        assert!(
            std::time::Instant::now() < deadline,
            "newest line never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    let lines = read_lines(&out);
    let log = daemon.log_text();
    let dropped: usize = log
        .rsplit("dropped=")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dropped= counter in {log}"));
    assert!(dropped > 0);
    let first = 5000 - lines.len();
    assert_eq!(dropped, first, "every line not dropped arrived");
    assert_same_lines(
        &lines,
        &expected("flood", first..5000),
        "the newest lines, in order",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_inputs_and_refuses_a_bad_config() {
    let setup = Setup::new("reload");
    let mut collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", "");
    let mut daemon = agent.start(true);
    let other = setup.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    append(&other.join("late.txt"), "late", 0..50);
    // A bad edit is refused with one error line; the running inputs stay.
    let good = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(
        &agent.config,
        good.replace("[[inputs]]", "[[inputs]]\nbogus = 1"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("reload refused", 1, Duration::from_secs(10));
    append(&setup.log("still.log"), "still", 0..10);
    wait_for_lines(&setup.out(&agent, "still.log"), 10, ARRIVAL);
    // A good edit adds a glob without a restart.
    let glob = other.join("*.txt");
    std::fs::write(
        &agent.config,
        good.replace("paths = [", &format!("paths = [\"{}\", ", glob.display())),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("inputs reloaded", 1, Duration::from_secs(10));
    let out = setup.collector.file(&agent.host, &other.join("late.txt"));
    assert_same_lines(
        &wait_for_lines(&out, 50, ARRIVAL),
        &expected("late", 0..50),
        "late",
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
}
