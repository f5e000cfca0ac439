//! Issue 12: no host can write another host's logs, least-privilege users, and the collector
//! never follows a link it did not make. Real broker users (made and deleted by each test),
//! real daemons.

use std::path::Path;
use std::time::Duration;

use logship_runtime::{Envelope, FileId};
use logship_tests::broker::{Broker, Topology, amqp_url, unique};
use logship_tests::daemon::{Daemon, binary};
use logship_tests::fixture::{Agent, Collector, STARTUP};
use logship_tests::http::{free_addr, response};
use logship_tests::lines::{append, expected, wait_for_delivery, wait_for_lines};
use logship_tests::users::{User, publish_as};

const WAIT: Duration = Duration::from_secs(30);

/// A user name unique to this run, `<prefix>-<id>`.
fn user_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:06x}",
        std::process::id(),
        fastrand::u32(..1 << 24)
    )
}

/// An agent user: configure and write on the exchange only, no read.
fn agent_user(prefix: &str, exchange: &str) -> User {
    let only = format!("^{}$", regex_escape(exchange));
    User::create(&user_name(prefix), &only, &only, "")
}

fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}

fn envelope(host: &str, path: &str, offset: u64) -> Envelope {
    Envelope {
        host: host.into(),
        path: path.into(),
        // A source of its own: lines of one source at one offset are duplicates.
        file: FileId {
            dev: 1,
            ino: fastrand::u64(..),
            fp: 3,
        },
        generation: 0,
        offset,
        timestamp_ms: 0,
        line: format!("{host} {path} {offset}").into_bytes(),
        fields: Default::default(),
        kind: Default::default(),
    }
}

