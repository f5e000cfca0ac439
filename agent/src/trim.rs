//! Memory a burst freed, given back to the system once the burst is over.
//!
//! glibc's malloc keeps what the agent frees in its arenas (one per thread that allocated), and
//! free pages between live chunks stay resident: a burst (100k files found, 1M short lines read,
//! spooled and published) leaves its high-water mark as RSS long after it is over. Measured with
//! the descriptors bench (issue 27 item 4): 198 MiB RSS with 100k idle files after the burst,
//! 119 MiB after one `malloc_trim(0)`. So once lines stop flowing (none read or confirmed for a
//! look) after at least [`BURST_LINES`] did since the last trim, or once reading stops after
//! at least as many lines were read (their publishing may go on: what the reading freed is
//! returned before the last confirm), the allocator is asked, once, to return its free pages.
//! A steady flow is never trimmed: its memory is in use. With another C library there is
//! nothing to do.
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
    let mut last = Flow::of(&metrics);
    let mut since_trim = Flow::default();
    loop {
        tokio::select! {
            // Cancel-safe: nothing is in progress between looks.
            _ = stop.cancelled() => return,
            // Cancel-safe: a sleep.
            _ = tokio::time::sleep(LOOK_EVERY) => {}
        }
        let now = Flow::of(&metrics);
        let moved = now.since(&last);
        last = now;
        since_trim.add(&moved);
        if burst_over(&moved, &since_trim) {
            since_trim = Flow::default();
            // A trim of a large heap takes milliseconds: off the runtime's workers.
            let _ = tokio::task::spawn_blocking(release).await;
        }
    }
}

/// Whether a burst is over, given what `moved` in the last look and since the last trim: when
/// nothing moves any more, or when its reading is over although its lines are still being
/// published (what reading 100k files freed, read buffers and batches of messages, is returned
/// then, not after the last confirm). A backlog published with nothing read is trimmed once,
/// at its end.
fn burst_over(moved: &Flow, since_trim: &Flow) -> bool {
    let quiet = moved.read == 0 && moved.confirmed == 0 && since_trim.all() >= BURST_LINES;
    let read_done = moved.read == 0 && since_trim.read >= BURST_LINES;
    quiet || read_done
}

/// Lines that moved through the agent: read (files and journal entries), and confirmed.
#[derive(Debug, Default, Clone, Copy)]
struct Flow {
    read: u64,
    confirmed: u64,
}

impl Flow {
    /// The counters now.
    fn of(metrics: &Metrics) -> Flow {
        Flow {
            read: metrics
                .lines_read
                .load(Ordering::Relaxed)
                .wrapping_add(metrics.journal_entries.load(Ordering::Relaxed)),
            confirmed: metrics.confirmed.load(Ordering::Relaxed),
        }
    }

    /// What moved since `earlier`.
    fn since(&self, earlier: &Flow) -> Flow {
        Flow {
            read: self.read.wrapping_sub(earlier.read),
            confirmed: self.confirmed.wrapping_sub(earlier.confirmed),
        }
    }

    fn add(&mut self, moved: &Flow) {
        self.read = self.read.saturating_add(moved.read);
        self.confirmed = self.confirmed.saturating_add(moved.confirmed);
    }

    fn all(&self) -> u64 {
        self.read.saturating_add(self.confirmed)
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

/// Bytes of the heap in live blocks (glibc's `mallinfo2`: in use in its arenas, plus the
/// blocks mapped on their own): the agent's memory without the free pages between live chunks
/// that RSS counts too, and that swing with the bursts before (issue 27 item 4). It walks the
/// arenas' free lists under their locks: for a scrape, not a hot path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 takes no pointer and returns a struct by value.
    let info = unsafe { libc::mallinfo2() };
    u64::try_from(info.uordblks.saturating_add(info.hblkhd)).unwrap_or(u64::MAX)
}

/// Not known with another C library: 0.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_in_use() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(read: u64, confirmed: u64) -> Flow {
        Flow { read, confirmed }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_heap_in_use_counts_live_blocks() {
        let before = heap_in_use();
        let held = vec![1u8; 32 << 20];
        // Other tests allocate and free meanwhile: a margin of half the block.
        assert!(
            heap_in_use() >= before + (16 << 20),
            "{before} {}",
            heap_in_use()
        );
        drop(held);
    }

    #[test]
    fn a_burst_is_over_when_its_reading_stops_or_everything_does_never_in_a_steady_flow() {
        // 1M lines read, still publishing: the reading's memory goes back now.
        assert!(burst_over(&flow(0, 50_000), &flow(1_000_000, 400_000)));
        // Reading goes on: its memory is in use.
        assert!(!burst_over(&flow(10, 50_000), &flow(1_000_000, 400_000)));
        // A backlog replayed with nothing read: only once all is quiet.
        assert!(!burst_over(&flow(0, 50_000), &flow(0, 400_000)));
        assert!(burst_over(&flow(0, 0), &flow(0, 400_000)));
        // A trickle never adds up to a trim between two looks' worth of quiet.
        assert!(!burst_over(&flow(0, 0), &flow(5_000, 5_000)));
    }
}
