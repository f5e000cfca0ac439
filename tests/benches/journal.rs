//! The journal input beside the file input (issue 15), agent + broker + collector on this
//! machine, three runs each:
//!
//! - a. throughput: the same number of entries pre-written to a journal file (by
//!   `systemd-journal-remote`) and of lines of the same size to a file; lines/s from the agent's
//!   start to the last line in the collector's file, and CPU per line of the agent (and of its
//!   journalctl child, counted apart), journal beside file in the same run;
//! - b. latency: entry written -> collector's file, p50/p99, one journal at 20 entries/s.
//!
//! Prints one line per figure and asserts nothing. `BENCH_CASE=a|b`, `BENCH_LINES` (a, default
//! 100000), `BENCH_SECS` (b, default 20). Uses the binaries next to this benchmark (`cargo build
//! --release --workspace`) or `LOGSHIP_AGENT_BIN` / `LOGSHIP_COLLECTOR_BIN`, and the broker at
//! `AMQP_URL`.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logship_tests::broker::amqp_url;
use logship_tests::daemon::{Daemon, binary, children, cpu_seconds};
use logship_tests::fixture::Setup;
use logship_tests::journal::{Entry, Feed, available};
use logship_tests::lines::{read_lines, wait_for_lines};

/// How long the last line may take.
const ARRIVAL: Duration = Duration::from_secs(600);
/// A message the size of a short log line (~200 bytes with its envelope's other fields).
const PADDING: &str = "GET /index.html HTTP/1.1 200 512 \"Mozilla/5.0 (X11; Linux x86_64)\" lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod";

