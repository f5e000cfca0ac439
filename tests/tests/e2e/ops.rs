//! Operating the daemons (issue 11, sections 4 and 5): `GET /status` and the `status`
//! subcommand against running daemons, the lag and delay metrics, the Grafana dashboard's
//! queries against what the daemons serve, and the command line's forms and exit codes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use logship_runtime::status::{AgentStatus, CollectorStatus};
use logship_tests::broker::amqp_url;
use logship_tests::daemon::{Daemon, binary, run};
use logship_tests::fixture::{Agent, Collector, Setup};
use logship_tests::http::{free_addr, get, sample_names};
use logship_tests::lines::{append, wait_for_lines};

const LINES: usize = 50;

/// A collector and an agent with their metrics listeners, `LINES` lines shipped through them.
struct Running {
    setup: Setup,
    collector: Collector,
    collector_addr: String,
    collector_daemon: Daemon,
    agent: Agent,
    agent_addr: String,
    agent_daemon: Daemon,
}

impl Running {
    fn start(label: &str) -> Running {
        let setup = Setup::new(label);
        let collector_addr = free_addr();
        let collector = Collector::new(
            setup.dir.path(),
            "ops-collector",
            &setup.topology.exchange,
            &setup.topology.queues[0],
            &format!("[metrics]\nlisten = \"{collector_addr}\""),
        );
        let collector_daemon = collector.start();
        let agent_addr = free_addr();
        let agent = setup.agent(
            &amqp_url(),
            &format!("[metrics]\nlisten = \"{agent_addr}\""),
            "",
        );
        append(&setup.log("app.log"), "app", 0..LINES);
        let agent_daemon = agent.start(true);
        wait_for_lines(
            &collector.file(&agent.host, &setup.log("app.log")),
            LINES,
            Duration::from_secs(30),
        );
        Running {
            setup,
            collector,
            collector_addr,
            collector_daemon,
            agent,
            agent_addr,
            agent_daemon,
        }
    }

    fn stop(mut self) {
        assert!(self.agent_daemon.stop(Duration::from_secs(20)).success());
        assert!(
            self.collector_daemon
                .stop(Duration::from_secs(20))
                .success()
        );
    }
}

