//! Container logs (issue 28 targets), figures only, never asserted but that every line arrived:
//!
//! - CPU per line and end-to-end rate: 100 CRI container logs (`type = "cri"`) beside 100 plain
//!   files (`type = "file"`) holding the same application lines (~200 bytes), each shipped by an
//!   agent of its own to a collector, in the same run: the agent's utime + stime per line, and
//!   lines per second from the agent's start to the last line in the collector's files.
//! - Latency: 100 CRI containers written at 20 lines/s each (2000 lines/s in all) for
//!   `BENCH_SECS` seconds (default 10); each line carries its write time, and a reader polling the
//!   collector's files every 2 ms takes its arrival: p50, p99 and max.
//!
//! `BENCH_LINES` sets the lines per kind for the CPU part (default 200000). Uses the binaries
//! next to this benchmark (`cargo build --release --workspace`) or `LOGSHIP_AGENT_BIN` /
//! `LOGSHIP_COLLECTOR_BIN`, and the broker at `AMQP_URL`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logship_tests::broker::amqp_url;
use logship_tests::daemon::{binary, cpu_seconds};
use logship_tests::fixture::Setup;

/// Containers (and plain files) written.
const CONTAINERS: usize = 100;
/// How long the lines may take to arrive.
const DEADLINE: Duration = Duration::from_secs(600);

/// What an input reads.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    File,
    Cri,
}

fn main() {
    let lines: usize = env("BENCH_LINES", 200_000);
    let secs: u64 = env("BENCH_SECS", 10);
    eprintln!(
        "containers bench: {lines} lines per kind over {CONTAINERS} logs, agent {}, broker {}",
        binary("logship-agent").display(),
        amqp_url()
    );
    for run in 1..=2 {
        let file = ship(Kind::File, lines);
        let cri = ship(Kind::Cri, lines);
        println!(
            "run {run}: file input {:.2} us/line {:.0} lines/s; cri input {:.2} us/line {:.0} lines/s; \
             cpu per line {:.2}x the file input's, end to end {:.2}x its rate",
            file.cpu_us_per_line,
            file.lines_per_sec,
            cri.cpu_us_per_line,
            cri.lines_per_sec,
            cri.cpu_us_per_line / file.cpu_us_per_line,
            cri.lines_per_sec / file.lines_per_sec,
        );
    }
    let (p50, p99, max, n) = latency(Duration::from_secs(secs));
    println!(
        "latency: {n} lines from {CONTAINERS} containers at 20 lines/s each, entry written -> \
         collector's file: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
    );
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One kind's figures.
struct Shipped {
    cpu_us_per_line: f64,
    lines_per_sec: f64,
}

/// An application line, as an access log writes it.
fn app_line(i: usize) -> String {
    format!(
        "2026-12-07T06:{:02}:{:02}.{:03}Z INFO [worker-{}] request id={:016x} method=GET \
         path=/api/v1/orders status=200 bytes={} duration_ms={} user_agent=\"curl/8.5.0\" msg=\"request served\"",
        (i / 60_000) % 60,
        (i / 1000) % 60,
        i % 1000,
        i % 16,
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        100 + (i * 37) % 9000,
        i % 250,
    )
}

/// Where log `k` of `kind` is under `root`.
fn log_path(root: &Path, kind: Kind, k: usize) -> PathBuf {
    match kind {
        Kind::File => root.join("files").join(format!("app{k}.log")),
        Kind::Cri => root
            .join("pods")
            .join(format!("shop_web-{k}_uid-{k}"))
            .join("app")
            .join("0.log"),
    }
}

/// The agent's input table for `kind` under `root`.
fn input(root: &Path, kind: Kind) -> String {
    match kind {
        Kind::File => format!("[[inputs]]\npaths = [\"{}/files/*.log\"]\n", root.display()),
        Kind::Cri => format!(
            "[[inputs]]\ntype = \"cri\"\ndirectory = \"{}/pods\"\n",
            root.display()
        ),
    }
}

/// Writes `lines` application lines over the logs of `kind`; returns the bytes the collector
/// will hold (the lines and their newlines).
fn write_logs(root: &Path, kind: Kind, lines: usize) -> u64 {
    let mut files: Vec<std::io::BufWriter<std::fs::File>> = (0..CONTAINERS)
        .map(|k| {
            let path = log_path(root, kind, k);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("log dir");
            std::io::BufWriter::new(std::fs::File::create(path).expect("log file"))
        })
        .collect();
    let mut bytes = 0;
    for i in 0..lines {
        let line = app_line(i);
        bytes += line.len() as u64 + 1;
        let file = &mut files[i % CONTAINERS];
        match kind {
            Kind::File => writeln!(file, "{line}"),
            Kind::Cri => writeln!(file, "2026-12-07T06:00:00.000000000Z stdout F {line}"),
        }
        .expect("write");
    }
    for mut file in files {
        file.flush().expect("flush");
    }
    bytes
}

/// Bytes in the files under `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    logship_tests::daemon::tree_bytes(dir)
}

