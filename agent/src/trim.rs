//! Memory a burst freed, given back to the system once the burst is over.
//!
//! glibc's malloc keeps what the agent frees in its arenas (one per thread that allocated), and
//! free pages between live chunks stay resident: a burst (100k files found, 1M short lines read,
//! spooled and published) leaves its high-water mark as RSS long after it is over. Measured with
//! the descriptors bench (issue 27 item 4): 198 MiB RSS with 100k idle files after the burst,
//! 119 MiB after one `malloc_trim(0)`. So once lines stop flowing (none read or confirmed for a
//! look) after at least [`BURST_LINES`] did since the last trim, the allocator is asked, once,
//! to return its free pages. A steady flow is never trimmed: its memory is in use. With another
//! C library there is nothing to do.
//!
//! Two settings keep the burst's high-water mark low in the first place ([`tune_allocator`],
//! before the first thread starts):
//! - The agent's threads share one arena: glibc otherwise makes up to 8 per core, one for each
//!   thread that met a busy one (tokio's workers, lapin's I/O thread, sled's flusher, the
//!   reader), and what one thread freed in its arena is not reused by another. Each thread's
//!   cache of small chunks (tcache) still spares most allocations the arena's lock.
//! - Blocks of [`MAPPED_FROM`] or more are always mapped on their own: glibc raises that
//!   threshold to the size of the largest mapped block freed (up to 32 MiB), so after the first
//!   turn's buffers (up to 2 MiB) were freed, the next ones came from the heap, and the small
//!   records made for new files between them (paths, sled's nodes) pinned its pages after the
//!   burst. Mapped, a freed buffer goes back to the kernel at once.
//!
//! Descriptors bench, 100k files, RSS while publishing: 179 MiB with glibc's defaults, 132-135
//! MiB with one arena, 112-116 MiB with the fixed threshold as well.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the flow of lines is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// Lines (read, confirmed, journal entries) since the last trim that make a burst worth one:
/// a trim walks every arena, which a trickle of lines never needs.
const BURST_LINES: u64 = 100_000;

/// Trims after each burst until `stop` is cancelled.
pub async fn run(metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut last = flow(&metrics);
    let mut since_trim: u64 = 0;
    loop {
        tokio::select! {
            // Cancel-safe: nothing is in progress between looks.
            _ = stop.cancelled() => return,
            // Cancel-safe: a sleep.
            _ = tokio::time::sleep(LOOK_EVERY) => {}
        }
        let now = flow(&metrics);
        let moved = now.wrapping_sub(last);
        last = now;
        since_trim = since_trim.saturating_add(moved);
        if moved == 0 && since_trim >= BURST_LINES {
            since_trim = 0;
            // A trim of a large heap takes milliseconds: off the runtime's workers.
            let _ = tokio::task::spawn_blocking(release).await;
        }
    }
}

/// glibc arenas the agent's threads share (see the module doc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 1;
/// Blocks this large or larger are mapped on their own (glibc's default starting threshold,
/// kept fixed; see the module doc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MAPPED_FROM: libc::c_int = 128 << 10;

/// One arena and a fixed mmap threshold (see the module doc); call it before any thread
/// starts. A C library that refuses keeps its defaults: only memory is at stake.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    // SAFETY: mallopt takes no pointer; M_ARENA_MAX bounds arenas made from now on, and a
    // fixed M_MMAP_THRESHOLD applies to later allocations.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_FROM);
    }
}

/// Nothing to tune with another C library.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

/// Lines that moved through the agent so far.
fn flow(metrics: &Metrics) -> u64 {
    metrics
        .lines_read
        .load(Ordering::Relaxed)
        .wrapping_add(metrics.confirmed.load(Ordering::Relaxed))
        .wrapping_add(metrics.journal_entries.load(Ordering::Relaxed))
}

/// Returns the allocator's free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() {
    // SAFETY: malloc_trim takes no pointer; it walks glibc's own arenas under their locks.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(
        released = released != 0,
        "freed memory returned after a burst"
    );
}

/// Nothing to return with another C library.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}
