//! A closed idle file kept as a compact record (issue 27 item 4): about 90 bytes where a whole
//! [`Full`] record takes over 200. Of 100k files known, all but the descriptor budget's few
//! hundred are closed and idle.
//!
//! Invariant: [`Parked::unpark`] gives back the record [`Full::parked`] was taken from, but
//! for when it last got a descriptor (it gets one now, see [`Full::reopen`]). A record is made
//! compact only when what the compact one leaves out is at the value `unpark` restores: its
//! descriptor closed, the file active (its path names it), no copytruncate copy pending, no
//! open lines to hand over, and a tailer that can be parked whole (see `tailer::parked`).

use super::{Full, State};
use crate::moment::Moment;
use crate::tailer;

/// What a closed idle file keeps.
pub(super) struct Parked {
    pub tailer: tailer::Parked,
    pub woken_at: Option<Moment>,
    pub dirty: bool,
    pub polled: bool,
    pub held: bool,
    pub left: bool,
    pub decompressed: bool,
}

impl Full {
    /// This record as a compact one, if the compact one can give it back (see the module's
    /// invariant); `None` otherwise.
    pub(super) fn parked(&self) -> Option<Parked> {
        let idle = matches!(self.state, State::Active)
            && self.pending_copy.is_none()
            && self.handover.is_none()
            && !self.moved_on
            && !self.successor;
        if !idle {
            return None;
        }
        Some(Parked {
            tailer: self.tailer.parked()?,
            woken_at: self.woken_at,
            dirty: self.dirty,
            polled: self.polled,
            held: self.held,
            left: self.left,
            decompressed: self.decompressed,
        })
    }
}

impl Parked {
    /// The whole record again, its descriptor still closed.
    pub(super) fn unpark(&self) -> Full {
        let tailer = self.tailer.unpark();
        Full {
            active_at: tailer.last_growth(),
            tailer,
            state: State::Active,
            dirty: self.dirty,
            polled: self.polled,
            held: self.held,
            moved_on: false,
            pending_copy: None,
            left: self.left,
            woken_at: self.woken_at,
            successor: false,
            handover: None,
            decompressed: self.decompressed,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{File, OpenOptions};
    use std::io::Write;
    use std::path::Path;
    use std::sync::Arc;

    use logship_runtime::Envelope;

    use super::super::{Repr, Source, Step};
    use crate::identity::FileKey;
    use crate::line_rules::LineRules;
    use crate::metrics::Metrics;
    use crate::spool::{Checkpoint, Message};

    /// Reads what `source` can, as the turn would; returns (id, offset, line) of each message.
    fn read(source: &mut Source) -> Vec<(String, u64, Vec<u8>)> {
        source.activate();
        let mut out = Vec::new();
        let step = source.step("h", 1 << 20, &mut out, &Metrics::default());
        assert!(matches!(step, Ok(Step::Read(_))), "{step:?}");
        source.spooled();
        out.into_iter()
            .map(|Message { id, body }| {
                let envelope = Envelope::from_json(&body).unwrap();
                (id, envelope.offset, envelope.line)
            })
            .collect()
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    }

    /// A file of one 7-byte line written at `path` now, opened from its start under its key.
    fn opened(path: &Path) -> Source {
        if !path.exists() {
            std::fs::write(path, b"a line\n").unwrap();
        }
        let file = File::open(path).unwrap();
        let key = FileKey::of(&file.metadata().unwrap());
        let rules = Arc::new(LineRules::plain(1024));
        let mut source = Source::opened(path, file, key, &Checkpoint::start(path), rules);
        source.settled();
        source
    }

    #[test]
    fn a_closed_idle_file_is_a_compact_record_and_reads_on_as_if_never_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut parked = opened(&path);
        assert_eq!(read(&mut parked).len(), 1);
        assert!(parked.closable());
        parked.park();
        assert!(
            matches!(parked.0, Repr::Parked(_)),
            "an idle file parks compact"
        );
        assert!(!parked.is_open());
        assert_eq!(parked.read_position(), 7);
        assert_eq!(parked.checkpoint().offset, 7);
        assert!(parked.fingerprint().is_some());
        assert_eq!(parked.lifecycle().name(), "closed");
        parked.mark_changed();
        parked.wake();
        assert!(parked.woken_at().is_some() && parked.may_have_changed());

        append(&path, b"two\nthree\n");
        parked.reopen(File::open(&path).unwrap(), false);
        assert!(matches!(parked.0, Repr::Full(_)));
        let after = read(&mut parked);
        // The same file read by a source never closed: the same messages, ids included.
        let mut never = opened(&path);
        let whole = read(&mut never);
        assert_eq!(after, whole[1..]);
        assert_eq!(
            after
                .iter()
                .map(|(_, offset, _)| *offset)
                .collect::<Vec<_>>(),
            [7, 11]
        );
    }

    #[test]
    fn a_closed_file_with_a_partial_line_stays_whole_and_completes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut source = opened(&path);
        append(&path, b"half");
        assert_eq!(read(&mut source).len(), 1);
        assert!(
            source.closable(),
            "the head is known: the partial line can wait closed"
        );
        source.park();
        assert!(
            matches!(source.0, Repr::Full(_)),
            "a partial line keeps it whole"
        );
        assert!(!source.is_open());
        append(&path, b" done\n");
        source.reopen(File::open(&path).unwrap(), false);
        let after = read(&mut source);
        assert_eq!(after.len(), 1);
        assert_eq!((after[0].1, after[0].2.as_slice()), (7, &b"half done"[..]));
    }

    #[test]
    fn a_parked_file_takes_under_a_hundred_bytes() {
        assert!(
            std::mem::size_of::<Source>() <= 96,
            "{}",
            std::mem::size_of::<Source>()
        );
    }
}
