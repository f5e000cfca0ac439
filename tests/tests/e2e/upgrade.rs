//! A collector queue declared by the previous release (before issue 16: no
//! `x-single-active-consumer`, a classic `<queue>.dead-letter` whatever the queue's type) keeps
//! working after the upgrade, with the difference said once in the log.

use std::time::Duration;

use logship_tests::broker::{Broker, Topology, amqp_url};
use logship_tests::fixture::{Agent, Collector};
use logship_tests::lines::{append, assert_delivered_once_in_order, expected, wait_for_delivery};

fn upgraded(label: &str, quorum: bool) {
    let topology = Topology::new(label, 1);
    let (exchange, queue) = (&topology.exchange, &topology.queues[0]);
    let dead_queue = topology.dead_letter_queue(0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let broker = runtime.block_on(Broker::connect());
    runtime.block_on(broker.declare_as_previous_release(exchange, queue, quorum));
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let queue_type = if quorum {
        "queue_type = \"quorum\"\n"
    } else {
        ""
    };
    let url = amqp_url();
    let collector = Collector::with_uris(
        dir.path(),
        "collector",
        &[&url],
        exchange,
        queue,
        queue_type,
        "",
    );
    let glob = logs.join("*.log");
    let agent = Agent::new(dir.path(), "agent", &url, exchange, &[&glob], "", "");
    let mut collector_daemon = collector.start();
    let mut agent_daemon = agent.start(true);
    let log = logs.join("app.log");
    append(&log, "app", 0..2000);
    let want = expected("app", 0..2000);
    let out = collector.file(&agent.host, &log);
    let lines = wait_for_delivery(
        &out,
        &want,
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    assert_delivered_once_in_order(&lines, &want, label);
    if !quorum {
        // The order guard of a queue without single active consumer: nobody else may consume
        // it while the collector does (a quorum queue ignores `exclusive`, as the log says).
        let refused = runtime.block_on(async {
            let channel = broker.connection.create_channel().await.unwrap();
            let options = lapin::options::BasicConsumeOptions::default();
            let consuming = channel.basic_consume(
                queue.as_str().into(),
                "intruder".into(),
                options,
                lapin::types::FieldTable::default(),
            );
            consuming.await.err().map(|err| err.to_string())
        });
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("exclusive use")),
            "{label}: a second consumer was let in: {refused:?}"
        );
    }
    // Rejected messages still reach the old dead-letter queue.
    runtime.block_on(broker.publish_bodies(exchange, &[(b"garbage".to_vec(), "g".into())]));
    let dead = runtime.block_on(broker.wait_queue_len(&dead_queue, 1, Duration::from_secs(30)));
    assert_eq!(dead, 1, "{label}: dead-lettered into the old queue");
    let text = collector_daemon.log_text();
    let said = |needle: &str| text.matches(needle).count();
    assert_eq!(
        said("declared by an earlier release without x-single-active-consumer"),
        1,
        "{label}: said once:\n{text}"
    );
    // The previous release declared its dead-letter queue without the length cap (and classic,
    // which a quorum queue's would no longer be): it is named once, and consuming goes on.
    assert_eq!(
        said("exists with other arguments"),
        1,
        "{label}: the previous release's dead-letter queue is named once:\n{text}"
    );
    for line in text.lines().filter(|l| l.contains("WARN")) {
        eprintln!("{label}: {line}");
    }
    assert!(agent_daemon.stop(Duration::from_secs(30)).success());
    assert!(collector_daemon.stop(Duration::from_secs(30)).success());
}

#[test]
fn a_classic_queue_declared_by_the_previous_release_keeps_working() {
    upgraded("upgrade-classic", false);
}

#[test]
fn a_quorum_queue_and_classic_dead_letter_queue_of_the_previous_release_keep_working() {
    upgraded("upgrade-quorum", true);
}