fn main() {
    if !available("journal bench") {
        return;
    }
    let case = std::env::var("BENCH_CASE").unwrap_or_else(|_| "all".into());
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (lines, secs) = (env("BENCH_LINES", 100_000) as usize, env("BENCH_SECS", 20));
    eprintln!(
        "journal bench: agent {}, collector {}, broker {}",
        binary("logship-agent").display(),
        binary("logship-collector").display(),
        amqp_url()
    );
    for run in 1..=3 {
        if matches!(case.as_str(), "a" | "all") {
            throughput(run, lines);
        }
        if matches!(case.as_str(), "b" | "all") {
            latency(run, Duration::from_secs(secs));
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What one shipping of a backlog cost.
struct Shipped {
    lines_per_sec: f64,
    agent_us_per_line: f64,
    child_us_per_line: f64,
}

/// Case a, one run: the file input, then the journal input, on backlogs of `lines`.
fn throughput(run: usize, lines: usize) {
    let file = ship_backlog("file", lines, |setup| {
        let path = setup.log("app.log");
        let mut text = String::with_capacity(lines * 200);
        for i in 0..lines {
            text.push_str(&format!("{i:08} {PADDING}\n"));
        }
        std::fs::write(&path, text).expect("write the backlog");
        (String::new(), Some(path))
    });
    let journal = ship_backlog("journal", lines, |setup| {
        let dir = setup.dir.path().join("journal");
        let mut feed = Feed::start(&dir, "app");
        for chunk in (0..lines).step_by(1000) {
            let entries: Vec<Entry> = (chunk..(chunk + 1000).min(lines))
                .map(|i| Entry::of("app.service", &format!("{i:08} {PADDING}")))
                .collect();
            feed.write(&entries);
        }
        feed.finish();
        (
            format!(
                "\n[[inputs]]\ntype = \"journal\"\ndirectory = \"{}\"\n",
                dir.display()
            ),
            None,
        )
    });
    println!(
        "a  run {run}, {lines} lines: file {:.0} lines/s, agent {:.1} us/line | journal {:.0} entries/s, agent {:.1} us/entry + journalctl {:.1} us/entry | journal/file: lines/s {:.2}, agent CPU {:.2}, agent+journalctl CPU {:.2}",
        file.lines_per_sec,
        file.agent_us_per_line,
        journal.lines_per_sec,
        journal.agent_us_per_line,
        journal.child_us_per_line,
        journal.lines_per_sec / file.lines_per_sec,
        journal.agent_us_per_line / file.agent_us_per_line,
        (journal.agent_us_per_line + journal.child_us_per_line) / file.agent_us_per_line,
    );
}

/// Writes a backlog with `prepare` (returns the agent's extra input and, for a file, its path),
/// starts an agent on it and waits for every line at the collector.
fn ship_backlog(
    label: &str,
    lines: usize,
    prepare: impl FnOnce(&Setup) -> (String, Option<PathBuf>),
) -> Shipped {
    let setup = Setup::new(&format!("bench-journal-{label}"));
    let mut collector = setup.collector.start();
    let (input, file) = prepare(&setup);
    let agent = setup.agent(&amqp_url(), "", &input);
    let started = Instant::now();
    let mut daemon = agent.start(false);
    let out = match &file {
        Some(path) => setup.collector.file(&agent.host, path),
        None => setup
            .collector
            .output
            .join(&agent.host)
            .join("journal/app.service"),
    };
    // The child's CPU is read while it runs (a reaped child's is gone with it).
    let mut child_cpu = 0.0;
    while read_lines(&out).len() < lines && started.elapsed() < ARRIVAL {
        child_cpu = children(daemon.pid())
            .into_iter()
            .map(cpu_seconds)
            .sum::<f64>()
            .max(child_cpu);
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let arrived = wait_for_lines(&out, lines, Duration::ZERO).len();
    let agent_cpu = daemon.cpu_seconds();
    stop(&mut daemon, &mut collector);
    if arrived < lines {
        eprintln!("{label}: only {arrived} of {lines} lines arrived");
    }
    Shipped {
        lines_per_sec: arrived as f64 / elapsed,
        agent_us_per_line: agent_cpu / arrived.max(1) as f64 * 1e6,
        child_us_per_line: child_cpu / arrived.max(1) as f64 * 1e6,
    }
}

fn stop(agent: &mut Daemon, collector: &mut Daemon) {
    let _ = agent.stop(Duration::from_secs(30));
    let _ = collector.stop(Duration::from_secs(30));
}

/// Case b, one run: one entry every 50 ms for `measure`; each entry's message starts with its
/// write time, taken just before it is handed to the journal writer.
fn latency(run: usize, measure: Duration) {
    let setup = Setup::new("bench-journal-latency");
    let dir = setup.dir.path().join("journal");
    let mut feed = Feed::start(&dir, "app");
    feed.write(&[Entry::of("app.service", "warm-up")]);
    let mut collector = setup.collector.start();
    let agent = setup.agent(
        &amqp_url(),
        "",
        &format!(
            "\n[[inputs]]\ntype = \"journal\"\ndirectory = \"{}\"\n",
            dir.display()
        ),
    );
    let mut daemon = agent.start(true);
    let out = setup
        .collector
        .output
        .join(&agent.host)
        .join("journal/app.service");
    wait_for_lines(&out, 1, ARRIVAL);
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut written = 0usize;
    while started.elapsed() < measure {
        let sent = now_ns();
        feed.write(&[Entry::of("app.service", &format!("{sent} {PADDING}"))]);
        written += 1;
        // Poll the output until this entry is there (at 20 entries/s there is one in flight).
        let deadline = Instant::now() + Duration::from_secs(10);
        while read_lines(&out).len() < written + 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        samples.push(now_ns().saturating_sub(sent));
        let next = started + Duration::from_millis(50) * written as u32;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    stop(&mut daemon, &mut collector);
    feed.finish();
    samples.sort_unstable();
    let ms = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        samples[i] as f64 / 1e6
    };
    println!(
        "b  run {run}, 1 journal x 20 entries/s, {}s: write->collector p50 = {:.1} ms, p99 = {:.1} ms, max = {:.1} ms ({} entries)",
        measure.as_secs(),
        ms(0.5),
        ms(0.99),
        ms(1.0),
        samples.len()
    );
}