/// Ships `lines` pre-written lines of `kind` with an agent of its own: its CPU per line and
/// the lines per second from its start to the last line at the collector.
fn ship(kind: Kind, lines: usize) -> Shipped {
    let setup = Setup::new("bench-ctr");
    let root = setup.dir.path().join("in");
    let want = write_logs(&root, kind, lines);
    let mut collector = setup.collector.start();
    let agent = setup.agent_with_inputs("", &input(&root, kind));
    let started = Instant::now();
    let mut daemon = agent.start(true);
    while tree_bytes(&setup.collector.output) < want {
        assert!(started.elapsed() < DEADLINE, "lines did not arrive");
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(daemon.pid());
    assert_eq!(tree_bytes(&setup.collector.output), want, "every line once");
    daemon.stop(Duration::from_secs(30));
    collector.stop(Duration::from_secs(30));
    Shipped {
        cpu_us_per_line: cpu * 1e6 / lines as f64,
        lines_per_sec: lines as f64 / elapsed,
    }
}

/// Nanoseconds since the epoch.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Writes 20 lines/s to each of 100 CRI logs for `length`, each line holding its write time,
/// and takes each line's arrival in the collector's files: (p50, p99, max) in ms, and the
/// number of lines.
fn latency(length: Duration) -> (f64, f64, f64, usize) {
    let setup = Setup::new("bench-lat");
    let root = setup.dir.path().join("in");
    let mut logs: Vec<std::fs::File> = (0..CONTAINERS)
        .map(|k| {
            let path = log_path(&root, Kind::Cri, k);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("log dir");
            logship_tests::lines::open_append(&path)
        })
        .collect();
    let mut collector = setup.collector.start();
    let agent = setup.agent_with_inputs("", &input(&root, Kind::Cri));
    let mut daemon = agent.start(true);
    let output = setup.collector.output.join(&agent.host);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || watch(&output, &stop))
    };
    let started = Instant::now();
    let mut written = 0;
    let mut tick = 0u32;
    while started.elapsed() < length {
        for log in &mut logs {
            writeln!(log, "2026-12-07T06:00:00Z stdout F sent {}", now_ns()).expect("write");
            written += 1;
        }
        tick += 1;
        // 20 lines a second per container, on a fixed schedule.
        let next = Duration::from_millis(50) * tick;
        std::thread::sleep(next.saturating_sub(started.elapsed()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every line in, then the watcher's last look.
    while Instant::now() < deadline && lines_in(&setup.collector.output) < written {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = watcher.join().expect("watcher");
    daemon.stop(Duration::from_secs(30));
    collector.stop(Duration::from_secs(30));
    assert_eq!(latencies.len(), written, "every line once");
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.5), at(0.99), at(1.0), latencies.len())
}

/// Lines in the files under `dir`.
fn lines_in(dir: &Path) -> usize {
    walk(dir)
        .iter()
        .map(|f| std::fs::read(f).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()))
        .sum()
}

/// The files under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Polls the collector's files under `output` every 2 ms until `stop`: each new line's latency
/// (arrival minus the write time it carries), in ms.
fn watch(output: &Path, stop: &std::sync::atomic::AtomicBool) -> Vec<f64> {
    use std::io::{Read as _, Seek as _};
    let mut read: std::collections::HashMap<PathBuf, (u64, Vec<u8>)> = Default::default();
    let mut latencies = Vec::new();
    loop {
        let last = stop.load(std::sync::atomic::Ordering::Relaxed);
        for path in walk(output) {
            let (offset, partial) = read.entry(path.clone()).or_default();
            let Ok(mut file) = std::fs::File::open(&path) else {
                continue;
            };
            let mut bytes = Vec::new();
            if file.seek(std::io::SeekFrom::Start(*offset)).is_err()
                || file.read_to_end(&mut bytes).is_err()
            {
                continue;
            }
            let now = now_ns();
            *offset += bytes.len() as u64;
            partial.extend_from_slice(&bytes);
            while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                let sent = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|l| l.trim_end().strip_prefix("sent "))
                    .and_then(|n| n.parse::<u128>().ok());
                if let Some(sent) = sent {
                    latencies.push(now.saturating_sub(sent) as f64 / 1e6);
                }
            }
        }
        if last {
            return latencies;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
