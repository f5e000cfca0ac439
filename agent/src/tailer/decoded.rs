//! The tailer's side of a container log (see [`crate::container`]): each line the tailer cuts
//! is an entry for the joiner, the lines it gives are shipped under the container's labels, and
//! the checkpoint moves only at quiet points.
//!
//! A runtime rotates a file between the pieces of a line (Docker checks the size before each
//! entry). The finished file then hands its open lines over ([`Handover`]) to the next file of
//! its path, whose first pieces of those streams complete them (with the older file's offset and
//! id). Invariant: the older file's checkpoint stays unfinished, at its last quiet point, until
//! the newer file's checkpoint has moved past the carried lines, and both go into the spool in
//! one batch; after a kill -9 in between the older file is drained again from that point and
//! hands the same lines over again to the newer file, read again from where it started.

use std::path::Path;

use logship_config::agent::Format;
use logship_runtime::clock::now_ms;
use logship_runtime::{EnvelopeRef, FileId, SourceKind};

use super::Tailer;
use crate::container::{Carry, Decoded, Joiner, Labels, Origin};
use crate::identity::{self, FileKey, Fingerprint};
use crate::line_rules::LineRules;
use crate::spool::{Checkpoint, Message, Offset};

/// An entry of a container log may be this much longer than the text it holds (JSON escapes
/// take up to six bytes per byte, plus the entry's other fields): the raw line limit is
/// `max_line_bytes` times this, plus [`ENTRY_OVERHEAD`].
const ESCAPE_FACTOR: usize = 6;
/// The bytes of an entry around its text (time, stream, tags, attributes), at most.
const ENTRY_OVERHEAD: usize = 64 << 10;

/// A container log's decoder and labels.
pub(super) struct Container {
    format: Format,
    pub(super) labels: Labels,
    pub(super) joiner: Joiner,
    /// Lines an older file of the path left open, until they are complete and spooled.
    carried: Option<Carried>,
}

/// What a finished container log hands to the next file of its path.
#[derive(Debug)]
pub struct Handover {
    carry: Carry,
    /// The older files whose checkpoints are finished once the carried lines are spooled
    /// (with those finished checkpoints).
    predecessors: Vec<(FileKey, Checkpoint)>,
}

/// Lines carried over from older files, kept whole for a rewind until settled.
#[derive(Debug)]
struct Carried {
    handover: Handover,
    /// This file's checkpoint when it took them (it stays there while they are open).
    start: Offset,
}

impl Container {
    /// The decoder of the file at `path`, if its input reads a container format.
    pub(super) fn of(path: &Path, rules: &LineRules) -> Option<Box<Container>> {
        if rules.format == Format::Lines {
            return None;
        }
        let (labels, problem) = Labels::of(rules.format, path, &rules.fields);
        if let Some(problem) = problem {
            tracing::warn!(path = %path.display(), source = labels.source(), %problem,
                "container metadata incomplete, its lines are named after what the path gives");
        }
        Some(Box::new(Container {
            format: rules.format,
            labels,
            joiner: Joiner::default(),
            carried: None,
        }))
    }
}

impl Tailer {
    /// The longest line cut from the file: an entry of a container log holds up to
    /// `max_line_bytes` of text, encoded.
    pub(super) fn max_raw_line(&self) -> usize {
        match self.container {
            None => self.rules.max_line,
            Some(_) => self
                .rules
                .max_line
                .saturating_mul(ESCAPE_FACTOR)
                .saturating_add(ENTRY_OVERHEAD),
        }
    }

    /// The source a container log's lines are shipped as (`None`: a plain file).
    pub fn source_name(&self) -> Option<&std::sync::Arc<str>> {
        self.container.as_ref().map(|c| c.labels.shared_source())
    }

    /// Whether it reads a container runtime's log (rotated by rename, never copied).
    pub fn is_container_log(&self) -> bool {
        self.container.is_some()
    }

    /// Forgets what the decoder holds past the checkpoint (it is read again from there); the
    /// lines carried over from an older file, not yet settled, are open again.
    pub(super) fn reset_container(&mut self) {
        if let Some(container) = &mut self.container {
            container.joiner.reset();
            if let Some(carried) = &container.carried {
                container.joiner.accept(&carried.handover.carry);
            }
        }
    }

    /// The file is finished and a newer file of its path follows: the lines it leaves open
    /// (and those it carries from older files) go there. `None`: nothing open.
    pub fn handover(&mut self) -> Option<Handover> {
        let origin = Origin {
            file: FileId {
                dev: self.key.dev,
                ino: self.key.ino,
                fp: self.fingerprint?.hash,
            },
            generation: self.generation,
        };
        let mut finished = self.checkpoint();
        finished.finished = true;
        let container = self.container.as_mut()?;
        let carry = container.joiner.carry(origin)?;
        let mut predecessors = container
            .carried
            .take()
            .map(|c| c.handover.predecessors)
            .unwrap_or_default();
        predecessors.push((self.key, finished));
        Some(Handover {
            carry,
            predecessors,
        })
    }

    /// Takes the lines an older file of the path left open.
    pub fn take_over(&mut self, handover: Handover) {
        let start = self.offset;
        if let Some(container) = &mut self.container {
            container.joiner.accept(&handover.carry);
            container.carried = Some(Carried { handover, start });
        }
    }

