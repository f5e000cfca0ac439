//! CPU per line (issue 19): the agent and the collector beside a bare lapin publisher and a
//! bare lapin consumer, measured in the same run on the same broker, three runs.
//!
//! Each run:
//! - bare: a publisher process (persistent messages, publisher confirms, a window of 1024) and a
//!   consumer process (prefetch 2000, every 100 messages appended to a file, `fdatasync`'d, then
//!   acked with `multiple`) move N messages as large as the agent's envelopes through a durable
//!   fanout exchange and queue of their own: first one after the other (the consumer drains what
//!   the publisher queued), then at the same time, as the agent and the collector run;
//! - logship: the agent ships a pre-written file of N lines of ~200 bytes (an application log:
//!   timestamps, levels, a few varying fields) to a collector, from the agent's start until the
//!   collector's file holds every line; then the agent fills the queue of a stopped collector and
//!   the collector drains that backlog (the case to set beside the bare consumer draining). The
//!   collector runs with the product's default prefetch (1000).
//!
//! CPU is each process's utime + stime (`wait4` for the bare ones, `/proc` for the daemons);
//! lines/s is N over the bare publisher's run (alone) and over the agent's start to the last
//! line at the collector. Prints one line per run and a summary; asserts nothing but that every
//! line arrived, byte for byte. `BENCH_LINES` sets N (default 1000000). Uses the binaries next
//! to this benchmark (`cargo build --release --workspace`) or `LOGSHIP_AGENT_BIN` /
//! `LOGSHIP_COLLECTOR_BIN`, and the broker at `AMQP_URL`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use logship_tests::broker::{Broker, amqp_url, unique};
use logship_tests::daemon::binary;
use logship_tests::fixture::{Collector, Setup};

/// Publishes in flight without a confirm, as the agent's window.
const WINDOW: usize = 1024;
/// The bare consumer's prefetch and ack batch.
const PREFETCH: u16 = 2000;
const ACK_EVERY: usize = 100;
/// How long one side may take.
const DEADLINE: Duration = Duration::from_secs(1800);

