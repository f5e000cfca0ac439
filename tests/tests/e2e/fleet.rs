//! logship-collector serving a fleet: many sources under a small open-file limit, and an output
//! disk, or its state disk, that fills up and is freed mid-stream.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logship_runtime::Envelope;
use logship_tests::broker::{Broker, Topology, amqp_url};
use logship_tests::fixture::{Agent, Collector};
use logship_tests::lines::{assert_same_lines, envelopes, read_lines, text, wait_for_lines};
use logship_tests::tmpfs::Tmpfs;

/// `(host, path, ino)` of `n` sources spread over ten hosts.
fn sources(n: usize) -> Vec<(String, String, u64)> {
    (0..n)
        .map(|i| {
            (
                format!("host-{}", i % 10),
                format!("/var/log/fleet/s{i:04}.log"),
                i as u64,
            )
        })
        .collect()
}

/// Lines `range` of every source, interleaved (line 0 of each, then line 1, ...), as a fleet
/// sends them: every batch touches many files.
fn interleaved(sources: &[(String, String, u64)], range: std::ops::Range<usize>) -> Vec<Envelope> {
    let per_source: Vec<Vec<Envelope>> = sources
        .iter()
        .map(|(host, path, ino)| envelopes(host, path, *ino, range.clone()))
        .collect();
    (0..range.len())
        .flat_map(|i| per_source.iter().map(move |lines| lines[i].clone()))
        .collect()
}

