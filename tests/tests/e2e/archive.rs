//! The collector's archive: compressed files through kill -9s, retention, the completeness audit
//! and bounded intake, against the real broker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use logship_runtime::Envelope;
use logship_tests::broker::{Broker, Topology};
use logship_tests::fixture::Collector;
use logship_tests::lines::{assert_same_lines, envelopes, text};

const HOST: &str = "web-1";

/// Whether the zstd command line tools are here (the tests read files as an operator would).
fn zstd_available(test: &str) -> bool {
    let found = Command::new("zstd").arg("-V").output().is_ok();
    if !found {
        logship_tests::skip(test, "no zstd command (apt-get install zstd)");
    }
    found
}

/// `zstdcat`'s lines of `file`, or why it failed.
fn zstdcat(file: &Path) -> Result<Vec<Vec<u8>>, String> {
    let out = Command::new("zstdcat")
        .arg(file)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut lines: Vec<Vec<u8>> = out
        .stdout
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    Ok(lines)
}

/// Waits until `file` decompresses to at least `n` lines.
fn wait_zstd_lines(file: &Path, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        // Mid-compaction a live file can read short for an instant: retry.
        let lines = zstdcat(file).unwrap_or_default();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sources of a run: one busy file and `quiet` files written one line each in turn, so that
/// most batches hold one line per file.
fn sources(quiet: usize) -> Vec<String> {
    std::iter::once("/var/log/busy.log".to_string())
        .chain((0..quiet).map(|i| format!("/var/log/app/{i:03}.log")))
        .collect()
}

/// Publishes `busy` lines of the busy source and `per_quiet` of every other, interleaved.
async fn publish_interleaved(
    exchange: String,
    sources: Vec<String>,
    busy: usize,
    per_quiet: usize,
) {
    let broker = Broker::connect().await;
    let rounds = per_quiet;
    let busy_per_round = busy / rounds;
    for round in 0..rounds {
        let mut batch: Vec<Envelope> = envelopes(
            HOST,
            &sources[0],
            0,
            round * busy_per_round..(round + 1) * busy_per_round,
        );
        for (ino, path) in sources.iter().enumerate().skip(1) {
            batch.extend(envelopes(HOST, path, ino as u64, round..round + 1));
        }
        broker.publish(&exchange, &batch).await;
    }
}

/// Where the collector wrote `path` of [`HOST`]: under the one day directory with `dated`.
fn output(collector: &Collector, path: &str, dated: bool) -> PathBuf {
    let relative = format!("{HOST}/{}.zst", path.trim_start_matches('/'));
    if !dated {
        return collector.output.join(relative);
    }
    let day = std::fs::read_dir(&collector.output)
        .ok()
        .and_then(|mut days| days.next())
        .and_then(Result::ok)
        .map(|d| d.path())
        .unwrap_or_else(|| collector.output.join("no-day-yet"));
    day.join(relative)
}

async fn compressed_files_survive_kill9s(label: &str, layout: &str) {
    const BUSY: usize = 20_000;
    const PER_QUIET: usize = 100;
    const QUIET: usize = 200;
    let topology = Topology::new(label, 1);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("compression = \"zstd\"\n{layout}");
    let collector = Collector::new(
        dir.path(),
        "c",
        &topology.exchange,
        &topology.queues[0],
        &extra,
    );
    let mut daemon = collector.start();
    let sources = sources(QUIET);
    let publisher = tokio::spawn(publish_interleaved(
        topology.exchange.clone(),
        sources.clone(),
        BUSY,
        PER_QUIET,
    ));
    for kill in 0..5 {
        tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(0..700))).await;
        daemon.kill9();
        eprintln!("kill {kill}");
        daemon = collector.start();
    }
    publisher.await.unwrap();
    let dated = !layout.is_empty();
    let busy = wait_zstd_lines(
        &output(&collector, &sources[0], dated),
        BUSY,
        Duration::from_secs(120),
    );
    let last = wait_zstd_lines(
        &output(&collector, &sources[QUIET], dated),
        PER_QUIET,
        Duration::from_secs(60),
    );
    assert!(
        busy.len() >= BUSY && last.len() >= PER_QUIET,
        "{} {}",
        busy.len(),
        last.len()
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    let broker = Broker::connect().await;
    assert_eq!(
        broker.queue_len(&topology.queues[0]).await,
        Some(0),
        "everything acked"
    );
    let (mut plain, mut compressed) = (0u64, 0u64);
    for (i, path) in sources.iter().enumerate() {
        let file = output(&collector, path, dated);
        let test = Command::new("zstd")
            .args(["-q", "-t"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "zstd -t {}: {}",
            file.display(),
            String::from_utf8_lossy(&test.stderr)
        );
        let n = if i == 0 { BUSY } else { PER_QUIET };
        let expected: Vec<Vec<u8>> = (0..n).map(|k| text(path, k)).collect();
        let lines = zstdcat(&file).unwrap();
        assert_same_lines(&lines, &expected, path);
        plain += expected.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
        compressed += std::fs::metadata(&file).unwrap().len();
    }
    eprintln!("{plain} bytes of lines in {compressed} compressed bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_files_read_whole_after_five_collector_kill9s_one_busy_file_and_200_quiet() {
    if zstd_available("compressed kill -9") {
        compressed_files_survive_kill9s("zstd-kill9", "").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_files_under_a_date_layout_read_whole_after_five_collector_kill9s() {
    if zstd_available("compressed kill -9, {date}") {
        compressed_files_survive_kill9s("zstd-kill9-date", "layout = \"{date}/{host}/{path}\"\n")
            .await;
    }
}

/// Resident memory of process `pid` now (VmRSS), in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_envelope_is_dead_lettered_unparsed_and_counted() {
    let topology = Topology::new("too-large", 1);
    let dir = tempfile::tempdir().unwrap();
    let (collector, addr) =
        Collector::serving(dir.path(), &topology, "max_line_bytes = \"1 MiB\"", "");
    let mut daemon = collector.start();
    let broker = Broker::connect().await;
    // A normal line first, so the idle size is that of a collector that has written.
    broker
        .publish(
            &topology.exchange,
            &envelopes(HOST, "/var/log/a.log", 1, 0..1),
        )
        .await;
    let file = collector.file(HOST, Path::new("/var/log/a.log"));
    logship_tests::lines::wait_for_lines(&file, 1, Duration::from_secs(30));
    let idle = rss_kib(daemon.pid());
    // A foreign client's single envelope carrying a 100 MiB line.
    let mut huge = envelopes(HOST, "/var/log/a.log", 1, 1..2).remove(0);
    huge.line = vec![b'x'; 100 << 20];
    broker.publish(&topology.exchange, &[huge]).await;
    let dead = broker
        .wait_queue_len(&topology.dead_letter_queue(0), 1, Duration::from_secs(60))
        .await;
    assert_eq!(dead, 1, "dead-lettered:\n{}", daemon.log_text());
    let counted = (0..100).any(|_| {
        let (_, page) = logship_tests::http::get(&addr, "/metrics");
        std::thread::sleep(Duration::from_millis(100));
        page.contains("logship_collector_rejected_total{reason=\"too_large\"} 1")
    });
    assert!(counted, "counted as too_large");
    let after = rss_kib(daemon.pid());
    let peak = daemon.peak_rss_kib();
    eprintln!(
        "collector RSS: idle {idle} KiB, after the 100 MiB envelope {after} KiB, peak {peak} KiB"
    );
    assert!(
        after < idle + 32 * 1024,
        "RSS {after} KiB after, {idle} KiB idle"
    );
    assert_eq!(
        logship_tests::lines::read_lines(&file).len(),
        1,
        "nothing written"
    );
    assert!(daemon.log_text().contains("above output.max_line_bytes"));
    assert!(daemon.stop(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_files_keeps_young_ones_and_a_late_line_starts_a_new_file() {
    let topology = Topology::new("retention", 1);
    let dir = tempfile::tempdir().unwrap();
    let (collector, addr) = Collector::serving(
        dir.path(),
        &topology,
        "retention = \"2d\"\nlayout = \"{host}/{path}\"",
        "",
    );
    let mut daemon = collector.start();
    let broker = Broker::connect().await;
    let paths = [
        "/var/log/old/a.log",
        "/var/log/old/b.log",
        "/var/log/young.log",
    ];
    for (ino, path) in paths.iter().enumerate() {
        broker
            .publish(
                &topology.exchange,
                &envelopes(HOST, path, ino as u64, 0..10),
            )
            .await;
    }
    let files: Vec<PathBuf> = paths
        .iter()
        .map(|p| collector.file(HOST, Path::new(p)))
        .collect();
    for file in &files {
        logship_tests::lines::wait_for_lines(file, 10, Duration::from_secs(30));
    }
    assert!(daemon.stop(Duration::from_secs(20)).success());
    // Last written three days ago.
    let old = std::time::SystemTime::now() - Duration::from_secs(3 * 86400);
    for file in &files[..2] {
        std::fs::File::options()
            .write(true)
            .open(file)
            .and_then(|f| f.set_modified(old))
            .unwrap();
    }
    let mut daemon = collector.start();
    daemon.wait_for_log("retention pass", 1, Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(log.contains("files=2 "), "{log}");
    assert!(!files[0].exists() && !files[1].exists());
    assert!(
        !files[0].parent().unwrap().exists(),
        "the emptied directory is removed"
    );
    assert_eq!(
        logship_tests::lines::read_lines(&files[2]).len(),
        10,
        "young file kept"
    );
    // A late line for a deleted file starts a new one; a duplicate of a deleted line is still
    // dropped (its source's ranges are kept for dedup.max_age).
    broker
        .publish(&topology.exchange, &envelopes(HOST, paths[0], 0, 9..11))
        .await;
    let lines = logship_tests::lines::wait_for_lines(&files[0], 1, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_same_lines(
        &logship_tests::lines::read_lines(&files[0]),
        &[text(paths[0], 10)],
        "the late line alone",
    );
    assert_eq!(lines.len(), 1);
    let (_, page) = logship_tests::http::get(&addr, "/metrics");
    assert!(
        page.contains("\nlogship_collector_retention_deleted_total 2\n"),
        "{page}"
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
}

/// Regression test for issue 27 (item 6a): retention ran only when a batch came, so a collector
/// that received nothing deleted nothing. Now passes run on the collector's own clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_files_of_a_collector_that_receives_nothing() {
    let topology = Topology::new("quietretention", 1);
    let dir = tempfile::tempdir().unwrap();
    // A pass every second (1/60 of the retention).
    let (collector, addr) = Collector::serving(
        dir.path(),
        &topology,
        "retention = \"1m\"\nlayout = \"{host}/{path}\"",
        "",
    );
    let mut daemon = collector.start();
    let broker = Broker::connect().await;
    let paths = ["/var/log/old.log", "/var/log/young.log"];
    for (ino, path) in paths.iter().enumerate() {
        broker
            .publish(&topology.exchange, &envelopes(HOST, path, ino as u64, 0..5))
            .await;
    }
    let files: Vec<PathBuf> = paths
        .iter()
        .map(|p| collector.file(HOST, Path::new(p)))
        .collect();
    for file in &files {
        logship_tests::lines::wait_for_lines(file, 5, Duration::from_secs(30));
    }
    // From now on nothing arrives; one file's last write goes two minutes back.
    let old = std::time::SystemTime::now() - Duration::from_secs(120);
    std::fs::File::options()
        .write(true)
        .open(&files[0])
        .and_then(|f| f.set_modified(old))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while files[0].exists() {
        assert!(
            Instant::now() < deadline,
            "an old file outlived a quiet collector's retention:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        logship_tests::lines::read_lines(&files[1]).len(),
        5,
        "young file kept"
    );
    // The first pass, and the one that deleted (logged after the file went).
    daemon.wait_for_log("retention pass", 2, Duration::from_secs(5));
    assert!(daemon.log_text().contains("files=1 "));
    // Counted just after the pass is logged.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, page) = logship_tests::http::get(&addr, "/metrics");
        if page.contains("\nlogship_collector_retention_deleted_total 1\n") {
            break;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(daemon.stop(Duration::from_secs(20)).success());
}
