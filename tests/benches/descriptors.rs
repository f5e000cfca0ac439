//! The agent within a descriptor budget (issue 18), agent + broker + collector on this machine:
//!
//! - a. 100k files x 10 lines, the agent under an open-file limit of 1024 and then of 200k
//!   (enough; the hard limit if it cannot be raised that far). Half the files are written
//!   before the agent starts, the other half once it has shipped the first and sat idle. For
//!   each half: how long until the agent read every line and until the broker confirmed every
//!   one, and the agent's RSS while reading and while publishing (sampled every 100 ms; the
//!   publisher runs during the reading too). The agent's idle RSS and live heap
//!   (`logship_agent_heap_bytes`) with half and with all the files give the memory of an
//!   additional idle file (issue 27 item 4). Then: how long until
//!   the collector held every line, whether each file arrived once and in order, the agent's
//!   peak RSS, its warning lines;
//! - b. 1000 idle files (each read once) under a limit of 512 (so 552 of them are closed at any
//!   time) and with enough descriptors: the agent's idle CPU, then the latency of a line
//!   written to one idle file after another (write -> collector's file, p50/p99/max).
//!
//! Prints one line per figure and asserts nothing. `BENCH_CASE=a|b` runs one case (default
//! both), `BENCH_NOFILE=1024|enough` one limit of case a (default both), `BENCH_FILES` sets case
//! a's file count (default 100000), `BENCH_SECS` how long case b measures idle CPU (default 20).
//! Uses the release binaries next to this benchmark (`cargo build --release --workspace`) or
//! `LOGSHIP_AGENT_BIN` / `LOGSHIP_COLLECTOR_BIN`, and the broker at `AMQP_URL`. Run as root to
//! raise the limit past the hard one for "enough".

use std::path::PathBuf;
use std::time::{Duration, Instant};

use logship_tests::broker::amqp_url;
use logship_tests::daemon::{Daemon, binary};
use logship_tests::fixture::{Agent, Setup};
use logship_tests::http::{counter, free_addr, get};
use logship_tests::lines::append;
use logship_tests::many::{create_files, create_range, first_wrong, source, wait_all};

/// Lines each file holds in case a.
const LINES: usize = 10;
/// The longest wait for every line of case a.
const ARRIVAL: Duration = Duration::from_secs(1800);
/// "Enough" descriptors for 100k files, if the hard limit allows (root with
/// CAP_SYS_RESOURCE may raise it); the hard limit otherwise.
const ENOUGH: u64 = 200_000;
/// Lines written one after another to idle files in case b.
const SAMPLES: usize = 200;
/// How long case a leaves the agent idle before taking its RSS: past a safety rescan (5 s)
/// and a `/status` snapshot, so what an idle file costs is what is left.
const SETTLE: Duration = Duration::from_secs(12);

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
    let limits = std::env::var("BENCH_NOFILE").unwrap_or_else(|_| "all".into());
    if matches!(case.as_str(), "a" | "all") {
        if matches!(limits.as_str(), "1024" | "all") {
            many_files(files, 1024, enough);
        }
        if matches!(limits.as_str(), "enough" | "all") {
            many_files(files, enough, enough);
        }
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

/// `logship_agent_lines_read_total` and `logship_agent_confirmed_total` now.
fn counters(metrics: &str) -> (u64, u64) {
    let (_, page) = get(metrics, "/metrics");
    let counter = |name: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        counter("logship_agent_lines_read_total"),
        counter("logship_agent_confirmed_total"),
    )
}

