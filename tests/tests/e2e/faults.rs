//! The broker itself failing: private RabbitMQ nodes (never the shared one on 5672) stopped,
//! killed, blocked by a resource alarm, reached over TLS, failed over, and clustered with quorum
//! queues. Each test prints what a note needs: lines written, lost, duplicated, time to recover.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logship_tests::broker::unique;
use logship_tests::daemon::Daemon;
use logship_tests::fixture::{Agent, Collector};
use logship_tests::lines::{read_lines, text, wait_for_lines};
use logship_tests::rabbit::{self, Node, make_certs};

const ARRIVAL: Duration = Duration::from_secs(120);

/// One scenario's files, collector and agent, on the given broker URIs.
struct Stage {
    /// Kept for the stage's life: the daemons' files live in it.
    _dir: tempfile::TempDir,
    log: PathBuf,
    collector: Collector,
    agent: Agent,
}

impl Stage {
    fn new(
        dir: tempfile::TempDir,
        agent_uris: &[&str],
        collector_uris: &[&str],
        broker: &str,
        collector_broker: &str,
    ) -> Stage {
        let exchange = unique("fault");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let collector = Collector::with_uris(
            dir.path(),
            "collector",
            collector_uris,
            &exchange,
            &format!("{exchange}.q"),
            &format!("{collector_broker}\n{broker}"),
            "",
        );
        let agent = Agent::with_uris(
            dir.path(),
            "agent",
            agent_uris,
            &exchange,
            &[&logs.join("*.log")],
            "",
            broker,
            "",
        );
        Stage {
            log: logs.join("app.log"),
            _dir: dir,
            collector,
            agent,
        }
    }

    fn out(&self) -> PathBuf {
        self.collector.file(&self.agent.host, &self.log)
    }

