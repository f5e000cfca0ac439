//! Sustained rotation (issue 16, item 4): `app.log` renamed away twice and five times a second
//! for 15 s at 10k lines/s, the logger writing late lines into the renamed file before it
//! reopens the path, the renamed file kept or deleted right after. Every line arrives once, in
//! order (each generation's late lines before the next generation), and the test prints how
//! long after the writer stopped the last line reached the collector's file (no timing
//! assertion: the target is under a second; before, the lag grew by every rotation's 1 s idle
//! close and reached 16.6 s).

use std::time::{Duration, Instant};

use logship_tests::fixture::Setup;
use logship_tests::lines::{assert_delivered_once_in_order, read_lines};

use crate::rotation::{rename_rotation_expected, rename_rotation_writer, start};

/// Lines written per second.
const RATE: usize = 10_000;
/// How long the writer writes.
const SECONDS: usize = 15;
/// How long the collector's file may stand still before the test looks at what it has.
const STALL: Duration = Duration::from_secs(30);

/// Runs `per_second` rotations a second for [`SECONDS`]; returns the last line's delay.
fn sustained(label: &str, per_second: usize, delete: bool) -> Duration {
    let setup = Setup::new(label);
    let (agent, mut daemon, mut collector) = start(&setup, "");
    let (generations, lines) = (SECONDS * per_second, RATE / per_second);
    rename_rotation_writer(setup.log("app.log"), generations, lines, delete)
        .join()
        .expect("writer");
    let stopped = Instant::now();
    let want = rename_rotation_expected(generations, lines);
    let want_bytes: u64 = want.iter().map(|l| l.len() as u64 + 1).sum();
    let out = setup.out(&agent, "app.log");
    let (mut len, mut last_growth) = (0, Instant::now());
    loop {
        let size = std::fs::metadata(&out).map_or(0, |m| m.len());
        if size != len {
            (len, last_growth) = (size, Instant::now());
        }
        if len >= want_bytes || last_growth.elapsed() > STALL {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // When the file last grew, not when the wait ended: after a stall the two differ by STALL.
    let delay = last_growth.saturating_duration_since(stopped);
    let stalled = if len >= want_bytes {
        String::new()
    } else {
        format!(" (then nothing more for {STALL:?})")
    };
    eprintln!(
        "{label}: {per_second} rotations/s for {SECONDS} s at {RATE} lines/s (delete: {delete}): \
         the last line reached the collector {delay:?} after the writer stopped{stalled}"
    );
    let got = read_lines(&out);
    assert!(daemon.stop(Duration::from_secs(30)).success());
    assert!(collector.stop(Duration::from_secs(30)).success());
    assert_delivered_once_in_order(&got, &want, label);
    delay
}

#[test]
fn rename_rotation_twice_a_second_with_late_writes_keeps_up() {
    sustained("rotate-2-keep", 2, false);
}

#[test]
fn rename_rotation_twice_a_second_then_delete_keeps_up() {
    sustained("rotate-2-delete", 2, true);
}

#[test]
fn rename_rotation_five_times_a_second_with_late_writes_keeps_up() {
    sustained("rotate-5-keep", 5, false);
}

#[test]
fn rename_rotation_five_times_a_second_then_delete_keeps_up() {
    sustained("rotate-5-delete", 5, true);
}
