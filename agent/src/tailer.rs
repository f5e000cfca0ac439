//! The byte cursor of one open file: reads bytes from the checkpoint on, cuts them into lines,
//! and knows where it stands (offset, generation, fingerprint, partial line). Its lifecycle
//! (rotation, truncation, closing) belongs to [`crate::source`].
//!
//! Line rule: a line ends at `\n` (not shipped); its bytes are shipped exactly, `\r`, invalid
//! UTF-8 and NUL included. A line longer than `max_line_bytes` is shipped as consecutive parts of
//! exactly `max_line_bytes` bytes (the last part ends at the newline), each with its own offset,
//! so memory holds at most one part per file. A last line without a newline waits, and is
//! shipped when the file is finished (rotated away or deleted, and idle) or truncated (unless
//! the file was seen larger than what was read: then its rest is lost, see [`loss`]).
//!
//! Invariants: `offset` is just past the last byte shipped; bytes between `offset` and the read
//! position are the partial line, read again after a restart. The descriptor may be closed
//! while the file is idle ([`Tailer::close_file`], for the descriptor budget): everything else
//! stays, and reading goes on from the same position once [`Tailer::reopen`] gives it back.
//! A closed tailer with nothing but its position to keep can be held as a [`Parked`] record.
//! `spooled` is the last checkpoint the spool holds: [`Tailer::rewind`] goes back to it when a
//! spool write failed, so the lines shipped since are read again (same offsets, same message
//! ids). It is kept apart (boxed) only once the position moved past it: an idle file, whose
//! position is the spooled one, holds no copy.

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use logship_runtime::clock::now_ms;
use logship_runtime::{EnvelopeRef, FileId, SourceKind};
use thin_vec::ThinVec;

use crate::identity::{self, FileKey, Fingerprint};
use crate::line_rules::{Action, Event, LineRules};
use crate::moment::Moment;
use crate::spool::{Checkpoint, Offset};

/// Bytes read per `pread`.
const READ_CHUNK: usize = 64 << 10;

