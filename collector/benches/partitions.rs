//! Throughput of one collector and of partitioned groups, in one run on the same broker.
//!
//! For each group size N in `BENCH_PARTITIONS` (default `1,2,4`): the N members declare their
//! group (N = 1: the plain single queue), the same `BENCH_LINES` envelopes (default 200000,
//! ~250 bytes) from `BENCH_HOSTS` hosts (default 64, one source each) are published as the agent
//! does (persistent, confirms, routing key = host) while the members are stopped, then all N
//! members start together and drain them: written, fsync'd, committed and acked. Prints lines/s,
//! the lines per partition and the members' summed peak RSS. `AMQP_URL` picks the broker; the
//! broker needs `rabbitmq_consistent_hash_exchange`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use logship_runtime::{Envelope, FileId};

mod support;
use logship_tests::broker::{Outgoing, publish_confirmed, queue_len};
use support::{output_bytes, spawn_collector, stop, wait_for_queue};

const PREFETCH: u16 = 1000;
const PUBLISH_WINDOW: usize = 2000;

/// One group size's run.
struct Group {
    tag: String,
    partitions: u32,
    /// Each member's directory (config, state, output, log).
    members: Vec<PathBuf>,
}

impl Group {
    /// Writes the members' configs under `dir`.
    fn new(dir: &Path, url: &str, partitions: u32) -> Group {
        let tag = format!("bench-part-{}-{}", std::process::id(), fastrand::u32(..));
        let members = (0..partitions)
            .map(|i| {
                let root = dir.join(format!("n{partitions}-m{i}"));
                std::fs::create_dir_all(&root).expect("member dir");
                let group = if partitions > 1 {
                    format!("partitions = {partitions}\npartition = {i}\n")
                } else {
                    String::new()
                };
                std::fs::write(
                    root.join("collector.toml"),
                    format!(
                        "state_dir = \"{state}\"\n[broker]\nuris = [\"{url}\"]\nexchange = \"{tag}.logs\"\nqueue = \"{tag}.q\"\nprefetch = {PREFETCH}\n{group}[output]\ndir = \"{out}\"\n",
                        state = root.join("state").display(),
                        out = root.join("out").display(),
                    ),
                )
                .expect("write config");
                root
            })
            .collect();
        Group {
            tag,
            partitions,
            members,
        }
    }

    /// The queue member `i` consumes.
    fn queue(&self, i: u32) -> String {
        if self.partitions > 1 {
            format!("{}.q.{i}", self.tag)
        } else {
            format!("{}.q", self.tag)
        }
    }

    /// Starts every member once so that the group exists, and stops them.
    async fn declare(&self) {
        let mut children: Vec<_> = self
            .members
            .iter()
            .map(|m| spawn_collector(&m.join("collector.toml"), m))
            .collect();
        for i in 0..self.partitions {
            wait_for_queue(&self.queue(i)).await;
        }
        children.iter_mut().for_each(stop);
    }

    /// Starts every member and waits until all lines are written; returns the time taken, the
    /// output bytes per member and the summed peak RSS in KiB.
    async fn drain(&self, expected_bytes: u64) -> (Duration, Vec<u64>, u64) {
        let started = Instant::now();
        let mut children: Vec<_> = self
            .members
            .iter()
            .map(|m| spawn_collector(&m.join("collector.toml"), m))
            .collect();
        let mut peaks = vec![0; children.len()];
        let written = |members: &[PathBuf]| -> Vec<u64> {
            members
                .iter()
                .map(|m| output_bytes(&m.join("out")))
                .collect()
        };
        while written(&self.members).iter().sum::<u64>() < expected_bytes {
            for (peak, child) in peaks.iter_mut().zip(&children) {
                *peak = child.peak_rss_kib().max(*peak);
            }
            assert!(
                started.elapsed() < Duration::from_secs(900),
                "group of {} did not finish",
                self.partitions
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        for (peak, child) in peaks.iter_mut().zip(&children) {
            *peak = child.peak_rss_kib().max(*peak);
        }
        children.iter_mut().for_each(stop);
        (elapsed, written(&self.members), peaks.iter().sum())
    }

    /// Deletes what the members declared.
    async fn delete(&self, channel: &Channel) {
        let mut queues: Vec<String> = (0..self.partitions).map(|i| self.queue(i)).collect();
        queues.extend(queues.clone().iter().map(|q| format!("{q}.dead-letter")));
        for queue in &queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
        let tag = &self.tag;
        for exchange in [
            format!("{tag}.q.hash"),
            format!("{tag}.logs"),
            format!("{tag}.logs.dead-letter"),
        ] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await;
        }
    }
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let lines = env("BENCH_LINES", 200_000);
    let hosts = env("BENCH_HOSTS", 64);
    let sizes: Vec<u32> = std::env::var("BENCH_PARTITIONS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let expected_bytes: u64 = (0..lines)
        .map(|i| sample(i, hosts).line.len() as u64 + 1)
        .sum();
    println!(
        "lines: {lines} from {hosts} hosts (~{} bytes per envelope)",
        sample(0, hosts).to_json().len()
    );
    for partitions in sizes {
        let group = Group::new(dir.path(), &url, partitions);
        group.declare().await;
        let started = Instant::now();
        publish(&channel, &format!("{}.logs", group.tag), lines, hosts).await;
        let published = started.elapsed();
        let mut backlog = 0;
        for i in 0..partitions {
            backlog += queue_len(&connection, &group.queue(i))
                .await
                .expect("the group's queue exists");
        }
        assert_eq!(backlog as usize, lines, "every line in the group's queues");
        let (elapsed, per_member, peak_kib) = group.drain(expected_bytes).await;
        let share: Vec<String> = per_member
            .iter()
            .map(|b| format!("{:.0}%", 100.0 * *b as f64 / expected_bytes as f64))
            .collect();
        println!(
            "partitions {partitions}: {:.0} lines/s ({:.1}s; published in {:.1}s); per partition {}; members' peak RSS {:.0} MiB",
            lines as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            published.as_secs_f64(),
            share.join(" "),
            peak_kib as f64 / 1024.0
        );
        group.delete(&channel).await;
    }
}

/// Line `i`: host `i % hosts`, each host one source with back-to-back offsets.
fn sample(i: usize, hosts: usize) -> Envelope {
    let line = format!("{i:010} 2026-11-25T00:00:00Z INFO request handled method=GET path=/api/v1/items status=200 bytes=5123").into_bytes();
    let host = i % hosts;
    let nth = (i / hosts) as u64;
    Envelope {
        host: format!("bench-host-{host:04}"),
        path: "/var/log/bench/app.log".into(),
        file: FileId {
            dev: 2049,
            ino: 4242 + host as u64,
            fp: 0x1234_5678_9abc_def0,
        },
        generation: 0,
        // Every line has the same length: offsets as the agent gives them.
        offset: nth * (line.len() as u64 + 1),
        timestamp_ms: 1_764_028_800_000 + i as i64,
        line,
        fields: Default::default(),
        kind: Default::default(),
    }
}

/// Publishes as the agent does: persistent, confirmed, routing key = host.
async fn publish(channel: &Channel, exchange: &str, lines: usize, hosts: usize) {
    let messages = (0..lines).map(|i| {
        let envelope = sample(i, hosts);
        Outgoing::envelope(&envelope, &envelope.host)
    });
    publish_confirmed(channel, exchange, PUBLISH_WINDOW, "logship-bench", messages).await;
}
