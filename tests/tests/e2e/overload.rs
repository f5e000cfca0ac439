//! A slow broker is not a dead one (issue 27): confirms that come slowly while the broker is
//! heard from are waited for, never answered with a reconnect and a republish that multiply the
//! load; a fleet of agents that overloads the broker, with its collector killed -9 twice, loses
//! nothing, duplicates nothing, and never fills the queue with copies.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use logship_tests::broker::{Broker, Topology, amqp_url};
use logship_tests::daemon::Daemon;
use logship_tests::fixture::{Agent, Collector};
use logship_tests::http::{counter, free_addr};
use logship_tests::lines::{
    assert_delivered_once_in_order, expected, open_append, wait_for_delivery, wait_for_lines,
    write_lines,
};
use logship_tests::proxy::Proxy;

/// How long the last lines may take to arrive once the writers stopped.
const ARRIVAL: Duration = Duration::from_secs(300);
/// The agent's publish window: what one agent may have in flight.
const WINDOW: usize = 1024;

fn stop(daemon: &mut Daemon) {
    let status = daemon.stop(Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", daemon.log_text());
}

/// The broker stops reading the agent's connection for 25 s (as flow control does), while its
/// heartbeats and everything else it sends still flow: no confirm comes for 25 s. The agent
/// waits: no reconnect, no republish; every line arrives once, in order, once the broker reads
/// again.
#[test]
fn confirms_held_back_while_the_broker_is_heard_from_are_waited_for_not_republished() {
    let test = "slow_confirms";
    let topology = Topology::new("slowconfirms", 1);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = std::net::ToSocketAddrs::to_socket_addrs("127.0.0.1:5672")
        .unwrap()
        .next()
        .unwrap();
    let proxy = runtime.block_on(Proxy::start(target));
    let collector = Collector::new(
        dir.path(),
        "collector",
        &topology.exchange,
        &topology.queues[0],
        "",
    );
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let metrics = free_addr();
    // A heartbeat of 30 s: the broker sends one every 15 s and gives up on a client it has not
    // heard from for 60 s, longer than the stall.
    let agent = Agent::with_uris(
        dir.path(),
        "agent",
        &[&proxy.url()],
        &topology.exchange,
        &[&logs.join("*.log")],
        &format!("[metrics]\nlisten = \"{metrics}\""),
        "heartbeat = \"30s\"\n",
        "",
    );
    let mut collector_daemon = collector.start();
    let mut agent_daemon = agent.start(true);
    let log = logs.join("app.log");
    let out = collector.file(&agent.host, &log);
    let mut file = open_append(&log);
    write_lines(&mut file, "app", 0..1000);
    wait_for_lines(&out, 1000, ARRIVAL);
    proxy.stall();
    let stalled = Instant::now();
    for round in 0..25 {
        write_lines(&mut file, "app", 1000 + round * 100..1100 + round * 100);
        std::thread::sleep(Duration::from_secs(1));
    }
    let held = std::fs::metadata(&out).map_or(0, |m| m.len());
    proxy.unstall();
    eprintln!(
        "{test}: the broker read nothing for {:.1}s",
        stalled.elapsed().as_secs_f64()
    );
    let want = expected("app", 0..3500);
    let lines = wait_for_delivery(&out, &want, ARRIVAL, ARRIVAL);
    assert_delivered_once_in_order(&lines, &want, test);
    let (republished, reconnects) = (
        counter(&metrics, "logship_agent_republished_total"),
        counter(&metrics, "logship_agent_reconnects_total"),
    );
    eprintln!(
        "{test}: republished {republished}, reconnects {reconnects}, {held} bytes written while stalled"
    );
    let log_text = agent_daemon.log_text();
    assert!(
        !log_text.contains("connection to broker lost"),
        "a slow broker was taken for a dead one:\n{log_text}"
    );
    assert_eq!(republished, 0, "nothing is published twice");
    assert_eq!(reconnects, 0);
    stop(&mut agent_daemon);
    stop(&mut collector_daemon);
}

/// Writes one line every `every` to each file (file `i`'s lines are of source `source(i)`),
/// until stopped; counts the lines written in all.
struct Writers {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Writers {
    fn start(files: Vec<(PathBuf, String)>, every: Duration, per_file: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicUsize::new(0));
        let (stop_thread, written_thread) = (stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            let mut handles: Vec<_> = files
                .iter()
                .map(|(path, source)| (open_append(path), source.clone()))
                .collect();
            let started = Instant::now();
            let mut next = 0;
            while next < per_file && !stop_thread.load(Ordering::SeqCst) {
                for (file, source) in &mut handles {
                    write_lines(file, source, next..next + 1);
                }
                next += 1;
                written_thread.store(next * handles.len(), Ordering::SeqCst);
                let due = started + every * next as u32;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            next
        });
        Writers {
            stop,
            written,
            thread: Some(thread),
        }
    }

    fn written(&self) -> usize {
        self.written.load(Ordering::SeqCst)
    }

    /// Waits for the writer to finish; the lines written per file.
    fn finish(mut self) -> usize {
        self.thread
            .take()
            .map_or(0, |thread| thread.join().expect("writer"))
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The peak depth of `queue` (ready plus at most the collector's prefetch unacked), sampled
/// until `stop`.
fn watch_depth(queue: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let broker = Broker::connect().await;
            let mut peak = 0;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(broker.queue_len(&queue).await.unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            peak
        })
    })
}

/// 100 agents (each its own host and state), 2 files each at 20 lines/s per file (4k lines/s
/// in all) for 60 s, into one collector killed -9 twice: every line once and in order, and the
/// queue never holds more than the lines written plus one window per agent.
#[test]
fn a_hundred_agents_into_a_collector_killed_twice_lose_and_duplicate_nothing() {
    let test = "hundred_agents";
    const AGENTS: usize = 100;
    const PER_FILE: usize = 1200;
    let topology = Topology::new("hundred", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(
        dir.path(),
        "collector",
        &topology.exchange,
        &topology.queues[0],
        "",
    );
    let mut collector_daemon = collector.start();
    let mut agents = Vec::new();
    let mut files = Vec::new();
    for i in 0..AGENTS {
        let logs = dir.path().join(format!("a{i:03}")).join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let metrics = free_addr();
        let agent = Agent::new(
            dir.path(),
            &format!("a{i:03}"),
            &amqp_url(),
            &topology.exchange,
            &[&logs.join("*.log")],
            &format!("[metrics]\nlisten = \"{metrics}\""),
            "",
        );
        for f in ["a", "b"] {
            let log = logs.join(format!("{f}.log"));
            let source = format!("h{i:03}{f}");
            files.push((collector.file(&agent.host, &log), log.clone(), source));
        }
        let daemon = agent.start(true);
        agents.push((agent, daemon, metrics));
    }
    let stop_depth = Arc::new(AtomicBool::new(false));
    let depth = watch_depth(topology.queues[0].clone(), stop_depth.clone());
    let writers = Writers::start(
        files
            .iter()
            .map(|(_, log, source)| (log.clone(), source.clone()))
            .collect(),
        Duration::from_millis(50),
        PER_FILE,
    );
    for kill in 1..=2 {
        std::thread::sleep(Duration::from_secs(20));
        collector_daemon.kill9();
        let killed = Instant::now();
        // The broker may be slow to answer the consume under this load: it is waited for.
        collector_daemon = collector.start_within(ARRIVAL);
        eprintln!(
            "{test}: collector killed -9 ({kill}) with {} lines written; consuming again after {:.1}s",
            writers.written(),
            killed.elapsed().as_secs_f64()
        );
    }
    let per_file = writers.finish();
    let total = per_file * files.len();
    let mut lost_or_wrong = Vec::new();
    for (out, _, source) in &files {
        let want = expected(source, 0..per_file);
        let lines = wait_for_delivery(out, &want, ARRIVAL, ARRIVAL);
        if lines != want {
            lost_or_wrong.push((out.clone(), lines, want));
        }
    }
    stop_depth.store(true, Ordering::SeqCst);
    let peak = depth.join().expect("depth watch");
    let (mut republished, mut published, mut lost_connections) = (0, 0, 0);
    let mut causes = std::collections::BTreeMap::<String, usize>::new();
    for (_, daemon, metrics) in &agents {
        republished += counter(metrics, "logship_agent_republished_total");
        published += counter(metrics, "logship_agent_published_total");
        for line in daemon.log_text().lines() {
            if line.contains("connection to broker lost") {
                lost_connections += 1;
                let cause = line.split(" error=").nth(1).unwrap_or(line);
                let cause = cause.split(" spooled=").next().unwrap_or(cause);
                *causes.entry(cause.to_string()).or_default() += 1;
            }
        }
    }
    for (cause, n) in &causes {
        eprintln!("{test}: {n} agent connections lost: {cause}");
    }
    eprintln!(
        "{test}: {total} lines written; queue peak {peak} ready; published {published}, republished {republished} ({:.2}%); {lost_connections} agent connections lost",
        100.0 * republished as f64 / published.max(1) as f64
    );
    if let Some((out, lines, want)) = lost_or_wrong.first() {
        assert_delivered_once_in_order(lines, want, &out.display().to_string());
    }
    assert!(
        lost_or_wrong.is_empty(),
        "{} files wrong",
        lost_or_wrong.len()
    );
    assert!(
        peak as usize <= total + AGENTS * WINDOW,
        "the queue held {peak} messages for {total} lines: a republish storm"
    );
    for (_, daemon, _) in &agents {
        daemon.signal(libc::SIGTERM);
    }
    for (agent, mut daemon, _) in agents {
        let status = daemon.wait_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "{}: {status:?}",
            agent.host
        );
    }
    stop(&mut collector_daemon);
}
