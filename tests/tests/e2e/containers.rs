//! Container logs end to end (issue 28): a real `dockerd` of the test's own writing json-file
//! logs that it rotates, and CRI trees written and rotated as the kubelet does. Every line
//! arrives once, whole (lines of 40 KB that the runtime cut into pieces), in order per stream,
//! through the runtime's rotation and a kill -9 of the agent.

use std::path::Path;
use std::time::{Duration, Instant};

use logship_runtime::Envelope;
use logship_tests::broker::Broker;
use logship_tests::daemon::Daemon;
use logship_tests::docker::Dockerd;
use logship_tests::fixture::{Agent, Setup};

/// How long the lines may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(90);
/// Waiting for lines ends early when the collector's file has not grown for this long.
const STALL: Duration = Duration::from_secs(20);

/// The padding of long line `i`, as the container script builds it: `<i>-0123456789abcdef`
/// doubled to 512 copies, five times (about 50 KB). It names its line, so the heads of the
/// files Docker starts with one of its pieces never look alike.
fn padding(i: usize) -> String {
    format!("{i}-0123456789abcdef").repeat(2560)
}

/// A busybox sh script printing `n` numbered lines on stdout and on stderr, interleaved; line
/// `i` of stdout is long when `i % 25 == 0`, of stderr when `i % 25 == 12`; it pauses `pause_us`
/// every 20 lines.
fn script(n: usize, pause_us: u32) -> String {
    format!(
        "i=0\n\
         while [ $i -lt {n} ]; do\n\
           m=$((i % 25))\n\
           if [ $m -eq 0 ] || [ $m -eq 12 ]; then\n\
             r=\"$i-0123456789abcdef\"; k=0; while [ $k -lt 9 ]; do r=$r$r; k=$((k+1)); done; p=$r$r$r$r$r\n\
           fi\n\
           if [ $m -eq 0 ]; then echo \"out $i $p\"; else echo \"out $i\"; fi\n\
           if [ $m -eq 12 ]; then echo \"err $i $p\" >&2; else echo \"err $i\" >&2; fi\n\
           if [ $((i % 20)) -eq 0 ]; then /bin/busybox usleep {pause_us}; fi\n\
           i=$((i+1))\n\
         done\n"
    )
}

