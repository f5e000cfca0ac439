//! The batch policy: which deliveries are written together, and when.
//!
//! Invariants:
//! - A batch is what is already waiting when its first delivery is taken (up to
//!   `batch.max_messages`), unless `batch.max_delay`, or heavy traffic (see [`LINGER`]), keeps
//!   it open longer. Deliveries that arrive while the previous batch is written are taken at
//!   once (see [`super::ahead`]): such a batch opens at its first delivery, and is written
//!   right after the previous one if it is due by then.
//! - While a batch lingers the socket's low-water mark is raised (see [`LOW_WATER`]); it is
//!   lowered before the batch is written, so no frame waits in the kernel beyond the linger.

use std::time::{Duration, Instant};

use lapin::Acker;

use super::validate::Line;

/// While batches are large (the previous one held [`HEAVY`] lines or more), a batch stays open
/// this long for more: under heavy traffic, batches several times larger share one round of
/// fsyncs and ack, and the deliveries of those milliseconds are taken in one go rather than one
/// wake-up each. A lone line, or a light stream, is still written at once.
pub(crate) const LINGER: Duration = Duration::from_millis(10);
/// A batch this large says the traffic is heavy.
pub(crate) const HEAVY: usize = 64;
/// While a batch lingers, the socket's reader is woken only once this many bytes wait (see
/// `Socket::raise_low_water`), so the deliveries of those milliseconds arrive in one read
/// rather than a few at a time. Small enough not to grow the socket's receive buffer (Linux
/// grows it for a mark above half of it, 128 KiB at first); a faster stream just wakes the
/// reader sooner.
pub(crate) const LOW_WATER: u32 = 64 * 1024;

/// How long a batch starting now stays open, and whether it lingers: `configured`
/// (`batch.max_delay`), or [`LINGER`] after a batch of [`HEAVY`] lines or more if that is
/// longer. (Over a longer `batch.max_delay` deliveries keep being taken, so that a batch that
/// fills up is written at once.)
pub(crate) fn hold(last_batch: usize, configured: Duration) -> Hold {
    if last_batch >= HEAVY && LINGER > configured {
        Hold {
            open_for: LINGER,
            lingering: true,
        }
    } else {
        Hold {
            open_for: configured,
            lingering: false,
        }
    }
}

/// How a batch is held open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hold {
    /// How long after its first line it is written (unless full before).
    pub open_for: Duration,
    /// Deliveries are left waiting in the client until the batch is written, and then taken
    /// all at once, instead of waking the consumer one by one.
    pub lingering: bool,
}

/// Lines waiting to be written, with the ackers of their deliveries.
#[derive(Default)]
pub(crate) struct Batch {
    pub lines: Vec<Line>,
    pub ackers: Vec<Acker>,
    /// When the first line arrived: the batch is written `hold.open_for` after (or once full).
    started: Option<Instant>,
    hold: Option<Hold>,
}

impl Batch {
    /// Opens the batch now with `hold`, unless it is open already; `true` if this opened it
    /// lingering (the caller raises the socket's low-water mark).
    pub fn open(&mut self, hold: Hold) -> bool {
        if self.started.is_some() {
            return false;
        }
        self.started = Some(Instant::now());
        self.hold = Some(hold);
        hold.lingering
    }

    /// Adds a line and the acker of its delivery.
    pub fn push(&mut self, line: Line, acker: Acker) {
        self.lines.push(line);
        self.ackers.push(acker);
    }

    /// When it is to be written; `None` while it is not open.
    pub fn due(&self) -> Option<Instant> {
        Some(self.started? + self.hold?.open_for)
    }

    /// Whether it lingers (see [`Hold::lingering`]).
    pub fn lingering(&self) -> bool {
        self.hold.is_some_and(|hold| hold.lingering)
    }

    /// Whether it holds `max_messages` lines.
    pub fn is_full(&self, max_messages: usize) -> bool {
        self.lines.len() >= max_messages
    }

    /// Whether it is to be written right after the deliveries just taken: full, or not held
    /// open.
    pub fn ready(&self, max_messages: usize) -> bool {
        self.is_full(max_messages) || self.hold.is_none_or(|hold| hold.open_for.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_light_stream_is_written_at_once_and_heavy_traffic_lingers() {
        let at_once = Hold {
            open_for: Duration::ZERO,
            lingering: false,
        };
        assert_eq!(hold(0, Duration::ZERO), at_once);
        assert_eq!(hold(HEAVY - 1, Duration::ZERO), at_once);
        let linger = Hold {
            open_for: LINGER,
            lingering: true,
        };
        assert_eq!(hold(HEAVY, Duration::ZERO), linger);
        // A configured delay shorter than the linger is lengthened under heavy traffic.
        assert_eq!(hold(HEAVY, LINGER / 2), linger);
        // A longer one is kept, and deliveries keep being taken (no linger).
        let configured = Duration::from_millis(50);
        assert_eq!(
            hold(HEAVY * 10, configured),
            Hold {
                open_for: configured,
                lingering: false
            }
        );
    }

    #[test]
    fn a_batch_opens_once_and_is_due_its_hold_after_its_first_line() {
        let mut batch = Batch::default();
        assert_eq!(batch.due(), None);
        assert!(
            batch.ready(10),
            "an empty batch is written (a no-op) at once"
        );
        let before = Instant::now();
        assert!(batch.open(hold(HEAVY, Duration::ZERO)));
        let due = batch.due().unwrap();
        assert!(due >= before + LINGER && due <= Instant::now() + LINGER);
        assert!(batch.lingering() && !batch.ready(10));
        // Open already: a later hold changes nothing.
        assert!(!batch.open(hold(0, Duration::ZERO)));
        assert_eq!(batch.due(), Some(due));
        assert!(batch.ready(0), "full");
        let mut light = Batch::default();
        assert!(!light.open(hold(1, Duration::ZERO)));
        assert!(light.ready(10) && !light.lingering());
    }
}
