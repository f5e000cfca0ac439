//! Memory of the committed source positions: resident memory before and after `N` sources
//! (default 1000000, or the first argument) are tracked, each with one committed range, as a
//! collector holds them after serving that many sources (host, file, generation) within
//! `dedup.max_age`. Run: `cargo run --release -p logship-collector --example positions_memory`.

use logship_collector::commit::positions::{Claim, Positions, source_hash};

/// Lines per batch, as a collector commits them.
const BATCH: usize = 500;

fn main() {
    let sources: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let before = rss_kib();
    let mut positions = Positions::default();
    let now_ms = 1_764_028_800_000;
    let mut next = 0;
    while next < sources {
        let end = (next + BATCH).min(sources);
        let lines = (next..end).map(|i| {
            let hash = source_hash(&format!("host-{}", i % 10_000), 2049, i as u64, 7, 0);
            // A source that sent a thousand 100-byte lines: one range.
            Claim::line(hash, 99_000, 99)
        });
        let staged = positions.stage(lines, now_ms, i64::MAX);
        positions.apply(staged, now_ms);
        next = end;
    }
    let after = rss_kib();
    let per_source = (after.saturating_sub(before) * 1024) as f64 / sources as f64;
    println!(
        "{} sources tracked: RSS {:.1} MiB -> {:.1} MiB, {per_source:.0} bytes per source, {:.0} MiB per million",
        positions.len(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per_source * 1_000_000.0 / (1024.0 * 1024.0)
    );
}

/// Resident memory of this process (VmRSS), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
