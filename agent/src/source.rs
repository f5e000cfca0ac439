//! One watched file's lifecycle, and the only code that decides it:
//!
//! ```text
//! found ──> waiting ──> active ──> draining ──> closed
//!   (open at sight)   │   ▲   (path names another file, or none: read to the end, late
//!                     ▼   │    writes included; closed once idle and spooled)
//!                    copy ┘  (truncated: the rest of this generation from the copy next to it)
//! ```
//!
//! - **Waiting.** A file is opened, and its descriptor held, the moment it is seen under a
//!   matching name, even while an older file of the same path still drains. It is read only
//!   once every older file of its path is closed, and, if the scan found it, [`SETTLE`] after
//!   it was opened (so a trailing rename event can still put an older file before it): the
//!   path's lines stay in order.
//! - **Active.** The path names this file. A file shorter than what was read, or whose head no
//!   longer matches its fingerprint, was truncated: the lines written after our last read are
//!   in the copy a copytruncate left next to it (same head). They are read from there, from our
//!   offset, as the same generation (same message ids); then a new generation starts at 0. No
//!   copy: said and counted, and the new generation starts. If the file was seen larger than
//!   what was read (or than its copy), those bytes are lost: the log names the file and the
//!   range, and a loss marker makes them a hole in the collector's audit (see `tailer::loss`).
//! - **Draining.** The path names another file, or none: this one is read to its end, and
//!   closed after [`ROTATE_IDLE`] without growth, or as soon as it is read to its end and idle
//!   for [`MOVED_ON_IDLE`] once the application has clearly moved on (the newer file of its
//!   path has grown: a logger writes its late lines into the renamed file before it reopens
//!   the path, so they are all there by then). The reader flushes the spool before closing.
//! - **Closed for the budget.** An active file read to its end, spooled, with no event being
//!   assembled may lose its descriptor while other files wait for one ([`Source::park`]); it
//!   stays known (position, head, partial line) and asks for a descriptor again when an event
//!   or the rescan says it changed ([`Source::wake`]). It is reopened as itself only if the
//!   path still names the same (device, inode) and its head still matches, as after a
//!   truncation check; found under another name it drains; gone, it is finished. Closed with
//!   nothing but its position to keep (no partial line, nothing unspooled), it is kept as a
//!   compact record of about 90 bytes, not a whole one of over 200 (`parked`): of 100k files,
//!   all but the budget's few hundred are such files (issue 27 item 4).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::identity::{self, FileKey, Fingerprint};
use crate::line_rules::LineRules;
use crate::metrics::Metrics;
use crate::moment::Moment;
use crate::spool::Checkpoint;
use crate::spool::Message;
use crate::tailer::{Handover, Tailer};
use parked::Parked;

/// A rotated-away file is closed after this long without growth.
pub const ROTATE_IDLE: Duration = Duration::from_secs(1);
/// A rotated-away file whose path's newer file has grown is closed once read to its end and
/// this long without growth: the application moved on, and the newer file must not wait a
/// whole [`ROTATE_IDLE`] (at two rotations a second the lag would grow without bound). A short
/// grace for a logger whose threads finish their writes to the old descriptor.
pub const MOVED_ON_IDLE: Duration = Duration::from_millis(50);
/// A file the scan found is read only this long after it was opened: the event of an older
/// file of its path leaving its name (renamed away before it was ever opened) can trail the
/// scan, and that older file must be read first. A file an event named does not wait: inotify
/// reports a rename before the creation that follows it, and the reader follows a wake-up's
/// renames before it opens its new names (400 new files waited 20 ms and more for nothing,
/// issue 27 item 5).
pub const SETTLE: Duration = Duration::from_millis(20);

/// Where a file is in its lifecycle.
enum State {
    /// Open, behind an older file of the same path; read no sooner than [`SETTLE`] after
    /// `opened_at` if it `settles`.
    Waiting { opened_at: Moment, settles: bool },
    /// The path names this file.
    Active,
    /// Reading the copytruncate copy; the file itself is read again from 0 afterwards (`None`:
    /// the file's own descriptor could not be kept, read again from the path).
    Copy { original: Option<File> },
    /// The path no longer names this file.
    Draining { since: Moment },
}

