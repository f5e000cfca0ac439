//! Running as a service: `Type=notify` (READY once started, the agent even with the broker down;
//! WATCHDOG when asked; STOPPING on SIGTERM) and the metrics and health pages.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use logship_tests::broker::{Broker, Topology};
use logship_tests::daemon::{Daemon, binary};
use logship_tests::fixture::{Agent, Collector};
use logship_tests::http::{free_addr, response};
use logship_tests::lines::{envelopes, wait_for_lines};

/// Collects what a daemon sends to `NOTIFY_SOCKET` until `want` has been seen.
fn wait_for(socket: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = message.lines().any(|l| l == want);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} within {timeout:?}; got {seen:?}");
}

fn notify_socket(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (socket, path.display().to_string())
}

#[test]
fn collector_notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let topology = Topology::new("notify", 1);
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    let (socket, path) = notify_socket(dir.path());
    let env = [
        ("NOTIFY_SOCKET", path.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let mut daemon = Daemon::start_with_env(
        &binary("logship-collector"),
        &collector.config,
        &collector.log,
        &env,
    );
    let ready = wait_for(&socket, "READY=1", Duration::from_secs(30));
    assert!(
        ready.iter().any(|m| m.contains("STATUS=consuming")),
        "{ready:?}"
    );
    wait_for(&socket, "WATCHDOG=1", Duration::from_secs(10));
    daemon.signal(libc::SIGTERM);
    wait_for(&socket, "STOPPING=1", Duration::from_secs(10));
    assert!(
        daemon
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn agent_is_ready_while_the_broker_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let agent = Agent::new(
        dir.path(),
        "a",
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "x.logs",
        &[&logs.join("*.log")],
        "",
        "",
    );
    let (socket, path) = notify_socket(dir.path());
    let mut daemon = Daemon::start_with_env(
        &binary("logship-agent"),
        &agent.config,
        &agent.log,
        &[("NOTIFY_SOCKET", path.as_str())],
    );
    wait_for(&socket, "READY=1", Duration::from_secs(30));
    daemon.signal(libc::SIGTERM);
    wait_for(&socket, "STOPPING=1", Duration::from_secs(10));
    assert!(
        daemon
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_pages_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let topology = Topology::new("metrics", 1);
    let (collector_addr, agent_addr) = (free_addr(), free_addr());
    let collector = Collector::new(
        dir.path(),
        "c",
        &topology.exchange,
        &topology.queues[0],
        &format!("[metrics]\nlisten = \"{collector_addr}\""),
    );
    let mut collector_daemon = collector.start();
    let broker = Broker::connect().await;
    let path = "/var/log/metrics.log";
    broker
        .publish(&topology.exchange, &envelopes("web-1", path, 1, 0..100))
        .await;
    broker
        .publish(&topology.exchange, &envelopes("web-1", path, 1, 0..10))
        .await;
    broker
        .publish_bodies(&topology.exchange, &[(b"garbage".to_vec(), "g".into())])
        .await;
    wait_for_lines(
        &collector.file("web-1", Path::new(path)),
        100,
        Duration::from_secs(30),
    );
    let wanted = [
        "logship_collector_written_total 100",
        "logship_collector_duplicates_total 10",
        "logship_collector_dead_lettered_total 1",
        "logship_collector_rejected_total{reason=\"malformed\"} 1",
        "# TYPE logship_collector_fsync_seconds_total counter",
    ];
    // The lines are on disk before their batch is counted (after its ack): wait for the counts.
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = response(&collector_addr, "/metrics");
        if wanted.iter().all(|want| page.contains(want)) || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        page.starts_with("HTTP/1.1 200 OK") && page.contains("text/plain; version=0.0.4"),
        "{page}"
    );
    for want in wanted {
        assert!(page.contains(want), "{want} missing in:\n{page}");
    }
    assert!(response(&collector_addr, "/health").ends_with("ok\n"));
    assert!(response(&collector_addr, "/nope").starts_with("HTTP/1.1 404"));

    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("a.log"), "one\ntwo\n").unwrap();
    let agent = Agent::new(
        dir.path(),
        "a",
        &logship_tests::broker::amqp_url(),
        &topology.exchange,
        &[&logs.join("*.log")],
        &format!("[metrics]\nlisten = \"{agent_addr}\""),
        "",
    );
    let mut agent_daemon = agent.start(true);
    wait_for_lines(
        &collector.file(&agent.host, &logs.join("a.log")),
        2,
        Duration::from_secs(30),
    );
    let page = response(&agent_addr, "/metrics");
    for want in [
        "logship_agent_lines_read_total 2",
        "logship_agent_files_watched 1",
        "# TYPE logship_agent_spool_bytes gauge",
    ] {
        assert!(page.contains(want), "{want} missing in:\n{page}");
    }
    assert!(agent_daemon.stop(Duration::from_secs(20)).success());
    assert!(collector_daemon.stop(Duration::from_secs(20)).success());
}
