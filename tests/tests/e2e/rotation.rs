//! Rotation at any speed (issue 8): rename rotation every 2 s at 10k lines/s with late writes
//! into the renamed file, with the rotated file kept or deleted; files that live 50 ms under
//! their name; copytruncate with no pause for the agent; and the rename case again with the
//! polling fallback. Every line arrives once, in order, under the path it was written to.
//!
//! The globs match `*.log` only, so rotated copies (`app.log.1`) are never inputs of their own:
//! what the agent reads from them it ships under the name it first saw.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logship_tests::broker::amqp_url;
use logship_tests::daemon::Daemon;
use logship_tests::fixture::{Agent, Setup};
use logship_tests::lines::{
    assert_delivered_once_in_order, expected, open_append, wait_for_delivery, wait_for_lines,
    write_lines,
};

/// Lines written into one generation of a file before it is rotated.
const GENERATION_LINES: usize = 20_000;
/// Lines the logger still writes into a renamed file before it reopens the path.
const LATE_LINES: usize = 50;
/// The writer writes this many lines every [`TICK`]: 10k lines/s for the rename tests.
const CHUNK: usize = 100;
const TICK: Duration = Duration::from_millis(10);
/// How long the count of arrived lines may stand still before the test looks at what it has
/// (lost lines never come; a healthy agent never pauses this long).
const STALL: Duration = Duration::from_secs(30);
/// The longest wait for every line after the writer finished.
const ARRIVAL: Duration = Duration::from_secs(150);

/// `app.log.<n>`.
pub(crate) fn rotated(path: &Path, n: usize) -> PathBuf {
    let name = path.file_name().expect("file name").to_string_lossy();
    path.with_file_name(format!("{name}.{n}"))
}

/// Shifts `path.N` to `path.N+1` for every N up to `keep`, oldest first, as logrotate does.
pub(crate) fn shift_rotated(path: &Path, keep: usize) {
    for n in (1..=keep).rev() {
        let from = rotated(path, n);
        if from.exists() {
            std::fs::rename(&from, rotated(path, n + 1)).expect("shift rotated file");
        }
    }
}

/// Sleeps until `next` (at once if it passed) and moves it one [`TICK`] on: a steady rate
/// that catches up after a slow write.
pub(crate) fn tick(next: &mut Instant, period: Duration) {
    *next += period;
    if let Some(wait) = next.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// The source name of generation `g`'s late lines: texts no other line has.
fn late(generation: usize) -> String {
    format!("late-{generation}")
}

/// Starts the collector and an agent (`top` at the top of its config), both publishing.
pub(crate) fn start(setup: &Setup, top: &str) -> (Agent, Daemon, Daemon) {
    let collector = setup.collector.start();
    let agent = setup.agent(&amqp_url(), top, "");
    let daemon = agent.start(true);
    (agent, daemon, collector)
}

/// Writes `generations` generations of `lines` lines at 10k lines/s into `path`,
/// the way a logger with size-based rotation does: it holds its descriptor; at each rotation
/// the older copies shift, `path` becomes `path.1`, the logger writes [`LATE_LINES`] more lines
/// through its old descriptor (into `path.1`), then reopens `path`, a new file. With `delete`,
/// `path.1` is removed right after its late lines. The last generation is rotated too.
pub(crate) fn rename_rotation_writer(
    path: PathBuf,
    generations: usize,
    lines: usize,
    delete: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now();
        for generation in 0..generations {
            let mut file = open_append(&path);
            let first = generation * lines;
            for chunk in (first..first + lines).step_by(CHUNK) {
                write_lines(&mut file, "app", chunk..chunk + CHUNK);
                tick(&mut next, TICK);
            }
            // logrotate's `rotate 10`: the eleventh copy is overwritten.
            shift_rotated(&path, generations.min(10));
            std::fs::rename(&path, rotated(&path, 1)).expect("rotate");
            write_lines(&mut file, &late(generation), 0..LATE_LINES);
            drop(file);
            if delete {
                std::fs::remove_file(rotated(&path, 1)).expect("delete rotated file");
            }
        }
    })
}

/// What the collector's file for the path must hold: each generation, then its late lines.
pub(crate) fn rename_rotation_expected(generations: usize, lines: usize) -> Vec<Vec<u8>> {
    let mut want = Vec::new();
    for generation in 0..generations {
        let first = generation * lines;
        want.extend(expected("app", first..first + lines));
        want.extend(expected(&late(generation), 0..LATE_LINES));
    }
    want
}

/// Runs a rename rotation scenario and checks every line arrived once, in order; returns the
/// agent's log.
fn rename_rotation(label: &str, top: &str, generations: usize, delete: bool) -> String {
    let setup = Setup::new(label);
    let (agent, mut daemon, mut collector) = start(&setup, top);
    rename_rotation_writer(setup.log("app.log"), generations, GENERATION_LINES, delete)
        .join()
        .expect("writer");
    let want = rename_rotation_expected(generations, GENERATION_LINES);
    let lines = wait_for_delivery(&setup.out(&agent, "app.log"), &want, STALL, ARRIVAL);
    assert!(daemon.stop(Duration::from_secs(30)).success());
    assert!(collector.stop(Duration::from_secs(30)).success());
    assert_delivered_once_in_order(&lines, &want, label);
    daemon.log_text()
}