/// Where a file is in its lifecycle, as `/status` shows it (one byte: a snapshot of 100k
/// files holds one each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Its descriptor is closed for the budget.
    Closed,
    Waiting,
    Active,
    Copy,
    Draining,
}

impl Lifecycle {
    /// The name `/status` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Closed => "closed",
            Lifecycle::Waiting => "waiting",
            Lifecycle::Active => "active",
            Lifecycle::Copy => "copy",
            Lifecycle::Draining => "draining",
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Bytes read (0: nothing new).
    Read(usize),
    /// Drained and idle: flush the spool, then close it.
    Finished,
}

/// One watched file: whole, or, closed and idle, as a compact record ([`Source::park`]
/// makes it one when nothing but its position is left to keep; [`Source::reopen`] makes it
/// whole again). Both answer every question the reader asks of a closed file alike.
pub struct Source(Repr);

/// How a watched file is kept.
enum Repr {
    Full(Box<Full>),
    Parked(Parked),
}

/// One watched file, whole: every file but a closed idle one (see [`Source`]).
struct Full {
    tailer: Tailer,
    state: State,
    /// Something may have changed: an event named it, or its last read hit the budget.
    dirty: bool,
    /// inotify cannot see it change: look at it on every poll.
    polled: bool,
    /// An older file of its path is still open: not read until that one is closed.
    held: bool,
    /// A newer file of its path has grown: the application moved on (set by the reader before
    /// each step of a draining file).
    moved_on: bool,
    /// A copytruncate copy to read first (the file was truncated while the agent was stopped).
    pending_copy: Option<File>,
    /// It is known to have left its name (renamed away, deleted): a file found renamed away
    /// later held the name after it.
    left: bool,
    /// When it last read bytes or got its descriptor: the least recent is closed first.
    active_at: Moment,
    /// Closed for the budget and changed since: when it started waiting for a descriptor.
    woken_at: Option<Moment>,
    /// A newer file of its path is open (set by the reader before each step of a draining
    /// file): a container log's open lines go on there when this one is finished.
    successor: bool,
    /// The open lines of a finished container log, for the newer file of its path.
    handover: Option<Box<Handover>>,
    /// Read from its `.gz`, decompressed into a file of the agent's: its key is the inode the
    /// file had, which the filesystem may have given to another file since.
    decompressed: bool,
}

impl Full {
    /// A file just opened, waiting for its turn.
    fn opened(
        path: &Path,
        file: File,
        key: FileKey,
        checkpoint: &Checkpoint,
        rules: Arc<LineRules>,
    ) -> Full {
        Full {
            tailer: Tailer::new(path, file, key, checkpoint, rules),
            state: State::Waiting {
                opened_at: Moment::now(),
                settles: true,
            },
            dirty: true,
            polled: false,
            held: false,
            moved_on: false,
            pending_copy: None,
            left: false,
            active_at: Moment::now(),
            woken_at: None,
            successor: false,
            handover: None,
            decompressed: false,
        }
    }

    /// A file found after it left its name (renamed away before it was seen, or rotated while
    /// the agent was stopped): drained, then closed.
    fn rotated(
        path: &Path,
        file: File,
        key: FileKey,
        checkpoint: &Checkpoint,
        rules: Arc<LineRules>,
    ) -> Full {
        let mut source = Full::opened(path, file, key, checkpoint, rules);
        source.state = State::Draining {
            since: Moment::now(),
        };
        source.left = true;
        source
    }

    /// Parts of over-long lines, and undecodable entries of a container log, shipped since the
    /// last call.
    fn take_counts(&mut self) -> (u64, u64) {
        (self.tailer.take_parts(), self.tailer.take_invalid())
    }

