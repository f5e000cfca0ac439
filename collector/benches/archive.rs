//! The archive's figures: compression ratio, collector throughput with and without zstd, and
//! the audit over many sources. Prints, never asserts.
//!
//! 1. Ratio (in-process, the collector's own sink and commit record, batches of 500 lines as
//!    the collector commits them): `BENCH_LINES` (default 1000000) lines of ~200 B like an
//!    application's log, into one busy file, and round-robin into 400 files (each batch then
//!    holds one or two lines per file, as with 400 files at 10 lines/s each).
//! 2. Throughput (the real `logship-collector` on the real broker): `BENCH_QUEUE_LINES` (default
//!    200000) envelopes over 400 files pre-filled into two queues on one fanout exchange, drained
//!    by a collector with `compression = "zstd"` (level 3) and by one without, in the same run;
//!    with each one's peak RSS (400 compressed files open); with a Garage node (see
//!    `logship_tests::garage`), a third run with zstd uploading to it as well.
//! 3. The audit over `BENCH_SOURCES` (default 100000) sources, every one with a hole (the worst
//!    case for its record): `logship-collector audit` timed end to end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use logship_collector::commit::Commit;
use logship_collector::commit::positions::{Claim, SourceName, source_hash};
use logship_collector::sink::Sink;
use logship_config::archive::Compression;
use logship_config::collector::DedupSettings;
use logship_runtime::{Envelope, FileId};
use logship_tests::broker::{Broker, Topology};

#[path = "support/applog.rs"]
mod applog;
mod support;
use support::{output_bytes, spawn_collector, stop, wait_for_queue};

/// Lines per batch, as a collector with the default prefetch commits them.
const BATCH: usize = 500;
/// Files of the fleet-like scenario.
const FILES: usize = 400;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bounds() -> DedupSettings {
    DedupSettings {
        max_ids: 1_000_000,
        max_age: Duration::from_secs(86400),
    }
}

/// Whether part `name` runs: `BENCH_PARTS` lists them (default `ratio,throughput,audit`).
fn part(name: &str) -> bool {
    std::env::var("BENCH_PARTS").map_or(true, |parts| parts.split(',').any(|p| p == name))
}

#[tokio::main]
async fn main() {
    let lines = env("BENCH_LINES", 1_000_000);
    let text = if applog::random_ids() {
        "random-ids"
    } else {
        "requests"
    };
    if part("ratio") {
        println!("== ratio: {lines} lines of ~200 B ({text}), batches of {BATCH}");
        for files in [1, FILES] {
            ratio(lines, files);
        }
    }
    if part("throughput") {
        println!("== collector throughput, zstd level 3 vs none, {FILES} files ({text})");
        throughput(env("BENCH_QUEUE_LINES", 200_000)).await;
    }
    if part("audit") {
        println!("== audit");
        audit(env("BENCH_SOURCES", 100_000));
    }
}

/// Writes `lines` through the sink into `files` files, compressed and plain; prints the ratio.
fn ratio(lines: usize, files: usize) {
    let mut sizes = Vec::new();
    for compression in [Compression::None, Compression::Zstd { level: 3 }] {
        let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut commit = Commit::open(state.path(), &bounds(), 0).unwrap();
        let mut sink = Sink::open(out.path(), &commit, FILES + 16, compression).unwrap();
        let names: Vec<PathBuf> = (0..files)
            .map(|f| format!("h/app/{f:03}.log").into())
            .collect();
        let started = Instant::now();
        for first in (0..lines).step_by(BATCH) {
            for n in first..(first + BATCH).min(lines) {
                let file = n % files;
                sink.append(&names[file], &applog::line(file as u64, (n / files) as u64));
            }
            let records = sink.sync(&commit).unwrap();
            commit.record(&[], &[], &records, 0).unwrap();
            sink.compact(&commit).unwrap();
        }
        let elapsed = started.elapsed();
        let bytes = output_bytes(out.path());
        sizes.push(bytes);
        if files == 1 && compression == Compression::None {
            whole_file(&out.path().join(&names[0]));
        }
        println!(
            "  {files:>3} files, {:<5}: {:>7.1} MiB on disk, {:>6.1} MiB per million lines, {:.1}s",
            match compression {
                Compression::None => "plain",
                Compression::Zstd { .. } => "zstd3",
            },
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / (1 << 20) as f64 * 1e6 / lines as f64,
            elapsed.as_secs_f64()
        );
    }
    println!(
        "  {files:>3} files: ratio {:.1}x",
        sizes[0] as f64 / sizes[1] as f64
    );
}

