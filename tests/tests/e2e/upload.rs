//! The archive on an object store (issue 30): a real Garage node and the real broker. Every
//! committed line in exactly one object through collector kill -9s and store outages, the
//! objects of a file concatenated give back the file, refusals named at start, the backlog
//! cap pausing deliveries, and `audit --remote`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logship_runtime::Envelope;
use logship_tests::broker::{Broker, Topology};
use logship_tests::daemon::{self, Daemon};
use logship_tests::fixture::Collector;
use logship_tests::garage::{self, BUCKET, Garage};
use logship_tests::lines::{assert_same_lines, envelopes, read_lines, text};
use logship_tests::store_faults::StoreFaults;

const HOST: &str = "web-1";
const PREFIX: &str = "archive/";

/// Whether the zstd command line tool is here.
fn zstd_available(test: &str) -> bool {
    let found = Command::new("zstd").arg("-V").output().is_ok();
    if !found {
        logship_tests::skip(test, "no zstd command (apt-get install zstd)");
    }
    found
}

/// Gauge `name` on the `/metrics` page at `addr`, once it is there.
fn gauge(addr: &str, name: &str) -> Option<u64> {
    logship_tests::http::try_get(addr, "/metrics").and_then(|page| {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    })
}

/// Waits until the collector at `addr` has nothing left to upload; returns how long it took.
fn wait_uploaded(addr: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if gauge(addr, "logship_collector_upload_backlog_bytes") == Some(0) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "backlog not uploaded within {timeout:?}: {:?} bytes left",
            gauge(addr, "logship_collector_upload_backlog_bytes")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The bucket's objects under [`PREFIX`] by output file: `(offset, bytes)` in key order.
async fn objects_by_file(
    garage: &Garage,
    compressed: bool,
) -> BTreeMap<String, Vec<(u64, Vec<u8>)>> {
    let mut files: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for (key, bytes) in garage.objects(PREFIX).await {
        let rest = key.strip_prefix(PREFIX).expect("under the prefix");
        let rest = if compressed {
            rest.strip_suffix(".zst").expect("a .zst object")
        } else {
            rest
        };
        let (file, offset) = rest.rsplit_once('/').expect("<file>/<offset>");
        assert_eq!(offset.len(), 20, "20 digits: {key}");
        files
            .entry(file.to_string())
            .or_default()
            .push((offset.parse().unwrap(), bytes));
    }
    files
}

/// A file's objects: contiguous from 0, no overlap; returns them concatenated.
fn concatenated(file: &str, objects: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut whole = Vec::new();
    for (offset, bytes) in objects {
        assert_eq!(
            *offset,
            whole.len() as u64,
            "{file}: objects contiguous, no overlap"
        );
        whole.extend_from_slice(bytes);
    }
    whole
}

/// The plain output file of `source` as the bucket holds it: its objects, contiguous from 0,
/// concatenated are the local file; returns the objects' sizes.
async fn assert_bucket_holds(garage: &Garage, collector: &Collector, source: &str) -> Vec<usize> {
    let objects = objects_by_file(garage, false).await;
    let relative = format!("{HOST}{source}");
    let whole = concatenated(&relative, &objects[&relative]);
    let local = std::fs::read(collector.file(HOST, Path::new(source))).unwrap();
    assert!(
        whole == local,
        "{relative}: the objects concatenated are the local file"
    );
    objects[&relative].iter().map(|(_, b)| b.len()).collect()
}

/// `zstd -t` on `bytes` (one object) through stdin.
fn zstd_test(bytes: &[u8]) -> Result<(), String> {
    let mut child = Command::new("zstd")
        .args(["-q", "-t"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(bytes)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The lines of zstd frames.
fn decompressed_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let plain = zstd::stream::decode_all(bytes).expect("valid zstd");
    let mut lines: Vec<Vec<u8>> = plain.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
}

/// `logship-collector audit --remote` on `collector`: exit code and output.
fn audit_remote(collector: &Collector) -> (Option<i32>, String) {
    let (code, out, err) = daemon::run(
        &daemon::binary("logship-collector"),
        &[
            "--config".as_ref(),
            collector.config.as_os_str(),
            "audit".as_ref(),
            "--remote".as_ref(),
        ],
    );
    (code, format!("{out}{err}"))
}

/// Publishes lines `range` of each of `sources`, interleaved in rounds of `per_round`.
async fn publish(exchange: String, sources: Vec<String>, lines: usize, per_round: usize) {
    let broker = Broker::connect().await;
    for round in 0..lines.div_ceil(per_round) {
        let range = round * per_round..((round + 1) * per_round).min(lines);
        let batch: Vec<Envelope> = sources
            .iter()
            .enumerate()
            .flat_map(|(ino, path)| envelopes(HOST, path, ino as u64, range.clone()))
            .collect();
        broker.publish(&exchange, &batch).await;
    }
}

fn sources(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("/var/log/app/{i}.log")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_is_once_in_the_bucket_through_five_collector_kill9s_while_uploading() {
    const TEST: &str = "upload through kill -9";
    const LINES: usize = 20_000;
    if !garage::available(TEST) || !zstd_available(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(dir.path());
    let topology = Topology::new("upload-kill9", 1);
    // Objects as small as allowed: every sealed frame goes up as soon as it is sealed, so the
    // kills fall among uploads.
    let upload = garage.upload_table(PREFIX, "interval = \"2s\"\nobject_bytes = \"1 KiB\"\n");
    let (collector, addr) =
        Collector::serving(dir.path(), &topology, "compression = \"zstd\"", &upload);
    let mut daemon = collector.start();
    let sources = sources(3);
    let publisher = tokio::spawn(publish(
        topology.exchange.clone(),
        sources.clone(),
        LINES,
        100,
    ));
    for kill in 0..5 {
        tokio::time::sleep(Duration::from_millis(800 + fastrand::u64(0..1200))).await;
        let uploaded =
            logship_tests::http::counter(&addr, "logship_collector_uploaded_objects_total");
        daemon.kill9();
        eprintln!("kill {kill} after {uploaded} objects");
        daemon = collector.start();
    }
    publisher.await.unwrap();
    let files: Vec<_> = sources
        .iter()
        .map(|s| format!("{HOST}/{}.zst", s.trim_start_matches('/')))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !files.iter().all(|f| {
        std::fs::read(collector.output.join(f))
            .ok()
            .and_then(|b| zstd::stream::decode_all(&b[..]).ok())
            .is_some_and(|plain| plain.iter().filter(|&&b| b == b'\n').count() >= LINES)
    }) {
        assert!(
            Instant::now() < deadline,
            "lines not all committed:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_uploaded(&addr, Duration::from_secs(60));
    assert!(daemon.stop(Duration::from_secs(20)).success());
    let objects = objects_by_file(&garage, true).await;
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        files.iter().collect::<Vec<_>>()
    );
    let mut count = 0;
    for (source, file) in sources.iter().zip(&files) {
        let file_objects = &objects[file];
        count += file_objects.len();
        for (offset, bytes) in file_objects {
            zstd_test(bytes).unwrap_or_else(|err| panic!("zstd -t {file} at {offset}: {err}"));
        }
        let whole = concatenated(file, file_objects);
        let local = std::fs::read(collector.output.join(file)).unwrap();
        assert!(
            whole == local,
            "{file}: the objects concatenated are the local file"
        );
        let expected: Vec<Vec<u8>> = (0..LINES).map(|i| text(source, i)).collect();
        assert_same_lines(&decompressed_lines(&whole), &expected, file);
    }
    eprintln!("{count} objects for {} lines", LINES * sources.len());
    let (code, out) = audit_remote(&collector);
    assert_eq!(code, Some(0), "audit --remote: {out}");
    assert!(out.contains("3 files, 0 incomplete"), "{out}");
    // An object lost from the bucket is named by the audit.
    let (lost_offset, lost) = &objects[&files[0]][1];
    let lost_key = format!("{PREFIX}{}/{lost_offset:020}.zst", files[0]);
    garage.delete(&lost_key).await;
    let (code, out) = audit_remote(&collector);
    assert_eq!(code, Some(1), "audit --remote after a loss: {out}");
    let missing = format!(
        "missing bytes {lost_offset}..{}",
        lost_offset + lost.len() as u64
    );
    assert!(out.contains(&missing), "{missing} in: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_by_themselves_within_seconds_after_the_store_was_down_30s() {
    const TEST: &str = "upload through a store outage";
    const LINES: usize = 2000;
    if !garage::available(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(dir.path());
    let topology = Topology::new("upload-outage", 1);
    let upload = garage.upload_table(PREFIX, "interval = \"1s\"\nobject_bytes = \"16 KiB\"\n");
    let (collector, addr) = Collector::serving(dir.path(), &topology, "", &upload);
    let mut daemon = collector.start();
    let source = sources(1);
    publish(topology.exchange.clone(), source.clone(), LINES, 200).await;
    let file = collector.file(HOST, Path::new(&source[0]));
    logship_tests::lines::wait_for_lines(&file, LINES, Duration::from_secs(30));
    wait_uploaded(&addr, Duration::from_secs(30));
    garage.kill9();
    let broker = Broker::connect().await;
    let more: Vec<Envelope> = envelopes(HOST, &source[0], 0, LINES..2 * LINES);
    broker.publish(&topology.exchange, &more).await;
    logship_tests::lines::wait_for_lines(&file, 2 * LINES, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(gauge(&addr, "logship_collector_upload_failing"), Some(1));
    assert!(gauge(&addr, "logship_collector_upload_backlog_bytes").unwrap_or(0) > 0);
    garage.restart();
    let healed = wait_uploaded(&addr, Duration::from_secs(30));
    eprintln!("uploads resumed {healed:?} after the store was back");
    assert!(
        healed < Duration::from_secs(15),
        "resumed within seconds: {healed:?}"
    );
    let retries = logship_tests::http::counter(&addr, "logship_collector_upload_retries_total");
    assert!(retries > 0, "retries counted");
    assert!(daemon.stop(Duration::from_secs(20)).success());
    let log = daemon.log_text();
    assert_eq!(
        log.matches("uploads failing").count(),
        1,
        "said once:\n{log}"
    );
    assert_eq!(log.matches("uploads resumed").count(), 1, "{log}");
    assert_bucket_holds(&garage, &collector, &source[0]).await;
    let expected: Vec<Vec<u8>> = (0..2 * LINES).map(|i| text(&source[0], i)).collect();
    assert_same_lines(&read_lines(&file), &expected, "local");
}

/// A store that throttles (503 Slow Down, then 429) for 15 s: every failed attempt is retried
/// with backoff and counted, the outage is said once, and uploads resume by themselves within
/// seconds once the store takes requests again; every line is once in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_answering_503_then_429_is_retried_said_once_and_resumed() {
    const TEST: &str = "upload through 503 and 429";
    const LINES: usize = 2000;
    if !garage::available(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(dir.path());
    let store = format!("127.0.0.1:{}", garage.s3_port).parse().unwrap();
    let faults = StoreFaults::start(store).await;
    let topology = Topology::new("upload-throttled", 1);
    let upload = garage
        .upload_table(PREFIX, "interval = \"1s\"\nobject_bytes = \"16 KiB\"\n")
        .replace(&garage.endpoint(), &faults.endpoint());
    let (collector, addr) = Collector::serving(dir.path(), &topology, "", &upload);
    let mut daemon = collector.start();
    let source = sources(1);
    publish(topology.exchange.clone(), source.clone(), LINES, 200).await;
    let file = collector.file(HOST, Path::new(&source[0]));
    logship_tests::lines::wait_for_lines(&file, LINES, Duration::from_secs(30));
    wait_uploaded(&addr, Duration::from_secs(30));
    faults.refuse(Some(503));
    let broker = Broker::connect().await;
    let more: Vec<Envelope> = envelopes(HOST, &source[0], 0, LINES..2 * LINES);
    broker.publish(&topology.exchange, &more).await;
    logship_tests::lines::wait_for_lines(&file, 2 * LINES, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(gauge(&addr, "logship_collector_upload_failing"), Some(1));
    faults.refuse(Some(429));
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(gauge(&addr, "logship_collector_upload_failing"), Some(1));
    let retries = logship_tests::http::counter(&addr, "logship_collector_upload_retries_total");
    faults.refuse(None);
    let healed = wait_uploaded(&addr, Duration::from_secs(30));
    eprintln!("uploads resumed {healed:?} after the store took requests again, {retries} retries");
    assert!(
        healed < Duration::from_secs(10),
        "resumed within seconds: {healed:?}"
    );
    assert!(
        retries >= 3,
        "every failed attempt retried and counted: {retries}"
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    let log = daemon.log_text();
    assert_eq!(
        log.matches("uploads failing").count(),
        1,
        "said once:\n{log}"
    );
    assert!(log.contains("503"), "the cause is named:\n{log}");
    assert_eq!(log.matches("uploads resumed").count(), 1, "{log}");
    assert_bucket_holds(&garage, &collector, &source[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_or_a_missing_bucket_stops_the_start_naming_bucket_and_endpoint_and_a_permission_lost_later_is_said_once()
 {
    const TEST: &str = "upload refused";
    if !garage::available(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(dir.path());
    let topology = Topology::new("upload-refused", 1);
    let wrong_secret = dir.path().join("wrong-secret");
    std::fs::write(&wrong_secret, "0".repeat(64)).unwrap();
    let good = garage.upload_table(PREFIX, "");
    let wrong_key = good
        .lines()
        .map(|l| {
            if l.starts_with("secret_access_key_file") {
                format!("secret_access_key_file = \"{}\"", wrong_secret.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let no_bucket = good.replace(&format!("\"{BUCKET}\""), "\"no-such-bucket\"");
    for (label, upload, needle) in [
        (
            "wrong-key",
            wrong_key,
            format!("refused access to bucket \"{BUCKET}\""),
        ),
        (
            "no-bucket",
            no_bucket,
            "bucket \"no-such-bucket\" does not exist".to_string(),
        ),
    ] {
        let collector = Collector::new(
            dir.path(),
            label,
            &topology.exchange,
            &topology.queues[0],
            &upload,
        );
        let mut daemon = Daemon::start(
            &daemon::binary("logship-collector"),
            &collector.config,
            &collector.log,
        );
        let status = daemon
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{label}: still running:\n{}", daemon.log_text()));
        assert_eq!(status.code(), Some(1), "{label}");
        let log = daemon.log_text();
        assert!(log.contains(&needle), "{label}: {needle} in:\n{log}");
        assert!(
            log.contains(&garage.endpoint()),
            "{label}: the endpoint in:\n{log}"
        );
    }
    // Later, a key that loses its permission is said with the same words, once, and uploads
    // resume by themselves when it is given back.
    let (collector, addr) = Collector::serving(
        &dir.path().join("later"),
        &topology,
        "",
        &garage.upload_table(PREFIX, "interval = \"1s\"\nobject_bytes = \"4 KiB\"\n"),
    );
    let mut daemon = collector.start();
    let source = sources(1);
    let file = collector.file(HOST, Path::new(&source[0]));
    let permission = ["--read", "--write", BUCKET, "--key", "logship-test"];
    garage.cli(&[&["bucket", "deny"][..], &permission[..]].concat());
    let broker = Broker::connect().await;
    broker
        .publish(&topology.exchange, &envelopes(HOST, &source[0], 0, 0..500))
        .await;
    logship_tests::lines::wait_for_lines(&file, 500, Duration::from_secs(30));
    let needle = format!("refused access to bucket \"{BUCKET}\"");
    daemon.wait_for_log(&needle, 1, Duration::from_secs(30));
    garage.cli(&[&["bucket", "allow"][..], &permission[..]].concat());
    wait_uploaded(&addr, Duration::from_secs(30));
    assert!(daemon.stop(Duration::from_secs(20)).success());
    let log = daemon.log_text();
    assert_eq!(
        log.matches("uploads failing").count(),
        1,
        "said once:\n{log}"
    );
    assert_eq!(log.matches("uploads resumed").count(), 1, "{log}");
    assert_bucket_holds(&garage, &collector, &source[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_backlog_deliveries_pause_and_resume_once_the_store_is_back_nothing_lost() {
    const TEST: &str = "upload backlog cap";
    const LINES: usize = 3000;
    if !garage::available(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(dir.path());
    let topology = Topology::new("upload-cap", 1);
    let upload = garage.upload_table(
        PREFIX,
        "interval = \"1s\"\nobject_bytes = \"8 KiB\"\nmax_backlog = \"32 KiB\"\n",
    );
    let (collector, addr) = Collector::serving(dir.path(), &topology, "", &upload);
    garage.kill9();
    let mut daemon = collector.start();
    let source = sources(1);
    publish(topology.exchange.clone(), source.clone(), LINES, 100).await;
    daemon.wait_for_log("deliveries paused", 1, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let file = collector.file(HOST, Path::new(&source[0]));
    let held = read_lines(&file).len();
    assert!(held < LINES, "paused: {held} lines written of {LINES}");
    let broker = Broker::connect().await;
    let waiting = broker.queue_len(&topology.queues[0]).await.unwrap_or(0);
    assert!(waiting > 0, "the broker holds the rest");
    assert_eq!(gauge(&addr, "logship_collector_upload_paused"), Some(1));
    garage.restart();
    daemon.wait_for_log("deliveries resumed", 1, Duration::from_secs(30));
    logship_tests::lines::wait_for_lines(&file, LINES, Duration::from_secs(60));
    wait_uploaded(&addr, Duration::from_secs(30));
    assert!(daemon.stop(Duration::from_secs(20)).success());
    let log = daemon.log_text();
    assert_eq!(
        log.matches("deliveries paused").count(),
        log.matches("deliveries resumed").count()
    );
    let expected: Vec<Vec<u8>> = (0..LINES).map(|i| text(&source[0], i)).collect();
    assert_same_lines(&read_lines(&file), &expected, "local");
    assert_bucket_holds(&garage, &collector, &source[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_leaves_the_disk_after_keep_local_never_before_and_its_path_continues_in_the_store()
 {
    const TEST: &str = "upload keep_local";
    if !garage::available(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(dir.path());
    let topology = Topology::new("upload-keep", 1);
    let upload = garage.upload_table(PREFIX, "interval = \"1s\"\nkeep_local = \"2s\"\n");
    let (collector, addr) = Collector::serving(dir.path(), &topology, "", &upload);
    let mut daemon = collector.start();
    let source = sources(1);
    let file = collector.file(HOST, Path::new(&source[0]));
    // While the store is down, keep_local deletes nothing: the lines are not uploaded.
    garage.kill9();
    let broker = Broker::connect().await;
    broker
        .publish(&topology.exchange, &envelopes(HOST, &source[0], 0, 0..100))
        .await;
    logship_tests::lines::wait_for_lines(&file, 100, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(read_lines(&file).len(), 100, "kept while not uploaded");
    garage.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while file.exists() {
        assert!(
            Instant::now() < deadline,
            "not deleted after upload:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    broker
        .publish(
            &topology.exchange,
            &envelopes(HOST, &source[0], 0, 100..200),
        )
        .await;
    logship_tests::lines::wait_for_lines(&file, 100, Duration::from_secs(30));
    wait_uploaded(&addr, Duration::from_secs(30));
    assert!(daemon.stop(Duration::from_secs(20)).success());
    let objects = objects_by_file(&garage, false).await;
    let relative = format!("{HOST}{}", source[0]);
    let whole = concatenated(&relative, &objects[&relative]);
    let mut lines: Vec<Vec<u8>> = whole.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    lines.pop();
    let expected: Vec<Vec<u8>> = (0..200).map(|i| text(&source[0], i)).collect();
    assert_same_lines(
        &lines,
        &expected,
        "the path's objects over both local files",
    );
    let (code, out) = audit_remote(&collector);
    assert_eq!(code, Some(0), "audit --remote: {out}");
}

/// Lines `range` of `path` padded to about 2 KiB each, with their offsets.
fn long_lines(path: &str, range: std::ops::Range<usize>) -> (Vec<Envelope>, Vec<Vec<u8>>) {
    let line = |i: usize| {
        let mut line = text(path, i);
        line.extend(std::iter::repeat_n(b'.', 2000));
        line
    };
    let mut envelopes = envelopes(HOST, path, 0, range.clone());
    let mut offset: u64 = (0..range.start).map(|i| line(i).len() as u64 + 1).sum();
    let mut expected = Vec::new();
    for (envelope, i) in envelopes.iter_mut().zip(range) {
        envelope.line = line(i);
        envelope.offset = offset;
        offset += envelope.line.len() as u64 + 1;
        expected.push(envelope.line.clone());
    }
    (envelopes, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_above_the_part_size_goes_up_in_parts_and_a_crashed_multipart_upload_is_aborted_on_start()
 {
    const TEST: &str = "upload in parts";
    const LINES: usize = 6000;
    if !garage::available(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(dir.path());
    let topology = Topology::new("upload-parts", 1);
    // A long interval: the first object is cut by its size, not by its age.
    let upload = garage.upload_table(PREFIX, "interval = \"10s\"\nobject_bytes = \"10 MiB\"\n");
    let (collector, addr) = Collector::serving(dir.path(), &topology, "", &upload);
    // A multipart upload a crash left open, in the ledger as the collector keeps it.
    let leftover = format!("{PREFIX}{HOST}/var/log/old.log/{:020}", 0);
    let upload_id = garage.begin_multipart(&leftover).await;
    let state = collector.config.parent().unwrap().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("upload.json"),
        format!("{{\"files\":{{}},\"multipart\":[{{\"key\":\"{leftover}\",\"upload_id\":\"{upload_id}\"}}]}}"),
    )
    .unwrap();
    assert!(garage.multipart_open(&leftover, &upload_id).await);
    let mut daemon = collector.start();
    daemon.wait_for_log(
        "aborted a multipart upload left unfinished by a crash",
        1,
        Duration::from_secs(10),
    );
    assert!(
        !garage.multipart_open(&leftover, &upload_id).await,
        "aborted in the store"
    );
    let source = "/var/log/big.log";
    let (envelopes, expected) = long_lines(source, 0..LINES);
    let broker = Broker::connect().await;
    for chunk in envelopes.chunks(500) {
        broker.publish(&topology.exchange, chunk).await;
    }
    let file = collector.file(HOST, Path::new(source));
    logship_tests::lines::wait_for_lines(&file, LINES, Duration::from_secs(60));
    wait_uploaded(&addr, Duration::from_secs(60));
    assert!(daemon.stop(Duration::from_secs(20)).success());
    // Struck from the ledger (its log of changes since the snapshot the start wrote).
    let log = std::fs::read_to_string(state.join("upload.log")).unwrap();
    let ended = log
        .lines()
        .any(|l| l.contains("multipart_ended") && l.contains(&upload_id));
    assert!(ended, "{log}");
    let sizes = assert_bucket_holds(&garage, &collector, source).await;
    eprintln!("object sizes {sizes:?}");
    assert!(
        sizes.iter().any(|&s| s > 8 << 20),
        "one object above the 8 MiB part: {sizes:?}"
    );
    assert!(
        sizes.iter().all(|&s| s <= 10 << 20),
        "none above object_bytes: {sizes:?}"
    );
    assert_same_lines(&read_lines(&file), &expected, "local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_on_when_one_node_of_a_three_node_garage_cluster_is_killed() {
    const TEST: &str = "upload to a cluster losing a node";
    const LINES: usize = 1000;
    if !garage::available(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut garage = Garage::cluster(dir.path(), 3);
    let topology = Topology::new("upload-cluster", 1);
    let upload = garage.upload_table(PREFIX, "interval = \"1s\"\nobject_bytes = \"4 KiB\"\n");
    let (collector, addr) = Collector::serving(dir.path(), &topology, "", &upload);
    let mut daemon = collector.start();
    let source = sources(1);
    let file = collector.file(HOST, Path::new(&source[0]));
    let broker = Broker::connect().await;
    broker
        .publish(
            &topology.exchange,
            &envelopes(HOST, &source[0], 0, 0..LINES),
        )
        .await;
    // A file name with characters S3 advises against: its key is its path all the same.
    let odd = "/var/log/odd name [1] #2%~.log";
    broker
        .publish(&topology.exchange, &envelopes(HOST, odd, 9, 0..10))
        .await;
    logship_tests::lines::wait_for_lines(&file, LINES, Duration::from_secs(30));
    let odd_file = collector.file(HOST, Path::new(odd));
    logship_tests::lines::wait_for_lines(&odd_file, 10, Duration::from_secs(30));
    wait_uploaded(&addr, Duration::from_secs(30));
    let keys: Vec<String> = garage
        .objects(PREFIX)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let odd_key = format!("{PREFIX}{HOST}{odd}/{:020}", 0);
    assert!(keys.contains(&odd_key), "{odd_key} in {keys:?}");
    // Not the node the collector talks to: the cluster serves on with two of three.
    garage.kill9_node(2);
    broker
        .publish(
            &topology.exchange,
            &envelopes(HOST, &source[0], 0, LINES..2 * LINES),
        )
        .await;
    logship_tests::lines::wait_for_lines(&file, 2 * LINES, Duration::from_secs(30));
    let took = wait_uploaded(&addr, Duration::from_secs(30));
    let (_, status) = logship_tests::http::get(&addr, "/status");
    for shown in [
        "logship_collector_uploaded_bytes_total",
        "logship_collector_uploaded_objects_total",
        "logship_collector_upload_retries_total",
        "logship_collector_upload_errors_total",
        "logship_collector_upload_backlog_bytes",
        "logship_collector_upload_backlog_oldest_seconds",
    ] {
        assert!(status.contains(shown), "{shown} on /status: {status}");
    }
    let errors = logship_tests::http::counter(&addr, "logship_collector_upload_errors_total");
    eprintln!(
        "uploaded {took:?} after the lines were committed, one node of three down, {errors} failed attempts"
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(
        !daemon.log_text().contains("uploads failing"),
        "{}",
        daemon.log_text()
    );
    assert_bucket_holds(&garage, &collector, &source[0]).await;
    let expected: Vec<Vec<u8>> = (0..2 * LINES).map(|i| text(&source[0], i)).collect();
    assert_same_lines(&read_lines(&file), &expected, "local");
}