    /// The spool now holds everything shipped so far, and the checkpoints of the older files
    /// whose open lines it carried.
    fn spooled(&mut self) {
        self.tailer.predecessors_spooled();
        self.tailer.spooled();
    }

    /// Takes the lines an older (finished) container log of its path left open.
    fn take_over(&mut self, handover: crate::tailer::Handover) {
        self.tailer.take_over(handover);
    }

    /// The file is gone: ships a last line that never got its newline, and the event being
    /// assembled.
    fn ship_partial(&mut self, host: &str, out: &mut Vec<Message>) -> std::io::Result<()> {
        self.tailer.ship_partial(host, out)
    }

    /// The spool refused the lines read this turn: they are read again from the last spooled
    /// position, in the next turn.
    fn reread_unspooled(&mut self) {
        self.tailer.rewind();
        self.dirty = true;
    }

    /// Whether it holds a descriptor.
    fn is_open(&self) -> bool {
        self.tailer.is_open()
    }

    /// Whether its descriptor may be closed for the budget: an active file read to its end
    /// (nothing new since), every line spooled, nothing the file alone could still give.
    fn closable(&self) -> bool {
        matches!(self.state, State::Active)
            && !self.held
            && !self.dirty
            && self.pending_copy.is_none()
            && self.tailer.closable()
    }

    /// Closes its descriptor for the budget.
    fn park(&mut self) {
        self.tailer.close_file();
        self.woken_at = None;
    }

    /// Closed, and something says it changed: it asks for a descriptor (from now, unless it
    /// already waits).
    fn wake(&mut self) {
        if !self.is_open() && self.woken_at.is_none() {
            self.woken_at = Some(Moment::now());
        }
    }

    /// Since when it waits for a descriptor, if it does.
    fn woken_at(&self) -> Option<Moment> {
        self.woken_at.filter(|_| !self.is_open())
    }

    /// When it last read bytes or got its descriptor back.
    fn active_at(&self) -> Moment {
        self.active_at.max(self.tailer.last_growth())
    }

    /// Its descriptor back, the same (device, inode): read on from where it stopped
    /// (`draining`: found under another name, read to its end and closed).
    fn reopen(&mut self, file: File, draining: bool) {
        self.tailer.reopen(file);
        self.woken_at = None;
        self.active_at = Moment::now();
        self.dirty = true;
        if draining {
            self.left = true;
            self.state = State::Draining {
                since: Moment::now(),
            };
        }
    }

    /// Whether it is being drained (its path names another file, or none).
    fn draining(&self) -> bool {
        matches!(self.state, State::Draining { .. })
    }

    /// Whether its file holds bytes past what was read (a newer file the application writes).
    fn grown(&self) -> bool {
        self.tailer
            .size()
            .is_some_and(|size| size > self.tailer.read_position())
    }

    /// Whether it waits behind an older file of its path.
    fn waiting(&self) -> bool {
        matches!(self.state, State::Waiting { .. })
    }

    /// Whether it must be looked at on every poll whatever the events say (draining files are
    /// renamed or unlinked: their events carry another name, or none; an event being
    /// assembled must be shipped when its timeout passes).
    fn busy(&self) -> bool {
        self.polled
            || self.tailer.holds_event()
            || matches!(self.state, State::Draining { .. } | State::Copy { .. })
    }

    /// A waiting file need not settle: an event named it (see [`SETTLE`]).
    fn settled(&mut self) {
        if let State::Waiting { settles, .. } = &mut self.state {
            *settles = false;
        }
    }

    /// How long a waiting file still settles before it may be read ([`SETTLE`]).
    fn settling(&self) -> Duration {
        match self.state {
            State::Waiting {
                opened_at,
                settles: true,
            } => SETTLE.saturating_sub(opened_at.elapsed()),
            _ => Duration::ZERO,
        }
    }

