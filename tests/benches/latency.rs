//! Latency and idle cost of the agent (issue 8), agent + broker + collector on this machine:
//!
//! - a. write -> collector's disk, p50/p99, one file at 20 lines/s;
//! - b. the same for 400 files at 10 lines/s each (4k lines/s);
//! - c. the agent's CPU with 1000 watched idle files, after each was read once;
//! - d. 400 files that start at once (issue 27, item 5: a collector restart, or midnight with a
//!   `{date}` layout): the first line of each is written back to back, then 10 lines/s each; the
//!   first lines (each the first of a new output file) are reported apart from the later ones,
//!   and also as delivered by the broker to a queue of the bench's own (write -> broker: the
//!   agent's share of the delay, also for the later lines; the rest is the collector's).
//!
//! Prints one line per figure and asserts nothing. `BENCH_CASE=a|b|c|d` runs one case (default
//! all), `BENCH_SECS` sets how long each run measures (default 20), `BENCH_RUNS` how many runs
//! cases a and b make on the same daemons (default 3; each run is printed). Uses the release
//! binaries next to this benchmark (case d makes new files in each run) (`cargo build --release --workspace`) or
//! `LOGSHIP_AGENT_BIN` / `LOGSHIP_COLLECTOR_BIN`, and the broker at `AMQP_URL`. The daemons'
//! state and output live in the bench's tempdir: `TMPDIR` chooses the filesystem. Case d
//! depends on it most: on an ext4 without a journal (this VM's root filesystem), each file
//! created costs 0.4-0.6 ms of kernel time (the inode allocator skips recently deleted inodes,
//! scanning inode tables), 20 us on a journaled ext4.
//!
//! The load is what an application logging to many files does: one line per write(2), the
//! writes evenly staggered over time and round-robin over the files (not a burst of lines every
//! 10 ms, which an earlier version wrote and which hid the tail: its p99 was 77 ms where evenly
//! staggered writes gave 256 ms). Each measured line carries its sequence number; the time
//! just after its write(2) returned is kept by sequence number. A thread woken by inotify on the
//! collector's output directory reads what the collector appended and takes arrival - write
//! time per line: the moment the line is readable in the collector's file (its fsync and ack
//! come right after, and add nothing to what a reader of that file sees).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logship_tests::broker::amqp_url;
use logship_tests::daemon::binary;
use logship_tests::fixture::Setup;
use logship_tests::lines::{open_append, wait_for_lines};

/// How long the daemons may take to read the warm-up lines of every file.
const WARM_UP: Duration = Duration::from_secs(120);
/// How long the last measured lines may take after the writer stopped.
const DRAIN: Duration = Duration::from_secs(30);
/// Bytes after the timestamp, so lines are the size of a short log line.
const PADDING: &str = "GET /index.html HTTP/1.1 200 512 lorem ipsum dolor sit amet";

fn main() {
    let case = std::env::var("BENCH_CASE").unwrap_or_else(|_| "all".into());
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let measure = Duration::from_secs(secs);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    eprintln!(
        "latency bench: agent {}, collector {}, broker {}",
        binary("logship-agent").display(),
        binary("logship-collector").display(),
        amqp_url()
    );
    if matches!(case.as_str(), "a" | "all") {
        latency("a", 1, 20, measure, runs);
    }
    if matches!(case.as_str(), "b" | "all") {
        latency("b", 400, 10, measure, runs);
    }
    if matches!(case.as_str(), "c" | "all") {
        idle_cpu("c", 1000, measure);
    }
    if matches!(case.as_str(), "d" | "all") {
        new_files("d", 400, 10, measure, runs);
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// `files` files, one line each, read by a running agent and written by the collector: returns
/// the setup, the agent and collector processes, the files (held open, as a logger does) and
/// the collector's output directory for them.
fn warmed_up(
    label: &str,
    files: usize,
) -> (
    Setup,
    logship_tests::daemon::Daemon,
    logship_tests::daemon::Daemon,
    Vec<File>,
    PathBuf,
) {
    let mut setup = Setup::new(label);
    // The product's default prefetch (the tests' fixture lowers it).
    setup.collector = logship_tests::fixture::Collector::with_uris(
        setup.dir.path(),
        "collector",
        &[&amqp_url()],
        &setup.topology.exchange,
        &setup.topology.queues[0],
        "prefetch = 1000\n",
        "",
    );
    let collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), "", "");
    let paths: Vec<PathBuf> = (0..files)
        .map(|n| setup.log(&format!("f{n:04}.log")))
        .collect();
    let mut handles: Vec<File> = paths.iter().map(|p| open_append(p)).collect();
    for handle in &mut handles {
        handle.write_all(b"warm-up\n").expect("write");
    }
    let daemon = agent.start(true);
    let outs: Vec<PathBuf> = paths
        .iter()
        .map(|p| setup.collector.file(&agent.host, p))
        .collect();
    for out in &outs {
        let lines = wait_for_lines(out, 1, WARM_UP);
        assert_eq!(
            lines.len(),
            1,
            "warm-up line of {} never arrived",
            out.display()
        );
    }
    let out_dir = outs[0].parent().expect("output dir").to_path_buf();
    (setup, daemon, collector, handles, out_dir)
}

