//! A model test of the reader: seeded random sequences of appends (some lines written in two
//! halves), rename rotations (some with late writes into the renamed file), copytruncates
//! (the copy left next to the file) and reader restarts, against the real reader thread and
//! spool. What the spool holds, read as the collector would (one line per message id), must be
//! every line written, once, in the order written. Also under a descriptor budget of two
//! files, with idle files growing meanwhile, so the file that rotates is closed while idle and
//! reopened (or found renamed away, or truncated) when it changes.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logship_agent::Metrics;
use logship_agent::reader::Reader;
use logship_agent::spool::{Message, Spool};
use logship_config::agent::{Input, ReadFrom, WatchMode, WhenFull};
use logship_runtime::Envelope;
use tokio_util::sync::CancellationToken;

/// A running reader thread.
struct Running {
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

fn start(spool: &Arc<Spool>, glob: &Path, watch: WatchMode, budget: Option<usize>) -> Running {
    let input = Input {
        paths: vec![glob.display().to_string()],
        exclude: Vec::new(),
        read_from: ReadFrom::Beginning,
        max_line_bytes: 1 << 20,
        fields: Default::default(),
        multiline: None,
        format: Default::default(),
    };
    let reader = Reader::new(
        "model".into(),
        vec![input],
        watch,
        spool.clone(),
        Arc::new(Metrics::default()),
    )
    .with_max_open_files(budget);
    let stop = CancellationToken::new();
    let token = stop.clone();
    let (_reload, reload_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        reader.run(token, reload_rx).expect("reader failed");
    });
    Running { stop, thread }
}

impl Running {
    fn stop(self) {
        self.stop.cancel();
        self.thread.join().expect("reader panicked");
    }
}

/// The writer's side: the file, and every line written, in order.
struct Model {
    path: PathBuf,
    written: Vec<String>,
    next: usize,
    seed: u64,
}

impl Model {
    fn line(&mut self) -> String {
        self.next += 1;
        format!(
            "seed {} line {:06} {}",
            self.seed,
            self.next,
            "x".repeat(self.next % 50)
        )
    }

    fn append(&mut self, path: &Path, lines: usize, split_last: bool) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for i in 0..lines {
            let line = self.line();
            if split_last && i + 1 == lines {
                let (head, tail) = line.split_at(line.len() / 2);
                file.write_all(head.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(fastrand::u64(0..30)));
                file.write_all(format!("{tail}\n").as_bytes()).unwrap();
            } else {
                file.write_all(format!("{line}\n").as_bytes()).unwrap();
            }
            self.written.push(line);
        }
    }
}

/// Moves the previous rotated copy out of the way, as logrotate does (`app.log.1` ->
/// `app.log.2`; here every copy is kept), so a copy never overwrites a file that is still
/// being drained.
fn shift(rotated: &Path, rotations: &mut u32) {
    *rotations += 1;
    if rotated.exists() {
        std::fs::rename(rotated, rotated.with_extension(format!("old{rotations}"))).unwrap();
    }
}

/// Rotations come at most every 1.5 s, as on the busiest hosts (a file rotated while the
/// one before it still drains waits its turn; one truncated twice before it was ever read
/// cannot be told apart from one that never had the lines).
fn pace(last: &mut Instant) {
    let next = *last + Duration::from_millis(1500);
    std::thread::sleep(next.saturating_duration_since(Instant::now()));
    *last = Instant::now();
}

/// Every line of `path` in the spool, one per message id, in spool order.
fn spooled(spool: &Spool, path: &Path) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    for segment in spool.page(0, usize::MAX).unwrap() {
        for Message { id, body } in segment.lines {
            if seen.insert(id) {
                let envelope = Envelope::from_json(&body).unwrap();
                if Path::new(&envelope.path) != path {
                    continue;
                }
                lines.push(String::from_utf8(envelope.line).unwrap());
            }
        }
    }
    lines
}

