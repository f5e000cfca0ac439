//! logship-collector against the real broker, with envelopes published as the agent would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use logship_runtime::{Envelope, FileId};
use logship_tests::broker::{Broker, Topology};
use logship_tests::fixture::Collector;
use logship_tests::lines::{assert_same_lines, envelopes, read_lines, text, wait_for_lines};

const HOST: &str = "web-1";

fn expected(path: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| text(path, i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_on_their_own_queues_each_receive_every_line() {
    let topology = Topology::new("fanout", 2);
    let dir = tempfile::tempdir().unwrap();
    let a = Collector::new(dir.path(), "a", &topology.exchange, &topology.queues[0], "");
    let b = Collector::new(dir.path(), "b", &topology.exchange, &topology.queues[1], "");
    let (mut da, mut db) = (a.start(), b.start());
    let broker = Broker::connect().await;
    let sources = ["/var/log/one.log", "/var/log/two.log", "/srv/app/three.log"];
    for (ino, path) in sources.iter().enumerate() {
        broker
            .publish(
                &topology.exchange,
                &envelopes(HOST, path, ino as u64, 0..3000),
            )
            .await;
    }
    for collector in [&a, &b] {
        for path in sources {
            let lines = wait_for_lines(
                &collector.file(HOST, Path::new(path)),
                3000,
                Duration::from_secs(60),
            );
            assert_same_lines(&lines, &expected(path, 3000), path);
        }
    }
    assert!(da.stop(Duration::from_secs(20)).success());
    assert!(db.stop(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_nine_five_times_mid_stream_writes_every_line_once_in_order() {
    const LINES: usize = 100_000;
    let topology = Topology::new("kill9", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    let mut daemon = collector.start();
    let sources = ["/var/log/a.log", "/var/log/b.log"];
    let exchange = topology.exchange.clone();
    let publisher = tokio::spawn(async move {
        let broker = Broker::connect().await;
        for chunk in (0..LINES / 2).step_by(2500) {
            for (ino, path) in sources.iter().enumerate() {
                broker
                    .publish(
                        &exchange,
                        &envelopes(HOST, path, ino as u64, chunk..chunk + 2500),
                    )
                    .await;
            }
        }
    });
    for kill in 0..5 {
        // Kill at a different moment each time: the collector is mid-batch most of the time.
        tokio::time::sleep(Duration::from_millis(400 + fastrand::u64(0..900))).await;
        daemon.kill9();
        let written: usize = sources
            .iter()
            .map(|p| read_lines(&collector.file(HOST, Path::new(p))).len())
            .sum();
        eprintln!("kill {kill}: {written} lines on disk");
        daemon = collector.start();
    }
    publisher.await.unwrap();
    for path in sources {
        let lines = wait_for_lines(
            &collector.file(HOST, Path::new(path)),
            LINES / 2,
            Duration::from_secs(120),
        );
        assert!(
            lines.len() >= LINES / 2,
            "{path}: only {} lines",
            lines.len()
        );
    }
    assert!(daemon.stop(Duration::from_secs(20)).success());
    let broker = Broker::connect().await;
    assert_eq!(
        broker.queue_len(&topology.queues[0]).await,
        Some(0),
        "everything acked"
    );
    for path in sources {
        assert_same_lines(
            &read_lines(&collector.file(HOST, Path::new(path))),
            &expected(path, LINES / 2),
            path,
        );
    }
    assert_eq!(daemon_log_count(&collector.log, "state recovered"), 6);
}

fn daemon_log_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_published_twice_is_written_once() {
    let topology = Topology::new("dup", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    let mut daemon = collector.start();
    let broker = Broker::connect().await;
    let path = "/var/log/dup.log";
    let batch = envelopes(HOST, path, 7, 0..500);
    broker.publish(&topology.exchange, &batch).await;
    // The same lines again (an agent's resend), one of them twice within a batch.
    broker.publish(&topology.exchange, &batch).await;
    broker
        .publish(&topology.exchange, &[batch[3].clone(), batch[3].clone()])
        .await;
    broker
        .publish(&topology.exchange, &envelopes(HOST, path, 7, 500..600))
        .await;
    wait_for_lines(
        &collector.file(HOST, Path::new(path)),
        600,
        Duration::from_secs(30),
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert_same_lines(
        &read_lines(&collector.file(HOST, Path::new(path))),
        &expected(path, 600),
        path,
    );
    assert!(
        daemon.log_text().contains("duplicates=502"),
        "{}",
        daemon.log_text()
    );
    // The seen ids outlive the process: after a restart the same lines are still dropped.
    let mut daemon = collector.start();
    broker.publish(&topology.exchange, &batch).await;
    broker
        .publish(&topology.exchange, &envelopes(HOST, path, 7, 600..610))
        .await;
    wait_for_lines(
        &collector.file(HOST, Path::new(path)),
        610,
        Duration::from_secs(30),
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert_same_lines(
        &read_lines(&collector.file(HOST, Path::new(path))),
        &expected(path, 610),
        "after a restart",
    );
    assert!(
        daemon.log_text().contains("written=10 duplicates=500"),
        "{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_and_nothing_is_written_outside_the_output_dir() {
    let topology = Topology::new("hostile", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    let mut daemon = collector.start();
    let broker = Broker::connect().await;
    // Distinct offsets, so no two share a message id.
    let offset = std::cell::Cell::new(0);
    let good = |host: &str, path: &str| Envelope {
        host: host.into(),
        path: path.into(),
        file: FileId {
            dev: 1,
            ino: 2,
            fp: 3,
        },
        generation: 0,
        offset: offset.replace(offset.get() + 6),
        timestamp_ms: 0,
        line: b"pwned".to_vec(),
        fields: Default::default(),
        kind: Default::default(),
    };
    let mut bodies: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        b"".to_vec(),
        b"{\"v\":2,\"host\":\"h\"}".to_vec(),
        // Complete but for what each one gets wrong: a version from the future, both line
        // fields, neither line field.
        br#"{"v":2,"host":"h","path":"/v2.log","file":{"dev":1,"ino":2,"fp":"0000000000000003"},"gen":0,"offset":0,"ts":0,"line":"from the future"}"#.to_vec(),
        br#"{"v":1,"host":"h","path":"/two.log","file":{"dev":1,"ino":2,"fp":"0000000000000003"},"gen":0,"offset":0,"ts":0,"line":"a","line_b64":"YQ=="}"#.to_vec(),
        br#"{"v":1,"host":"h","path":"/none.log","file":{"dev":1,"ino":2,"fp":"0000000000000003"},"gen":0,"offset":0,"ts":0}"#.to_vec(),
        b"{\"v\":1}".to_vec(),
        b"[1,2,3]".to_vec(),
        br#"{"v":1,"host":"h","path":"/p","file":{"dev":1,"ino":2,"fp":"0000000000000003"},"gen":0,"offset":0,"ts":0,"line_b64":"!!"}"#.to_vec(),
        vec![0xff; 64],
    ];
    for (host, path) in [
        ("h", "/../../etc/passwd"),
        ("h", "../escape"),
        ("h", "/var/../../../escape"),
        ("..", "/x.log"),
        (".", "/x.log"),
        ("", "/x.log"),
        ("a/b", "/x.log"),
        ("h", "/with\0nul"),
        ("h\0", "/x.log"),
        ("h", "/"),
    ] {
        bodies.push(good(host, path).to_json());
    }
    // A file where a directory is needed: the first line creates /x/file, the second needs it as a directory.
    bodies.push(good("h", "/x/file").to_json());
    bodies.push(good("h", "/x/file/inside").to_json());
    let hostile = bodies.len() - 1;
    let with_ids: Vec<(Vec<u8>, String)> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| (b, format!("hostile-{i}")))
        .collect();
    broker.publish_bodies(&topology.exchange, &with_ids).await;
    // Still consuming: a valid line, with bytes that are not UTF-8, arrives byte-exact.
    let mut binary_line = envelopes(HOST, "/var/log/after.log", 9, 0..1).remove(0);
    binary_line.line = b"caf\xe9 \xff\xfe\x00 \r end".to_vec();
    broker
        .publish(&topology.exchange, std::slice::from_ref(&binary_line))
        .await;
    let lines = wait_for_lines(
        &collector.file(HOST, Path::new("/var/log/after.log")),
        1,
        Duration::from_secs(30),
    );
    assert_eq!(lines, vec![binary_line.line.clone()]);
    let dead = broker
        .wait_queue_len(
            &topology.dead_letter_queue(0),
            hostile as u32,
            Duration::from_secs(10),
        )
        .await;
    assert!(daemon.stop(Duration::from_secs(20)).success());
    let log = daemon.log_text();
    assert_eq!(
        dead as usize, hostile,
        "every hostile message dead-lettered; collector log:\n{log}"
    );
    assert!(log.contains(&format!("dead_lettered={hostile}")), "{log}");
    // Nothing outside the output dir: the tempdir holds only the collector's own files.
    let mut outside = Vec::new();
    walk(dir.path(), &mut outside);
    outside.retain(|p| {
        !p.starts_with(&collector.output) && !p.starts_with(dir.path().join("c/state"))
    });
    outside.sort();
    let expected: Vec<PathBuf> = ["c", "c/collector.log", "c/collector.toml"]
        .iter()
        .map(|p| dir.path().join(p))
        .collect();
    assert_eq!(outside, expected);
    assert!(!dir.path().join("escape").exists() && !Path::new("/escape").exists());
    // Inside it, only the two valid lines' files.
    let mut inside = Vec::new();
    walk(&collector.output, &mut inside);
    inside.retain(|p| p.is_file());
    inside.sort();
    assert_eq!(
        inside,
        vec![
            collector.file("h", Path::new("/x/file")),
            collector.file(HOST, Path::new("/var/log/after.log")),
        ]
    );
    assert!(
        daemon
            .log_text()
            .contains(&format!("dead_lettered={hostile}")),
        "{}",
        daemon.log_text()
    );
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(entry.path());
        if entry.file_type().unwrap().is_dir() {
            walk(&entry.path(), out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_exits_zero_and_a_restart_delivers_the_rest_once() {
    const LINES: usize = 30_000;
    let topology = Topology::new("sigterm", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    let mut daemon = collector.start();
    let path = "/var/log/term.log";
    // The stream goes on while the collector stops: SIGTERM lands mid-stream, not after it.
    let exchange = topology.exchange.clone();
    let publisher = tokio::spawn(async move {
        let broker = Broker::connect().await;
        for chunk in (0..LINES).step_by(1000) {
            broker
                .publish(&exchange, &envelopes(HOST, path, 1, chunk..chunk + 1000))
                .await;
        }
    });
    wait_for_lines(
        &collector.file(HOST, Path::new(path)),
        1000,
        Duration::from_secs(30),
    );
    let status = daemon.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    let on_disk = read_lines(&collector.file(HOST, Path::new(path)));
    eprintln!("{} of {LINES} lines on disk after SIGTERM", on_disk.len());
    publisher.await.unwrap();
    assert_same_lines(
        &on_disk,
        &expected(path, on_disk.len()),
        "after SIGTERM, an exact prefix",
    );
    // What was written was acked, and only that: the queue holds exactly the rest.
    let broker = Broker::connect().await;
    assert_eq!(
        broker.queue_len(&topology.queues[0]).await,
        Some((LINES - on_disk.len()) as u32),
        "lines left in the queue after SIGTERM with {} on disk",
        on_disk.len()
    );
    let mut daemon = collector.start();
    let lines = wait_for_lines(
        &collector.file(HOST, Path::new(path)),
        LINES,
        Duration::from_secs(60),
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert_same_lines(
        &read_lines(&collector.file(HOST, Path::new(path))),
        &expected(path, LINES),
        path,
    );
    assert!(lines.len() >= LINES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_output_files_after_logrotate_moved_them() {
    let topology = Topology::new("sighup", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    let mut daemon = collector.start();
    let broker = Broker::connect().await;
    let path = "/var/log/rot.log";
    broker
        .publish(&topology.exchange, &envelopes(HOST, path, 1, 0..100))
        .await;
    wait_for_lines(
        &collector.file(HOST, Path::new(path)),
        100,
        Duration::from_secs(30),
    );
    let rotated = collector
        .file(HOST, Path::new(path))
        .with_extension("log.1");
    std::fs::rename(collector.file(HOST, Path::new(path)), &rotated).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("reloading", 1, Duration::from_secs(10));
    broker
        .publish(&topology.exchange, &envelopes(HOST, path, 1, 100..150))
        .await;
    let lines = wait_for_lines(
        &collector.file(HOST, Path::new(path)),
        50,
        Duration::from_secs(30),
    );
    assert_same_lines(
        &lines,
        &(100..150).map(|i| text(path, i)).collect::<Vec<_>>(),
        "after SIGHUP",
    );
    assert_same_lines(
        &read_lines(&rotated),
        &expected(path, 100),
        "rotated file untouched",
    );
    // A restart keeps both intact: the new file's committed length was recorded on reopen.
    daemon.kill9();
    let mut daemon = collector.start();
    broker
        .publish(&topology.exchange, &envelopes(HOST, path, 1, 150..160))
        .await;
    let lines = wait_for_lines(
        &collector.file(HOST, Path::new(path)),
        60,
        Duration::from_secs(30),
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert_eq!(lines.len(), 60);
    assert_same_lines(
        &read_lines(&rotated),
        &expected(path, 100),
        "rotated file untouched",
    );
}

/// Under heavy traffic a batch lingers with the socket's low-water mark raised, so that what
/// trickles in meanwhile is read in one go; the mark is lowered before the batch is written. A
/// mark left raised would hold the stream's tail (and any lone line after it) in the kernel
/// until the heartbeat gave up on a connection that looks silent: a reconnect, a warning and
/// redeliveries, about 20 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_of_a_heavy_stream_and_a_lone_line_after_it_arrive_without_a_reconnect() {
    const LINES: usize = 20_000;
    let topology = Topology::new("lowwater", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    let mut daemon = collector.start();
    let path = "/var/log/burst.log";
    let out = collector.file(HOST, Path::new(path));
    let broker = Broker::connect().await;
    // One line first: the collector consumes before the stream starts, so it takes it live.
    broker
        .publish(&topology.exchange, &envelopes(HOST, path, 1, 0..1))
        .await;
    assert_eq!(wait_for_lines(&out, 1, Duration::from_secs(30)).len(), 1);
    for chunk in (1..LINES).step_by(1000) {
        let end = (chunk + 1000).min(LINES);
        broker
            .publish(&topology.exchange, &envelopes(HOST, path, 1, chunk..end))
            .await;
    }
    let lines = wait_for_lines(&out, LINES, Duration::from_secs(60));
    assert_eq!(lines.len(), LINES, "the stream's tail did not arrive");
    broker
        .publish(
            &topology.exchange,
            &envelopes(HOST, path, 1, LINES..LINES + 1),
        )
        .await;
    let lines = wait_for_lines(&out, LINES + 1, Duration::from_secs(10));
    assert_eq!(lines.len(), LINES + 1, "the lone line did not arrive");
    assert_same_lines(&lines, &expected(path, LINES + 1), path);
    let warnings = daemon.warnings();
    assert!(warnings.is_empty(), "collector warnings: {warnings:#?}");
    assert!(daemon.stop(Duration::from_secs(20)).success());
}
