//! Partitioned collector groups (`broker.partitions`, `broker.partition`): every line of a host
//! lands in one partition, once and in order; a member with another number of partitions, or a
//! broker without the consistent-hash plugin, is refused with one line naming the cause.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logship_tests::broker::{Broker, Topology, amqp_url};
use logship_tests::daemon::{Daemon, binary};
use logship_tests::fixture::{Agent, Collector};
use logship_tests::lines::{append, assert_delivered_once_in_order, expected, read_lines};
use logship_tests::rabbit::{self, Node};

/// Lines each host writes.
const LINES: usize = 3000;

/// How long the whole stream may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(120);

/// Member `partition` of a group of `partitions` named `topology.queues[0]`, at `url`.
fn member(
    dir: &Path,
    topology: &Topology,
    url: &str,
    partitions: u32,
    partition: u32,
) -> Collector {
    Collector::with_uris(
        dir,
        &format!("c{partitions}-{partition}"),
        &[url],
        &topology.exchange,
        &topology.queues[0],
        &format!("partitions = {partitions}\npartition = {partition}"),
        "",
    )
}

/// One host: an agent of its own reading `<its dir>/logs/app.log`.
struct Host {
    agent: Agent,
    log: PathBuf,
}

impl Host {
    fn new(dir: &Path, name: &str, exchange: &str) -> Host {
        let logs = dir.join(name).join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let glob = logs.join("*.log");
        let agent = Agent::new(dir, name, &amqp_url(), exchange, &[&glob], "", "");
        Host {
            agent,
            log: logs.join("app.log"),
        }
    }

    /// The host's lines in each member's output, by partition.
    fn outputs(&self, members: &[Collector]) -> Vec<Vec<Vec<u8>>> {
        members
            .iter()
            .map(|m| read_lines(&m.file(&self.agent.host, &self.log)))
            .collect()
    }
}

/// A refused member: it exits non-zero within 30 s; returns its log.
fn refused(collector: &Collector) -> String {
    let mut daemon = Daemon::start(
        &binary("logship-collector"),
        &collector.config,
        &collector.log,
    );
    let status = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log_text();
    assert!(
        status.is_some_and(|s| !s.success()),
        "exit {status:?}, expected a refusal:\n{log}"
    );
    log
}

/// The one line the collector ends with: `logship-collector: <cause>`.
fn final_line(log: &str) -> &str {
    log.lines()
        .rfind(|l| l.starts_with("logship-collector: "))
        .unwrap_or_else(|| panic!("no final error line in:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hosts_in_a_two_partition_group_each_land_wholly_in_one_partition_once_in_order() {
    let topology = Topology::partitioned("part", 2);
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<Collector> = (0..2)
        .map(|i| member(dir.path(), &topology, &amqp_url(), 2, i))
        .collect();
    let mut daemons: Vec<Daemon> = members.iter().map(Collector::start).collect();
    let hosts: Vec<Host> = (0..6)
        .map(|i| Host::new(dir.path(), &format!("a{i}"), &topology.exchange))
        .collect();
    let mut agents: Vec<Daemon> = hosts.iter().map(|h| h.agent.start(true)).collect();

    // Three chunks per host; member 0 is killed -9 after the first and restarted after the
    // second, so its partition's lines wait in its queue and come back redelivered.
    for (chunk, range) in [0..1000, 1000..2000, 2000..LINES].into_iter().enumerate() {
        for host in &hosts {
            append(&host.log, &host.log.to_string_lossy(), range.clone());
        }
        match chunk {
            0 => {
                std::thread::sleep(Duration::from_millis(500));
                daemons[0].kill9();
            }
            1 => daemons[0] = members[0].start(),
            _ => {}
        }
    }

    let deadline = Instant::now() + ARRIVAL;
    let all_arrived = || {
        hosts
            .iter()
            .all(|h| h.outputs(&members).iter().map(Vec::len).sum::<usize>() >= LINES)
    };
    while !all_arrived() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Anything still on its way would show up as a duplicate now.
    std::thread::sleep(Duration::from_secs(1));

    let mut spread = [0usize; 2];
    for host in &hosts {
        let outputs = host.outputs(&members);
        let holding: Vec<usize> = (0..2).filter(|&p| !outputs[p].is_empty()).collect();
        assert_eq!(
            holding.len(),
            1,
            "host {} must be wholly in one partition, found lines in {holding:?}",
            host.agent.host
        );
        let partition = holding[0];
        spread[partition] += 1;
        let other = &members[1 - partition].output.join(&host.agent.host);
        assert!(!other.exists(), "{} exists", other.display());
        assert_delivered_once_in_order(
            &outputs[partition],
            &expected(&host.log.to_string_lossy(), 0..LINES),
            &host.agent.host,
        );
    }
    eprintln!("hosts per partition: {spread:?}");

    let broker = Broker::connect().await;
    for partition in 0..2 {
        let queue = topology.partition_queue(partition);
        assert_eq!(broker.queue_len(&queue).await, Some(0), "{queue} drained");
        let dead = format!("{queue}.dead-letter");
        assert_eq!(broker.queue_len(&dead).await, Some(0), "{dead} declared");
    }
    for daemon in agents.iter_mut().chain(daemons.iter_mut()) {
        let status = daemon.stop(Duration::from_secs(30));
        assert!(status.success(), "exit {status}:\n{}", daemon.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_configured_with_another_number_of_partitions_is_refused() {
    // Cleanup covers both groups' queues, whichever the refused member might have declared.
    let topology = Topology::partitioned("part-n", 3);
    let dir = tempfile::tempdir().unwrap();
    let mut running = member(dir.path(), &topology, &amqp_url(), 2, 0).start();

    for (partitions, partition) in [(3, 1), (3, 0)] {
        let other = member(dir.path(), &topology, &amqp_url(), partitions, partition);
        let log = refused(&other);
        let line = final_line(&log);
        eprintln!("{line}");
        assert!(
            line.starts_with("logship-collector: broker.partitions: "),
            "{line}"
        );
        assert!(line.contains("another number of partitions"), "{line}");
    }
    // Refused before it declared anything: the running group's ring is untouched.
    let broker = Broker::connect().await;
    assert_eq!(broker.queue_len(&topology.partition_queue(2)).await, None);
    assert!(
        broker
            .queue_len(&topology.partition_queue(1))
            .await
            .is_some()
    );

    let status = running.stop(Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", running.log_text());
}

#[test]
fn a_member_on_a_broker_without_the_hash_plugin_says_to_enable_it() {
    let test = "a_member_on_a_broker_without_the_hash_plugin_says_to_enable_it";
    if !rabbit::available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_plugins(dir.path(), "bare", None, &[]);
    let topology = Topology::partitioned("part-np", 2);
    let collector = member(dir.path(), &topology, &node.url(), 2, 1);
    let log = refused(&collector);
    let line = final_line(&log);
    eprintln!("{line}");
    assert!(
        line.contains("rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"),
        "{line}"
    );
    assert!(
        line.starts_with("logship-collector: broker.partitions: "),
        "{line}"
    );
}