    /// The older files' finished checkpoints, once the lines carried from them are complete
    /// and this file's checkpoint moved past them: to be spooled with this file's.
    pub fn settled_predecessors(&self) -> &[(FileKey, Checkpoint)] {
        let Some(container) = &self.container else {
            return &[];
        };
        match &container.carried {
            Some(carried) if !container.joiner.carrying() && self.offset != carried.start => {
                &carried.handover.predecessors
            }
            _ => &[],
        }
    }

    /// The settled predecessors' checkpoints are spooled: nothing carried is kept any more.
    pub fn predecessors_spooled(&mut self) {
        if !self.settled_predecessors().is_empty()
            && let Some(container) = &mut self.container
        {
            container.carried = None;
        }
    }

    /// Undecodable entries of a container log since the last call.
    pub fn take_invalid(&mut self) -> u64 {
        self.container
            .as_mut()
            .map_or(0, |c| c.joiner.take_invalid())
    }

    /// An entry is complete in `partial` (`terminator`: its newline's length): decode it, ship
    /// what it completes, and move the checkpoint if no line is open any more.
    pub(super) fn entry_done(
        &mut self,
        host: &str,
        terminator: u64,
        out: &mut Vec<Message>,
    ) -> std::io::Result<()> {
        let Some(mut container) = self.container.take() else {
            return Ok(());
        };
        let raw = std::mem::take(&mut self.partial);
        let consumed = raw.len() as u64 + terminator;
        let result = self.decode(host, &mut container, &raw, consumed, out);
        self.container = Some(container);
        self.partial = raw;
        self.partial.clear();
        result
    }

    fn decode(
        &mut self,
        host: &str,
        container: &mut Container,
        raw: &[u8],
        consumed: u64,
        out: &mut Vec<Message>,
    ) -> std::io::Result<()> {
        // The position moves (lines are shipped, or the checkpoint moves at a quiet point).
        self.keep_spooled();
        let fingerprint = self.head()?;
        let start = self.offset + container.joiner.held();
        let Container {
            format,
            labels,
            joiner,
            ..
        } = container;
        let mut claim_end = self.claim_end;
        let (parts, invalid) = joiner.entry(
            *format,
            raw,
            start,
            consumed,
            self.rules.max_line,
            &mut |line: Decoded<'_>| {
                if line.origin.is_none() {
                    claim_end = claim_end.max(line.end);
                }
                out.push(self.decoded_message(host, labels, fingerprint, &line));
            },
        );
        self.claim_end = claim_end;
        self.parts = self
            .parts
            .saturating_add(u32::try_from(parts).unwrap_or(u32::MAX));
        if let Some(reason) = invalid {
            tracing::warn!(path = %self.path.display(), offset = start, %reason,
                "container log entry cannot be decoded, shipped as it is (said once per file, counted)");
        }
        if joiner.is_quiet() {
            self.offset += joiner.take_held();
        }
        Ok(())
    }

    /// The file is finished: ships the lines still open, as they are.
    pub(super) fn finish_container(
        &mut self,
        host: &str,
        out: &mut Vec<Message>,
    ) -> std::io::Result<()> {
        let Some(mut container) = self.container.take() else {
            return Ok(());
        };
        let result = self.finish_open(host, &mut container, out);
        self.container = Some(container);
        result
    }

    fn finish_open(
        &mut self,
        host: &str,
        container: &mut Container,
        out: &mut Vec<Message>,
    ) -> std::io::Result<()> {
        if container.joiner.is_quiet() {
            return Ok(());
        }
        self.keep_spooled();
        let fingerprint = self.head()?;
        let Container { labels, joiner, .. } = container;
        let mut claim_end = self.claim_end;
        joiner.finish(&mut |line: Decoded<'_>| {
            if line.origin.is_none() {
                claim_end = claim_end.max(line.end);
            }
            out.push(self.decoded_message(host, labels, fingerprint, &line));
        });
        self.claim_end = claim_end;
        self.offset += joiner.take_held();
        Ok(())
    }

    /// The message of a decoded line, under the container's labels.
    fn decoded_message(
        &self,
        host: &str,
        labels: &Labels,
        fingerprint: Fingerprint,
        line: &Decoded<'_>,
    ) -> Message {
        if let Some(origin) = line.origin {
            let envelope = EnvelopeRef {
                host,
                path: labels.source(),
                file: origin.file,
                generation: origin.generation,
                offset: line.at,
                timestamp_ms: now_ms(),
                line: line.text,
                fields: labels.fields(line.stream),
                kind: SourceKind::Entry { end: line.end },
            };
            return Message::of(&envelope);
        }
        self.message_as(
            host,
            labels.source(),
            labels.fields(line.stream),
            fingerprint,
            line.at,
            line.text,
            SourceKind::Entry { end: line.end },
        )
    }

    /// The head's fingerprint, taken now if it is not yet (a whole entry was just read).
    fn head(&mut self) -> std::io::Result<Fingerprint> {
        if let Some(fp) = self.fingerprint {
            return Ok(fp);
        }
        let fp =
            identity::fingerprint(self.file()?, true)?.unwrap_or(Fingerprint { hash: 0, len: 0 });
        self.fingerprint = Some(fp);
        Ok(fp)
    }
}
