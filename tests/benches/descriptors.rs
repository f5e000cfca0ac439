//! The agent within a descriptor budget (issue 18), agent + broker + collector on this machine:
//!
//! - a. 100k files x 10 lines, the agent under an open-file limit of 1024 and then of 200k
//!   (enough; the hard limit if it cannot be raised that far): how long until the agent read every line and until the collector held every
//!   one, whether each file arrived once and in order, the agent's peak RSS, its warning lines;
//! - b. 1000 idle files (each read once) under a limit of 512 (so 552 of them are closed at any
//!   time) and with enough descriptors: the agent's idle CPU, then the latency of a line
//!   written to one idle file after another (write -> collector's file, p50/p99/max).
//!
//! Prints one line per figure and asserts nothing. `BENCH_CASE=a|b` runs one case (default
//! both), `BENCH_FILES` sets case a's file count (default 100000), `BENCH_SECS` how long case b
//! measures idle CPU (default 20). Uses the release binaries next to this benchmark (`cargo
//! build --release --workspace`) or `LOGSHIP_AGENT_BIN` / `LOGSHIP_COLLECTOR_BIN`, and the
//! broker at `AMQP_URL`. Run as root to raise the limit past the hard one for "enough".

use std::path::PathBuf;
use std::time::{Duration, Instant};

use logship_tests::broker::amqp_url;
use logship_tests::daemon::{Daemon, binary};
use logship_tests::fixture::{Agent, Setup};
use logship_tests::http::{free_addr, get};
use logship_tests::lines::append;
use logship_tests::many::{create_files, first_wrong, source, wait_all};

/// Lines each file holds in case a.
const LINES: usize = 10;
/// The longest wait for every line of case a.
const ARRIVAL: Duration = Duration::from_secs(1800);
/// "Enough" descriptors for 100k files, if the hard limit allows (root with
/// CAP_SYS_RESOURCE may raise it); the hard limit otherwise.
const ENOUGH: u64 = 200_000;
/// Lines written one after another to idle files in case b.
const SAMPLES: usize = 200;

fn main() {
    let case = std::env::var("BENCH_CASE").unwrap_or_else(|_| "all".into());
    let files: usize = std::env::var("BENCH_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!(
        "descriptors bench: agent {}, collector {}, broker {}",
        binary("logship-agent").display(),
        binary("logship-collector").display(),
        amqp_url()
    );
    let enough = most_descriptors();
    if matches!(case.as_str(), "a" | "all") {
        many_files(files, 1024, enough);
        many_files(files, enough, enough);
    }
    if matches!(case.as_str(), "b" | "all") {
        idle_files(1000, 512, enough, Duration::from_secs(secs));
        idle_files(1000, enough, enough, Duration::from_secs(secs));
    }
}

/// [`ENOUGH`] if this process may raise its open-file limit that far, else its hard limit.
fn most_descriptors() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_cur,
        rlim_max: ENOUGH,
    };
    // SAFETY: setrlimit with a valid rlimit; only raises the hard limit (or fails).
    if limit.rlim_max >= ENOUGH || unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        ENOUGH
    } else {
        eprintln!(
            "cannot raise the open-file limit to {ENOUGH} (no CAP_SYS_RESOURCE): \"enough\" is the hard limit, {}",
            limit.rlim_max
        );
        limit.rlim_max
    }
}

/// A collector (allowed enough descriptors) and an agent under `nofile` serving `metrics`,
/// both running, over `n` files of `lines` lines written before the agent starts.
fn start(
    label: &str,
    n: usize,
    lines: usize,
    nofile: u64,
    collector_nofile: u64,
) -> (Setup, Agent, Daemon, Daemon, Vec<PathBuf>, String) {
    let setup = Setup::new(label);
    let started = Instant::now();
    let files = create_files(&setup.logs, n, lines);
    eprintln!("{label}: {n} files written in {:?}", started.elapsed());
    let collector = setup.collector.start_with_nofile(collector_nofile);
    let metrics = free_addr();
    let agent = setup.agent(
        &amqp_url(),
        &format!("[metrics]\nlisten = \"{metrics}\""),
        "",
    );
    let daemon = agent.start_with_nofile(nofile);
    (setup, agent, daemon, collector, files, metrics)
}

