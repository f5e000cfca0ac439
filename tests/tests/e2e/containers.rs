//! Container logs end to end (issue 28): a real `dockerd` of the test's own writing json-file
//! logs that it rotates, and CRI trees written and rotated as the kubelet does. Every line
//! arrives once, whole (lines of 40 KB that the runtime cut into pieces), in order per stream,
//! through the runtime's rotation and a kill -9 of the agent.

use std::path::Path;
use std::time::{Duration, Instant};

use logship_runtime::Envelope;
use logship_tests::broker::{Broker, amqp_url};
use logship_tests::docker::Dockerd;
use logship_tests::fixture::{Agent, Setup};

/// How long the lines may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(90);
/// Waiting for lines ends early when the collector's file has not grown for this long.
const STALL: Duration = Duration::from_secs(20);
/// Bytes of a long line's tail: well past Docker's 16 KiB pieces.
const LONG: usize = 40 * 1024;

/// An agent reading the input table `input` (a container input).
fn agent(setup: &Setup, input: &str) -> Agent {
    Agent::with_inputs(
        setup.dir.path(),
        "agent",
        &[&amqp_url()],
        &setup.topology.exchange,
        "",
        "",
        input,
    )
}

/// The padding of a long line, as the container script builds it: `0123456789abcdef` doubled
/// to 8 KiB, five times.
fn padding() -> String {
    "0123456789abcdef".repeat(LONG / 16)
}

/// A busybox sh script printing `n` numbered lines on stdout and on stderr, interleaved; line
/// `i` of stdout is long when `i % 25 == 0`, of stderr when `i % 25 == 12`; it pauses `pause_us`
/// every 20 lines.
fn script(n: usize, pause_us: u32) -> String {
    format!(
        "r=0123456789abcdef; k=0; while [ $k -lt 9 ]; do r=$r$r; k=$((k+1)); done; p=$r$r$r$r$r\n\
         i=0\n\
         while [ $i -lt {n} ]; do\n\
           if [ $((i % 25)) -eq 0 ]; then echo \"out $i $p\"; else echo \"out $i\"; fi\n\
           if [ $((i % 25)) -eq 12 ]; then echo \"err $i $p\" >&2; else echo \"err $i\" >&2; fi\n\
           if [ $((i % 20)) -eq 0 ]; then /bin/busybox usleep {pause_us}; fi\n\
           i=$((i+1))\n\
         done\n"
    )
}

/// What [`script`] prints on `stream` (`"out"` or `"err"`), `runs` times over.
fn expected(stream: &str, n: usize, runs: usize) -> Vec<Vec<u8>> {
    let long_at = if stream == "out" { 0 } else { 12 };
    let pad = padding();
    let once: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            if i % 25 == long_at {
                format!("{stream} {i} {pad}").into_bytes()
            } else {
                format!("{stream} {i}").into_bytes()
            }
        })
        .collect();
    (0..runs).flat_map(|_| once.clone()).collect()
}

/// Waits until `path` holds `want` lines (or stalls), then asserts its stdout and stderr lines
/// are exactly `out` and `err`: every line once, whole, in order per stream.
fn assert_streams(path: &Path, out: &[Vec<u8>], err: &[Vec<u8>], what: &str) {
    let all: Vec<Vec<u8>> = out.iter().chain(err).cloned().collect();
    let lines = logship_tests::lines::wait_for_delivery(path, &all, STALL, ARRIVAL);
    let (got_out, got_err): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        lines.into_iter().partition(|l| l.starts_with(b"out "));
    same(&got_out, out, &format!("{what} stdout"));
    same(&got_err, err, &format!("{what} stderr"));
}

/// Asserts `actual == expected`, naming the first difference briefly (lines are 40 KB).
fn same(actual: &[Vec<u8>], expected: &[Vec<u8>], what: &str) {
    let brief = |l: &[u8]| {
        let text = String::from_utf8_lossy(&l[..l.len().min(40)]).into_owned();
        format!("{text:?}.. ({} bytes)", l.len())
    };
    if let Some(i) = (0..actual.len().min(expected.len())).find(|&i| actual[i] != expected[i]) {
        panic!(
            "{what}: line {i} of {} differs: got {}, expected {}",
            actual.len(),
            brief(&actual[i]),
            brief(&expected[i])
        );
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} lines, expected {} (last got: {:?})",
        actual.len(),
        expected.len(),
        actual.last().map(|l| brief(l))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_lines_arrive_once_whole_in_order_per_stream_through_rotation_kill9_and_removal() {
    let test =
        "docker_lines_arrive_once_whole_in_order_per_stream_through_rotation_kill9_and_removal";
    let mut setup = Setup::new("docker");
    let Some(dockerd) = Dockerd::start(test, setup.dir.path()) else {
        return;
    };
    let tap = format!("{}.tap", setup.topology.exchange);
    setup.topology.queues.push(tap.clone());
    let broker = Broker::connect().await;
    broker.declare_exchange(&setup.topology.exchange).await;
    broker.bind_queue(&setup.topology.exchange, &tap).await;
    let mut collector = setup.collector.start();
    let input = format!(
        "[[inputs]]\ntype = \"docker\"\ndirectory = \"{}\"\nfields = {{ team = \"web\" }}\n",
        dockerd.containers().display()
    );
    let agent = agent(&setup, &input);
    let mut daemon = agent.start(true);

    // A container started after the agent, writing thousands of lines a second (13 MB) into
    // 1 MB files: Docker rotates a dozen times, cutting long lines across files; the agent is
    // killed -9 meanwhile.
    let n = 4000;
    let web = dockerd.run("web", &["max-size=1m", "max-file=10"], &script(n, 20_000));
    std::thread::sleep(Duration::from_millis(1500));
    daemon.kill9();
    daemon = agent.start(true);
    assert_eq!(dockerd.wait("web"), 0);
    // The same container again: its lines go on in the same source.
    let (ok, _, err) = dockerd.docker(&["start", "web"]);
    assert!(ok, "docker start web: {err}");
    assert_eq!(dockerd.wait("web"), 0);
    let out = setup.collector.file(&agent.host, Path::new("docker/web"));
    assert_streams(&out, &expected("out", n, 2), &expected("err", n, 2), "web");

    // A container removed while the agent is behind: it drains what its descriptor holds.
    let m = 1500;
    dockerd.run("gone", &["max-size=10m"], &script(m, 100_000));
    let gone = setup.collector.file(&agent.host, Path::new("docker/gone"));
    let deadline = Instant::now() + ARRIVAL;
    while logship_tests::lines::read_lines(&gone).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no line of container gone arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.signal(libc::SIGSTOP);
    assert_eq!(dockerd.wait("gone"), 0);
    let (ok, _, err) = dockerd.docker(&["rm", "gone"]);
    assert!(ok, "docker rm gone: {err}");
    daemon.signal(libc::SIGCONT);
    assert_streams(
        &gone,
        &expected("out", m, 1),
        &expected("err", m, 1),
        "gone",
    );

    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    let body = broker.get(&tap).await.expect("a message on the tap queue");
    let envelope = Envelope::from_json(&body).expect("an envelope");
    assert_eq!(envelope.path, "docker/web");
    let field = |k: &str| envelope.fields.get(k).map(String::as_str);
    assert_eq!(field("container_name"), Some("web"));
    assert_eq!(field("container_id"), Some(web.as_str()));
    assert_eq!(field("image"), Some(logship_tests::docker::IMAGE));
    assert_eq!(field("team"), Some("web"));
    assert!(matches!(field("stream"), Some("stdout" | "stderr")));
}