/// Drains the same envelopes with a plain and a zstd collector; prints both rates.
async fn throughput(lines: usize) {
    let url = logship_tests::broker::amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let zstd3 = "compression = \"zstd\"\ncompression_level = 3\n";
    let mut kinds = vec![("none", String::new()), ("zstd3", zstd3.to_string())];
    // With a Garage node, the same run uploading too (default object size, a 10 s interval so
    // that uploads run during the drain); its backlog is served on /metrics.
    let garage =
        logship_tests::garage::binary().map(|_| logship_tests::garage::Garage::start(dir.path()));
    let upload_metrics = logship_tests::http::free_addr();
    if let Some(garage) = &garage {
        let upload = garage.upload_table("bench/", "interval = \"10s\"\n");
        kinds.push((
            "zstd3+upload",
            format!("{zstd3}[metrics]\nlisten = \"{upload_metrics}\"\n{upload}"),
        ));
    } else {
        println!("  (no garage binary: the run with uploads is left out)");
    }
    let topology = Topology::new("bench-archive", kinds.len());
    let exchange = topology.exchange.clone();
    let mut configs = Vec::new();
    for ((name, extra), queue) in kinds.into_iter().zip(&topology.queues) {
        let root = dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        let config = root.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{state}\"\n[broker]\nuris = [\"{url}\"]\nexchange = \"{exchange}\"\nqueue = \"{queue}\"\nprefetch = 1000\n[output]\ndir = \"{out}\"\nmax_open_files = 512\n{extra}",
                state = root.join("state").display(),
                out = root.join("out").display(),
            ),
        )
        .unwrap();
        let mut collector = spawn_collector(&config, &root);
        wait_for_queue(queue).await;
        stop(&mut collector);
        configs.push((name, root, config, queue));
    }
    let broker = Broker::connect().await;
    let started = Instant::now();
    // Offsets are computed per line: build in chunks to keep memory flat.
    let mut offsets = vec![0u64; 2 * FILES];
    for first in (0..lines).step_by(10_000) {
        let chunk: Vec<Envelope> = (first..(first + 10_000).min(lines))
            .map(|i| {
                let mut e = envelope_at(i, &mut offsets);
                e.timestamp_ms += i as i64;
                e
            })
            .collect();
        broker.publish(&exchange, &chunk).await;
    }
    println!(
        "  published {lines} envelopes to {} queues in {:.1}s",
        configs.len(),
        started.elapsed().as_secs_f64()
    );
    let plain_bytes: u64 = {
        let mut offsets = vec![0u64; 2 * FILES];
        (0..lines)
            .map(|i| envelope_at(i, &mut offsets).line.len() as u64 + 1)
            .sum()
    };
    let mut rates = Vec::new();
    for (name, root, config, queue) in &configs {
        let mut collector = spawn_collector(config, root);
        let started = Instant::now();
        let mut peak = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            peak = peak.max(collector.peak_rss_kib());
            if broker.queue_len(queue).await == Some(0) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(900),
                "{name} did not finish"
            );
        }
        let elapsed = started.elapsed();
        peak = peak.max(collector.peak_rss_kib());
        if name.ends_with("upload") {
            // Then until every byte is in the store.
            let backlog = "logship_collector_upload_backlog_bytes";
            while logship_tests::http::counter(&upload_metrics, backlog) > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                peak = peak.max(collector.peak_rss_kib());
            }
            let objects = logship_tests::http::counter(
                &upload_metrics,
                "logship_collector_uploaded_objects_total",
            );
            let bytes = logship_tests::http::counter(
                &upload_metrics,
                "logship_collector_uploaded_bytes_total",
            );
            println!(
                "  {name}: all uploaded {:.1}s after the start: {objects} objects, {:.1} MiB",
                started.elapsed().as_secs_f64(),
                bytes as f64 / (1 << 20) as f64
            );
        }
        stop(&mut collector);
        let rate = lines as f64 / elapsed.as_secs_f64();
        let on_disk = output_bytes(&root.join("out"));
        println!(
            "  {name:<5}: {rate:>7.0} lines/s ({:.1}s), peak RSS {:.1} MiB, {:.1} MiB on disk (lines: {:.1} MiB, ratio {:.1}x)",
            elapsed.as_secs_f64(),
            peak as f64 / 1024.0,
            on_disk as f64 / (1 << 20) as f64,
            plain_bytes as f64 / (1 << 20) as f64,
            plain_bytes as f64 / on_disk as f64,
        );
        rates.push(rate);
    }
    println!("  zstd3/none throughput: {:.2}", rates[1] / rates[0]);
    if let Some(with_upload) = rates.get(2) {
        println!(
            "  zstd3+upload/zstd3 throughput: {:.2}",
            with_upload / rates[1]
        );
    }
    drop(garage);
    let _ = std::fs::remove_dir_all(dir.path());
}