fn main() {
    match std::env::var("BENCH_ROLE").as_deref() {
        Ok("publisher") => return role(publisher),
        Ok("consumer") => return role(consumer),
        _ => {}
    }
    let lines: usize = std::env::var("BENCH_LINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    eprintln!(
        "cpu bench: {lines} lines, agent {}, collector {}, broker {}",
        binary("logship-agent").display(),
        binary("logship-collector").display(),
        amqp_url()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let body_len = write_log(&log, lines);
    let mut runs = Vec::new();
    for run in 1..=3 {
        let alone = bare(lines, body_len, false);
        let together = bare(lines, body_len, true);
        let shipped = logship(lines, &log);
        let drained_us = drained(lines, &log);
        let ratios = [
            shipped.agent_us / alone.publisher_us,
            shipped.agent_us / together.publisher_us,
            shipped.collector_us / alone.consumer_us,
            shipped.collector_us / together.consumer_us,
            shipped.lines_per_sec / alone.publisher_lines_per_sec,
            drained_us / alone.consumer_us,
        ];
        println!(
            "run {run}: agent {:.2} us/line, bare publisher {:.2} us/msg alone ({:.2}x), {:.2} beside \
             its consumer ({:.2}x) | collector {:.2} us/line, bare consumer {:.2} us/msg draining \
             ({:.2}x), {:.2} beside its publisher ({:.2}x) | end to end {:.0} lines/s, bare \
             publisher alone {:.0} msg/s ({:.2}), beside its consumer {:.0} | collector draining a \
             backlog {:.2} us/line ({:.2}x the bare consumer draining) | peak RSS agent {:.1} MiB, \
             collector {:.1} MiB",
            shipped.agent_us,
            alone.publisher_us,
            ratios[0],
            together.publisher_us,
            ratios[1],
            shipped.collector_us,
            alone.consumer_us,
            ratios[2],
            together.consumer_us,
            ratios[3],
            shipped.lines_per_sec,
            alone.publisher_lines_per_sec,
            ratios[4],
            together.publisher_lines_per_sec,
            drained_us,
            ratios[5],
            shipped.agent_rss_kib as f64 / 1024.0,
            shipped.collector_rss_kib as f64 / 1024.0,
        );
        runs.push(ratios);
    }
    let show = |i: usize| {
        runs.iter()
            .map(|r| format!("{:.2}", r[i]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "summary ({lines} lines, envelope {body_len} bytes): agent/bare publisher CPU {} alone, {} \
         together (target <= 1.5); collector/bare consumer CPU {} draining, {} together, {} both \
         draining a backlog (target <= 1.5); end to end/bare publisher lines/s {} (target >= 0.95)",
        show(0),
        show(1),
        show(2),
        show(3),
        show(5),
        show(4),
    );
}

/// A line of an application log, ~200 bytes: a timestamp, a level, a few varying fields.
fn app_line(i: usize) -> String {
    const LEVELS: [&str; 4] = ["INFO", "INFO", "WARN", "DEBUG"];
    const PATHS: [&str; 4] = ["/api/v1/orders", "/api/v1/users", "/health", "/api/v1/cart"];
    let (s, ms) = (i / 1000, i % 1000);
    format!(
        "2026-12-02T13:{:02}:{:02}.{ms:03}Z {} [worker-{}] request id={:016x} method=GET path={} \
         status={} bytes={} duration_ms={} user_agent=\"curl/8.5.0\" msg=\"request served\"",
        (s / 60) % 60,
        s % 60,
        LEVELS[i % 4],
        i % 16,
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        PATHS[(i / 7) % 4],
        if i.is_multiple_of(50) { 500 } else { 200 },
        100 + (i * 37) % 9000,
        i % 250,
    )
}

/// Writes `lines` application lines to `path`; returns the size of an agent's envelope for one
/// of them (the bare side's message size).
fn write_log(path: &Path, lines: usize) -> usize {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("log file"));
    for i in 0..lines {
        writeln!(out, "{}", app_line(i)).expect("write log");
    }
    out.flush().expect("write log");
    let envelope = logship_runtime::Envelope {
        host: unique("host"),
        path: path.display().to_string(),
        file: logship_runtime::FileId {
            dev: 2049,
            ino: 1_234_567,
            fp: 0x1234_5678_9abc_def0,
        },
        generation: 0,
        offset: 123_456_789,
        timestamp_ms: 1_764_680_000_000,
        line: app_line(123_456).into_bytes(),
        fields: Default::default(),
        kind: logship_runtime::SourceKind::File,
    };
    envelope.to_json().len()
}

/// What the bare publisher and consumer cost.
struct Bare {
    publisher_us: f64,
    consumer_us: f64,
    publisher_lines_per_sec: f64,
}

/// The bare pair on an exchange and queue of their own: the consumer drains what the publisher
/// queued, or (`together`) both run at the same time, as the agent and the collector do.
fn bare(lines: usize, body_len: usize, together: bool) -> Bare {
    let exchange = unique("bench-cpu-bare");
    let queue = format!("{exchange}.q");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let broker = Broker::connect().await;
        broker.declare_exchange(&exchange).await;
        broker.bind_queue(&exchange, &queue).await;
    });
    let out = tempfile::NamedTempFile::new().expect("consumer file");
    let spawn = |role: &str| {
        Command::new(std::env::current_exe().expect("current exe"))
            .env("BENCH_ROLE", role)
            .env("BENCH_EXCHANGE", &exchange)
            .env("BENCH_QUEUE", &queue)
            .env("BENCH_N", lines.to_string())
            .env("BENCH_BODY", body_len.to_string())
            .env("BENCH_OUT", out.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a bare side")
    };
    let (publisher_cpu, published, consumer_cpu) = if together {
        let consumer = spawn("consumer");
        let started = Instant::now();
        let publisher = spawn("publisher");
        let (publisher_cpu, published) = reap(publisher, started);
        (publisher_cpu, published, reap(consumer, started).0)
    } else {
        let started = Instant::now();
        let (publisher_cpu, published) = reap(spawn("publisher"), started);
        let consumer_cpu = reap(spawn("consumer"), Instant::now()).0;
        (publisher_cpu, published, consumer_cpu)
    };
    runtime.block_on(async {
        let connection = connect().await;
        let channel = connection.create_channel().await.expect("channel");
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    });
    Bare {
        publisher_us: publisher_cpu / lines as f64 * 1e6,
        consumer_us: consumer_cpu / lines as f64 * 1e6,
        publisher_lines_per_sec: lines as f64 / published.as_secs_f64(),
    }
}

/// Waits for a child; returns its CPU seconds and when it ended, from `started`. A failed child
/// ends the bench.
fn reap(child: std::process::Child, started: Instant) -> (f64, Duration) {
    let pid = child.id();
    let mut status = 0;
    // SAFETY: wait4(2) on our own child, with out-parameters it fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid as i32, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "a bare side failed: status {status}"
    );
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        seconds(usage.ru_utime) + seconds(usage.ru_stime),
        started.elapsed(),
    )
}

/// What shipping the file cost.
struct Shipped {
    agent_us: f64,
    collector_us: f64,
    lines_per_sec: f64,
    agent_rss_kib: u64,
    collector_rss_kib: u64,
}

/// A test setup whose collector runs with the product's default prefetch (1000), not the
/// tests' smaller one.
fn setup(label: &str) -> Setup {
    let mut setup = Setup::new(label);
    setup.collector = Collector::with_uris(
        setup.dir.path(),
        "collector",
        &[&amqp_url()],
        &setup.topology.exchange,
        &setup.topology.queues[0],
        "prefetch = 1000",
        "",
    );
    setup
}