    /// The path's file from now on (every older file of its path is closed), once settled.
    fn activate(&mut self) {
        if self.waiting() && self.settling().is_zero() {
            self.state = match self.pending_copy.take() {
                Some(copy) => State::Copy {
                    original: self.tailer.swap_file(copy),
                },
                None => State::Active,
            };
            self.active_at = Moment::now();
            self.dirty = true;
        }
    }

    /// Checks identity and truncation, then reads up to `budget` bytes into `out`.
    fn step(
        &mut self,
        host: &str,
        budget: usize,
        out: &mut Vec<Message>,
        metrics: &Metrics,
    ) -> std::io::Result<Step> {
        if matches!(self.state, State::Waiting { .. }) {
            return Ok(Step::Read(0));
        }
        if matches!(self.state, State::Active) {
            self.check(host, out, metrics)?;
        }
        let read = self.tailer.read(host, budget, out)?;
        self.tailer.flush_stale(host, out)?;
        self.dirty = read >= budget;
        match &self.state {
            State::Copy { .. } if read < budget => self.copy_done(host, out)?,
            State::Draining { since }
                if read == 0
                    && ((self.moved_on
                        && self.tailer.last_growth().elapsed() >= MOVED_ON_IDLE)
                        || (since.elapsed() >= ROTATE_IDLE
                            && self.tailer.last_growth().elapsed() >= ROTATE_IDLE)) =>
            {
                self.handover = self.tailer.finish(host, self.successor, out)?.map(Box::new);
                return Ok(Step::Finished);
            }
            _ => {}
        }
        Ok(Step::Read(read))
    }

    /// Whether the path still names this file, and whether it was truncated.
    fn check(
        &mut self,
        host: &str,
        out: &mut Vec<Message>,
        metrics: &Metrics,
    ) -> std::io::Result<()> {
        let path = self.tailer.path();
        let same =
            std::fs::metadata(path).is_ok_and(|meta| FileKey::of(&meta) == self.tailer.key());
        if !same {
            tracing::info!(path = %path.display(), "file rotated away or deleted, draining it");
            self.left = true;
            self.state = State::Draining {
                since: Moment::now(),
            };
            return Ok(());
        }
        if self.tailer.truncated()? {
            self.truncated(host, out, metrics)?;
        }
        Ok(())
    }

    /// The file was truncated: read the rest of this generation from its copy, if there is one.
    fn truncated(
        &mut self,
        host: &str,
        out: &mut Vec<Message>,
        metrics: &Metrics,
    ) -> std::io::Result<()> {
        let offset = self.tailer.checkpoint().offset;
        let path = self.tailer.path().to_path_buf();
        // A container log is never copied and truncated (see `Reader::checkpoint_for`).
        let copy = self
            .tailer
            .fingerprint()
            .filter(|_| !self.tailer.is_container_log())
            .map(|head| identity::find_copy(&path, self.tailer.key(), head));
        match copy {
            Some(Some(copy)) => {
                tracing::info!(path = %path.display(), copy = %copy.path.display(), offset,
                    unread = copy.size.saturating_sub(offset), "file truncated, reading the rest from its copy");
                let original = self.tailer.swap_file(copy.file);
                self.state = State::Copy { original };
            }
            Some(None) => {
                Metrics::add(&metrics.truncated_without_copy, 1);
                match self.tailer.mark_lost(host, out)? {
                    Some((from, to)) => {
                        tracing::warn!(path = %path.display(), from, to, bytes = to - from,
                        "file truncated and no copy of it found next to it: these bytes of it were never read (a hole in the collector's audit)")
                    }
                    None => tracing::warn!(path = %path.display(), offset,
                        "file truncated and no copy of it found next to it: it was read to the size last seen, nothing provably lost (lines written since may be)"),
                }
                self.restart(host, out)?;
            }
            None => {
                tracing::info!(path = %path.display(), "file truncated, reading it again from the start");
                self.restart(host, out)?;
            }
        }
        Ok(())
    }