/// The collector's one-line counter summary at stop.
fn summary(daemon: &Daemon) -> String {
    let log = daemon.log_text();
    log.lines()
        .rev()
        .find(|l| l.contains("collector stopped"))
        .unwrap_or_else(|| panic!("no summary in:\n{log}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_an_agent_writes_only_its_own_host_and_forged_user_ids_are_refused() {
    let topology = Topology::new("sec-require", 1);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let a = agent_user("ta", &topology.exchange);
    let b = agent_user("tb", &topology.exchange);
    let collector = Collector::new(
        dir.path(),
        "c",
        &topology.exchange,
        &topology.queues[0],
        "[security]\nhost_from_user = \"require\"\n",
    );
    let mut collector_daemon = collector.start();
    // Agent A ships as its own user name; agent B, logged in as B, claims A's host.
    let (log_a, log_b) = (logs.join("a.log"), logs.join("b.log"));
    let agent_a = Agent::new(
        dir.path(),
        "a",
        &a.url(),
        &topology.exchange,
        &[&log_a],
        "",
        "",
    )
    .with_host(&a.name);
    let agent_b = Agent::new(
        dir.path(),
        "b",
        &b.url(),
        &topology.exchange,
        &[&log_b],
        "",
        "",
    )
    .with_host(&a.name);
    append(&log_a, "a", 0..20);
    append(&log_b, "b", 0..5);
    let mut daemon_a = agent_a.start(true);
    let mut daemon_b = agent_b.start(true);
    let out_a = collector.file(&a.name, &log_a);
    let want = expected("a", 0..20);
    let lines = wait_for_delivery(&out_a, &want, WAIT, WAIT);
    assert_eq!(lines, want, "agent A ships normally");
    let broker = Broker::connect().await;
    let dead = broker
        .wait_queue_len(&topology.dead_letter_queue(0), 5, WAIT)
        .await;
    assert_eq!(dead, 5, "agent B's lines are dead-lettered");
    // A raw client holding the broker's admin credentials cannot claim to be A.
    let forged = envelope(&a.name, "/forged.log", 0).to_json();
    let refused = publish_as(&amqp_url(), &topology.exchange, &forged, &a.name).await;
    assert!(
        refused.is_err(),
        "a forged user_id must be refused: {refused:?}"
    );
    // Nor can B, with its own password.
    let refused = b.publish(&topology.exchange, &forged, &a.name).await;
    assert!(
        refused.is_err(),
        "a forged user_id must be refused: {refused:?}"
    );
    assert!(daemon_a.stop(WAIT).success());
    assert!(daemon_b.stop(WAIT).success());
    assert!(collector_daemon.stop(WAIT).success());
    let summary = summary(&collector_daemon);
    assert!(summary.contains("host_not_allowed=5"), "{summary}");
    assert!(
        !collector.file(&a.name, &log_b).exists(),
        "nothing of B written"
    );
    assert!(!collector.file(&a.name, Path::new("/forged.log")).exists());
    assert!(
        collector_daemon
            .log_text()
            .contains("rejected message to dead-letter"),
        "{}",
        collector_daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_hosts_lets_a_role_user_write_its_listed_hosts_only() {
    let topology = Topology::new("sec-hosts", 1);
    let dir = tempfile::tempdir().unwrap();
    let role = agent_user("trole", &topology.exchange);
    let (web1, web9) = (unique("web1"), unique("web9"));
    let addr = free_addr();
    let collector = Collector::new(
        dir.path(),
        "c",
        &topology.exchange,
        &topology.queues[0],
        &format!(
            "[metrics]\nlisten = \"{addr}\"\n[security]\nhost_from_user = \"require\"\n[security.hosts]\n\"{}\" = [\"{web1}\"]\n",
            role.name
        ),
    );
    let mut daemon = collector.start();
    for (host, offset) in [(&web1, 0), (&web9, 0), (&role.name, 0)] {
        let body = envelope(host, "/app.log", offset).to_json();
        let confirm = role.publish(&topology.exchange, &body, &role.name).await;
        assert!(confirm.is_ok(), "{confirm:?}");
    }
    wait_for_lines(&collector.file(&web1, Path::new("/app.log")), 1, WAIT);
    wait_for_lines(&collector.file(&role.name, Path::new("/app.log")), 1, WAIT);
    let broker = Broker::connect().await;
    let dead = broker
        .wait_queue_len(&topology.dead_letter_queue(0), 1, WAIT)
        .await;
    assert_eq!(dead, 1);
    let page = response(&addr, "/metrics");
    assert!(
        page.contains("logship_collector_rejected_total{reason=\"host_not_allowed\"} 1"),
        "{page}"
    );
    assert!(daemon.stop(WAIT).success());
    assert!(!collector.file(&web9, Path::new("/app.log")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_user_without_read_is_told_so_and_consumes_once_granted() {
    let topology = Topology::new("sec-read", 1);
    let dir = tempfile::tempdir().unwrap();
    // Everything but read on its queue: declaring it (with its dead-letter exchange, which
    // RabbitMQ checks with read) and consuming it are refused.
    let user = User::create(
        &user_name("tc"),
        ".*",
        ".*",
        &format!("^{}(\\.dead-letter)?$", regex_escape(&topology.exchange)),
    );
    let collector = Collector::with_uris(
        dir.path(),
        "c",
        &[&user.url()],
        &topology.exchange,
        &topology.queues[0],
        "",
        "",
    );
    let mut daemon = Daemon::start(
        &binary("logship-collector"),
        &collector.config,
        &collector.log,
    );
    let needle = format!("read access to queue '{}'", topology.queues[0]);
    daemon.wait_for_log(&needle, 1, STARTUP);
    let log = daemon.log_text();
    assert!(!log.contains("connection to broker lost"), "{log}");
    assert!(
        daemon.wait_exit(Duration::from_millis(500)).is_none(),
        "keeps retrying"
    );
    // The permissions README's "Securing a deployment" gives a collector user.
    let (ex, q) = (
        regex_escape(&topology.exchange),
        regex_escape(&topology.queues[0]),
    );
    user.set_permissions(
        &format!("^({ex}|{ex}\\.dead-letter|{q}.*)$"),
        &format!("^({ex}\\.dead-letter|{q}.*)$"),
        &format!("^({ex}|{ex}\\.dead-letter|{q}.*)$"),
    );
    daemon.wait_for_log("consuming", 1, STARTUP);
    assert_eq!(daemon.log_text().matches(&needle).count(), 1, "said once");
    assert!(daemon.stop(WAIT).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_in_the_output_dir_are_never_followed() {
    let topology = Topology::new("sec-links", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    // Another local user plants a link at an output file and at a directory component.
    let victims = dir.path().join("victims");
    std::fs::create_dir_all(&victims).unwrap();
    let victim_file = victims.join("passwd");
    std::fs::write(&victim_file, "root:x:0:0\n").unwrap();
    let (file_host, dir_host) = (unique("fh"), unique("dh"));
    let planted = collector.file(&file_host, Path::new("/var/log/app.log"));
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim_file, &planted).unwrap();
    std::os::unix::fs::symlink(&victims, collector.output.join(&dir_host)).unwrap();
    let mut daemon = collector.start();
    let broker = Broker::connect().await;
    broker
        .publish(
            &topology.exchange,
            &[
                envelope(&file_host, "/var/log/app.log", 0),
                envelope(&dir_host, "/passwd", 0),
                envelope(&dir_host, "/new/x.log", 0),
                envelope(&file_host, "/var/log/ok.log", 0),
            ],
        )
        .await;
    wait_for_lines(
        &collector.file(&file_host, Path::new("/var/log/ok.log")),
        1,
        WAIT,
    );
    let dead = broker
        .wait_queue_len(&topology.dead_letter_queue(0), 3, WAIT)
        .await;
    assert!(daemon.stop(WAIT).success());
    assert_eq!(dead, 3, "{}", daemon.log_text());
    assert_eq!(
        std::fs::read_to_string(&victim_file).unwrap(),
        "root:x:0:0\n"
    );
    let in_victims: Vec<_> = std::fs::read_dir(&victims).unwrap().flatten().collect();
    assert_eq!(in_victims.len(), 1, "nothing created through the link");
    let summary = summary(&daemon);
    assert!(summary.contains("unsafe_path=3"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_user_without_write_is_told_so_keeps_spooling_and_ships_once_granted() {
    let topology = Topology::new("sec-write", 1);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let only = format!("^{}$", regex_escape(&topology.exchange));
    let user = User::create(&user_name("tw"), &only, "", "");
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    let mut collector_daemon = collector.start();
    let log = logs.join("app.log");
    append(&log, "w", 0..10);
    let agent = Agent::new(
        dir.path(),
        "a",
        &user.url(),
        &topology.exchange,
        &[&log],
        "",
        "",
    )
    .with_host(&user.name);
    let mut daemon = agent.start(true);
    let needle = format!("write access to exchange '{}'", topology.exchange);
    daemon.wait_for_log(&needle, 1, STARTUP);
    assert!(!daemon.log_text().contains("connection to broker lost"));
    user.set_permissions(&only, &only, "");
    let want = expected("w", 0..10);
    let lines = wait_for_delivery(&collector.file(&user.name, &log), &want, WAIT, WAIT);
    assert_eq!(lines, want);
    assert_eq!(daemon.log_text().matches(&needle).count(), 1, "said once");
    assert!(daemon.stop(WAIT).success());
    assert!(collector_daemon.stop(WAIT).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_replacing_a_committed_file_is_left_alone_on_restart() {
    let topology = Topology::new("sec-relink", 1);
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::new(dir.path(), "c", &topology.exchange, &topology.queues[0], "");
    let host = unique("h");
    let mut daemon = collector.start();
    let broker = Broker::connect().await;
    broker
        .publish(&topology.exchange, &[envelope(&host, "/app.log", 0)])
        .await;
    let out = collector.file(&host, Path::new("/app.log"));
    wait_for_lines(&out, 1, WAIT);
    assert!(daemon.stop(WAIT).success());
    // Longer than the committed length: following the link on start would truncate it.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "x".repeat(4096)).unwrap();
    std::fs::remove_file(&out).unwrap();
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    let mut daemon = collector.start();
    broker
        .publish(&topology.exchange, &[envelope(&host, "/app.log", 100)])
        .await;
    let dead = broker
        .wait_queue_len(&topology.dead_letter_queue(0), 1, WAIT)
        .await;
    assert!(daemon.stop(WAIT).success());
    assert_eq!(dead, 1, "{}", daemon.log_text());
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        "x".repeat(4096).into_bytes()
    );
    assert!(out.is_symlink());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_said_as_such() {
    let topology = Topology::new("sec-login", 1);
    let dir = tempfile::tempdir().unwrap();
    let user = User::create(&user_name("tl"), ".*", ".*", ".*");
    let wrong = user.url().replace(&user.password, "not-the-password");
    let collector = Collector::with_uris(
        dir.path(),
        "c",
        &[&wrong],
        &topology.exchange,
        &topology.queues[0],
        "",
        "",
    );
    let mut daemon = Daemon::start(
        &binary("logship-collector"),
        &collector.config,
        &collector.log,
    );
    daemon.wait_for_log("the broker refused", 1, STARTUP);
    let log = daemon.log_text();
    assert!(log.contains("check the user, its password"), "{log}");
    assert!(!log.contains("not-the-password"), "{log}");
    assert!(!log.contains("cannot connect to broker"), "{log}");
    assert!(daemon.stop(WAIT).success());
}