#[test]
fn rename_rotation_every_two_seconds_at_10k_lines_per_second_loses_nothing() {
    rename_rotation("rename-keep", "", 10, false);
}

#[test]
fn rename_rotation_every_two_seconds_and_rotated_file_deleted_loses_nothing() {
    rename_rotation("rename-delete", "", 10, true);
}

#[test]
fn rename_rotation_with_the_polling_fallback_loses_nothing() {
    let log = rename_rotation("rename-poll", "watch = \"poll\"", 3, false);
    assert!(
        log.contains("polling"),
        "the fallback is not logged:\n{log}"
    );
}

#[test]
fn file_created_written_and_renamed_away_within_50_ms_is_not_missed() {
    const ROUNDS: usize = 20;
    const BURST: usize = 300;
    let setup = Setup::new("burst");
    let (agent, mut daemon, mut collector) = start(&setup, "");
    // The reader watches the directory from its first scan on, which may come after the
    // publisher connected on a loaded machine: a burst file created before that is seen only
    // by its rename, after the next file's creation, and is read after it. A line that arrived
    // says the directory is watched.
    let warm = setup.log("warm.log");
    write_lines(&mut open_append(&warm), "warm", 0..1);
    let warmed = wait_for_lines(&setup.out(&agent, "warm.log"), 1, ARRIVAL);
    assert_eq!(warmed.len(), 1, "the warm-up line arrives");
    let path = setup.log("burst.log");
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let started = Instant::now();
        let mut file = open_append(&path);
        write_lines(&mut file, "burst", round * BURST..(round + 1) * BURST);
        // A name of its own per round, matching no glob: the agent follows the rename.
        std::fs::rename(&path, rotated(&path, round + 1)).expect("rename away");
        drop(file);
        slowest = slowest.max(started.elapsed());
        // Sometimes the next file comes at once, while the last one may still be draining.
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..100)));
    }
    eprintln!("burst: slowest create-write-rename took {slowest:?}");
    let want = expected("burst", 0..ROUNDS * BURST);
    let lines = wait_for_delivery(&setup.out(&agent, "burst.log"), &want, STALL, ARRIVAL);
    assert!(daemon.stop(Duration::from_secs(30)).success());
    assert!(collector.stop(Duration::from_secs(30)).success());
    assert_delivered_once_in_order(&lines, &want, "burst");
}

/// Writes lines `0..total` of `source` into `path`, [`CHUNK`] lines every `write_every`, and
/// copytruncates it `rotations` times meanwhile (every 1.5-2.5 s) as logrotate does with
/// `copytruncate` and `delaycompress`: `path.1` stays next to the file, and nobody waits for
/// the agent to catch up.
pub(crate) fn copytruncate_writer(
    path: PathBuf,
    source: &'static str,
    total: usize,
    rotations: usize,
    write_every: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // The logger's descriptor (O_APPEND, so after a truncation it writes at the new end).
        // The lock pauses the writer during copy + truncate only: lines written between the
        // two are in neither file, logrotate's own race, not the agent's to fix.
        let logger = Arc::new(Mutex::new(open_append(&path)));
        let writer = {
            let logger = Arc::clone(&logger);
            std::thread::spawn(move || {
                let mut next = Instant::now();
                for chunk in (0..total).step_by(CHUNK) {
                    let end = (chunk + CHUNK).min(total);
                    write_lines(&mut logger.lock().expect("logger"), source, chunk..end);
                    tick(&mut next, write_every);
                }
            })
        };
        for _ in 0..rotations {
            std::thread::sleep(Duration::from_millis(1500 + fastrand::u64(0..1000)));
            shift_rotated(&path, rotations);
            let _paused = logger.lock().expect("logger");
            std::fs::copy(&path, rotated(&path, 1)).expect("copy");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(0))
                .expect("truncate");
        }
        writer.join().expect("writer");
    })
}

#[test]
fn copytruncate_without_pause_while_writing_loses_nothing() {
    const TOTAL: usize = 60_000;
    const ROTATIONS: usize = 6;
    // 100 lines every 25 ms: 4k lines/s for 15 s.
    const WRITE_EVERY: Duration = Duration::from_millis(25);
    let setup = Setup::new("copytrunc");
    let (agent, mut daemon, mut collector) = start(&setup, "");
    copytruncate_writer(setup.log("app.log"), "app", TOTAL, ROTATIONS, WRITE_EVERY)
        .join()
        .expect("writer");
    let want = expected("app", 0..TOTAL);
    let lines = wait_for_delivery(&setup.out(&agent, "app.log"), &want, STALL, ARRIVAL);
    assert!(daemon.stop(Duration::from_secs(30)).success());
    assert!(collector.stop(Duration::from_secs(30)).success());
    assert_delivered_once_in_order(&lines, &want, "copytruncate");
}
