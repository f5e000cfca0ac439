//! Agent throughput and memory against a bare lapin publisher, in one run on the same broker.
//!
//! (a) a bare lapin publisher: same window, same ~250-byte persistent messages, confirms, to a
//!     fanout exchange with one bound queue;
//! (b) logship-agent shipping a pre-written file of N ~200-byte lines to the same kind of
//!     exchange and queue, from start until the queue holds every line;
//! (c) agent and collector end to end, from start until the collector's file holds every line;
//! (d) with `BENCH_BACKLOG_MIB` set (e.g. 1024): the agent's peak RSS while that much sits in its
//!     spool because the broker is unreachable.
//! `BENCH_LINES` sets N (default 1000000). (c) needs `target/release/logship-collector`:
//! `cargo build --release -p logship-collector && cargo bench -p logship-agent --bench ship`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lapin::Channel;
use lapin::options::{ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use logship_runtime::{Envelope, FileId};
use logship_tests::broker::{Broker, Outgoing, publish_confirmed};
use logship_tests::daemon::{Daemon, tree_bytes};

const WINDOW: usize = 1024;
/// How long a daemon may take to stop (SIGTERM) and exit 0.
const STOP: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() {
    let lines: usize = env_or("BENCH_LINES", 1_000_000);
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let tag = format!("bench-{}-{}", std::process::id(), fastrand::u32(..));
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("logs/app.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    write_log(&log, lines);
    let file_bytes = std::fs::metadata(&log).unwrap().len();
    println!(
        "lines: {lines} (~{} bytes per line, ~{} bytes per envelope)",
        file_bytes / lines as u64,
        sample(0).to_json().len()
    );

    let broker = Broker::connect().await;
    let channel = broker.connection.create_channel().await.expect("channel");

    // (a) bare publisher
    let exchange_a = format!("{tag}.a");
    let queue_a = declare_pair(&channel, &exchange_a).await;
    let started = Instant::now();
    bare_publish(&channel, &exchange_a, lines).await;
    let bare = started.elapsed();
    delete_pair(&channel, &exchange_a, &queue_a).await;
    let bare_rate = lines as f64 / bare.as_secs_f64();
    println!(
        "(a) bare lapin publisher: {bare_rate:.0} msg/s ({:.1}s)",
        bare.as_secs_f64()
    );

    // (b) the agent alone
    let exchange_b = format!("{tag}.b");
    let queue_b = declare_pair(&channel, &exchange_b).await;
    let agent_config = write_agent_config(dir.path(), "b", &url, &exchange_b, &log);
    let started = Instant::now();
    let mut agent = Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_logship-agent")),
        &agent_config,
        &dir.path().join("agent-b.log"),
    );
    let mut peak_kib = 0;
    while broker.queue_len(&queue_b).await.unwrap_or(0) < lines as u32 {
        peak_kib = peak_kib.max(agent.peak_rss_kib());
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "agent did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent_time = started.elapsed();
    peak_kib = peak_kib.max(agent.peak_rss_kib());
    assert!(agent.stop(STOP).success());
    delete_pair(&channel, &exchange_b, &queue_b).await;
    let agent_rate = lines as f64 / agent_time.as_secs_f64();
    println!(
        "(b) logship-agent: {agent_rate:.0} lines/s ({:.1}s), ratio b/a {:.2}, peak RSS {:.1} MiB",
        agent_time.as_secs_f64(),
        agent_rate / bare_rate,
        peak_kib as f64 / 1024.0
    );

    // (c) end to end
    let collector_bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("logship-collector");
    if collector_bin.exists() {
        let exchange_c = format!("{tag}.c");
        let queue_c = format!("{tag}.c.collector");
        let collector_config = write_collector_config(dir.path(), &url, &exchange_c, &queue_c);
        let mut collector = Daemon::start(
            &collector_bin,
            &collector_config,
            &dir.path().join("collector-c.log"),
        );
        broker.wait_declared(&queue_c).await;
        let agent_config = write_agent_config(dir.path(), "c", &url, &exchange_c, &log);
        let out = dir
            .path()
            .join("out/bench-host")
            .join(log.strip_prefix("/").unwrap());
        let started = Instant::now();
        let mut agent = Daemon::start(
            Path::new(env!("CARGO_BIN_EXE_logship-agent")),
            &agent_config,
            &dir.path().join("agent-c.log"),
        );
        while std::fs::metadata(&out).map_or(0, |m| m.len()) < file_bytes {
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "end to end did not finish"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let e2e = started.elapsed();
        assert!(agent.stop(STOP).success());
        assert!(collector.stop(STOP).success());
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&log).unwrap(),
            "collector output differs"
        );
        for queue in [&queue_c, &format!("{queue_c}.dead-letter")] {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
        for exchange in [&exchange_c, &format!("{exchange_c}.dead-letter")] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await;
        }
        let e2e_rate = lines as f64 / e2e.as_secs_f64();
        println!(
            "(c) agent -> collector disk: {e2e_rate:.0} lines/s ({:.1}s), ratio c/a {:.2}, output identical",
            e2e.as_secs_f64(),
            e2e_rate / bare_rate
        );
    } else {
        println!("(c) skipped: build {} first", collector_bin.display());
    }

    // (d) backlog
    let backlog_mib: u64 = env_or("BENCH_BACKLOG_MIB", 0);
    if backlog_mib > 0 {
        let big = dir.path().join("logs/big.log");
        let big_lines = (backlog_mib << 20) as usize / 200;
        write_log(&big, big_lines);
        let config = write_agent_config(
            dir.path(),
            "d",
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "unused",
            &big,
        );
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "max_bytes = \"4GiB\"",
            &format!("max_bytes = \"{}MiB\"", backlog_mib * 2),
        );
        std::fs::write(&config, text).unwrap();
        let started = Instant::now();
        let mut agent = Daemon::start(
            Path::new(env!("CARGO_BIN_EXE_logship-agent")),
            &config,
            &dir.path().join("agent-d.log"),
        );
        let state = dir.path().join("state-d");
        let mut peak_kib = 0;
        // Spooled once the spool on disk holds about the file's size, then a little longer.
        while tree_bytes(&state) < backlog_mib << 20 {
            peak_kib = peak_kib.max(agent.peak_rss_kib());
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "backlog did not fill"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        peak_kib = peak_kib.max(agent.peak_rss_kib());
        assert!(agent.stop(STOP).success());
        println!(
            "(d) {backlog_mib} MiB backlog spooled in {:.1}s (spool on disk {:.0} MiB), agent peak RSS {:.1} MiB",
            started.elapsed().as_secs_f64(),
            tree_bytes(&state) as f64 / 1048576.0,
            peak_kib as f64 / 1024.0
        );
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sample(i: usize) -> Envelope {
    Envelope {
        host: "bench-host".into(),
        path: "/var/log/bench/app.log".into(),
        file: FileId {
            dev: 2049,
            ino: 4242,
            fp: 0x1234_5678_9abc_def0,
        },
        generation: 0,
        offset: (i * 200) as u64,
        timestamp_ms: 1_764_028_800_000 + i as i64,
        line: line(i).into_bytes(),
        fields: Default::default(),
        kind: Default::default(),
    }
}

/// A ~200-byte access-log-like line.
fn line(i: usize) -> String {
    format!(
        "{i:010} 2026-11-25T00:00:00.000Z 10.1.2.3 GET /api/v1/items/{i} HTTP/1.1 200 5123 \"https://example.com/list?page=3\" \"Mozilla/5.0 (X11; Linux x86_64) bench\" rt=0.012 upstream=10.0.0.9:8080"
    )
}

fn write_log(path: &Path, lines: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..lines {
        writeln!(out, "{}", line(i)).unwrap();
    }
    out.flush().unwrap();
}

async fn declare_pair(channel: &Channel, exchange: &str) -> String {
    let queue = format!("{exchange}.q");
    logship_runtime::amqp::declare_exchange(channel, &broker_for(exchange))
        .await
        .expect("exchange");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("queue");
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    queue
}

fn broker_for(exchange: &str) -> logship_config::Broker {
    let uri =
        logship_config::BrokerUri::parse("amqp://127.0.0.1", 30, Duration::from_secs(5)).unwrap();
    logship_config::Broker {
        uris: vec![uri],
        exchange: exchange.to_string(),
        connection_name: "bench".into(),
        heartbeat: logship_config::broker::DEFAULT_HEARTBEAT,
        connect_timeout: logship_config::broker::DEFAULT_CONNECT_TIMEOUT,
        reconnect_delay: Duration::from_millis(100),
        reconnect_max_delay: Duration::from_secs(1),
        tls: Default::default(),
        password_in_config: false,
    }
}

async fn delete_pair(channel: &Channel, exchange: &str, queue: &str) {
    let _ = channel.queue_delete(queue.into(), Default::default()).await;
    let _ = channel
        .exchange_delete(exchange.into(), Default::default())
        .await;
}

async fn bare_publish(channel: &Channel, exchange: &str, lines: usize) {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let messages = (0..lines).map(|i| Outgoing::envelope(&sample(i), ""));
    publish_confirmed(channel, exchange, WINDOW, "logship-bench", messages).await;
}

fn write_agent_config(dir: &Path, name: &str, url: &str, exchange: &str, log: &Path) -> PathBuf {
    let path = dir.join(format!("agent-{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "host = \"bench-host\"\nstate_dir = \"{}\"\n[broker]\nuris = [\"{url}\"]\nexchange = \"{exchange}\"\n[buffer]\nmax_bytes = \"4GiB\"\n[[inputs]]\npaths = [\"{}\"]\n",
            dir.join(format!("state-{name}")).display(),
            log.display()
        ),
    )
    .unwrap();
    path
}

fn write_collector_config(dir: &Path, url: &str, exchange: &str, queue: &str) -> PathBuf {
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = \"{}\"\n[broker]\nuris = [\"{url}\"]\nexchange = \"{exchange}\"\nqueue = \"{queue}\"\n[output]\ndir = \"{}\"\n",
            dir.join("collector-state").display(),
            dir.join("out").display()
        ),
    )
    .unwrap();
    path
}
