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
//! The agent's threads also share one arena ([`cap_arenas`], before the first thread starts):
//! glibc otherwise makes up to 8 per core, one for each thread that met a busy one (tokio's
//! workers, lapin's I/O thread, sled's flusher, the reader), and what one thread freed in its
//! arena is not reused by another. Each thread's cache of small chunks (tcache) still spares
//! most allocations the arena's lock. Descriptors bench, 100k files, RSS while publishing: 179
//! MiB with glibc's default, 140-148 MiB with two arenas, 132-135 MiB with one.

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

/// Caps glibc's arenas at [`ARENAS`]; call it before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn cap_arenas() {
    // SAFETY: mallopt takes no pointer; M_ARENA_MAX only bounds arenas made from now on.
    let capped = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    if capped == 0 {
        tracing::debug!("malloc arenas could not be capped");
    }
}

/// Nothing to cap with another C library.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn cap_arenas() {}

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