/// `logship_agent_lines_read_total` now.
fn lines_read(metrics: &str) -> u64 {
    let (_, page) = get(metrics, "/metrics");
    page.lines()
        .find_map(|l| l.strip_prefix("logship_agent_lines_read_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Case a.
fn many_files(n: usize, nofile: u64, enough: u64) {
    let label = format!("a-{nofile}");
    let (setup, agent, mut daemon, mut collector, files, metrics) =
        start(&format!("bench-fds-{nofile}"), n, LINES, nofile, enough);
    let started = Instant::now();
    let want = (n * LINES) as u64;
    let mut read_all = None;
    let counts = vec![LINES; n];
    let shipped = wait_all(
        &setup.collector,
        &agent.host,
        &files,
        &counts,
        ARRIVAL,
        || {
            if read_all.is_none() && lines_read(&metrics) >= want {
                read_all = Some(started.elapsed());
            }
        },
    );
    let rss_mib = daemon.peak_rss_kib() / 1024;
    let alive = daemon.wait_exit(Duration::ZERO).is_none();
    let warnings = daemon.warnings();
    let wrong = first_wrong(&setup.collector, &agent.host, &files, &counts);
    let _ = daemon.stop(Duration::from_secs(60));
    let _ = collector.stop(Duration::from_secs(60));
    println!(
        "{label}  {n} files x {LINES} lines, limit {nofile}: agent read all in {:?}, collector held all in {:?}, \
         once in order: {}, agent alive: {alive}, peak RSS {rss_mib} MiB, {} warning lines",
        read_all,
        shipped.map_err(|missing| format!("{missing} of {n} complete")),
        wrong.map_or("yes".to_string(), |p| format!("NO ({})", p.display())),
        warnings.len(),
    );
    for line in warnings {
        println!("{label}    {line}");
    }
}

/// Case b.
fn idle_files(n: usize, nofile: u64, enough: u64, measure: Duration) {
    let label = format!("b-{nofile}");
    let (setup, agent, mut daemon, mut collector, files, _) =
        start(&format!("bench-idle-{nofile}"), n, 1, nofile, enough);
    let mut counts = vec![1; n];
    if let Err(missing) = wait_all(
        &setup.collector,
        &agent.host,
        &files,
        &counts,
        ARRIVAL,
        || {},
    ) {
        println!("{label}  only {missing} of {n} files arrived; skipped");
        return;
    }
    std::thread::sleep(Duration::from_secs(3));
    let before = daemon.cpu_seconds();
    std::thread::sleep(measure);
    let cpu = (daemon.cpu_seconds() - before) / measure.as_secs_f64() * 100.0;
    // One line to one idle file after another (spread over the files, so most were closed).
    let mut latencies = Vec::with_capacity(SAMPLES);
    for k in 0..SAMPLES {
        let i = (k * 7919) % n;
        let out = setup.collector.file(&agent.host, &files[i]);
        let before = std::fs::metadata(&out).map_or(0, |m| m.len());
        let written = Instant::now();
        append(&files[i], &source(i), counts[i]..counts[i] + 1);
        counts[i] += 1;
        while std::fs::metadata(&out).map_or(0, |m| m.len()) == before {
            if written.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        latencies.push(written.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let warnings = daemon.warnings().len();
    let _ = daemon.stop(Duration::from_secs(30));
    let _ = collector.stop(Duration::from_secs(30));
    println!(
        "{label}  {n} idle files, limit {nofile}: agent idle CPU {cpu:.2}% of one core; new line -> collector p50 {:?} p99 {:?} max {:?}; {warnings} warning lines",
        at(0.5),
        at(0.99),
        at(1.0),
    );
}