/// Measured lines: when each was written (by sequence number) and when it arrived, read by a
/// thread following the collector's output directory.
struct Timing {
    /// Write times by sequence number, over all runs.
    written_at: Vec<AtomicU64>,
    arrivals: Arc<Mutex<Vec<(usize, u64)>>>,
    stop: Arc<AtomicBool>,
    tail: Option<std::thread::JoinHandle<()>>,
}

impl Timing {
    /// Follows the files of `out_dir` (those there now from their end, new ones from their
    /// start), for up to `capacity` measured lines.
    fn follow(out_dir: PathBuf, capacity: usize) -> Timing {
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::<(usize, u64)>::new()));
        let tail = {
            let (stop, arrivals) = (Arc::clone(&stop), Arc::clone(&arrivals));
            // Watch, then skip the warm-up lines, both before the first measured line is written.
            let inotify = Inotify::watch(&out_dir);
            let files = follow_all_at_end(&out_dir);
            std::thread::spawn(move || tail(inotify, files, &out_dir, &stop, &arrivals))
        };
        Timing {
            written_at: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            arrivals,
            stop,
            tail: Some(tail),
        }
    }

    /// Writes measured line `seq` to `file`.
    fn write(&self, file: &mut File, seq: usize, text: &str) {
        let line = format!("{seq} {text} {PADDING}\n");
        file.write_all(line.as_bytes()).expect("write");
        self.written_at[seq].store(now_ns(), Ordering::SeqCst);
    }

    /// Waits up to [`DRAIN`] for lines `range` to arrive; then the delays (nanoseconds) of
    /// those that did, split by `apart`: (those it picks, the others).
    fn delays(
        &self,
        range: std::ops::Range<usize>,
        apart: impl Fn(usize) -> bool,
    ) -> (Vec<u64>, Vec<u64>) {
        let deadline = Instant::now() + DRAIN;
        let arrived = || {
            let arrivals = self.arrivals.lock().expect("arrivals");
            arrivals.iter().filter(|(s, _)| range.contains(s)).count()
        };
        while arrived() < range.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let arrivals = self.arrivals.lock().expect("arrivals");
        let delays = arrivals
            .iter()
            .filter(|(s, _)| range.contains(s))
            .map(|(s, at)| {
                let delay = at.saturating_sub(self.written_at[*s].load(Ordering::SeqCst));
                (*s, delay)
            });
        let (picked, others): (Vec<_>, Vec<_>) = delays.partition(|(s, _)| apart(*s));
        let strip = |v: Vec<(usize, u64)>| v.into_iter().map(|(_, d)| d).collect();
        (strip(picked), strip(others))
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(tail) = self.tail.take() {
            tail.join().expect("tail");
        }
    }
}