/// Case a: the first half of the files, written before the agent starts, then the second half,
/// written while it runs. Each half is read and published whole (every line confirmed by the
/// broker) and the agent left idle before its RSS is taken: what the second half added, over
/// its count, is the memory of an additional idle file.
fn many_files(n: usize, nofile: u64, enough: u64) {
    let label = format!("a-{nofile}");
    let half = n / 2;
    let (setup, agent, mut daemon, mut collector, mut files, metrics) =
        start(&format!("bench-fds-{nofile}"), half, LINES, nofile, enough);
    let started = Instant::now();
    let first = Phases::run(&daemon, &metrics, (half * LINES) as u64);
    let idle_half = settled_rss_kib(&daemon);
    let heap_half = counter(&metrics, "logship_agent_heap_bytes");
    files.extend(create_range(&setup.logs, half..n, LINES));
    let second = Phases::run(&daemon, &metrics, (n * LINES) as u64);
    let idle_all = settled_rss_kib(&daemon);
    let heap_all = counter(&metrics, "logship_agent_heap_bytes");
    let counts = vec![LINES; n];
    let shipped = wait_all(
        &setup.collector,
        &agent.host,
        &files,
        &counts,
        ARRIVAL,
        || {},
    );
    let peak_mib = daemon.peak_rss_kib() / 1024;
    let alive = daemon.wait_exit(Duration::ZERO).is_none();
    let warnings = daemon.warnings();
    let wrong = first_wrong(&setup.collector, &agent.host, &files, &counts);
    let _ = daemon.stop(Duration::from_secs(60));
    let _ = collector.stop(Duration::from_secs(60));
    let per_file = idle_all.saturating_sub(idle_half) as f64 * 1024.0 / (n - half).max(1) as f64;
    let heap_per_file = heap_all.saturating_sub(heap_half) as f64 / (n - half).max(1) as f64;
    println!(
        "{label}  {n} files x {LINES} lines, limit {nofile}: collector held all in {:?} (from the start), \
         once in order: {}, agent alive: {alive}, peak RSS {peak_mib} MiB, {} warning lines",
        shipped
            .map(|_| started.elapsed())
            .map_err(|missing| format!("{missing} of {n} complete")),
        wrong.map_or("yes".to_string(), |p| format!("NO ({})", p.display())),
        warnings.len(),
    );
    println!("{label}    first {half} files (agent started): {first}");
    println!(
        "{label}    next {} files (written while it runs): {second}",
        n - half
    );
    println!(
        "{label}    idle RSS {:.1} MiB with {half} files, {:.1} MiB with {n}: {per_file:.0} bytes per additional idle file",
        idle_half as f64 / 1024.0,
        idle_all as f64 / 1024.0,
    );
    // RSS also holds the free pages the bursts left between live chunks, which swing between
    // runs by more than the files cost; the live heap does not.
    println!(
        "{label}    idle live heap {:.1} MiB with {half} files, {:.1} MiB with {n}: {heap_per_file:.0} bytes per additional idle file",
        heap_half as f64 / (1024.0 * 1024.0),
        heap_all as f64 / (1024.0 * 1024.0),
    );
    for line in warnings {
        println!("{label}    {line}");
    }
}

/// The agent's RSS while it reads a batch of files (until `lines_read` reaches what was
/// written) and while it publishes the rest (until the broker confirmed every line).
struct Phases {
    read_in: Option<Duration>,
    published_in: Option<Duration>,
    reading_kib: u64,
    publishing_kib: u64,
}

impl Phases {
    /// Samples the agent's RSS every 100 ms until `want` lines in all are read and confirmed.
    fn run(daemon: &Daemon, metrics: &str, want: u64) -> Phases {
        let started = Instant::now();
        let mut phases = Phases {
            read_in: None,
            published_in: None,
            reading_kib: 0,
            publishing_kib: 0,
        };
        let mut last_look = Instant::now() - Duration::from_secs(1);
        while phases.published_in.is_none() && started.elapsed() < ARRIVAL {
            let rss = daemon.rss_kib();
            match phases.read_in {
                None => phases.reading_kib = phases.reading_kib.max(rss),
                Some(_) => phases.publishing_kib = phases.publishing_kib.max(rss),
            }
            if last_look.elapsed() >= Duration::from_millis(250) {
                last_look = Instant::now();
                let (read, confirmed) = counters(metrics);
                if phases.read_in.is_none() && read >= want {
                    phases.read_in = Some(started.elapsed());
                }
                if phases.read_in.is_some() && confirmed >= want {
                    phases.published_in = Some(started.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        phases
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read in {:?}, RSS while reading {:.1} MiB; confirmed in {:?}, RSS while publishing {:.1} MiB",
            self.read_in,
            self.reading_kib as f64 / 1024.0,
            self.published_in,
            self.publishing_kib as f64 / 1024.0,
        )
    }
}

/// The agent's RSS once it has been idle for [`SETTLE`] (a safety rescan and the budget's
/// closes have run since the last line).
fn settled_rss_kib(daemon: &Daemon) -> u64 {
    std::thread::sleep(SETTLE);
    daemon.rss_kib()
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