/// Waits until every source's file holds `n` lines (or `timeout`), calling `watch` meanwhile.
fn wait_all(
    collector: &Collector,
    sources: &[(String, String, u64)],
    n: usize,
    timeout: Duration,
    mut watch: impl FnMut(),
) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        watch();
        let done = sources
            .iter()
            .all(|(host, path, _)| read_lines(&collector.file(host, Path::new(path))).len() >= n);
        if done {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_every_line_once(collector: &Collector, sources: &[(String, String, u64)], n: usize) {
    for (host, path, _) in sources {
        let expected: Vec<Vec<u8>> = (0..n).map(|i| text(path, i)).collect();
        let actual = read_lines(&collector.file(host, Path::new(path)));
        assert_same_lines(&actual, &expected, &format!("{host}{path}"));
    }
}

/// A tmpfs of `size` on `dir`, or `None` after saying why `test` skips.
fn tmpfs_or_skip(dir: &Path, size: &str, test: &str, what: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(dir, size) {
        Ok(tmpfs) => Some(tmpfs),
        Err(why) => {
            logship_tests::skip(test, &format!("no tmpfs for {what} ({why})"));
            None
        }
    }
}

/// Lines `0..before` of `sources` published and every one written; then `tmpfs` filled and
/// lines `before..total` published onto the full disk. Returns the file that fills it.
async fn written_then_filled(
    collector: &Collector,
    exchange: &str,
    tmpfs: &Tmpfs,
    sources: &[(String, String, u64)],
    before: usize,
    total: usize,
) -> PathBuf {
    let broker = Broker::connect().await;
    broker
        .publish(exchange, &interleaved(sources, 0..before))
        .await;
    wait_all(collector, sources, before, Duration::from_secs(60), || {});
    assert_every_line_once(collector, sources, before);
    let ballast = fill(tmpfs.path().join("ballast"));
    broker
        .publish(exchange, &interleaved(sources, before..total))
        .await;
    ballast
}

/// Writes zeros to `path` until its filesystem is full; returns the path.
fn fill(path: PathBuf) -> PathBuf {
    use std::io::Write as _;
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(err) => panic!("filling {}: {err}", path.display()),
        }
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sources_under_a_256_descriptor_limit_are_all_written_without_an_error_storm() {
    const SOURCES: usize = 1000;
    const LINES: usize = 30;
    let topology = Topology::new("fleet", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    let mut daemon = collector.start_with_nofile(256);
    let sources = sources(SOURCES);
    let broker = Broker::connect().await;
    for round in 0..LINES {
        broker
            .publish(&topology.exchange, &interleaved(&sources, round..round + 1))
            .await;
    }
    let output = std::fs::canonicalize(&collector.output).unwrap();
    let mut most_open = 0;
    wait_all(
        &collector,
        &sources,
        LINES,
        Duration::from_secs(300),
        || {
            most_open = most_open.max(daemon.open_under(&output));
        },
    );
    assert_every_line_once(&collector, &sources, LINES);
    let log = daemon.log_text();
    // The default max_open_files is what a limit of 256 leaves: 192.
    assert!(log.contains("max_open_files=192"), "{log}");
    assert!(most_open <= 192, "{most_open} output files open at once");
    assert!(!log.contains("cannot write output"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert!(log.lines().count() <= 15, "too many log lines:\n{log}");
    let warned = daemon.warnings();
    assert!(warned.len() <= 2, "an error storm: {warned:#?}");
    assert!(daemon.stop(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_disk_filled_and_freed_mid_stream_writes_every_line_once_and_says_so_once() {
    const BEFORE: usize = 1000;
    const TOTAL: usize = 3000;
    let topology = Topology::new("diskfull", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    // Declared before the daemon, so it is unmounted after the daemon is gone.
    let Some(tmpfs) = tmpfs_or_skip(
        &collector.output,
        "1m",
        "output_disk_filled_and_freed_mid_stream_writes_every_line_once_and_says_so_once",
        "the output dir",
    ) else {
        return;
    };
    let mut daemon = collector.start();
    let sources = sources(4);
    let ballast = written_then_filled(
        &collector,
        &topology.exchange,
        &tmpfs,
        &sources,
        BEFORE,
        TOTAL,
    )
    .await;
    daemon.wait_for_log("No space left on device", 1, Duration::from_secs(60));
    // Let it retry a few times (backoff 100 ms doubling to 1 s) while the disk stays full.
    tokio::time::sleep(Duration::from_secs(4)).await;
    std::fs::remove_file(&ballast).unwrap();
    daemon.wait_for_log("output writable again", 1, Duration::from_secs(30));
    wait_all(&collector, &sources, TOTAL, Duration::from_secs(60), || {});
    assert_every_line_once(&collector, &sources, TOTAL);

    assert!(daemon.stop(Duration::from_secs(20)).success());
    let log = daemon.log_text();
    assert_eq!(log.matches("cannot write output").count(), 1, "{log}");
    assert_eq!(log.matches("output writable again").count(), 1, "{log}");
    assert!(log.lines().count() <= 15, "too many log lines:\n{log}");
    let warned = daemon.warnings();
    assert!(warned.len() <= 2, "too many warnings: {warned:#?}");
    assert!(
        warned[0].contains(collector.output.to_str().unwrap()),
        "{warned:?}"
    );
    let failures: u64 = log
        .split("disk_full=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failures >= 2, "disk_full counter: {failures}\n{log}");
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_disk_filled_and_freed_mid_stream_commits_every_line_once() {
    const BEFORE: usize = 1000;
    const TOTAL: usize = 3000;
    let topology = Topology::new("statefull", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    // The commit journal and sled live here; declared before the daemon, so it is unmounted
    // after the daemon is gone.
    let Some(tmpfs) = tmpfs_or_skip(
        &dir.path().join("c/state"),
        "16m",
        "state_disk_filled_and_freed_mid_stream_commits_every_line_once",
        "the state dir",
    ) else {
        return;
    };
    let mut daemon = collector.start();
    let sources = sources(4);
    let ballast = written_then_filled(
        &collector,
        &topology.exchange,
        &tmpfs,
        &sources,
        BEFORE,
        TOTAL,
    )
    .await;
    // Refused before the journal or sled is touched: sled fails for good once it meets ENOSPC.
    daemon.wait_for_log(
        "bytes free in the state directory",
        1,
        Duration::from_secs(60),
    );
    // A few retries (and the once-a-second checkpoint) while the disk stays full.
    tokio::time::sleep(Duration::from_secs(4)).await;
    std::fs::remove_file(&ballast).unwrap();
    wait_all(&collector, &sources, TOTAL, Duration::from_secs(60), || {});
    assert_every_line_once(&collector, &sources, TOTAL);

    assert!(daemon.stop(Duration::from_secs(20)).success());
    let log = daemon.log_text();
    assert!(log.lines().count() <= 15, "too many log lines:\n{log}");
    let warned = daemon.warnings();
    assert!(warned.len() <= 2, "too many warnings: {warned:#?}");
    // Said as what failed: the commit, not the output (issue 27, item 6c).
    assert_eq!(log.matches("cannot commit;").count(), 1, "{log}");
    assert!(!log.contains("cannot write output"), "{log}");
    assert_eq!(log.matches("committing again").count(), 1, "{log}");
    // A restart finds every line committed: nothing is written again.
    let mut daemon = collector.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_every_line_once(&collector, &sources, TOTAL);
    assert!(daemon.stop(Duration::from_secs(20)).success());
    drop(tmpfs);
}

/// Regression test for issue 9: with `dedup.max_ids` at 1000, lines resent after 5000 lines of
/// another host were written twice (their ids forgotten); their committed offsets now catch them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_resent_after_the_id_window_moved_on_are_dropped_by_their_offset() {
    let topology = Topology::new("window", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(
        dir.path(),
        "c",
        &topology.exchange,
        &topology.queues[0],
        "[dedup]\nmax_ids = 1000\n",
    );
    let mut daemon = collector.start();
    let a = vec![("host-a".to_string(), "/var/log/a.log".to_string(), 1)];
    let b = vec![("host-b".to_string(), "/var/log/b.log".to_string(), 2)];
    let broker = Broker::connect().await;
    broker
        .publish(&topology.exchange, &interleaved(&a, 0..2000))
        .await;
    broker
        .publish(&topology.exchange, &interleaved(&b, 0..5000))
        .await;
    wait_all(&collector, &b, 5000, Duration::from_secs(60), || {});
    // What an agent killed -9 sends again: everything since its last checkpoint, and more.
    broker
        .publish(&topology.exchange, &interleaved(&a, 1000..3000))
        .await;
    // One publisher, one queue: once line 2999 is on disk, the resent copies of 1000..1999,
    // published before it, were either dropped or written ahead of it.
    wait_all(&collector, &a, 3000, Duration::from_secs(60), || {});
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert_every_line_once(&collector, &a, 3000);
    assert_every_line_once(&collector, &b, 5000);
    assert!(
        daemon.log_text().contains("duplicates=1000"),
        "{}",
        daemon.log_text()
    );
}

/// Appends lines `range` of `source` (as [`text`] makes them) to `path`.
fn append(path: &Path, source: &str, range: std::ops::Range<usize>) {
    use std::io::Write as _;
    let mut bytes = Vec::new();
    for i in range {
        bytes.extend_from_slice(&text(source, i));
        bytes.push(b'\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(&bytes).unwrap();
}

/// The scenario with real agents: `dedup.max_ids = 1000`, agent A killed -9 three times
/// and restarted 3 s later while agent B (another host) keeps shipping, so A's resent lines come
/// back long after their ids left the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_nine_and_restarted_after_more_traffic_than_the_id_window_duplicates_nothing()
{
    const PER_FILE: usize = 20_000;
    let topology = Topology::new("agentwindow", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(
        dir.path(),
        "c",
        &topology.exchange,
        &topology.queues[0],
        "[dedup]\nmax_ids = 1000\n",
    );
    let mut collector_daemon = collector.start();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (a_log, b_log) = (logs.join("a.log"), logs.join("b.log"));
    let agent = |name: &str, log: &Path| {
        Agent::new(
            dir.path(),
            name,
            &amqp_url(),
            &topology.exchange,
            &[log],
            "",
            "",
        )
    };
    let (a, b) = (agent("a", &a_log), agent("b", &b_log));
    let (mut a_daemon, mut b_daemon) = (a.start(true), b.start(true));
    let (a_path, b_path) = (a_log.clone(), b_log.clone());
    let writer = std::thread::spawn(move || {
        for chunk in (0..PER_FILE).step_by(500) {
            append(&a_path, "a", chunk..chunk + 500);
            append(&b_path, "b", chunk..chunk + 500);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500 + fastrand::u64(0..1000))).await;
        a_daemon.kill9();
        tokio::time::sleep(Duration::from_secs(3)).await;
        a_daemon = a.start(false);
    }
    writer.join().unwrap();
    for (agent, log) in [(&a, &a_log), (&b, &b_log)] {
        wait_for_lines(
            &collector.file(&agent.host, log),
            PER_FILE,
            Duration::from_secs(180),
        );
    }
    assert!(a_daemon.stop(Duration::from_secs(20)).success());
    assert!(b_daemon.stop(Duration::from_secs(20)).success());
    assert!(collector_daemon.stop(Duration::from_secs(20)).success());
    for (agent, log, name) in [(&a, &a_log, "a"), (&b, &b_log, "b")] {
        let expected: Vec<Vec<u8>> = (0..PER_FILE).map(|i| text(name, i)).collect();
        assert_same_lines(
            &read_lines(&collector.file(&agent.host, log)),
            &expected,
            name,
        );
    }
}
