//! Which entries shown without `MESSAGE` are read again (see [`Rereads`]).

use std::time::Duration;

/// How long after a young entry without `MESSAGE` it is read again: its writer, which links
/// fields within microseconds, has long finished.
pub(super) const REREAD_AFTER: Duration = Duration::from_millis(200);
/// An entry younger than this may have been read while it was being written (see [`Rereads`]).
const YOUNG_US: u64 = 10_000_000;

/// Entries shown without `MESSAGE` that are read again.
///
/// A journal writer makes an entry visible (links it into the file's entry array) before it
/// links the entry's fields' data objects to it, one by one; a data object written for this
/// entry (a new MESSAGE, say) is, for a moment, half-linked, and `sd_journal_enumerate_data`
/// skips a data object it reads in that state without a word. journalctl then shows the entry
/// without that field: its line would be shipped empty, and the entry's id would make the
/// collector drop the true one later. So a young entry without `MESSAGE` is read once more,
/// from the last spooled cursor, after [`REREAD_AFTER`]. Invariant: an entry is read again at
/// most once; and once a re-read shows an entry truly has no `MESSAGE`, none is read again for
/// [`YOUNG_US`], so a journal full of such entries costs one restart per 10 s, not one per entry.
#[derive(Default)]
pub(super) struct Rereads {
    /// The cursor of the entry last read again.
    last: Option<String>,
    /// When a re-read last showed an entry without `MESSAGE` again (µs since the epoch).
    confirmed_us: Option<u64>,
}

impl Rereads {
    /// Whether the entry at `cursor`, shown without `MESSAGE`, is to be read again.
    pub(super) fn wanted(&mut self, cursor: &str, realtime_us: u64, now_us: u64) -> bool {
        if self.last.as_deref() == Some(cursor) {
            self.confirmed_us = Some(now_us);
            return false;
        }
        let young = |at: u64| now_us.saturating_sub(at) < YOUNG_US;
        if !young(realtime_us) || self.confirmed_us.is_some_and(young) {
            return false;
        }
        self.last = Some(cursor.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_entry_without_message_is_read_again_once_and_a_confirmed_one_quiets_rereads() {
        let now = 100 * YOUNG_US;
        let mut rereads = Rereads::default();
        assert!(rereads.wanted("c1", now - 1000, now));
        // Read again and still without MESSAGE: it has none; shipped as it is.
        assert!(!rereads.wanted("c1", now - 1000, now + 1));
        // Another one soon after is not read again: the journal has such entries.
        assert!(!rereads.wanted("c2", now, now + 2));
        // Later it is.
        assert!(rereads.wanted("c3", now + YOUNG_US, now + YOUNG_US + 2));
        // An old entry is not being written.
        let mut rereads = Rereads::default();
        assert!(!rereads.wanted("c4", now - YOUNG_US, now));
    }
}
