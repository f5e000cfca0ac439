//! Collector throughput against a bare lapin consumer, in one run on the same broker.
//!
//! Pre-fills two queues bound to one fanout exchange with the same N envelopes (~250 bytes),
//! then drains one with a bare consumer (same prefetch, ack `multiple` every half prefetch, no
//! disk) and the other with the real `logship-collector` (written, fsync'd, committed, acked).
//! Prints both rates and their ratio. `BENCH_LINES` sets N (default 500000); `AMQP_URL` the broker;
//! `BENCH_ORDER=collector-first` drains the collector's queue before the bare one;
//! `BENCH_COLLECTOR_EXTRA` is appended to the collector's config (`\n` for newlines).

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use logship_runtime::{Envelope, FileId};

mod support;
use logship_tests::broker::{Outgoing, publish_confirmed, queue_len};
use support::{output_bytes, spawn_collector, stop, wait_for_queue};

const PREFETCH: u16 = 1000;
const PUBLISH_WINDOW: usize = 2000;

#[tokio::main]
async fn main() {
    let lines: usize = std::env::var("BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let tag = format!("bench-{}-{}", std::process::id(), fastrand::u32(..));
    let exchange = format!("{tag}.logs");
    let bare_queue = format!("{tag}.bare");
    let collector_queue = format!("{tag}.collector");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{state}\"\n[broker]\nuris = [\"{url}\"]\nexchange = \"{exchange}\"\nqueue = \"{collector_queue}\"\nprefetch = {PREFETCH}\n[output]\ndir = \"{out}\"\n",
            state = dir.path().join("state").display(),
            out = dir.path().join("out").display(),
        ) + &std::env::var("BENCH_COLLECTOR_EXTRA").unwrap_or_default().replace("\\n", "\n"),
    )
    .expect("write config");

    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    channel
        .queue_declare(
            bare_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("declare bare queue");
    channel
        .queue_bind(
            bare_queue.as_str().into(),
            exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind bare queue");
    // The collector declares its own queue (with its dead-letter arguments); start and stop it once.
    let mut collector = spawn_collector(&config, dir.path());
    wait_for_queue(&collector_queue).await;
    stop(&mut collector);

    let started = Instant::now();
    publish(&channel, &exchange, lines).await;
    eprintln!(
        "published {lines} envelopes to 2 queues in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Whichever drains first does so while the broker still holds both queues: run it both
    // ways (BENCH_ORDER=collector-first) to see the order's effect.
    let collector_first = std::env::var("BENCH_ORDER").is_ok_and(|o| o == "collector-first");
    let mut bare = Duration::ZERO;
    if !collector_first {
        bare = drain_bare(&connection, &bare_queue, lines).await;
    }

    let mut collector = spawn_collector(&config, dir.path());
    let started = Instant::now();
    let expected_bytes = expected_output_bytes(lines);
    let out = dir.path().join("out");
    let mut peak_rss_kib = 0;
    while output_bytes(&out) < expected_bytes {
        peak_rss_kib = peak_rss_kib.max(collector.peak_rss_kib());
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "collector did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let collector_time = started.elapsed();
    peak_rss_kib = peak_rss_kib.max(collector.peak_rss_kib());
    stop(&mut collector);
    if collector_first {
        bare = drain_bare(&connection, &bare_queue, lines).await;
    }
    let left = queue_len(&connection, &collector_queue)
        .await
        .expect("the collector's queue exists");

    let bare_rate = lines as f64 / bare.as_secs_f64();
    let collector_rate = lines as f64 / collector_time.as_secs_f64();
    println!(
        "lines: {lines} (~{} bytes per envelope)",
        sample(0).to_json().len()
    );
    println!(
        "bare lapin consumer: {bare_rate:.0} msg/s ({:.2}s)",
        bare.as_secs_f64()
    );
    println!(
        "logship-collector:   {collector_rate:.0} lines/s ({:.2}s, written + fsync'd + committed + acked)",
        collector_time.as_secs_f64()
    );
    println!("ratio collector/bare: {:.2}", collector_rate / bare_rate);
    println!(
        "collector peak RSS: {:.1} MiB; left in its queue: {left}",
        peak_rss_kib as f64 / 1024.0
    );

    for queue in [
        &bare_queue,
        &collector_queue,
        &format!("{collector_queue}.dead-letter"),
    ] {
        let _ = channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    for name in [&exchange, &format!("{exchange}.dead-letter")] {
        let _ = channel
            .exchange_delete(name.as_str().into(), Default::default())
            .await;
    }
}

fn sample(i: usize) -> Envelope {
    let line = format!("{i:010} 2026-11-25T00:00:00Z INFO request handled method=GET path=/api/v1/items status=200 bytes=5123").into_bytes();
    Envelope {
        host: "bench-host".into(),
        path: "/var/log/bench/app.log".into(),
        file: FileId {
            dev: 2049,
            ino: 4242,
            fp: 0x1234_5678_9abc_def0,
        },
        generation: 0,
        // Every line has the same length: offsets as the agent gives them, back to back.
        offset: (i * (line.len() + 1)) as u64,
        timestamp_ms: 1_764_028_800_000 + i as i64,
        line,
        fields: Default::default(),
        kind: Default::default(),
    }
}

fn expected_output_bytes(lines: usize) -> u64 {
    (0..lines).map(|i| sample(i).line.len() as u64 + 1).sum()
}

async fn publish(channel: &Channel, exchange: &str, lines: usize) {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let messages = (0..lines).map(|i| Outgoing::envelope(&sample(i), ""));
    publish_confirmed(channel, exchange, PUBLISH_WINDOW, "logship-bench", messages).await;
}

async fn drain_bare(connection: &Connection, queue: &str, lines: usize) -> Duration {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bare".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let started = Instant::now();
    let mut received = 0;
    while received < lines {
        let delivery = consumer
            .next()
            .await
            .expect("stream open")
            .expect("delivery");
        received += 1;
        if received % usize::from(PREFETCH / 2) == 0 || received == lines {
            delivery
                .ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
    let elapsed = started.elapsed();
    let _ = channel.close(200, "done".into()).await;
    elapsed
}