/// Polls `addr`'s `path` until `done` holds of the body (or 20 s passed); returns the body.
fn poll(addr: &str, path: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(addr, path);
        assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn status_page_and_command_show_files_spool_broker_and_queue() {
    let running = Running::start("status");
    let log = running.setup.log("app.log");
    let size = std::fs::metadata(&log).unwrap().len();

    // The agent: every file with its offset, the spool drained, the broker connected, masked.
    let body = poll(&running.agent_addr, "/status", |body| {
        serde_json::from_str::<AgentStatus>(body)
            .is_ok_and(|s| s.spool.lines == 0 && s.files.iter().any(|f| f.offset == size))
    });
    let agent: AgentStatus = serde_json::from_str(&body).unwrap();
    let file = agent
        .files
        .iter()
        .find(|f| Path::new(&f.path) == log)
        .unwrap_or_else(|| panic!("{} missing in {body}", log.display()));
    assert_eq!(
        (file.state.as_str(), file.offset, file.size, file.generation),
        ("active", size, size, 0)
    );
    assert_eq!(agent.lag_bytes, 0, "{body}");
    assert_eq!(agent.host, running.agent.host);
    assert_eq!(agent.spool.oldest_seconds, None, "{body}");
    assert!(agent.broker.connected && !agent.broker.blocked, "{body}");
    let uri = agent.broker.uri.as_deref().unwrap_or_default();
    assert!(uri.contains("127.0.0.1"), "{body}");
    if let Some(password) = password_of(&amqp_url()) {
        assert!(
            !body.contains(&format!(":{password}@")),
            "password shown: {body}"
        );
    }

    let (code, stdout, stderr) = run(
        &binary("logship-agent"),
        &[
            "status".as_ref(),
            "--config".as_ref(),
            running.agent.config.as_os_str(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&log.display().to_string()), "{stdout}");
    assert!(
        stdout.contains("(connected)") && stdout.contains("active"),
        "{stdout}"
    );

    // The collector: its queue, consuming, what it wrote.
    let body = poll(&running.collector_addr, "/status", |body| {
        body.contains(&format!("\"logship_collector_written_total\":{LINES}"))
    });
    let collector: CollectorStatus = serde_json::from_str(&body).unwrap();
    assert_eq!(collector.queue, running.setup.topology.queues[0]);
    assert!(collector.consuming && collector.broker.connected, "{body}");
    assert_eq!(collector.hosts, 1, "{body}");
    assert!(collector.open_files >= 1, "{body}");
    assert_eq!(
        collector.counters.get("logship_collector_written_total"),
        Some(&(LINES as f64))
    );
    let (code, stdout, stderr) = run(
        &binary("logship-collector"),
        &[
            "--config".as_ref(),
            running.collector.config.as_os_str(),
            "status".as_ref(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&collector.queue) && stdout.contains("(consuming)"),
        "{stdout}"
    );

    // The lag and delay metrics.
    let page = poll(&running.collector_addr, "/metrics", |page| {
        page.contains(&format!("logship_collector_delay_seconds_count {LINES}"))
    });
    assert!(
        page.contains(&format!("logship_collector_delay_seconds_count {LINES}")),
        "{page}"
    );
    assert!(
        page.contains("# TYPE logship_collector_delay_seconds histogram"),
        "{page}"
    );
    let last_seen = format!(
        "logship_collector_host_last_seen_seconds{{host=\"{}\"}} ",
        running.agent.host
    );
    assert!(page.contains(&last_seen), "{page}");
    let (_, page) = get(&running.agent_addr, "/metrics");
    assert!(page.contains("\nlogship_agent_lag_bytes 0\n"), "{page}");
    assert!(
        page.contains("\nlogship_agent_spool_oldest_seconds 0\n"),
        "{page}"
    );
    running.stop();
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_served() {
    let running = Running::start("dashboard");
    poll(&running.collector_addr, "/metrics", |page| {
        page.contains("logship_collector_host_last_seen_seconds{")
    });
    let mut served = sample_names(&get(&running.agent_addr, "/metrics").1);
    served.extend(sample_names(&get(&running.collector_addr, "/metrics").1));
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/logship.json");
    let queried = dashboard_metrics(&std::fs::read_to_string(&dashboard).unwrap());
    assert!(
        queried.len() >= 10,
        "too few metrics found in the dashboard: {queried:?}"
    );
    let missing: Vec<&String> = queried.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nobody serves: {missing:?}; served: {served:?}"
    );
    running.stop();
}

/// The `logship_*` metric names in every `expr` of a Grafana dashboard.
fn dashboard_metrics(json: &str) -> BTreeSet<String> {
    fn walk(value: &serde_json::Value, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => out.extend(names_in(expr)),
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(
        &serde_json::from_str(json).expect("the dashboard is JSON"),
        &mut out,
    );
    out
}

fn names_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("logship_"))
        .map(str::to_string)
        .collect()
}

fn password_of(url: &str) -> Option<String> {
    let userinfo = url.split("://").nth(1)?.split('@').next()?;
    Some(userinfo.split_once(':')?.1.to_string()).filter(|p| !p.is_empty())
}

#[test]
fn status_says_when_metrics_are_off_or_the_daemon_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "state_dir = \"/nonexistent\"\n").unwrap();
    let (code, _, stderr) = run(
        &binary("logship-agent"),
        &["status".as_ref(), "--config".as_ref(), config.as_os_str()],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("metrics are off"), "{stderr}");

    let addr = free_addr();
    std::fs::write(&config, format!("[metrics]\nlisten = \"{addr}\"\n")).unwrap();
    let (code, _, stderr) = run(
        &binary("logship-collector"),
        &["status".as_ref(), "--config".as_ref(), config.as_os_str()],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("no answer from the daemon at {addr}")),
        "{stderr}"
    );
}

#[test]
fn command_line_forms_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{0}/state\"\n[broker]\nuris = [\"amqp://u:pw@127.0.0.1:1/%2f\"]\nqueue = \"q\"\n[output]\ndir = \"{0}/out\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    for name in ["logship-agent", "logship-collector"] {
        let bin = binary(name);
        for help in ["--help", "-h"] {
            let (code, stdout, _) = run(&bin, &[help.as_ref()]);
            assert_eq!(code, Some(0), "{name} {help}");
            assert!(
                stdout.contains("--check-config") && stdout.contains("status"),
                "{stdout}"
            );
        }
        for version in ["--version", "-V"] {
            let (code, stdout, _) = run(&bin, &[version.as_ref()]);
            assert_eq!(code, Some(0));
            assert!(stdout.starts_with(&format!("{name} ")), "{stdout}");
        }
        let (code, stdout, stderr) = run(&bin, &["--bogus".as_ref()]);
        assert_eq!((code, stdout.as_str()), (Some(2), ""), "{name} --bogus");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(&format!("{name}: usage: ")), "{stderr}");
        let (code, stdout, _) = run(&bin, &["--man".as_ref()]);
        assert_eq!(code, Some(0));
        assert!(
            stdout.contains(".TH") && stdout.contains("check\\-config"),
            "{stdout}"
        );
    }
    let bin = binary("logship-collector");
    for args in [
        &["--check-config".as_ref(), config.as_os_str()][..],
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--check-config".as_ref(),
        ],
    ] {
        let (code, stdout, stderr) = run(&bin, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stdout.ends_with(": ok\n"), "{stdout}");
    }
}
