//! A closed idle file as a compact record (issue 27 item 4): of 100k files known, all but the
//! budget's few hundred are closed and idle, and each such file keeps only where reading
//! resumes.
//!
//! Invariant: [`Parked::unpark`] gives back a tailer equal to the one [`Tailer::parked`] was
//! taken from: a tailer is made a record only when everything the record leaves out is at the
//! value `unpark` restores (no descriptor, no partial line, no event, no container, nothing
//! unspooled, the last look and the last claim both at the offset). Any other closed tailer
//! stays whole.

use std::path::Path;
use std::sync::Arc;

use super::Tailer;
use crate::identity::{FileKey, Fingerprint};
use crate::line_rules::LineRules;
use crate::moment::Moment;
use crate::spool::{Checkpoint, Offset};

/// What a closed idle file's tailer keeps (see the module's invariant).
pub struct Parked {
    path: Arc<Path>,
    key: FileKey,
    offset: Offset,
    generation: u32,
    /// The head's fingerprint: its length (0: none yet; a fingerprint covers a byte at least)
    /// and hash, apart so that they pack beside the generation.
    fingerprint_len: u32,
    fingerprint_hash: u64,
    rules: Arc<LineRules>,
    last_growth: Moment,
}

impl Tailer {
    /// This closed tailer as a compact record, if the record can give it back whole (see the
    /// module's invariant); `None` otherwise.
    pub fn parked(&self) -> Option<Parked> {
        let compact = self.file.is_none()
            && self.partial.is_empty()
            && self.event.is_none()
            && self.container.is_none()
            && self.spooled.is_none()
            && !self.resume_mid_event
            && !self.spooled_mid_event
            && self.parts == 0
            && self.seen == self.offset
            && self.seen_generation == self.generation
            && self.claim_end == self.offset;
        compact.then(|| Parked {
            path: self.path.clone(),
            key: self.key,
            offset: self.offset,
            generation: self.generation,
            fingerprint_len: self.fingerprint.map_or(0, |fp| fp.len),
            fingerprint_hash: self.fingerprint.map_or(0, |fp| fp.hash),
            rules: self.rules.clone(),
            last_growth: self.last_growth,
        })
    }
}

impl Parked {
    /// The tailer it was taken from, its descriptor still closed.
    pub fn unpark(&self) -> Tailer {
        Tailer {
            path: self.path.clone(),
            file: None,
            key: self.key,
            fingerprint: self.fingerprint(),
            generation: self.generation,
            offset: self.offset,
            event: None,
            resume_mid_event: false,
            partial: thin_vec::ThinVec::new(),
            rules: self.rules.clone(),
            last_growth: self.last_growth,
            parts: 0,
            spooled: None,
            spooled_mid_event: false,
            seen: self.offset,
            seen_generation: self.generation,
            claim_end: self.offset,
            container: None,
        }
    }

    /// The path the file was found under.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path, shared (see [`Tailer::shared_path`]).
    pub fn shared_path(&self) -> &Arc<Path> {
        &self.path
    }

    /// Which file it is.
    pub fn key(&self) -> FileKey {
        self.key
    }

    /// The head's fingerprint.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        (self.fingerprint_len > 0).then_some(Fingerprint {
            hash: self.fingerprint_hash,
            len: self.fingerprint_len,
        })
    }

    /// Truncations seen: the generation read.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// When a read last returned bytes.
    pub fn last_growth(&self) -> Moment {
        self.last_growth
    }

    /// Bytes read: the offset (a parked file holds no partial line).
    pub fn read_position(&self) -> u64 {
        self.offset
    }

    /// Where reading would resume after a restart (see [`Tailer::checkpoint`]).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            offset: self.offset,
            generation: self.generation,
            fingerprint: self.fingerprint(),
            path: self.path.to_path_buf(),
            finished: false,
            mid_event: false,
        }
    }
}