/// Case d's view of the broker: a queue of its own bound to the test's exchange (fanout: it gets
/// every line the collector gets), recording when each measured line was delivered to it, so
/// that write -> broker (the agent's share) is told apart from write -> collector's disk.
struct Tap {
    arrivals: Arc<Mutex<Vec<(usize, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tap {
    fn bind(exchange: &str) -> Tap {
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, arrivals, exchange) = (
                Arc::clone(&stop),
                Arc::clone(&arrivals),
                exchange.to_string(),
            );
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(tap(&exchange, &stop, &arrivals, ready_tx));
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("tap queue bound");
        Tap {
            arrivals,
            stop,
            thread: Some(thread),
        }
    }

    /// Delays (nanoseconds) from `timing`'s writes of `seqs` to their delivery here.
    fn delays(&self, timing: &Timing, seqs: std::ops::Range<usize>) -> Vec<u64> {
        let arrivals = self.arrivals.lock().expect("arrivals");
        arrivals
            .iter()
            .filter(|(s, _)| seqs.contains(s))
            .map(|(s, at)| at.saturating_sub(timing.written_at[*s].load(Ordering::SeqCst)))
            .collect()
    }

    /// The collector's share of each of `seqs` that arrived both here and on its disk:
    /// nanoseconds from delivery here to readable in the collector's file (the broker delivers
    /// to both queues at once).
    fn collector_share(&self, timing: &Timing, seqs: std::ops::Range<usize>) -> Vec<u64> {
        let here: HashMap<usize, u64> = self
            .arrivals
            .lock()
            .expect("arrivals")
            .iter()
            .filter(|(s, _)| seqs.contains(s))
            .copied()
            .collect();
        let on_disk = timing.arrivals.lock().expect("arrivals");
        on_disk
            .iter()
            .filter_map(|(s, at)| Some(at.saturating_sub(*here.get(s)?)))
            .collect()
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("tap");
        }
    }
}

async fn tap(
    exchange: &str,
    stop: &AtomicBool,
    arrivals: &Mutex<Vec<(usize, u64)>>,
    ready: std::sync::mpsc::Sender<()>,
) {
    use futures_util::StreamExt as _;
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let connection =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect("tap connects");
    let channel = connection.create_channel().await.expect("tap channel");
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("tap queue");
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("tap bind");
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "tap".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("tap consume");
    let _ = ready.send(());
    while !stop.load(Ordering::SeqCst) {
        let next = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            continue;
        };
        let at = now_ns();
        let Ok(envelope) = logship_runtime::envelope::Envelope::from_json(&delivery.data) else {
            continue;
        };
        let seq = envelope
            .line
            .split(|b| *b == b' ')
            .next()
            .and_then(|token| std::str::from_utf8(token).ok()?.parse::<usize>().ok());
        if let Some(seq) = seq {
            arrivals.lock().expect("arrivals").push((seq, at));
        }
    }
    let _ = connection.close(0, "bench done".into()).await;
}

/// Case a or b: `files` files at `rate` lines/s each, `runs` runs of `measure` on the same
/// daemons; prints p50, p99 and max of each run.
fn latency(label: &str, files: usize, rate: u32, measure: Duration, runs: usize) {
    let (_setup, mut agent, mut collector, mut handles, out_dir) =
        warmed_up(&format!("bench-{label}"), files);
    let total_rate = files as u32 * rate;
    let capacity = (f64::from(total_rate) * measure.as_secs_f64() * 1.1) as usize * runs + 1000;
    let timing = Timing::follow(out_dir, capacity);
    let (mut seq, mut next_file) = (0usize, 0usize);
    for run in 1..=runs {
        let first = seq;
        staggered(total_rate, measure, capacity, &mut seq, |seq| {
            let text = format!("{label} f{next_file:04}");
            timing.write(&mut handles[next_file], seq, &text);
            next_file = (next_file + 1) % files;
        });
        let (_, mut samples) = timing.delays(first..seq, |_| false);
        report(
            &format!(
                "{label}  {files} file(s) x {rate} lines/s, {}s, run {run}",
                measure.as_secs()
            ),
            &mut samples,
            seq - first,
        );
    }
    timing.stop();
    let _ = agent.stop(Duration::from_secs(30));
    let _ = collector.stop(Duration::from_secs(30));
}

/// Writes lines evenly spaced at `rate` lines/s for `measure` (and below `capacity`): `write`
/// writes line `seq`, which then advances.
fn staggered(
    rate: u32,
    measure: Duration,
    capacity: usize,
    seq: &mut usize,
    mut write: impl FnMut(usize),
) {
    let spacing = Duration::from_secs(1) / rate;
    let started = Instant::now();
    let mut k: u32 = 0;
    while started.elapsed() < measure && *seq < capacity {
        // Line k of this run is due at started + k * spacing.
        if let Some(wait) = (started + spacing * k).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        write(*seq);
        *seq += 1;
        k += 1;
    }
}

