//! The confirm window: publishes awaiting their confirm, oldest first.
//!
//! Invariant: at most [`WINDOW`] publishes are in flight, and their confirms are taken in
//! publish order (the broker confirms a channel's publishes in order).

use std::collections::VecDeque;

use lapin::PublisherConfirm;

use crate::spool::Seq;

/// Publishes in flight without a confirm: enough to keep one broker busy, small in memory.
pub const WINDOW: usize = 1024;

/// A publish awaiting its confirm.
pub struct InFlight {
    /// The segment of the line published.
    pub seq: Seq,
    /// The line's index in its segment.
    pub line: usize,
    pub confirm: PublisherConfirm,
}

/// Publishes in flight on one channel.
pub struct ConfirmWindow {
    inflight: VecDeque<InFlight>,
}

impl ConfirmWindow {
    pub fn new() -> ConfirmWindow {
        ConfirmWindow {
            inflight: VecDeque::with_capacity(WINDOW),
        }
    }

    /// How many publishes are in flight.
    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    /// Whether it is worth filling: refilled at half the window, for fewer, larger spool reads.
    pub fn wants_more(&self) -> bool {
        self.inflight.len() <= WINDOW / 2
    }

    /// How many more publishes it takes.
    pub fn room(&self) -> usize {
        WINDOW - self.inflight.len()
    }

    /// Adds a publish just made.
    pub fn push(&mut self, seq: Seq, line: usize, confirm: PublisherConfirm) {
        self.inflight.push_back(InFlight { seq, line, confirm });
    }

    /// The confirm of the oldest publish in flight.
    pub fn oldest(&mut self) -> Option<&mut PublisherConfirm> {
        self.inflight
            .front_mut()
            .map(|publish| &mut publish.confirm)
    }

    /// Takes the oldest publish out of the window.
    pub fn pop(&mut self) -> Option<InFlight> {
        self.inflight.pop_front()
    }
}