/// Waits until the spool stops growing for longer than a drain takes.
fn settle(spool: &Spool) {
    let mut last = (spool.lines(), Instant::now());
    while last.1.elapsed() < Duration::from_millis(4000) {
        std::thread::sleep(Duration::from_millis(100));
        if spool.lines() != last.0 {
            last = (spool.lines(), Instant::now());
        }
    }
}

fn run(seed: u64, watch: WatchMode, budget: Option<usize>) {
    if std::env::var_os("MODEL_DEBUG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
    fastrand::seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let spool = Arc::new(Spool::open(&dir.path().join("state"), 1 << 30, WhenFull::Block).unwrap());
    let mut model = Model {
        path: logs.join("app.log"),
        written: Vec::new(),
        next: 0,
        seed,
    };
    let path = model.path.clone();
    let rotated = logs.join("app.log.1");
    let glob = logs.join("*.log");
    let mut reader = Some(start(&spool, &glob, watch, budget));
    // Under a budget: idle files that grow now and then, and compete for the descriptors.
    let fillers: Vec<PathBuf> = (0..budget.map_or(0, |_| 4))
        .map(|i| logs.join(format!("idle{i}.log")))
        .collect();
    let (mut last_rotation, mut rotations) = (Instant::now(), 0);
    for _ in 0..30 {
        let action = fastrand::u8(0..10);
        if std::env::var_os("MODEL_DEBUG").is_some() {
            eprintln!("action {action} written {}", model.written.len());
        }
        if !fillers.is_empty() {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&fillers[fastrand::usize(0..fillers.len())])
                .unwrap();
            file.write_all(b"idle file line\n").unwrap();
        }
        match action {
            0..=5 => model.append(&path, fastrand::usize(1..200), fastrand::bool()),
            6 => {
                pace(&mut last_rotation);
                shift(&rotated, &mut rotations);
                let renamed = std::fs::rename(&path, &rotated).is_ok();
                // A logger still writing to the renamed file for a moment.
                if renamed && fastrand::bool() {
                    model.append(&rotated, fastrand::usize(1..20), false);
                }
            }
            7 => {
                // logrotate runs on files that have been there a while: a file truncated before
                // the agent ever read a line of it cannot be told from one that just grew.
                std::thread::sleep(Duration::from_millis(150));
                pace(&mut last_rotation);
                if path.exists() {
                    shift(&rotated, &mut rotations);
                    std::fs::copy(&path, &rotated).unwrap();
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                }
            }
            _ => {
                if let Some(running) = reader.take() {
                    running.stop();
                }
                reader = Some(start(&spool, &glob, watch, budget));
            }
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..40)));
    }
    settle(&spool);
    if let Some(running) = reader.take() {
        running.stop();
    }
    let got = spooled(&spool, &path);
    let first_difference = got.iter().zip(&model.written).position(|(a, b)| a != b);
    if let (Some(at), Some(_)) = (first_difference, std::env::var_os("MODEL_DEBUG")) {
        let from = at.saturating_sub(2);
        for (i, line) in got.iter().enumerate().skip(from).take(5) {
            eprintln!("{i}: got {line:?} want {:?}", model.written.get(i));
        }
    }
    assert!(
        first_difference.is_none() && got.len() == model.written.len(),
        "seed {seed}: {} lines spooled, {} written; first difference at {first_difference:?}",
        got.len(),
        model.written.len()
    );
}

#[test]
fn random_appends_rotations_truncations_and_restarts_ship_every_line_once_in_order() {
    let seeds: Vec<u64> = match std::env::var("MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("MODEL_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        run(seed, WatchMode::Inotify, None);
    }
}

#[test]
fn the_same_when_polling() {
    run(7, WatchMode::Poll, None);
}

#[test]
fn the_same_under_a_descriptor_budget_of_two_files() {
    let seeds: Vec<u64> = match std::env::var("MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("MODEL_SEED is a number")],
        Err(_) => vec![11, 12],
    };
    for seed in seeds {
        run(seed, WatchMode::Inotify, Some(2));
    }
}