    /// Appends lines `range` to the log.
    fn write(&self, range: std::ops::Range<usize>) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut buf = Vec::new();
        for i in range {
            buf.extend_from_slice(&text("app", i));
            buf.push(b'\n');
        }
        file.write_all(&buf).unwrap();
    }

    /// Writes `total` lines in a background thread, 200 every 100 ms.
    fn stream(&self, total: usize) -> std::thread::JoinHandle<()> {
        let log = self.log.clone();
        std::thread::spawn(move || {
            for chunk in (0..total).step_by(200) {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                let mut buf = Vec::new();
                for i in chunk..chunk + 200 {
                    buf.extend_from_slice(&text("app", i));
                    buf.push(b'\n');
                }
                file.write_all(&buf).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    }

    /// Waits for `total` lines at the collector and reports lost and duplicated ones.
    fn verify(&self, scenario: &str, total: usize, recovered_from: Instant) {
        let lines = wait_for_lines(&self.out(), total, ARRIVAL);
        let recovery = recovered_from.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        let lines = if lines.len() >= total {
            read_lines(&self.out())
        } else {
            lines
        };
        let want: Vec<Vec<u8>> = (0..total).map(|i| text("app", i)).collect();
        let present: std::collections::HashSet<&Vec<u8>> = lines.iter().collect();
        let lost = want.iter().filter(|l| !present.contains(l)).count();
        let duplicated = lines.len() + lost - total;
        eprintln!(
            "SCENARIO {scenario}: written={total} lost={lost} duplicated={duplicated} recovered_in={:.1}s",
            recovery.as_secs_f64()
        );
        assert_eq!((lost, duplicated), (0, 0), "{scenario}");
        assert_eq!(lines, want, "{scenario}: order");
    }
}

fn stop(daemon: &mut Daemon) {
    let status = daemon.stop(Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", daemon.log_text());
}

/// A private node with a collector and an agent on it, both running; `None` (test skipped) where
/// rabbitmq-server is not installed.
fn single_node(test: &str) -> Option<(Node, Stage, Daemon, Daemon)> {
    if !rabbit::available(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "n", None);
    let url = node.url();
    let stage = Stage::new(dir, &[&url], &[&url], "", "");
    let collector = stage.collector.start();
    let agent = stage.agent.start(true);
    Some((node, stage, collector, agent))
}

/// A broker outage of the given kind in the middle of a stream.
fn outage(test: &str, fault: impl FnOnce(&Node)) {
    let Some((node, stage, mut collector, mut agent)) = single_node(test) else {
        return;
    };
    let writer = stage.stream(20_000);
    wait_for_lines(&stage.out(), 2000, ARRIVAL);
    fault(&node);
    let back = Instant::now();
    writer.join().unwrap();
    stage.verify(test, 20_000, back);
    stop(&mut agent);
    stop(&mut collector);
}

#[test]
fn broker_stopped_cleanly_mid_stream_and_restarted_after_10s_loses_nothing() {
    outage("broker_stop_restart", |node| {
        node.stop();
        std::thread::sleep(Duration::from_secs(10));
        node.boot();
    });
}

#[test]
fn broker_killed_nine_mid_stream_and_restarted_loses_nothing() {
    outage("broker_kill9_restart", |node| {
        node.kill9();
        std::thread::sleep(Duration::from_secs(3));
        node.boot();
    });
}

#[test]
fn broker_restarted_while_the_agent_is_down_both_orders() {
    let test = "broker_restart_agent_down";
    let Some((node, stage, mut collector, mut agent)) = single_node(test) else {
        return;
    };
    stage.write(0..1000);
    wait_for_lines(&stage.out(), 1000, ARRIVAL);
    // Agent down, broker down; lines written; agent back first, then the broker.
    agent.kill9();
    node.stop();
    stage.write(1000..2000);
    let mut agent = stage.agent.start(false);
    stage.write(2000..3000);
    std::thread::sleep(Duration::from_secs(2));
    node.boot();
    let back = Instant::now();
    wait_for_lines(&stage.out(), 3000, ARRIVAL);
    eprintln!(
        "agent first, then broker: recovered in {:.1}s",
        back.elapsed().as_secs_f64()
    );
    // Both down again; the broker back first, then the agent.
    stop(&mut agent);
    node.stop();
    stage.write(3000..4000);
    node.boot();
    let back = Instant::now();
    let mut agent = stage.agent.start(true);
    stage.verify(test, 4000, back);
    stop(&mut agent);
    stop(&mut collector);
}

#[test]
fn a_resource_alarm_pauses_the_agent_which_keeps_spooling_and_resumes() {
    let test = "resource_alarm";
    let Some((node, stage, mut collector, mut agent)) = single_node(test) else {
        return;
    };
    stage.write(0..1000);
    wait_for_lines(&stage.out(), 1000, ARRIVAL);
    assert!(node.ctl(&["set_disk_free_limit", "1000GB"]).0);
    stage.write(1000..3000);
    agent.wait_for_log("broker blocked publishing", 1, Duration::from_secs(60));
    // Longer than any confirm deadline the agent ever had (10 s): a blocked connection is slow,
    // not dead, while the broker's heartbeats come (issue 27).
    std::thread::sleep(Duration::from_secs(15));
    let during = read_lines(&stage.out()).len();
    stage.write(3000..4000);
    assert!(node.ctl(&["set_disk_free_limit", "1MB"]).0);
    let back = Instant::now();
    stage.verify(test, 4000, back);
    eprintln!("{test}: {during} lines at the collector while blocked");
    assert!(during < 4000);
    assert_eq!(
        agent
            .log_text()
            .matches("broker blocked publishing")
            .count(),
        1,
        "said once"
    );
    assert!(agent.log_text().contains("broker unblocked publishing"));
    assert!(
        !agent.log_text().contains("connection to broker lost"),
        "a blocked connection was taken for a dead one (and its window republished):\n{}",
        agent.log_text()
    );
    stop(&mut agent);
    stop(&mut collector);
}

#[test]
fn tls_with_the_right_ca_ships_and_a_wrong_ca_fails_clearly() {
    let test = "tls";
    if !rabbit::available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "good");
    let wrong = make_certs(dir.path(), "wrong");
    let node = Node::start(dir.path(), "n", Some(&certs));
    let url = format!(
        "amqps://guest:s3cret-pw@localhost:{}/%2f",
        node.tls_port.unwrap()
    );
    std::fs::write(dir.path().join("password"), "guest\n").unwrap();
    let tls = format!(
        "password_file = \"{}\"\n[broker.tls]\nca_file = \"{}\"",
        dir.path().join("password").display(),
        certs.ca.display()
    );
    let bad_tls = format!("[broker.tls]\nca_file = \"{}\"", wrong.ca.display());
    let bad_dir = dir.path().join("bad");
    let stage = Stage::new(dir, &[&url], &[&url], &tls, "");
    let mut collector = stage.collector.start();
    let mut agent = stage.agent.start(true);
    stage.write(0..500);
    stage.verify(test, 500, Instant::now());
    stop(&mut agent);
    stop(&mut collector);
    // The wrong CA: the collector keeps retrying and says why, naming the URI without password.
    let bad = Collector::with_uris(&bad_dir, "c", &[&url], "x.logs", "x.q", &bad_tls, "");
    let mut daemon = Daemon::start(
        &logship_tests::daemon::binary("logship-collector"),
        &bad.config,
        &bad.log,
    );
    daemon.wait_for_log("cannot connect to broker", 1, Duration::from_secs(30));
    stop(&mut daemon);
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("cannot connect to broker"))
        .unwrap();
    assert!(
        line.contains(&format!(
            "amqps://guest:***@localhost:{}",
            node.tls_port.unwrap()
        )),
        "{line}"
    );
    assert!(!log.contains("s3cret-pw"), "{log}");
    assert!(
        line.to_lowercase().contains("certificate") || line.contains("UnknownIssuer"),
        "{line}"
    );
}

/// Two private nodes clustered; `b` joined `a`.
fn cluster(dir: &Path) -> (Node, Node) {
    let a = Node::start(dir, "a", None);
    let b = Node::start(dir, "b", None);
    b.join(&a);
    (a, b)
}

#[test]
fn failover_to_the_second_uri_when_the_node_in_use_stops() {
    let test = "failover";
    if !rabbit::available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = cluster(dir.path());
    let (url_a, url_b) = (a.url(), b.url());
    // The collector's classic queue lives on b; the agent publishes through a, then b.
    let stage = Stage::new(dir, &[&url_a, &url_b], &[&url_b], "", "");
    let mut collector = stage.collector.start();
    let mut agent = stage.agent.start(true);
    let writer = stage.stream(20_000);
    wait_for_lines(&stage.out(), 2000, ARRIVAL);
    a.stop();
    let back = Instant::now();
    writer.join().unwrap();
    stage.verify(test, 20_000, back);
    stop(&mut agent);
    stop(&mut collector);
}

#[test]
fn quorum_queue_leader_killed_nine_loses_nothing() {
    let test = "quorum_leader_kill9";
    if !rabbit::available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = cluster(dir.path());
    let (url_a, url_b) = (a.url(), b.url());
    let stage = Stage::new(
        dir,
        &[&url_a, &url_b],
        &[&url_b, &url_a],
        "",
        "queue_type = \"quorum\"",
    );
    let mut collector = stage.collector.start();
    let mut agent = stage.agent.start(true);
    let writer = stage.stream(20_000);
    wait_for_lines(&stage.out(), 2000, ARRIVAL);
    let (_, queues) = b.ctl(&["list_queues", "-q", "name", "type", "leader"]);
    eprintln!("{test}: queues: {queues}");
    let leader_is_a = queues
        .lines()
        .any(|l| l.contains("quorum") && l.contains(&a.name));
    let leader = if leader_is_a { &a } else { &b };
    leader.kill9();
    std::thread::sleep(Duration::from_secs(5));
    leader.boot();
    let back = Instant::now();
    writer.join().unwrap();
    stage.verify(test, 20_000, back);
    stop(&mut agent);
    stop(&mut collector);
}