    /// The copy is read to its end: back to the file itself, as a new generation.
    fn copy_done(&mut self, host: &str, out: &mut Vec<Message>) -> std::io::Result<()> {
        let state = std::mem::replace(&mut self.state, State::Active);
        if let State::Copy { original } = state {
            // A copy shorter than the file was seen: what was written between the copy and the
            // truncation is lost.
            if let Some((from, to)) = self.tailer.mark_lost(host, out)? {
                tracing::warn!(path = %self.tailer.path().display(), from, to, bytes = to - from,
                    "file truncated, and its copy ends short of the size it was seen at: these bytes of it were never read (a hole in the collector's audit)");
            }
            self.tailer.ship_partial(host, out)?;
            // Never `None`: a file is only closed for the budget while active.
            let original = match original {
                Some(file) => file,
                None => File::open(self.tailer.path())?,
            };
            self.tailer.swap_file(original);
            self.tailer.restart();
            self.dirty = true;
            tracing::info!(path = %self.tailer.path().display(), "copy read, reading the truncated file from the start");
        }
        Ok(())
    }

    fn restart(&mut self, host: &str, out: &mut Vec<Message>) -> std::io::Result<()> {
        self.tailer.ship_partial(host, out)?;
        self.tailer.restart();
        Ok(())
    }

    /// Where it is in its lifecycle, as `/status` shows it.
    fn lifecycle(&self) -> Lifecycle {
        if !self.is_open() {
            return Lifecycle::Closed;
        }
        match self.state {
            State::Waiting { .. } => Lifecycle::Waiting,
            State::Active => Lifecycle::Active,
            State::Copy { .. } => Lifecycle::Copy,
            State::Draining { .. } => Lifecycle::Draining,
        }
    }

    /// The checkpoint to record once it is closed: finished, or `None` for a deleted file.
    ///
    /// A file that handed open lines over stays unfinished until they are spooled (see
    /// `tailer::decoded`): a restart drains it again from its last quiet point.
    fn closing_checkpoint(&self) -> Option<Checkpoint> {
        if self.tailer.deleted() {
            return None;
        }
        let mut checkpoint = self.tailer.checkpoint();
        checkpoint.finished = self.handover.is_none();
        Some(checkpoint)
    }
}

impl Source {
    /// A file just opened, waiting for its turn.
    pub fn opened(
        path: &Path,
        file: File,
        key: FileKey,
        checkpoint: &Checkpoint,
        rules: Arc<LineRules>,
    ) -> Source {
        Source::whole(Full::opened(path, file, key, checkpoint, rules))
    }

    /// A file found after it left its name (renamed away before it was seen, or rotated while
    /// the agent was stopped): drained, then closed.
    pub fn rotated(
        path: &Path,
        file: File,
        key: FileKey,
        checkpoint: &Checkpoint,
        rules: Arc<LineRules>,
    ) -> Source {
        Source::whole(Full::rotated(path, file, key, checkpoint, rules))
    }

    fn whole(full: Full) -> Source {
        Source(Repr::Full(Box::new(full)))
    }

    /// The same, its file being its `.gz` decompressed (a rotated file found compressed).
    pub fn from_gz(mut self) -> Source {
        self.full().decompressed = true;
        self
    }

    /// The whole record, made from the compact one first if need be (for what only a whole
    /// record does: reading, handing lines over, shipping a partial line).
    fn full(&mut self) -> &mut Full {
        if let Repr::Parked(parked) = &self.0 {
            self.0 = Repr::Full(Box::new(parked.unpark()));
        }
        match &mut self.0 {
            Repr::Full(full) => full,
            // Made whole just above.
            Repr::Parked(_) => unreachable!(),
        }
    }