/// What the `zstd` command makes of the whole plain file at level 3: the ratio our framing is
/// measured against (skipped without the command).
fn whole_file(plain: &std::path::Path) {
    let Ok(out) = std::process::Command::new("zstd")
        .args(["-q", "-3", "-c"])
        .arg(plain)
        .output()
    else {
        return;
    };
    let size = std::fs::metadata(plain).map_or(0, |m| m.len());
    println!(
        "    1 file, whole-file `zstd -3`: {:.1} MiB, ratio {:.1}x",
        out.stdout.len() as f64 / (1 << 20) as f64,
        size as f64 / out.stdout.len() as f64
    );
}

/// Envelope `i` over [`FILES`] sources; `offsets` holds each source's next offset, then its
/// next line number. Round-robin, or with `BENCH_SPREAD=1` each line to a file drawn at random
/// (files then cross their compaction steps at different times, as in a real fleet).
fn envelope_at(i: usize, offsets: &mut [u64]) -> Envelope {
    let file = if std::env::var("BENCH_SPREAD").is_ok_and(|v| v == "1") {
        fastrand::Rng::with_seed(i as u64).usize(..FILES)
    } else {
        i % FILES
    };
    let n = offsets[file + FILES];
    offsets[file + FILES] += 1;
    let mut e = envelope_base(file, n);
    e.offset = offsets[file];
    offsets[file] += e.line.len() as u64 + 1;
    e
}

fn envelope_base(file: usize, n: u64) -> Envelope {
    Envelope {
        host: "bench-host".into(),
        path: format!("/var/log/app/{file:03}.log"),
        file: FileId {
            dev: 2049,
            ino: file as u64,
            fp: 7,
        },
        generation: 0,
        offset: 0,
        timestamp_ms: 1_764_669_600_000,
        line: applog::line(file as u64, n),
        fields: Default::default(),
        kind: Default::default(),
    }
}

/// Times `logship-collector audit` over `sources` sources, each with one hole.
fn audit(sources: usize) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let started = Instant::now();
    {
        let mut commit = Commit::open(&state, &bounds(), now_ms()).unwrap();
        for first in (0..sources).step_by(BATCH) {
            let names: Vec<(Claim, SourceName)> = (first..(first + BATCH).min(sources))
                .flat_map(|s| {
                    let hash = source_hash(&format!("host-{}", s % 1000), 2049, s as u64, 7, 0);
                    let name = SourceName {
                        host: format!("host-{}", s % 1000),
                        path: format!("/var/log/app-{s}.log"),
                    };
                    [
                        (Claim::line(hash, 0, 99), name.clone()),
                        (Claim::line(hash, 1000, 99), name),
                    ]
                })
                .collect();
            let claims: Vec<(Claim, &SourceName)> = names.iter().map(|(c, n)| (*c, n)).collect();
            commit
                .record(&[], &claims, &[], now_ms() - 3_600_000)
                .unwrap();
        }
        logship_collector::archive::audit::AuditRecord::of(&commit, now_ms())
            .unwrap()
            .write(&state)
            .unwrap();
    }
    println!(
        "  {sources} sources, each with a hole, recorded in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[broker]\nuris = [\"amqp://127.0.0.1\"]\nqueue = \"q\"\n[output]\ndir = \"{}\"\n",
            state.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logship-collector"))
        .args(["--config".as_ref(), config.as_os_str(), "audit".as_ref()])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let record = std::fs::metadata(state.join("audit.json")).map_or(0, |m| m.len());
    println!(
        "  logship-collector audit: exit {:?} in {:.2}s, {} lines printed, audit.json {:.1} MiB",
        out.status.code(),
        elapsed.as_secs_f64(),
        out.stdout.iter().filter(|&&b| b == b'\n').count(),
        record as f64 / (1 << 20) as f64
    );
}

fn now_ms() -> i64 {
    logship_runtime::clock::now_ms()
}
