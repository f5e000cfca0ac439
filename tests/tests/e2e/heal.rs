//! Healing in seconds (issue 16): a network that goes silent under both daemons, a node stopped
//! and started again and again, a 3-node quorum cluster losing the node both daemons use, a
//! broker that keeps nacking (resent ever more rarely, not in a storm of channels). Every
//! line arrives once and in order; the tests print how long lines stopped being written (they
//! assert nothing on it: the machine is shared).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use logship_tests::broker::{Broker, Topology, amqp_url};
use logship_tests::daemon::{Daemon, binary};
use logship_tests::fixture::{Agent, Collector, Setup};
use logship_tests::http::free_addr;
use logship_tests::lines::{
    assert_delivered_once_in_order, expected, open_append, text, wait_for_delivery, write_lines,
};
use logship_tests::proxy::Proxy;
use logship_tests::rabbit::{self, Node};

/// How long the last lines may take to arrive once the writer stopped.
const ARRIVAL: Duration = Duration::from_secs(180);
/// The defaults, spelled out: the fixture's fast test delays would hide a backoff that grew.
const DEFAULT_RECONNECT: &str = "reconnect_delay = \"500ms\"\nreconnect_max_delay = \"30s\"\n";

/// Writes lines of source `app` to a file, `per_tick` every 100 ms, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(log: &Path, per_tick: usize) -> Writer {
        let (stop, written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (stop_thread, written_thread) = (stop.clone(), written.clone());
        let mut file = open_append(log);
        let thread = std::thread::spawn(move || {
            let mut next = 0;
            while !stop_thread.load(Ordering::SeqCst) {
                write_lines(&mut file, "app", next..next + per_tick);
                next += per_tick;
                written_thread.store(next, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Writer {
            stop,
            written,
            thread: Some(thread),
        }
    }

    /// Stops writing; returns how many lines were written.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.written.load(Ordering::SeqCst)
    }
}

/// Lines in the collector's file (every test line has the same length).
fn lines_in(out: &Path) -> usize {
    let line = text("app", 0).len() as u64 + 1;
    (std::fs::metadata(out).map_or(0, |m| m.len()) / line) as usize
}

/// Watches the output for `span`, sampling every 50 ms: returns the longest time the file did
/// not grow while the writer kept writing.
fn longest_gap(out: &Path, span: Duration) -> Duration {
    let end = Instant::now() + span;
    let (mut last, mut since, mut longest) = (lines_in(out), Instant::now(), Duration::ZERO);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        let now = lines_in(out);
        if now != last {
            longest = longest.max(since.elapsed());
            (last, since) = (now, Instant::now());
        }
    }
    longest.max(since.elapsed())
}

/// Waits until the output grows past what it held at the call; returns how long that took.
fn time_to_growth(out: &Path, timeout: Duration) -> Option<Duration> {
    let (start, before) = (Instant::now(), lines_in(out));
    while start.elapsed() < timeout {
        if lines_in(out) > before {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn verify(out: &Path, total: usize, what: &str) {
    let want = expected("app", 0..total);
    let lines = wait_for_delivery(out, &want, ARRIVAL, ARRIVAL);
    assert_delivered_once_in_order(&lines, &want, what);
}

fn stop(daemon: &mut Daemon) {
    let status = daemon.stop(Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", daemon.log_text());
}

/// Prints the lines of a daemon's log that tell how it noticed and healed.
fn print_log(name: &str, daemon: &Daemon) {
    for line in daemon.log_text().lines().filter(|l| {
        [
            "lost",
            "reachable again",
            "consuming",
            "publishing",
            "looks dead",
            "nacked",
        ]
        .iter()
        .any(|needle| l.contains(needle))
    }) {
        eprintln!("  {name}: {line}");
    }
}

/// A collector and an agent on `uris`, reading `<dir>/logs/app.log`; `broker` goes into both
/// `[broker]` tables, `collector_broker` into the collector's only.
fn stage(
    dir: &Path,
    exchange: &str,
    queue: &str,
    uris: &[&str],
    broker: &str,
    collector_broker: &str,
) -> (Collector, Agent, PathBuf) {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let collector_broker = format!("{broker}{collector_broker}");
    let collector = Collector::with_uris(
        dir,
        "collector",
        uris,
        exchange,
        queue,
        &collector_broker,
        "",
    );
    let agent = Agent::with_uris(
        dir,
        "agent",
        uris,
        exchange,
        &[&logs.join("*.log")],
        "",
        broker,
        "",
    );
    (collector, agent, logs.join("app.log"))
}

/// Agent and collector reach the shared broker through a proxy; 8 s into a stream of 600 lines
/// a second every open connection goes silent for good while new ones pass. `collector_broker`
/// goes into the collector's `[broker]`.
fn silent_network(what: &str, collector_broker: &str) {
    let topology = Topology::new("silent", 1);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = amqp_url();
    let target = target
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_string();
    let target = std::net::ToSocketAddrs::to_socket_addrs(&target)
        .unwrap()
        .next()
        .unwrap();
    let proxy = runtime.block_on(Proxy::start(target));
    let url = proxy.url();
    let (collector, agent, log) = stage(
        dir.path(),
        &topology.exchange,
        &topology.queues[0],
        &[&url],
        DEFAULT_RECONNECT,
        collector_broker,
    );
    let mut collector_daemon = collector.start();
    let mut agent_daemon = agent.start(true);
    let out = collector.file(&agent.host, &log);
    let writer = Writer::start(&log, 60);
    std::thread::sleep(Duration::from_secs(8));
    proxy.silence();
    let silenced = Instant::now();
    // What was already in the collector's socket is still written for a moment.
    std::thread::sleep(Duration::from_secs(1));
    let before = lines_in(&out);
    let resumed =
        time_to_growth(&out, Duration::from_secs(150)).map(|d| d + Duration::from_secs(1));
    std::thread::sleep(Duration::from_secs(10));
    let total = writer.finish();
    eprintln!(
        "{what}: first line written {:.1}s after the silence ({before} lines before it)",
        resumed.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    verify(&out, total, what);
    eprintln!(
        "{what}: checked {:.0}s after the silence",
        silenced.elapsed().as_secs_f64()
    );
    print_log("agent", &agent_daemon);
    print_log("collector", &collector_daemon);
    stop(&mut agent_daemon);
    stop(&mut collector_daemon);
}

#[test]
fn a_network_gone_silent_under_both_daemons_delivers_every_line_once_in_order() {
    silent_network("silent network", "");
}

#[test]
fn a_node_stopped_and_started_five_times_resumes_promptly_each_time() {
    let test = "node_stopped_five_times";
    if !rabbit::available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "n", None);
    let url = node.url();
    let (collector, agent, log) = stage(
        dir.path(),
        "restarts",
        "restarts.q",
        &[&url],
        DEFAULT_RECONNECT,
        "",
    );
    let mut collector_daemon = collector.start();
    let mut agent_daemon = agent.start(true);
    let out = collector.file(&agent.host, &log);
    let writer = Writer::start(&log, 50);
    let mut delays = Vec::new();
    for round in 1..=5 {
        std::thread::sleep(Duration::from_secs(3));
        node.stop();
        std::thread::sleep(Duration::from_secs(8));
        node.boot();
        // The node takes connections from here on.
        let delay = time_to_growth(&out, Duration::from_secs(120));
        eprintln!(
            "{test}: round {round}: first line written {:.2}s after the node took connections",
            delay.map_or(f64::NAN, |d| d.as_secs_f64())
        );
        delays.push(delay);
    }
    std::thread::sleep(Duration::from_secs(2));
    let total = writer.finish();
    verify(&out, total, test);
    eprintln!("{test}: resume delays {delays:?}");
    print_log("collector", &collector_daemon);
    stop(&mut agent_daemon);
    stop(&mut collector_daemon);
}

/// The queues and consumers as `node` sees them, every 2 s for `span` from `since`: what a note
/// on a stall needs.
fn broker_views(node: &Node, since: Instant, span: Duration) -> std::thread::JoinHandle<String> {
    let ctl = node.ctl_command();
    std::thread::spawn(move || {
        let mut views = String::new();
        while since.elapsed() < span {
            for args in [
                &[
                    "list_queues",
                    "-q",
                    "name",
                    "type",
                    "leader",
                    "messages_ready",
                    "messages_unacknowledged",
                    "consumers",
                    "single_active_consumer_tag",
                ][..],
                &[
                    "list_consumers",
                    "-q",
                    "queue_name",
                    "channel_pid",
                    "consumer_tag",
                    "active",
                    "activity_status",
                ][..],
            ] {
                let out = ctl(args);
                views.push_str(&format!(
                    "+{:.1}s {}\n{out}",
                    since.elapsed().as_secs_f64(),
                    args[0]
                ));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        views
    })
}

#[test]
fn a_quorum_cluster_of_three_keeps_working_when_the_connected_node_is_killed() {
    let test = "quorum_three_nodes";
    if !rabbit::available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), "a", None);
    let b = Node::start(dir.path(), "b", None);
    let c = Node::start(dir.path(), "c", None);
    b.join(&a);
    c.join(&a);
    let (url_a, url_b, url_c) = (a.url(), b.url(), c.url());
    // Both daemons start on a (the first URI), so the queues' leaders are there too.
    let (collector, agent, log) = stage(
        dir.path(),
        "cluster",
        "cluster.q",
        &[&url_a, &url_b, &url_c],
        DEFAULT_RECONNECT,
        "queue_type = \"quorum\"\n",
    );
    let mut collector_daemon = collector.start();
    let mut agent_daemon = agent.start(true);
    let out = collector.file(&agent.host, &log);
    let writer = Writer::start(&log, 50);
    std::thread::sleep(Duration::from_secs(5));
    let (_, queues) = b.ctl(&["list_queues", "-q", "name", "type", "leader"]);
    eprintln!("{test}: queues before the kill:\n{queues}");
    let before = longest_gap(&out, Duration::from_secs(2));
    a.kill9();
    let killed = Instant::now();
    let views = broker_views(&b, killed, Duration::from_secs(30));
    let gap = longest_gap(&out, Duration::from_secs(30));
    let total = writer.finish();
    let views = views.join().unwrap_or_default();
    eprintln!(
        "{test}: longest time without a written line: {:.2}s after the kill (before it: {:.2}s)",
        gap.as_secs_f64(),
        before.as_secs_f64()
    );
    if gap > Duration::from_secs(5) {
        eprintln!("{test}: the broker's view through the gap (node b):\n{views}");
    }
    verify(&out, total, test);
    print_log("agent", &agent_daemon);
    print_log("collector", &collector_daemon);
    stop(&mut agent_daemon);
    stop(&mut collector_daemon);
    drop((b, c));
}

/// Lines of `path` (none while it does not exist).
fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    logship_tests::lines::read_lines(path)
}

/// Two collectors on one queue: the second stands by (said once, shown on `/status`) behind the
/// first, the queue's single active consumer, and takes over when the first is killed -9. Each
/// collector writes every line it got once and in order; together they hold every line.
#[test]
fn a_second_collector_on_the_same_queue_stands_by_and_takes_over_when_the_first_is_killed() {
    let test = "standby";
    let topology = Topology::new("standby", 1);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let first = Collector::new(
        dir.path(),
        "c1",
        &topology.exchange,
        &topology.queues[0],
        "",
    );
    let status = logship_tests::http::free_addr();
    let second = Collector::new(
        dir.path(),
        "c2",
        &topology.exchange,
        &topology.queues[0],
        &format!("[metrics]\nlisten = \"{status}\"\n"),
    );
    let mut first_daemon = first.start();
    let mut second_daemon = second.start();
    let agent = Agent::new(
        dir.path(),
        "agent",
        &logship_tests::broker::amqp_url(),
        &topology.exchange,
        &[&logs.join("*.log")],
        "",
        "",
    );
    let mut agent_daemon = agent.start(true);
    let log = logs.join("app.log");
    let writer = Writer::start(&log, 50);
    second_daemon.wait_for_log("standing by", 1, Duration::from_secs(30));
    let (_, page) = logship_tests::http::get(&status, "/status");
    assert!(page.contains("\"standby\":true"), "/status: {page}");
    let (first_out, second_out) = (
        first.file(&agent.host, &log),
        second.file(&agent.host, &log),
    );
    assert!(lines_of(&second_out).is_empty(), "a standby writes nothing");
    std::thread::sleep(Duration::from_secs(2));
    first_daemon.kill9();
    let took_over = time_to_growth(&second_out, Duration::from_secs(120));
    eprintln!(
        "{test}: the standby wrote its first line {:.2}s after the active collector was killed",
        took_over.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    std::thread::sleep(Duration::from_secs(3));
    let total = writer.finish();
    let want = expected("app", 0..total);
    let last = want.last().cloned().unwrap_or_default();
    let deadline = Instant::now() + ARRIVAL;
    while !lines_of(&second_out).contains(&last) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (before, after) = (lines_of(&first_out), lines_of(&second_out));
    // Each collector's file: in order, no line twice. The lines the first wrote but never
    // acked are redelivered to the second, so the two may share some.
    for (name, lines) in [("c1", &before), ("c2", &after)] {
        let positions: Vec<usize> = lines
            .iter()
            .map(|l| want.iter().position(|w| w == l).expect("a written line"))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{name}: out of order or twice"
        );
    }
    let missing = want
        .iter()
        .filter(|l| !before.contains(l) && !after.contains(l))
        .count();
    assert_eq!(missing, 0, "lines in neither collector's file");
    let text = second_daemon.log_text();
    assert_eq!(text.matches("standing by").count(), 1, "said once:\n{text}");
    assert!(text.contains("active again"), "{text}");
    let (_, page) = logship_tests::http::get(&status, "/status");
    assert!(page.contains("\"standby\":false"), "/status: {page}");
    stop(&mut agent_daemon);
    stop(&mut second_daemon);
}

/// Regression test for issue 27 (item 6b): while the broker nacked every publish, the agent
/// opened a new channel about every 2 s. The wait before each resend now doubles (1 s up to
/// 30 s, jittered down to half), and the first clean ack starts it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_keeps_nacking_gets_new_channels_ever_more_rarely_until_a_clean_ack() {
    const NEW_CHANNEL: &str = "publishing on a new channel after a nack";
    let mut setup = Setup::new("nackbackoff");
    let full = format!("{}.full", setup.topology.exchange);
    // Deleted with the topology, whatever happens to the test.
    setup.topology.queues.push(full.clone());
    let mut collector = setup.collector.start();
    let broker = Broker::connect().await;
    broker
        .bind_full_queue(&setup.topology.exchange, &full)
        .await;
    let metrics = free_addr();
    let agent = setup.agent(
        &amqp_url(),
        &format!("[metrics]\nlisten = \"{metrics}\""),
        "",
    );
    // Each new channel is logged at debug.
    let mut daemon = Daemon::start_with_env(
        &binary("logship-agent"),
        &agent.config,
        &agent.log,
        &[("LOGSHIP_LOG", "info,logship_agent::publisher=debug")],
    );
    daemon.wait_for_log("publishing", 1, Duration::from_secs(30));
    let mut file = open_append(&setup.log("app.log"));
    write_lines(&mut file, "app", 0..100);
    daemon.wait_for_log("the broker nacked publishes", 1, ARRIVAL);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let opened = daemon.log_text().matches(NEW_CHANNEL).count();
    println!("new channels in 20 s of nacks: {opened}");
    // Waits of at least 0.5, 1, 2, 4, 8 and 16 s: at most 5 in 20 s (a fixed 1 s made ~10).
    assert!((2..=5).contains(&opened), "{opened} new channels in 20 s");

    // Taken again: every line is confirmed within the wait reached (at most 30 s).
    broker.delete_queue(&full).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while logship_tests::http::counter(&metrics, "logship_agent_confirmed_total") < 100 {
        assert!(
            Instant::now() < deadline,
            "not confirmed after the queue went"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Refused again: the waits start over at 1 s, so new channels come within seconds.
    broker
        .bind_full_queue(&setup.topology.exchange, &full)
        .await;
    let before = daemon.log_text().matches(NEW_CHANNEL).count();
    write_lines(&mut file, "app", 100..200);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let again = daemon.log_text().matches(NEW_CHANNEL).count() - before;
    println!("new channels in the 6 s after a clean ack and new nacks: {again}");
    assert!(
        again >= 2,
        "{again} new channels: the backoff did not start over"
    );

    broker.delete_queue(&full).await;
    let out = setup.out(&agent, "app.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while logship_tests::http::counter(&metrics, "logship_agent_confirmed_total") < 200 {
        assert!(
            Instant::now() < deadline,
            "not confirmed after the queue went"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    verify(&out, 200, "app");
    stop(&mut daemon);
    stop(&mut collector);
}