    /// Whether it is read from its `.gz`: its key may name another file on disk, and its
    /// descriptor's birth time is when it was decompressed.
    pub fn is_decompressed(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.decompressed,
            Repr::Parked(parked) => parked.decompressed,
        }
    }

    /// The path it was found under.
    pub fn path(&self) -> &Path {
        match &self.0 {
            Repr::Full(full) => full.tailer.path(),
            Repr::Parked(parked) => parked.tailer.path(),
        }
    }

    /// The path it was found under, shared (see [`Tailer::shared_path`]).
    pub fn shared_path(&self) -> &Arc<Path> {
        match &self.0 {
            Repr::Full(full) => full.tailer.shared_path(),
            Repr::Parked(parked) => parked.tailer.shared_path(),
        }
    }

    /// Which file it is.
    pub fn key(&self) -> FileKey {
        match &self.0 {
            Repr::Full(full) => full.tailer.key(),
            Repr::Parked(parked) => parked.tailer.key(),
        }
    }

    /// The head's fingerprint, once known.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        match &self.0 {
            Repr::Full(full) => full.tailer.fingerprint(),
            Repr::Parked(parked) => parked.tailer.fingerprint(),
        }
    }

    /// Truncations seen: the generation being read.
    pub fn generation(&self) -> u32 {
        match &self.0 {
            Repr::Full(full) => full.tailer.generation(),
            Repr::Parked(parked) => parked.tailer.generation(),
        }
    }

    /// Where reading would resume after a restart.
    pub fn checkpoint(&self) -> Checkpoint {
        match &self.0 {
            Repr::Full(full) => full.tailer.checkpoint(),
            Repr::Parked(parked) => parked.tailer.checkpoint(),
        }
    }

    /// Whether lines were shipped since the spool last took them (never so for a parked file).
    pub fn unspooled(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.tailer.unspooled(),
            Repr::Parked(_) => false,
        }
    }

    /// The checkpoints of older container logs whose open lines it carried, complete now.
    pub fn settled_predecessors(&self) -> &[(FileKey, Checkpoint)] {
        match &self.0 {
            Repr::Full(full) => full.tailer.settled_predecessors(),
            Repr::Parked(_) => &[],
        }
    }

    /// When its file was created, if its descriptor is open and the filesystem says.
    pub fn born(&self) -> Option<std::time::SystemTime> {
        match &self.0 {
            Repr::Full(full) => full.tailer.born(),
            Repr::Parked(_) => None,
        }
    }

    /// Whether its file is deleted (or its descriptor closed: then it cannot be told).
    pub fn deleted(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.tailer.deleted(),
            Repr::Parked(_) => true,
        }
    }

    /// The size of the file being read, if its descriptor is open.
    pub fn size(&self) -> Option<u64> {
        match &self.0 {
            Repr::Full(full) => full.tailer.size(),
            Repr::Parked(_) => None,
        }
    }

    /// The container source its lines are shipped as, if it is a container log.
    pub fn source_name(&self) -> Option<&Arc<str>> {
        match &self.0 {
            Repr::Full(full) => full.tailer.source_name(),
            Repr::Parked(_) => None,
        }
    }

    /// Parts of over-long lines, and undecodable entries of a container log, shipped since the
    /// last call.
    pub fn take_counts(&mut self) -> (u64, u64) {
        match &mut self.0 {
            Repr::Full(full) => full.take_counts(),
            Repr::Parked(_) => (0, 0),
        }
    }

    /// The spool now holds everything shipped so far, and the checkpoints of the older files
    /// whose open lines it carried.
    pub fn spooled(&mut self) {
        if let Repr::Full(full) = &mut self.0 {
            full.spooled();
        }
    }

    /// Takes the lines an older (finished) container log of its path left open.
    pub fn take_over(&mut self, handover: crate::tailer::Handover) {
        self.full().take_over(handover);
    }

    /// The file is gone: ships a last line that never got its newline, and the event being
    /// assembled.
    pub fn ship_partial(&mut self, host: &str, out: &mut Vec<Message>) -> std::io::Result<()> {
        self.full().ship_partial(host, out)
    }

    /// Something may have changed (an event named it, a scan or a wake-up for all): look at it
    /// in the next turn.
    pub fn mark_changed(&mut self) {
        *self.dirty() = true;
    }

    fn dirty(&mut self) -> &mut bool {
        match &mut self.0 {
            Repr::Full(full) => &mut full.dirty,
            Repr::Parked(parked) => &mut parked.dirty,
        }
    }

    /// Whether something may have changed since it was last read to its end.
    pub fn may_have_changed(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.dirty,
            Repr::Parked(parked) => parked.dirty,
        }
    }

    /// A read failed (said once by the reader): it is tried again on the next poll or event,
    /// not in this turn's loop.
    pub fn retry_later(&mut self) {
        *self.dirty() = false;
    }

    /// The spool refused the lines read this turn: they are read again from the last spooled
    /// position, in the next turn.
    pub fn reread_unspooled(&mut self) {
        self.full().reread_unspooled();
    }

    /// Whether inotify cannot see it change (set from the wake-ups of its directory).
    pub fn set_polled(&mut self, polled: bool) {
        match &mut self.0 {
            Repr::Full(full) => full.polled = polled,
            Repr::Parked(parked) => parked.polled = polled,
        }
    }

    /// Whether an older file of its path is still open (it is not read until that one is closed).
    pub fn is_held(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.held,
            Repr::Parked(parked) => parked.held,
        }
    }

    /// Holds it back behind an older file of its path (`true`), or lets it be read.
    pub fn set_held(&mut self, held: bool) {
        match &mut self.0 {
            Repr::Full(full) => full.held = held,
            Repr::Parked(parked) => parked.held = held,
        }
    }

    /// A newer file of its path has grown (`true`): the application moved on; said by the reader
    /// before each step of a draining file.
    pub fn set_moved_on(&mut self, moved_on: bool) {
        self.full().moved_on = moved_on;
    }

    /// A newer file of its path is open (`true`); said by the reader before each step of a
    /// draining file.
    pub fn set_successor(&mut self, successor: bool) {
        self.full().successor = successor;
    }

    /// The open lines of a finished container log, for the newer file of its path.
    pub fn take_handover(&mut self) -> Option<Handover> {
        match &mut self.0 {
            Repr::Full(full) => full.handover.take().map(|handover| *handover),
            Repr::Parked(_) => None,
        }
    }

    /// Whether it is known to have left its name (renamed away, deleted).
    pub fn has_left(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.left,
            Repr::Parked(parked) => parked.left,
        }
    }

    /// It was seen leaving its name (an event says it was renamed away, or the path names
    /// another file now).
    pub fn mark_left(&mut self) {
        match &mut self.0 {
            Repr::Full(full) => full.left = true,
            Repr::Parked(parked) => parked.left = true,
        }
    }

    /// Whether it holds a descriptor.
    pub fn is_open(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.tailer.is_open(),
            Repr::Parked(_) => false,
        }
    }

    /// Whether its descriptor may be closed for the budget: an active file read to its end
    /// (nothing new since), every line spooled, nothing the file alone could still give.
    pub fn closable(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.closable(),
            Repr::Parked(_) => false,
        }
    }

    /// Closes its descriptor for the budget, and keeps it as a compact record if nothing but
    /// its position is left to keep.
    pub fn park(&mut self) {
        if let Repr::Full(full) = &mut self.0 {
            full.park();
            if let Some(parked) = full.parked() {
                self.0 = Repr::Parked(parked);
            }
        }
    }

    /// Closed, and something says it changed: it asks for a descriptor (from now, unless it
    /// already waits).
    pub fn wake(&mut self) {
        match &mut self.0 {
            Repr::Full(full) => full.wake(),
            Repr::Parked(parked) => {
                parked.woken_at.get_or_insert_with(Moment::now);
            }
        }
    }

    /// Since when it waits for a descriptor, if it does.
    pub fn woken_at(&self) -> Option<Moment> {
        match &self.0 {
            Repr::Full(full) => full.woken_at(),
            Repr::Parked(parked) => parked.woken_at,
        }
    }

    /// When it last read bytes or got its descriptor back.
    pub fn active_at(&self) -> Moment {
        match &self.0 {
            Repr::Full(full) => full.active_at(),
            Repr::Parked(parked) => parked.tailer.last_growth(),
        }
    }

    /// Its descriptor back, the same (device, inode): read on from where it stopped
    /// (`draining`: found under another name, read to its end and closed).
    pub fn reopen(&mut self, file: File, draining: bool) {
        self.full().reopen(file, draining);
    }

    /// Whether it is being drained (its path names another file, or none).
    pub fn draining(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.draining(),
            Repr::Parked(_) => false,
        }
    }

    /// Bytes of its file read so far.
    pub fn read_position(&self) -> u64 {
        match &self.0 {
            Repr::Full(full) => full.tailer.read_position(),
            Repr::Parked(parked) => parked.tailer.read_position(),
        }
    }

    /// Whether its file holds bytes past what was read (a newer file the application writes).
    pub fn grown(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.grown(),
            Repr::Parked(_) => false,
        }
    }

    /// Whether it waits behind an older file of its path.
    pub fn waiting(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.waiting(),
            Repr::Parked(_) => false,
        }
    }

    /// Whether it must be looked at on every poll whatever the events say (draining files are
    /// renamed or unlinked: their events carry another name, or none; an event being
    /// assembled must be shipped when its timeout passes).
    pub fn busy(&self) -> bool {
        match &self.0 {
            Repr::Full(full) => full.busy(),
            Repr::Parked(parked) => parked.polled,
        }
    }

    /// A waiting file need not settle: an event named it (see [`SETTLE`]).
    pub fn settled(&mut self) {
        if let Repr::Full(full) = &mut self.0 {
            full.settled();
        }
    }

    /// How long a waiting file still settles before it may be read ([`SETTLE`]).
    pub fn settling(&self) -> Duration {
        match &self.0 {
            Repr::Full(full) => full.settling(),
            Repr::Parked(_) => Duration::ZERO,
        }
    }

    /// Reads `copy` (from the checkpoint on, as the same generation) before the file itself.
    pub fn read_copy_first(&mut self, copy: Option<File>) {
        self.full().pending_copy = copy;
    }

    /// The path's file from now on (every older file of its path is closed), once settled.
    pub fn activate(&mut self) {
        if let Repr::Full(full) = &mut self.0 {
            full.activate();
        }
    }

    /// Checks identity and truncation, then reads up to `budget` bytes into `out`.
    pub fn step(
        &mut self,
        host: &str,
        budget: usize,
        out: &mut Vec<Message>,
        metrics: &Metrics,
    ) -> std::io::Result<Step> {
        self.full().step(host, budget, out, metrics)
    }

    /// Where it is in its lifecycle, as `/status` shows it.
    pub fn lifecycle(&self) -> Lifecycle {
        match &self.0 {
            Repr::Full(full) => full.lifecycle(),
            Repr::Parked(_) => Lifecycle::Closed,
        }
    }

    /// The checkpoint to record once it is closed: finished, or `None` for a deleted file
    /// (and for one whose descriptor is closed, which cannot be told from one).
    ///
    /// A file that handed open lines over stays unfinished until they are spooled (see
    /// `tailer::decoded`): a restart drains it again from its last quiet point.
    pub fn closing_checkpoint(&self) -> Option<Checkpoint> {
        match &self.0 {
            Repr::Full(full) => full.closing_checkpoint(),
            Repr::Parked(_) => None,
        }
    }
}

#[cfg(test)]
impl Source {
    /// A file of one 7-byte line written at `path` now, opened from its start as the file
    /// `(1, ino)` (for tests).
    pub fn written(path: &Path, ino: u64) -> Source {
        std::fs::write(path, b"a line\n").unwrap();
        Source::opened(
            path,
            File::open(path).unwrap(),
            FileKey { dev: 1, ino },
            &Checkpoint::start(path),
            Arc::new(LineRules::plain(1024)),
        )
    }
}

mod parked;