/// Case d: each run makes `files` new files at once (their first lines written back to back),
/// then writes `rate` lines/s to each for `measure`; prints the first lines' p50, p99 and max
/// apart from the later lines'.
fn new_files(label: &str, files: usize, rate: u32, measure: Duration, runs: usize) {
    // One warm file, so the output directory exists and is followed from the start.
    let (setup, mut agent, mut collector, _handles, out_dir) =
        warmed_up(&format!("bench-{label}"), 1);
    let total_rate = files as u32 * rate;
    let capacity =
        ((f64::from(total_rate) * measure.as_secs_f64() * 1.1) as usize + files) * runs + 1000;
    let timing = Timing::follow(out_dir, capacity);
    let tap = Tap::bind(&setup.topology.exchange);
    let mut seq = 0usize;
    for run in 1..=runs {
        let first = seq;
        let mut handles: Vec<File> = (0..files)
            .map(|n| open_append(&setup.log(&format!("r{run}n{n:04}.log"))))
            .collect();
        for (n, handle) in handles.iter_mut().enumerate() {
            timing.write(handle, seq, &format!("{label} r{run}n{n:04}"));
            seq += 1;
        }
        let first_lines = first..seq;
        let mut next_file = 0;
        staggered(total_rate, measure, capacity, &mut seq, |seq| {
            let text = format!("{label} r{run}n{next_file:04}");
            timing.write(&mut handles[next_file], seq, &text);
            next_file = (next_file + 1) % files;
        });
        let (mut firsts, mut later) = timing.delays(first..seq, |s| first_lines.contains(&s));
        let what = format!(
            "{label}  {files} new files x {rate} lines/s, {}s, run {run}",
            measure.as_secs()
        );
        report(&format!("{what}, first lines"), &mut firsts, files);
        report_leg(
            &format!("{what}, first lines"),
            "write->broker",
            &mut tap.delays(&timing, first_lines.clone()),
            None,
        );
        report_leg(
            &format!("{what}, first lines"),
            "broker->collector",
            &mut tap.collector_share(&timing, first_lines.clone()),
            None,
        );
        report_leg(
            &format!("{what}, later lines"),
            "write->broker",
            &mut tap.delays(&timing, first_lines.end..seq),
            None,
        );
        report_leg(
            &format!("{what}, later lines"),
            "broker->collector",
            &mut tap.collector_share(&timing, first_lines.end..seq),
            None,
        );
        report(
            &format!("{what}, later lines"),
            &mut later,
            seq - first - files,
        );
    }
    timing.stop();
    tap.stop();
    let _ = agent.stop(Duration::from_secs(30));
    let _ = collector.stop(Duration::from_secs(30));
}

/// Prints p50, p99 and max of `samples` (nanoseconds), write -> collector, of `written` lines.
fn report(what: &str, samples: &mut [u64], written: usize) {
    report_leg(what, "write->collector", samples, Some(written));
}

/// Prints p50, p99 and max of `samples` (nanoseconds), one `leg` of the lines' way (of
/// `written` lines, if known).
fn report_leg(what: &str, leg: &str, samples: &mut [u64], written: Option<usize>) {
    samples.sort_unstable();
    if samples.is_empty() {
        println!("{what}: {leg}: no line arrived");
        return;
    }
    let ms = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        samples[i] as f64 / 1e6
    };
    let of = written.map(|n| format!(" of {n}")).unwrap_or_default();
    println!(
        "{what}: {leg} p50 = {:.1} ms, p99 = {:.1} ms, max = {:.1} ms ({}{of} lines)",
        ms(0.50),
        ms(0.99),
        ms(1.0),
        samples.len()
    );
}

/// Reads what the collector appends in `dir` until `stop`, recording (sequence number, arrival
/// time in nanoseconds) of each measured line in `arrivals`.
fn tail(
    inotify: Inotify,
    mut files: HashMap<OsString, Follow>,
    dir: &Path,
    stop: &AtomicBool,
    arrivals: &Mutex<Vec<(usize, u64)>>,
) {
    let mut found = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let changed = match inotify.wait(100) {
            Events::Names(names) => names,
            // Events were lost: look at every file.
            Events::Overflow => files.keys().cloned().collect(),
        };
        for name in changed {
            let follow = files
                .entry(name.clone())
                .or_insert_with(|| Follow::from_start(&dir.join(&name)));
            follow.read_new(&mut found);
        }
        if !found.is_empty() {
            arrivals.lock().expect("arrivals").append(&mut found);
        }
    }
}

