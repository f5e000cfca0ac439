//! What a truncation without a copy provably lost: the file was seen larger than what was read
//! before it was truncated, and those bytes are gone. They are announced with a loss marker
//! (envelope v3) that gives up the bytes below the size seen, so the collector's audit shows
//! them as a hole, the same range the agent's log names.
//!
//! Invariants: `seen` holds only sizes a look took while the file was not found truncated (a
//! file rewritten in place past our offset is a new generation, not a larger old one), and is
//! of one generation (`seen_generation`): after a restart it stays the old one's until the new one is looked at,
//! so a rewind to the old generation (a failed spool write) still knows what was seen.
//! `claim_end` is where the last shipped message's claim ends (its newline, or the first byte
//! of the next part of a split line), which is where the collector's hole starts.

use logship_runtime::SourceKind;

use super::Tailer;
use crate::spool::{Message, Offset};

impl Tailer {
    /// A look found the file not truncated, `len` bytes long.
    pub(super) fn note_size(&mut self, len: u64) {
        if self.seen_generation == self.generation {
            self.seen = self.seen.max(len);
        } else {
            self.seen_generation = self.generation;
            self.seen = len;
        }
    }

    /// The file was truncated and what was unread of it cannot be read (no copy, or a copy that
    /// ends short of it). If it was seen larger than what was read, the partial line is dropped
    /// (a piece of a line whose rest is lost), the event being assembled is shipped, and a loss
    /// marker for `[from, to)` is shipped after them; returns that range. `None`: nothing
    /// provably lost, and no line dropped.
    pub fn mark_lost(
        &mut self,
        host: &str,
        out: &mut Vec<Message>,
    ) -> std::io::Result<Option<(Offset, Offset)>> {
        let (generation, to) = (self.seen_generation, self.seen);
        let Some(fingerprint) = self.fingerprint else {
            return Ok(None);
        };
        if generation != self.generation || to <= self.read_pos() {
            return Ok(None);
        }
        self.partial.clear();
        self.flush_event(host, out)?;
        let from = self.claim_end.max(self.offset);
        if to <= from {
            return Ok(None);
        }
        let lost = SourceKind::Lost { bytes: to - from };
        out.push(self.message(host, fingerprint, to, b"", lost));
        Ok(Some((from, to)))
    }
}