/// The agent ships `log` to a collector; every line must arrive.
fn logship(lines: usize, log: &Path) -> Shipped {
    let setup = setup("bench-cpu");
    let copy = setup.log("app.log");
    std::fs::copy(log, &copy).expect("copy the log");
    let want = std::fs::metadata(&copy).expect("log").len();
    let mut collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", "");
    let started = Instant::now();
    let mut daemon = agent.start(false);
    let out = setup.out(&agent, "app.log");
    wait_for_size(&out, want, started);
    let elapsed = started.elapsed();
    let (agent_cpu, collector_cpu) = (daemon.cpu_seconds(), collector.cpu_seconds());
    let (agent_rss_kib, collector_rss_kib) = (daemon.peak_rss_kib(), collector.peak_rss_kib());
    assert!(daemon.stop(Duration::from_secs(30)).success());
    assert!(collector.stop(Duration::from_secs(30)).success());
    assert_same(&out, &copy);
    Shipped {
        agent_us: agent_cpu / lines as f64 * 1e6,
        collector_us: collector_cpu / lines as f64 * 1e6,
        lines_per_sec: lines as f64 / elapsed.as_secs_f64(),
        agent_rss_kib,
        collector_rss_kib,
    }
}

/// The agent fills the queue of a stopped collector with `log`; then the collector drains it.
/// Returns the collector's CPU per line; every line must arrive.
fn drained(lines: usize, log: &Path) -> f64 {
    let setup = setup("bench-cpu-drain");
    let copy = setup.log("app.log");
    std::fs::copy(log, &copy).expect("copy the log");
    let want = std::fs::metadata(&copy).expect("log").len();
    // Started once so that its queue is declared and bound.
    assert!(
        setup
            .collector
            .start()
            .stop(Duration::from_secs(30))
            .success()
    );
    let agent = setup.agent(&amqp_url(), "", "");
    let mut daemon = agent.start(false);
    let queue = &setup.topology.queues[0];
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let broker = Broker::connect().await;
        let queued = broker.wait_queue_len(queue, lines as u32, DEADLINE).await;
        assert_eq!(queued, lines as u32, "the agent did not queue every line");
    });
    assert!(daemon.stop(Duration::from_secs(30)).success());
    let started = Instant::now();
    let mut collector = setup.collector.start();
    let out = setup.out(&agent, "app.log");
    wait_for_size(&out, want, started);
    let collector_cpu = collector.cpu_seconds();
    assert!(collector.stop(Duration::from_secs(30)).success());
    assert_same(&out, &copy);
    collector_cpu / lines as f64 * 1e6
}

/// Waits until the collector's file `out` holds `want` bytes.
fn wait_for_size(out: &Path, want: u64, started: Instant) {
    while std::fs::metadata(out).map_or(0, |m| m.len()) < want {
        assert!(
            started.elapsed() < DEADLINE,
            "the collector's file is short"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every line arrived, byte for byte.
fn assert_same(out: &Path, log: &Path) {
    assert_eq!(
        std::fs::read(out).expect("output"),
        std::fs::read(log).expect("log"),
        "the collector's file differs from the log"
    );
}

async fn connect() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to the broker")
}

/// Runs a bare side on a runtime like the daemons' (multi-threaded).
fn role<F: std::future::Future<Output = ()>>(side: fn(Setting) -> F) {
    let var = |name: &str| std::env::var(name).expect(name);
    let setting = Setting {
        exchange: var("BENCH_EXCHANGE"),
        queue: var("BENCH_QUEUE"),
        n: var("BENCH_N").parse().expect("BENCH_N"),
        body: var("BENCH_BODY").parse().expect("BENCH_BODY"),
        out: var("BENCH_OUT").into(),
    };
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(side(setting));
}

struct Setting {
    exchange: String,
    queue: String,
    n: usize,
    body: usize,
    out: std::path::PathBuf,
}

/// Publishes `n` persistent messages with confirms, `WINDOW` in flight.
async fn publisher(setting: Setting) {
    let connection = connect().await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm select");
    let body = vec![b'x'; setting.body];
    let mut inflight = std::collections::VecDeque::with_capacity(WINDOW);
    for _ in 0..setting.n {
        if inflight.len() >= WINDOW {
            let confirm: lapin::PublisherConfirm = inflight.pop_front().expect("in flight");
            assert_eq!(confirm.await.expect("confirm"), Confirmation::Ack(None));
        }
        let confirm = channel
            .basic_publish(
                setting.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        inflight.push_back(confirm);
    }
    for confirm in inflight {
        assert_eq!(confirm.await.expect("confirm"), Confirmation::Ack(None));
    }
    let _ = connection.close(200, "done".into()).await;
}

/// Consumes `n` messages: every [`ACK_EVERY`] appended to a file, `fdatasync`'d, then acked.
async fn consumer(setting: Setting) {
    use futures_util::StreamExt as _;
    let connection = connect().await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut deliveries = channel
        .basic_consume(
            setting.queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut file = std::fs::File::create(&setting.out).expect("output");
    let mut batch = Vec::new();
    let mut got = 0;
    while got < setting.n {
        let delivery = deliveries
            .next()
            .await
            .expect("the consumer ended")
            .expect("delivery");
        batch.extend_from_slice(&delivery.data);
        batch.push(b'\n');
        got += 1;
        if got % ACK_EVERY == 0 || got == setting.n {
            file.write_all(&batch).expect("append");
            file.sync_data().expect("fdatasync");
            batch.clear();
            delivery
                .acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
    let _ = connection.close(200, "done".into()).await;
}