/// What [`script`] prints on `stream` (`"out"` or `"err"`), `runs` times over.
fn expected(stream: &str, n: usize, runs: usize) -> Vec<Vec<u8>> {
    let long_at = if stream == "out" { 0 } else { 12 };
    let once: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            if i % 25 == long_at {
                format!("{stream} {i} {}", padding(i)).into_bytes()
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
    let addr = logship_tests::http::free_addr();
    let agent = setup.agent_with_inputs(&format!("[metrics]\nlisten = \"{addr}\"\n"), &input);
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
    // The container is followed: /status names its source, /metrics counts it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while logship_tests::http::counter(&addr, "logship_agent_containers") < 1 {
        assert!(
            Instant::now() < deadline,
            "no container counted on /metrics"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, status) = logship_tests::http::get(&addr, "/status");
    assert!(status.contains(r#""source":"docker/web""#), "{status}");

    // compress=true: Docker gzips every rotated file once it renamed it; the agent holds the
    // descriptors of the files it follows and reads them to their end all the same. (A kill -9
    // while Docker rotates and gzips is the test of its own below,
    // `docker_compressed_rotation_while_killed_loses_no_line_issue_28`.)
    let z = 3000;
    dockerd.run(
        "zipped",
        &["max-size=1m", "max-file=20", "compress=true"],
        &script(z, 20_000),
    );
    let zipped = setup
        .collector
        .file(&agent.host, Path::new("docker/zipped"));
    assert_eq!(dockerd.wait("zipped"), 0);
    assert_streams(
        &zipped,
        &expected("out", z, 1),
        &expected("err", z, 1),
        "zipped",
    );

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

/// Issue 28: the agent killed -9 while Docker rotates and gzips the file it was reading (and
/// the next ones, a 16 KiB line cut across each rotation): after the restart the rotated files
/// are read back from their `.gz`, and every line arrives once, whole, in order per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_compressed_rotation_while_killed_loses_no_line_issue_28() {
    let test = "docker_compressed_rotation_while_killed_loses_no_line_issue_28";
    let setup = Setup::new("docker-gz");
    let Some(dockerd) = Dockerd::start(test, setup.dir.path()) else {
        return;
    };
    let mut collector = setup.collector.start();
    let input = format!(
        "[[inputs]]\ntype = \"docker\"\ndirectory = \"{}\"\n",
        dockerd.containers().display()
    );
    let agent = setup.agent_with_inputs("", &input);
    let mut daemon = agent.start(true);
    let z = 3000;
    dockerd.run(
        "zipped",
        &["max-size=1m", "max-file=20", "compress=true"],
        &script(z, 20_000),
    );
    let zipped = setup
        .collector
        .file(&agent.host, Path::new("docker/zipped"));
    // Killed -9 once it has read into the first files; stopped while Docker rotates and
    // gzips a few more.
    logship_tests::lines::wait_for_lines(&zipped, 400, ARRIVAL);
    daemon.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    daemon = agent.start(true);
    assert_eq!(dockerd.wait("zipped"), 0);
    assert_streams(
        &zipped,
        &expected("out", z, 1),
        &expected("err", z, 1),
        "zipped",
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
}

/// A CRI log being written as containerd does, and rotated as the kubelet does.
struct CriLog {
    dir: std::path::PathBuf,
    file: std::fs::File,
    /// Rotated names, oldest first; all but the newest are gzipped.
    rotated: Vec<std::path::PathBuf>,
}

impl CriLog {
    fn new(dir: &Path) -> CriLog {
        std::fs::create_dir_all(dir).unwrap();
        CriLog {
            dir: dir.to_path_buf(),
            file: logship_tests::lines::open_append(&dir.join("0.log")),
            rotated: Vec::new(),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        use std::io::Write as _;
        self.file.write_all(bytes).unwrap();
    }

    /// Line `i` of both streams, long ones cut into 16 KiB pieces (`P` then `F`), the streams'
    /// pieces interleaved.
    fn lines(&mut self, i: usize) {
        let pieces = |stream: &str, text: Vec<u8>| -> Vec<Vec<u8>> {
            let chunks: Vec<&[u8]> = text.chunks(16 << 10).collect();
            let last = chunks.len() - 1;
            chunks
                .iter()
                .enumerate()
                .map(|(k, chunk)| {
                    let tag = if k == last { "F" } else { "P" };
                    let mut entry =
                        format!("2026-12-07T05:00:00.{i:09}Z {stream} {tag} ").into_bytes();
                    entry.extend_from_slice(chunk);
                    entry.push(b'\n');
                    entry
                })
                .collect()
        };
        let out = pieces("stdout", cri_line("out", i));
        let err = pieces("stderr", cri_line("err", i));
        for k in 0..out.len().max(err.len()) {
            for stream in [&out, &err] {
                if let Some(entry) = stream.get(k) {
                    self.write(entry);
                }
            }
        }
    }

    /// The kubelet's rotation: `0.log` renamed to `0.log.<time>`, a few late lines written
    /// into it, `0.log` created again, and every rotated file but the newest gzipped.
    fn rotate(&mut self, late: std::ops::Range<usize>) {
        let name = format!("0.log.20261207-05{:04}", self.rotated.len());
        let to = self.dir.join(name);
        std::fs::rename(self.dir.join("0.log"), &to).unwrap();
        for i in late {
            self.lines(i);
        }
        self.file = logship_tests::lines::open_append(&self.dir.join("0.log"));
        if let Some(older) = self.rotated.last() {
            gzip(older);
        }
        self.rotated.push(to);
    }
}

/// Compresses `path` to `path.gz` and removes it, as the kubelet does.
fn gzip(path: &Path) {
    use std::io::Write as _;
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&name).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&std::fs::read(path).unwrap()).unwrap();
    gz.finish().unwrap();
    std::fs::remove_file(path).unwrap();
}

/// Line `i` of `stream` in the CRI tests: long (40 KB) every 25th line, at another place per
/// stream; its padding names it, so no two files' heads look alike.
fn cri_line(stream: &str, i: usize) -> Vec<u8> {
    let long_at = if stream == "out" { 0 } else { 12 };
    if i % 25 == long_at {
        format!(
            "{stream} {i} {}",
            format!("{i:06}-abcdefghijklmnopqrstuvwxyz").repeat(1200)
        )
        .into_bytes()
    } else {
        format!("{stream} {i}").into_bytes()
    }
}

/// The collector, and an agent (started) reading the CRI logs under `pods` (made here).
fn cri_daemons(setup: &Setup, pods: &Path) -> (Daemon, Agent, Daemon) {
    std::fs::create_dir_all(pods).unwrap();
    let collector = setup.collector.start();
    let input = format!(
        "[[inputs]]\ntype = \"cri\"\ndirectory = \"{}\"\n",
        pods.display()
    );
    let agent = setup.agent_with_inputs("", &input);
    let daemon = agent.start(true);
    (collector, agent, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_lines_arrive_once_whole_in_order_through_kubelet_rotation_gzip_and_kill9() {
    let setup = Setup::new("cri");
    let pods = setup.dir.path().join("pods");
    let container = pods.join("shop_web-7d9f_0b1c2d3e-4f56").join("nginx");
    let (mut collector, agent, mut daemon) = cri_daemons(&setup, &pods);

    // The pod appears after the agent; 2000 lines per stream into 1 MB files.
    let n = 2000;
    let mut log = CriLog::new(&container);
    let mut i = 0;
    let mut size = 0;
    let next = |log: &mut CriLog, i: &mut usize, size: &mut usize| {
        log.lines(*i);
        *size += cri_line("out", *i).len() + cri_line("err", *i).len();
        *i += 1;
        if *size > 1 << 20 {
            log.rotate(*i..*i + 3);
            *i += 3;
            *size = 0;
        }
        if (*i).is_multiple_of(20) {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    while i < n / 2 {
        next(&mut log, &mut i, &mut size);
    }
    // Killed -9 once it has read into the file being written (a file it never read a line of
    // has no head to be found by once gzipped); meanwhile the file is rotated twice, so the
    // lines it had not read are in a .gz when it starts again.
    let out = setup
        .collector
        .file(&agent.host, Path::new("pods/shop/web-7d9f/nginx/0.log"));
    logship_tests::lines::wait_for_lines(&out, 2 * (i - 20), ARRIVAL);
    daemon.kill9();
    let stopped_at = i;
    for _ in 0..2 {
        for _ in 0..100 {
            next(&mut log, &mut i, &mut size);
        }
        log.rotate(i..i + 3);
        i += 3;
        size = 0;
    }
    assert!(
        log.rotated.len() >= 3,
        "rotated {} times",
        log.rotated.len()
    );
    daemon = agent.start(true);
    while i < n {
        next(&mut log, &mut i, &mut size);
    }
    // The container restarted: 1.log is a source of its own.
    let mut restarted = logship_tests::lines::open_append(&container.join("1.log"));
    for j in 0..50 {
        use std::io::Write as _;
        writeln!(restarted, "2026-12-07T06:00:00Z stdout F again {j}").unwrap();
    }

    let expect = |stream: &str| (0..i).map(|k| cri_line(stream, k)).collect::<Vec<_>>();
    assert_streams(&out, &expect("out"), &expect("err"), "0.log");
    let again = setup
        .collector
        .file(&agent.host, Path::new("pods/shop/web-7d9f/nginx/1.log"));
    let again_lines = logship_tests::lines::wait_for_lines(&again, 50, ARRIVAL);
    let expected: Vec<Vec<u8>> = (0..50).map(|j| format!("again {j}").into_bytes()).collect();
    same(&again_lines, &expected, "1.log");
    assert!(
        daemon
            .log_text()
            .contains("reading it from the checkpoint in its .gz"),
        "the lines past the checkpoint (line {stopped_at} on) were read from a .gz"
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_line_cut_across_gzipped_rotations_while_stopped_arrives_whole() {
    use std::io::Write as _;
    let setup = Setup::new("cri-cut");
    let pods = setup.dir.path().join("pods");
    let dir = pods.join("shop_api-1_9f8e").join("api");
    std::fs::create_dir_all(&dir).unwrap();
    let (mut collector, agent, mut daemon) = cri_daemons(&setup, &pods);
    let entry = |stream: &str, tag: &str, text: &str| {
        format!("2026-12-07T05:00:00Z {stream} {tag} {text}\n")
    };
    let write = |name: &str, text: &str| {
        let mut file = logship_tests::lines::open_append(&dir.join(name));
        file.write_all(text.as_bytes()).unwrap();
    };
    let lines = |range: std::ops::Range<usize>| -> String {
        range
            .map(|i| entry("stdout", "F", &format!("out {i}")))
            .collect()
    };
    // Lines 0-9, then the first piece of line 10: read, the piece held open.
    write(
        "0.log",
        &(lines(0..10) + &entry("stdout", "P", "out 10 first-half ")),
    );
    let out = setup
        .collector
        .file(&agent.host, Path::new("pods/shop/api-1/api/0.log"));
    logship_tests::lines::wait_for_lines(&out, 10, ARRIVAL);
    daemon.kill9();
    // Stopped: the rest of line 10 lands in the next file, and the kubelet rotates three
    // times, gzipping all but the newest rotated file.
    let rotate = |stamp: &str| {
        std::fs::rename(dir.join("0.log"), dir.join(format!("0.log.{stamp}"))).unwrap()
    };
    rotate("20261207-050000");
    write(
        "0.log",
        &(entry("stdout", "F", "second-half") + &lines(11..20)),
    );
    rotate("20261207-050001");
    gzip(&dir.join("0.log.20261207-050000"));
    write("0.log", &lines(20..30));
    rotate("20261207-050002");
    gzip(&dir.join("0.log.20261207-050001"));
    write("0.log", &lines(30..40));
    daemon = agent.start(true);
    let mut expected: Vec<Vec<u8>> = (0..40).map(|i| format!("out {i}").into_bytes()).collect();
    expected[10] = b"out 10 first-half second-half".to_vec();
    assert_streams(&out, &expected, &[], "0.log");
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
}
