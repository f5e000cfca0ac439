//! Multiline events and input fields, end to end (issue 11): stack traces among single-line
//! events, an event longer than `max_lines`, an agent killed -9 mid-stream and a rotation in
//! the middle of an event. The collector's file is byte-identical to what was written, with
//! one message per event.

use std::io::Write as _;
use std::time::Duration;

use logship_runtime::Envelope;
use logship_tests::broker::{Broker, amqp_url};
use logship_tests::fixture::Setup;

const ARRIVAL: Duration = Duration::from_secs(90);

/// An input whose events start with a date, with fields.
const INPUT: &str = "fields = { service = \"web\", env = \"prod\" }\n\
    [inputs.multiline]\nstart = '^\\d{4}-\\d{2}-\\d{2} '\nmax_lines = 20\ntimeout = \"500ms\"\n";

/// Event `n`: a dated line and `frames` continuation lines.
fn event(n: usize, frames: usize) -> Vec<Vec<u8>> {
    let mut lines = vec![format!("2026-12-01 12:00:00 ERROR event {n:06} failed\n").into_bytes()];
    lines.extend((0..frames).map(|j| format!("    at frame {j} of event {n}\n").into_bytes()));
    lines
}

fn open(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Waits until `path` holds at least `len` bytes; returns them.
fn wait_for_bytes(path: &std::path::Path, len: usize) -> Vec<u8> {
    let deadline = std::time::Instant::now() + ARRIVAL;
    loop {
        let bytes = std::fs::read(path).unwrap_or_default();
        if bytes.len() >= len || std::time::Instant::now() > deadline {
            return bytes;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_traces_ship_one_message_per_event_byte_identical_across_kill_and_rotation() {
    let mut setup = Setup::new("multiline");
    let tap = format!("{}.tap", setup.topology.exchange);
    setup.topology.queues.push(tap.clone());
    let broker = Broker::connect().await;
    broker.declare_exchange(&setup.topology.exchange).await;
    broker.bind_queue(&setup.topology.exchange, &tap).await;
    let mut collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", INPUT);
    let mut daemon = agent.start(true);

    let path = setup.log("app.log");
    let mut file = open(&path);
    let (mut written, mut messages) = (Vec::new(), 0);
    for n in 0..600 {
        let frames = match n {
            100 => 44,
            450 => 10,
            _ => fastrand::usize(0..30),
        };
        let lines = event(n, frames);
        if n == 450 {
            // Rotated after five of its lines: the rest land in the new file, where (before any
            // start line) each is a message of its own.
            for line in &lines[..5] {
                file.write_all(line).unwrap();
            }
            std::fs::rename(&path, setup.log("app.log.1")).unwrap();
            file = open(&path);
            for line in &lines[5..] {
                file.write_all(line).unwrap();
            }
            messages += 1 + lines.len() - 5;
        } else {
            file.write_all(&lines.concat()).unwrap();
            messages += lines.len().div_ceil(20);
        }
        written.extend(lines.concat());
        if n == 300 {
            daemon.kill9();
            daemon = agent.start(true);
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    let out = wait_for_bytes(&setup.out(&agent, "app.log"), written.len());
    assert!(
        out == written,
        "output differs from input ({} of {} bytes)",
        out.len(),
        written.len()
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    let log = std::fs::read_to_string(&setup.collector.log).unwrap();
    assert!(
        log.contains(&format!(" written={messages} ")),
        "expected written={messages} (one message per event): {}",
        log.lines().last().unwrap_or_default()
    );

    let body = broker.get(&tap).await.expect("a message on the tap queue");
    let envelope = Envelope::from_json(&body).unwrap();
    assert_eq!(
        envelope.fields.get("service").map(String::as_str),
        Some("web")
    );
    assert_eq!(envelope.fields.get("env").map(String::as_str), Some("prod"));
}

/// The lines of `(host, path)` under a `{date}/{fields.service}/{host}/{path}` layout, over
/// every day directory (a run may cross midnight UTC), oldest day first.
fn layout_lines(output: &std::path::Path, host: &str, path: &std::path::Path) -> Vec<Vec<u8>> {
    let mut days: Vec<_> = std::fs::read_dir(output)
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    days.sort();
    days.iter()
        .flat_map(|day| {
            let file = day
                .join("web")
                .join(host)
                .join(path.to_string_lossy().trim_start_matches('/'));
            logship_tests::lines::read_lines(&file)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_and_fields_layout_survives_collector_kills_exactly_once() {
    let setup = Setup::new("layout");
    let collector = logship_tests::fixture::Collector::new(
        setup.dir.path(),
        "laid-out",
        &setup.topology.exchange,
        &setup.topology.queues[0],
        "layout = \"{date}/{fields.service}/{host}/{path}\"\n",
    );
    let mut daemon_c = collector.start();
    let agent = setup.agent(&amqp_url(), "", "fields = { service = \"web\" }");
    let mut daemon = agent.start(true);
    let path = setup.log("app.log");
    let mut file = open(&path);
    for chunk in 0..40 {
        logship_tests::lines::write_lines(&mut file, "app", chunk * 500..(chunk + 1) * 500);
        if chunk % 15 == 7 {
            daemon_c.kill9();
            daemon_c = collector.start();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let want = logship_tests::lines::expected("app", 0..20_000);
    let deadline = std::time::Instant::now() + ARRIVAL;
    let mut got = layout_lines(&collector.output, &agent.host, &path);
    while got.len() < want.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        got = layout_lines(&collector.output, &agent.host, &path);
    }
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(daemon_c.stop(Duration::from_secs(20)).success());
    logship_tests::lines::assert_same_lines(&got, &want, "laid out");
}