thread_local! {
    /// One read buffer per reader thread, not per file: 100k files must not hold 64 KiB each.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

use crate::spool::Message;

/// The read state of one open file.
pub struct Tailer {
    /// The path it was found under, sent as the envelope's `path`; one allocation per file,
    /// shared with the reader's index of paths and the `/status` snapshot.
    path: Arc<Path>,
    /// What is read (the file itself, or for a while its copytruncate copy) and what a look
    /// at it last found; `None` while the descriptor is closed for the budget. Boxed: of 100k
    /// files only the budget's few hundred hold one (issue 27 item 4).
    file: Option<Box<Descriptor>>,
    key: FileKey,
    fingerprint: Option<Fingerprint>,
    generation: u32,
    offset: Offset,
    /// Lines joined into an event, not shipped yet (see [`crate::line_rules`]); boxed, and only
    /// while one is assembled: most files never hold one.
    event: Option<Box<Event>>,
    /// The checkpoint this tailer resumed at is in the middle of a cut event.
    resume_mid_event: bool,
    /// The line being cut (one pointer: see `thin_vec`; an idle file holds no allocation).
    partial: ThinVec<u8>,
    rules: Arc<LineRules>,
    /// When a read last returned bytes.
    last_growth: Moment,
    /// Parts of over-long lines shipped since the caller last took this count (taken every
    /// turn: 32 bits are plenty, and pack beside the generations).
    parts: u32,
    /// Where the checkpoint the spool holds stands (its path is `path`), once the position
    /// moved past it; `None`: the position (offset, generation, fingerprint, claim end) is the
    /// spooled one.
    spooled: Option<Box<Spooled>>,
    /// The spooled checkpoint is in the middle of a cut event.
    spooled_mid_event: bool,
    /// The largest size a look found it at, not truncated, in generation `seen_generation`:
    /// what a truncation without a copy provably lost lies below it (see [`loss`]). Two
    /// fields, not a tuple, so the generation packs beside the other 32-bit fields.
    seen: u64,
    seen_generation: u32,
    /// Where the last shipped message's claim ends, which is where the collector's hole
    /// starts if the rest is lost (see [`loss`]).
    claim_end: Offset,
    /// A container log's decoder and labels (see [`crate::container`]); `None` for plain lines.
    container: Option<Box<Container>>,
}

impl Tailer {
    /// A tailer reading `file` from `checkpoint`.
    pub fn new(
        path: &Path,
        file: File,
        key: FileKey,
        checkpoint: &Checkpoint,
        rules: Arc<LineRules>,
    ) -> Tailer {
        // The head is taken at open when the file already has it, so a truncation that comes
        // before the first read (the file was held behind an older one) is still noticed.
        let fingerprint = match checkpoint.fingerprint {
            None if checkpoint.offset == 0 => identity::fingerprint(&file, false).ok().flatten(),
            known => known,
        };
        // The head taken at open is not the spool's yet: a rewind forgets it, as it forgets
        // what was read since.
        let spooled = (fingerprint != checkpoint.fingerprint).then(|| {
            Box::new(Spooled {
                offset: checkpoint.offset,
                generation: checkpoint.generation,
                fingerprint: checkpoint.fingerprint,
                claim_end: checkpoint.offset,
            })
        });
        Tailer {
            path: Arc::from(path),
            file: Some(Descriptor::new(file)),
            key,
            fingerprint,
            generation: checkpoint.generation,
            offset: checkpoint.offset,
            event: None,
            resume_mid_event: checkpoint.mid_event,
            partial: ThinVec::new(),
            last_growth: Moment::now(),
            parts: 0,
            spooled,
            spooled_mid_event: checkpoint.mid_event,
            seen: 0,
            seen_generation: checkpoint.generation,
            claim_end: checkpoint.offset,
            container: Container::of(path, &rules),
            rules,
        }
    }

    /// The path the file was found under.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path the file was found under, shared (an index keyed by it costs no copy).
    pub fn shared_path(&self) -> &Arc<Path> {
        &self.path
    }

    /// Which file this is.
    pub fn key(&self) -> FileKey {
        self.key
    }

    /// The head's fingerprint, once a line was shipped.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint
    }

    /// Whether closing the descriptor now loses nothing: every line read is spooled, no event
    /// is being assembled, and a partial line could still be shipped without the file.
    pub fn closable(&self) -> bool {
        self.is_open()
            && !self.unspooled()
            && !self.holds_event()
            && (self.partial.is_empty() || self.fingerprint.is_some())
    }

    /// When a read last returned bytes.
    pub fn last_growth(&self) -> Moment {
        self.last_growth
    }

    /// Parts of over-long lines shipped since the last call.
    pub fn take_parts(&mut self) -> u64 {
        u64::from(std::mem::take(&mut self.parts))
    }

    /// The spool now holds everything shipped so far.
    pub fn spooled(&mut self) {
        self.spooled = None;
        self.spooled_mid_event = self.mid_event();
        if let Some(container) = &mut self.container {
            container.joiner.spooled();
        }
    }

    /// The position is about to move: the spooled one is kept apart first, for a rewind.
    fn keep_spooled(&mut self) {
        if self.spooled.is_none() {
            self.spooled = Some(Box::new(Spooled {
                offset: self.offset,
                generation: self.generation,
                fingerprint: self.fingerprint,
                claim_end: self.claim_end,
            }));
        }
    }

    /// Whether lines were shipped (or the generation changed) since the spool last took them.
    pub fn unspooled(&self) -> bool {
        self.spooled
            .as_ref()
            .is_some_and(|s| s.offset != self.offset || s.generation != self.generation)
            || self.container.as_ref().is_some_and(|c| c.joiner.shipped())
    }

    /// Back to the checkpoint the spool holds: what was shipped since is read again.
    pub fn rewind(&mut self) {
        if let Some(spooled) = self.spooled.take() {
            self.offset = spooled.offset;
            self.generation = spooled.generation;
            self.fingerprint = spooled.fingerprint;
            self.claim_end = spooled.claim_end;
        }
        self.partial.clear();
        self.event = None;
        self.reset_container();
        self.resume_mid_event = self.spooled_mid_event;
        self.forget_head_check();
    }

    /// Where reading would resume after a restart.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            offset: self.offset,
            generation: self.generation,
            fingerprint: self.fingerprint,
            path: self.path.to_path_buf(),
            finished: false,
            mid_event: self.mid_event(),
        }
    }

    /// Truncations seen: the generation being read.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether the checkpoint is in the middle of a cut event.
    fn mid_event(&self) -> bool {
        self.event.as_ref().is_some_and(|e| e.cut && !e.is_empty())
    }

    /// The next byte to read.
    fn read_pos(&self) -> u64 {
        self.offset
            + self.event.as_ref().map_or(0, |e| e.consumed)
            + self.container.as_ref().map_or(0, |c| c.joiner.held())
            + self.partial.len() as u64
    }

    /// Reads up to `budget` bytes and appends the complete lines to `out`. Returns the bytes read.
    pub fn read(
        &mut self,
        host: &str,
        budget: usize,
        out: &mut Vec<Message>,
    ) -> std::io::Result<usize> {
        let mut total = 0;
        SCRATCH.with_borrow_mut(|buf| {
            while total < budget {
                let position = self.read_pos();
                let n = self.file()?.read_at(buf, position)?;
                if n == 0 {
                    break;
                }
                total += n;
                self.cut(host, &buf[..n], out)?;
            }
            Ok::<(), std::io::Error>(())
        })?;
        if total > 0 {
            self.last_growth = Moment::now();
        }
        Ok(total)
    }

    /// Cuts `bytes` (which follow the partial line) into lines and parts.
    fn cut(&mut self, host: &str, mut bytes: &[u8], out: &mut Vec<Message>) -> std::io::Result<()> {
        let max_line = self.max_raw_line();
        while !bytes.is_empty() {
            let room = max_line - self.partial.len();
            match bytes.iter().take(room + 1).position(|&b| b == b'\n') {
                Some(newline) if newline <= room => {
                    self.partial.extend_from_slice(&bytes[..newline]);
                    bytes = &bytes[newline + 1..];
                    self.line_done(host, 1, false, out)?;
                }
                // Only when a byte past the part is in sight and is not the newline, so the cut
                // does not depend on where a read happened to end.
                _ if bytes.len() > room => {
                    self.partial.extend_from_slice(&bytes[..room]);
                    bytes = &bytes[room..];
                    self.parts = self.parts.saturating_add(1);
                    self.line_done(host, 0, true, out)?;
                }
                _ => {
                    self.partial.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
        Ok(())
    }

    /// A line is complete in `partial` (`terminator`: its newline's length, 0 for a part of an
    /// over-long line or a last line without one): ship it, or add it to the event.
    fn line_done(
        &mut self,
        host: &str,
        terminator: u64,
        part: bool,
        out: &mut Vec<Message>,
    ) -> std::io::Result<()> {
        if self.container.is_some() {
            return self.entry_done(host, terminator, out);
        }
        let mut line = std::mem::take(&mut self.partial);
        let consumed = line.len() as u64 + terminator;
        let resumed_mid_event = std::mem::take(&mut self.resume_mid_event);
        let action = if part {
            Action::Alone
        } else if resumed_mid_event && !self.holds_event() {
            // The rest of a cut event, read again after a restart: as it was the first time.
            Action::Resume
        } else {
            let none = Event::default();
            self.event
                .as_deref()
                .unwrap_or(&none)
                .decide(&self.rules, &line)
        };
        match action {
            Action::Alone => {
                self.flush_event(host, out)?;
                self.emit(host, &line, consumed, out)?;
            }
            Action::Start => {
                self.flush_event(host, out)?;
                self.assembling().start(&line, consumed, false);
            }
            Action::Resume => self.assembling().start(&line, consumed, true),
            Action::Append => self.assembling().append(&line, consumed),
            Action::Cut => {
                self.flush_event(host, out)?;
                self.parts = self.parts.saturating_add(1);
                self.assembling().start(&line, consumed, true);
            }
        }
        line.clear();
        self.partial = line;
        Ok(())
    }

    /// The event being assembled, made if none is.
    fn assembling(&mut self) -> &mut Event {
        self.event.get_or_insert_with(Box::default)
    }

    /// Ships the event being assembled, if any.
    fn flush_event(&mut self, host: &str, out: &mut Vec<Message>) -> std::io::Result<()> {
        let Some(event) = self.event.take() else {
            return Ok(());
        };
        if event.is_empty() {
            return Ok(());
        }
        self.emit(host, &event.bytes, event.consumed, out)
    }

    /// Ships an event that got no new line for the input's `timeout`.
    pub fn flush_stale(&mut self, host: &str, out: &mut Vec<Message>) -> std::io::Result<()> {
        let stale = match (
            &self.rules.multiline,
            self.event.as_ref().and_then(|e| e.last),
        ) {
            (Some(multiline), Some(last)) => last.elapsed() >= multiline.timeout,
            _ => false,
        };
        if stale {
            self.flush_event(host, out)?;
        }
        Ok(())
    }

    /// Whether an event is being assembled (it needs a look when its timeout passes).
    pub fn holds_event(&self) -> bool {
        self.event.as_ref().is_some_and(|e| !e.is_empty())
            || self
                .container
                .as_ref()
                .is_some_and(|c| !c.joiner.is_quiet())
    }

    /// Ships `line` (the message at `offset`), which took `consumed` bytes of the file.
    fn emit(
        &mut self,
        host: &str,
        line: &[u8],
        consumed: u64,
        out: &mut Vec<Message>,
    ) -> std::io::Result<()> {
        self.keep_spooled();
        let fingerprint = match self.fingerprint {
            Some(fp) => fp,
            None => {
                // The head is complete: a line (or 1 KiB, or a part) was just read in full.
                let fp = identity::fingerprint(self.file()?, true)?
                    .unwrap_or(Fingerprint { hash: 0, len: 0 });
                self.fingerprint = Some(fp);
                fp
            }
        };
        out.push(self.message(host, fingerprint, self.offset, line, SourceKind::File));
        self.claim_end = self.offset + line.len() as u64 + 1;
        self.offset += consumed;
        Ok(())
    }

    /// The message of `line` (of `kind`) at `offset` of this file's generation.
    fn message(
        &self,
        host: &str,
        fingerprint: Fingerprint,
        offset: Offset,
        line: &[u8],
        kind: SourceKind,
    ) -> Message {
        if let Some(container) = &self.container {
            // A marker of a container log: under its source name.
            let labels = &container.labels;
            return self.message_as(
                host,
                labels.source(),
                labels.fields(None),
                fingerprint,
                offset,
                line,
                kind,
            );
        }
        self.message_as(
            host,
            &self.path.to_string_lossy(),
            &self.rules.fields,
            fingerprint,
            offset,
            line,
            kind,
        )
    }

    /// The message of `line` (of `kind`) at `offset`, under the source name `path` with
    /// `fields`.
    #[allow(clippy::too_many_arguments)]
    fn message_as(
        &self,
        host: &str,
        path: &str,
        fields: &std::collections::BTreeMap<String, String>,
        fingerprint: Fingerprint,
        offset: Offset,
        line: &[u8],
        kind: SourceKind,
    ) -> Message {
        let envelope = EnvelopeRef {
            host,
            // Borrowed unless the path is not UTF-8: no allocation per line.
            path,
            file: FileId {
                dev: self.key.dev,
                ino: self.key.ino,
                fp: fingerprint.hash,
            },
            generation: self.generation,
            offset,
            timestamp_ms: now_ms(),
            line,
            fields,
            kind,
        };
        Message::of(&envelope)
    }

    /// The file is finished or truncated: ships a last line that never got its newline, and
    /// the event being assembled.
    pub fn ship_partial(&mut self, host: &str, out: &mut Vec<Message>) -> std::io::Result<()> {
        if !self.partial.is_empty() {
            self.line_done(host, 0, false, out)?;
        }
        self.finish_container(host, out)?;
        self.flush_event(host, out)
    }

    /// The file is finished, and a newer file of its path follows (`successor`): ships what
    /// [`Tailer::ship_partial`] ships, but the lines of a container log still open, which go
    /// on in the newer file (see [`decoded`]).
    pub fn finish(
        &mut self,
        host: &str,
        successor: bool,
        out: &mut Vec<Message>,
    ) -> std::io::Result<Option<Handover>> {
        if !self.partial.is_empty() {
            self.line_done(host, 0, false, out)?;
        }
        let handover = if successor { self.handover() } else { None };
        self.ship_partial(host, out)?;
        Ok(handover)
    }

    /// Whether the file was truncated (shorter than what we read) or replaced in place (its head
    /// no longer matches the fingerprint).
    pub fn truncated(&mut self) -> std::io::Result<bool> {
        let meta = self.file()?.metadata()?;
        let len = meta.len();
        if len < self.read_pos() {
            return Ok(true);
        }
        // Unchanged since the head last matched: no need to read it again (idle files cost a
        // fstat per look, not a read).
        // Without an mtime the head is read on every look.
        let stamp = meta.modified().ok().map(|mtime| (len, mtime));
        if stamp.is_some() && self.head_checked() == stamp {
            self.note_size(len);
            return Ok(false);
        }
        let truncated = match self.fingerprint {
            Some(fp) if fp.len > 0 => !identity::matches(self.file()?, fp)?,
            _ => false,
        };
        let checked = stamp.filter(|_| !truncated && self.fingerprint.is_some());
        self.set_head_checked(checked);
        if !truncated {
            self.note_size(len);
        }
        Ok(truncated)
    }

    /// Starts a new generation at offset 0, after a truncation.
    pub fn restart(&mut self) {
        self.keep_spooled();
        self.generation = self.generation.wrapping_add(1);
        self.offset = 0;
        self.partial.clear();
        self.event = None;
        self.reset_container();
        self.resume_mid_event = false;
        self.fingerprint = None;
        self.forget_head_check();
        self.claim_end = 0;
    }

    /// Bytes read past the checkpoint.
    pub fn read_position(&self) -> u64 {
        self.read_pos()
    }
}

/// The part of the spool's checkpoint a rewind needs (the path is the tailer's own: 100k files
/// must not hold a second copy each; `mid_event` is the tailer's `spooled_mid_event`).
struct Spooled {
    offset: Offset,
    generation: u32,
    fingerprint: Option<Fingerprint>,
    claim_end: Offset,
}

mod decoded;
mod descriptor;
mod loss;
mod parked;

use decoded::Container;
pub use decoded::Handover;
use descriptor::Descriptor;
pub use parked::Parked;
#[cfg(test)]
mod tests;
