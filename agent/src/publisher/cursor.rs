//! Where publishing stands in the spool: the segments loaded, the next line to publish, and
//! how much of the head segment is confirmed.
//!
//! Invariants:
//! - Lines are handed out in spool order, segment by segment, line by line; after a
//!   [`SpoolCursor::rewind`] again from the spool's head, skipping the head segment's lines
//!   already confirmed.
//! - Confirms are taken in publish order, so the head segment's confirmed lines are a prefix; a
//!   segment leaves the spool only once every one of its lines is confirmed.
//! - The head segment's confirmed prefix is saved every [`SAVE_HEAD_EVERY`] confirms and on
//!   [`SpoolCursor::save`]: a restart resends at most that many lines already delivered.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::spool::{Message, Seq, Spool, SpoolError};

/// The head segment's confirmed prefix is saved every this many confirms (and on shutdown).
const SAVE_HEAD_EVERY: u64 = 256;

/// A spool segment being published.
struct Loaded {
    seq: Seq,
    lines: Vec<Message>,
    /// Next line to publish.
    next: usize,
    /// Lines confirmed, from the start.
    confirmed: usize,
}

/// The publisher's place in the spool.
pub struct SpoolCursor {
    spool: Arc<Spool>,
    /// Segments read from the spool, oldest first; dropped once confirmed whole.
    segments: VecDeque<Loaded>,
    /// The next segment to read from the spool.
    load_from: Seq,
    /// Lines of the head segment already confirmed, kept across reconnects so they are not
    /// sent again by this process.
    head_confirmed: Option<(Seq, usize)>,
    /// The furthest line (segment, index) this process has published: a publish at or before
    /// it is a republish.
    published_upto: Option<(Seq, usize)>,
}

impl SpoolCursor {
    /// A cursor at the spool's head, after the confirmed lines it saved.
    pub fn new(spool: Arc<Spool>) -> SpoolCursor {
        SpoolCursor {
            head_confirmed: spool.head_confirmed().unwrap_or(None),
            spool,
            segments: VecDeque::new(),
            load_from: 0,
            published_upto: None,
        }
    }

    /// Forgets what was loaded, so publishing starts again at the spool's head (skipping the
    /// head segment's lines already confirmed).
    pub fn rewind(&mut self) {
        self.segments.clear();
        self.load_from = 0;
    }

    /// The next (at most `room`) lines to publish, in spool order, loading segments as needed;
    /// each is marked as published.
    pub fn next_burst(&mut self, room: usize) -> Result<Vec<(Seq, usize)>, SpoolError> {
        let mut burst = Vec::with_capacity(room);
        while burst.len() < room {
            let Some(segment) = self.segments.iter_mut().find(|s| s.next < s.lines.len()) else {
                if !self.load()? {
                    break;
                }
                continue;
            };
            let take = (segment.lines.len() - segment.next).min(room - burst.len());
            burst.extend((segment.next..segment.next + take).map(|line| (segment.seq, line)));
            segment.next += take;
        }
        Ok(burst)
    }

    /// A loaded line's message id and body.
    pub fn line(&self, seq: Seq, line: usize) -> (&str, &[u8]) {
        let segment = self.segments.iter().find(|s| s.seq == seq);
        // The burst was taken from loaded segments, and nothing unloads them meanwhile.
        let message = &segment.expect("a burst's segment is loaded").lines[line];
        (&message.id, &message.body)
    }

    /// Reads the next segments from the spool; `false` if there are none.
    fn load(&mut self) -> Result<bool, SpoolError> {
        let page = self.spool.page(self.load_from, 2)?;
        let loaded = !page.is_empty();
        for segment in page {
            let skip = match self.head_confirmed {
                Some((seq, confirmed)) if seq == segment.seq => confirmed.min(segment.lines.len()),
                _ => 0,
            };
            self.load_from = segment.seq + 1;
            self.segments.push_back(Loaded {
                seq: segment.seq,
                lines: segment.lines,
                next: skip,
                confirmed: skip,
            });
        }
        Ok(loaded)
    }

    /// Line `line` of segment `seq` got a clean ack (in publish order): a segment confirmed
    /// whole leaves the spool.
    pub fn confirmed(&mut self, seq: Seq, line: usize) -> Result<(), SpoolError> {
        let Some(head) = self.segments.front_mut().filter(|h| h.seq == seq) else {
            return Ok(());
        };
        head.confirmed = line + 1;
        if head.confirmed == head.lines.len() {
            self.spool.remove(seq)?;
            self.segments.pop_front();
            self.head_confirmed = None;
        } else {
            self.head_confirmed = Some((seq, head.confirmed));
            if (head.confirmed as u64).is_multiple_of(SAVE_HEAD_EVERY) {
                self.save()?;
            }
        }
        Ok(())
    }

    /// Whether publishing line `line` of segment `seq` is a republish: this process published
    /// it before.
    pub fn republishes(&mut self, seq: Seq, line: usize) -> bool {
        match self.published_upto {
            Some(upto) if (seq, line) <= upto => true,
            _ => {
                self.published_upto = Some((seq, line));
                false
            }
        }
    }

    /// Saves the head segment's confirmed prefix.
    pub fn save(&self) -> Result<(), SpoolError> {
        self.spool.set_head_confirmed(self.head_confirmed)
    }
}
