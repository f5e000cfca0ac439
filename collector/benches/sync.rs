//! How long making one batch durable takes when it touched N output files: one `fdatasync` per
//! file in turn, `fdatasync`s on a few threads at once, or one `syncfs(2)` of the filesystem.
//!
//! `cargo bench -p logship-collector --bench sync`; `SYNC_BENCH_DIR` picks the filesystem
//! (default: a temporary directory under `target/`, i.e. the disk builds run on),
//! `SYNC_BENCH_ROUNDS` the batches per case (default 20).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Threads for the parallel variant: what a collector could spare on a small machine.
const THREADS: usize = 4;
/// About one log line.
const LINE: &[u8] =
    b"2026-11-25T10:00:00Z web-1 GET /index.html 200 0.003 lorem ipsum dolor sit amet\n";

fn main() {
    let base = std::env::var_os("SYNC_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let rounds: usize = std::env::var("SYNC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir_in(&base).expect("bench dir");
    let dir_fd = File::open(dir.path()).expect("open bench dir");
    println!(
        "per batch (mean of {rounds}), one line appended to each of N files, in {}",
        dir.path().display()
    );
    println!(
        "{:>6} {:>14} {:>14} {:>14}",
        "N", "fdatasync", "parallel x4", "syncfs"
    );
    for n in [1, 4, 8, 16, 64, 256, 400, 1000] {
        let mut files: Vec<File> = (0..n)
            .map(|i| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.path().join(format!("f{i:04}.log")))
                    .expect("open")
            })
            .collect();
        dir_fd.sync_all().expect("sync dir");
        let sequential = measure(rounds, &mut files, |files| {
            files.iter().for_each(|f| f.sync_data().expect("fdatasync"))
        });
        let parallel = measure(rounds, &mut files, |files| {
            std::thread::scope(|scope| {
                for part in files.chunks(files.len().div_ceil(THREADS)) {
                    scope
                        .spawn(move || part.iter().for_each(|f| f.sync_data().expect("fdatasync")));
                }
            })
        });
        let syncfs = measure(rounds, &mut files, |_| {
            // SAFETY: syncfs(2) on a descriptor we own and keep open.
            let rc = unsafe { libc::syncfs(dir_fd.as_raw_fd()) };
            assert_eq!(rc, 0, "syncfs: {}", std::io::Error::last_os_error());
        });
        println!(
            "{n:>6} {:>11.2} ms {:>11.2} ms {:>11.2} ms",
            ms(sequential),
            ms(parallel),
            ms(syncfs)
        );
    }
}

/// Mean time of `sync` after appending a line to every file, over `rounds` batches.
fn measure(rounds: usize, files: &mut [File], sync: impl Fn(&[File])) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..rounds {
        for file in files.iter_mut() {
            file.write_all(LINE).expect("append");
        }
        let started = Instant::now();
        sync(files);
        total += started.elapsed();
    }
    total / rounds as u32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