/// Every file in `dir`, followed from its current end.
fn follow_all_at_end(dir: &Path) -> HashMap<OsString, Follow> {
    std::fs::read_dir(dir)
        .expect("output dir")
        .flatten()
        .map(|entry| (entry.file_name(), Follow::at_end(&entry.path())))
        .collect()
}

/// One output file being followed.
struct Follow {
    file: File,
    /// The start of a line the collector has not finished writing.
    partial: Vec<u8>,
}

impl Follow {
    fn at_end(path: &Path) -> Follow {
        let mut follow = Follow::from_start(path);
        let mut skip = Vec::new();
        follow.file.read_to_end(&mut skip).expect("read output");
        follow
    }

    fn from_start(path: &Path) -> Follow {
        Follow {
            file: File::open(path).expect("open output"),
            partial: Vec::new(),
        }
    }

    /// Reads what was appended and records (sequence number, arrival) per complete measured
    /// line.
    fn read_new(&mut self, arrivals: &mut Vec<(usize, u64)>) {
        let mut buf = Vec::new();
        if self.file.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return;
        }
        let arrived = now_ns();
        self.partial.extend_from_slice(&buf);
        let complete = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None => return,
        };
        for line in self.partial[..complete].split(|&b| b == b'\n') {
            let seq = line
                .split(|&b| b == b' ')
                .next()
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse::<usize>().ok());
            if let Some(seq) = seq {
                arrivals.push((seq, arrived));
            }
        }
        self.partial.drain(..complete);
    }
}

/// What an inotify wait returned.
enum Events {
    /// Names of the files that changed (may repeat).
    Names(Vec<OsString>),
    /// The kernel's queue overflowed.
    Overflow,
}

/// An inotify watch on one directory for writes to its files.
struct Inotify {
    fd: i32,
}

impl Inotify {
    fn watch(dir: &Path) -> Inotify {
        // SAFETY: plain syscalls on a descriptor we own; the path is a NUL-terminated copy.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_CLOEXEC);
            assert!(
                fd >= 0,
                "inotify_init1: {}",
                std::io::Error::last_os_error()
            );
            let path = CString::new(dir.as_os_str().as_bytes()).expect("path without NUL");
            let wd = libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MODIFY | libc::IN_CREATE);
            assert!(
                wd >= 0,
                "inotify_add_watch {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
            Inotify { fd }
        }
    }

    /// Waits up to `timeout_ms` for events.
    fn wait(&self, timeout_ms: i32) -> Events {
        let mut pollfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pollfd, 1, timeout_ms) } <= 0 {
            return Events::Names(Vec::new());
        }
        let mut buf = vec![0u8; 64 << 10];
        // SAFETY: reads into a buffer of the given length.
        let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return Events::Names(Vec::new());
        }
        // struct inotify_event { int wd; u32 mask; u32 cookie; u32 len; char name[len]; }
        let (buf, mut at, mut names) = (&buf[..n as usize], 0, Vec::new());
        while at + 16 <= buf.len() {
            let field = |i: usize| u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().unwrap());
            let (mask, len) = (field(4), field(12) as usize);
            if mask & libc::IN_Q_OVERFLOW != 0 {
                return Events::Overflow;
            }
            let name = &buf[at + 16..at + 16 + len];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(len)];
            if !name.is_empty() {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
            at += 16 + len;
        }
        Events::Names(names)
    }
}

impl Drop for Inotify {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Case c: the agent's CPU over `measure` with `files` idle files, each read once before.
fn idle_cpu(label: &str, files: usize, measure: Duration) {
    let (_setup, mut agent, mut collector, _handles, _out_dir) =
        warmed_up(&format!("bench-{label}"), files);
    // Let the last confirms and checkpoints settle before measuring idleness.
    std::thread::sleep(Duration::from_secs(3));
    let before = agent.cpu_seconds();
    std::thread::sleep(measure);
    let used = agent.cpu_seconds() - before;
    let _ = agent.stop(Duration::from_secs(30));
    let _ = collector.stop(Duration::from_secs(30));
    println!(
        "{label}  {files} idle files, {}s: agent CPU = {:.2}% of one core",
        measure.as_secs(),
        used / measure.as_secs_f64() * 100.0
    );
}
