//! `Type=notify`: the daemons tell systemd READY once started (the agent even with the broker
//! down), ping the watchdog when asked to, and say STOPPING on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use logship_tests::broker::Topology;
use logship_tests::daemon::{Daemon, binary};
use logship_tests::fixture::{Agent, Collector};

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
