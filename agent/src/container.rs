//! Container logs: files a container runtime writes in its own format (Docker's json-file, the
//! CRI format of containerd and CRI-O), read as files are (same identity, offsets, rotation and
//! spool) with a decoder between the file's lines and the messages shipped.
//!
//! Each line of such a file is an entry: a line of one stream (stdout, stderr), or a piece of
//! one (the runtime cuts long lines at 16 KiB). [`Joiner`] joins the pieces of a stream into its
//! line, never across streams: the other stream's entries in between are lines of their own.
//!
//! Offsets and claims. A line's offset (and so its message id) is that of its first piece. It
//! claims (envelope v4, `end`) the raw entries from its first piece on up to the first entry of
//! another line: pieces that come after the other stream's entry are not claimed again, so no
//! two lines of a file claim the same byte and a line read twice claims the same part.
//!
//! Invariant (exactly once through a kill -9): the checkpoint moves only to an entry boundary
//! where no line is open (no stream holds a piece), "a quiet point". Lines shipped past it are
//! read again after a restart with the same offsets, ids and claims (duplicates the collector
//! drops), and a line is never read again from its middle. So the decoder's state at a
//! checkpoint is empty, and what it does from there depends only on the file's bytes.
//!
//! Bounds: a joined line longer than `max_line_bytes` is cut (the parts counted as split); a
//! single piece longer than that is shipped in parts whose offsets are the entry's plus the
//! part's index (inside the entry, so unique). An entry that is not the runtime's format is
//! shipped as it is, as a line of no stream; the reason is counted and said once per file.

pub mod entry;
pub mod meta;
pub mod rotation;

use std::collections::BTreeMap;
use std::path::Path;

use logship_config::agent::Format;
use logship_runtime::FileId;

pub use entry::{Invalid, Stream};

use crate::spool::Offset;

/// A line decoded from a container log, ready to ship.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// `None`: an entry that could not be decoded, shipped as it is.
    pub stream: Option<Stream>,
    /// Its first piece's offset.
    pub at: Offset,
    /// Where the part of the file it claims ends.
    pub end: Offset,
    pub text: &'a [u8],
    /// The older file of its path its first piece is in (`None`: this file).
    pub origin: Option<Origin>,
}

/// The file (and generation) a line's first piece is in, when the runtime rotated the file
/// between its pieces: the line keeps that file's offset and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub file: FileId,
    pub generation: u32,
}

/// The lines a finished file left open, for the next file of its path (the runtime rotated it
/// between their pieces).
#[derive(Debug, Clone)]
pub struct Carry {
    open: Vec<(Stream, Open)>,
}

/// The envelope `path` and `fields` of a container's lines.
#[derive(Debug)]
pub struct Labels {
    /// The envelope's `path`, shared with the `/status` snapshot.
    source: std::sync::Arc<str>,
    /// The input's fields with the container's, and `stream`: [stdout, stderr, undecodable].
    fields: [BTreeMap<String, String>; 3],
}

impl Labels {
    /// The labels of the container whose log `path` is, over the input's `fields`; and why the
    /// runtime's metadata could not be read, if it could not.
    pub fn of(
        format: Format,
        path: &Path,
        input: &BTreeMap<String, String>,
    ) -> (Labels, Option<String>) {
        let meta = meta::of(format, path);
        let mut base = input.clone();
        base.extend(meta.fields);
        let with_stream = |stream: Stream| {
            let mut fields = base.clone();
            fields.insert("stream".into(), stream.name().into());
            fields
        };
        let fields = [
            with_stream(Stream::Stdout),
            with_stream(Stream::Stderr),
            base.clone(),
        ];
        let labels = Labels {
            source: meta.source.into(),
            fields,
        };
        (labels, meta.problem)
    }

    /// The envelope's `path`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The envelope's `path`, shared.
    pub fn shared_source(&self) -> &std::sync::Arc<str> {
        &self.source
    }

    /// The envelope's `fields` of a line of `stream` (`None`: undecodable).
    pub fn fields(&self, stream: Option<Stream>) -> &BTreeMap<String, String> {
        &self.fields[stream.map_or(2, Stream::index)]
    }
}

/// A line being joined: its pieces so far.
#[derive(Debug, Clone)]
struct Open {
    /// The older file it began in, if not this one.
    origin: Option<Origin>,
    at: Offset,
    /// Where its claim ends so far.
    end: Offset,
    /// No other line's entry came since its first piece: its next piece extends its claim.
    claiming: bool,
    text: Vec<u8>,
}

/// The decoder of one file: the lines being joined, per stream.
#[derive(Debug, Default)]
pub struct Joiner {
    open: [Option<Open>; 2],
    /// Bytes of entries read past the checkpoint (which stays at the last quiet point).
    held: u64,
    /// Lines were shipped since the spool last took the file's lines.
    shipped: bool,
    /// Undecodable entries since the caller last took the count.
    invalid: u64,
    /// The first reason an entry could not be decoded was said (once per file).
    said: bool,
}

impl Joiner {
    /// Bytes read past the checkpoint.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Whether no stream holds a piece: the checkpoint may move to the read position.
    pub fn is_quiet(&self) -> bool {
        self.open.iter().all(Option::is_none)
    }

    /// At a quiet point: the bytes the checkpoint moves by (the count starts again).
    pub fn take_held(&mut self) -> u64 {
        std::mem::take(&mut self.held)
    }

    /// Whether a line was shipped since [`Joiner::spooled`].
    pub fn shipped(&self) -> bool {
        self.shipped
    }

    /// The spool took every line shipped.
    pub fn spooled(&mut self) {
        self.shipped = false;
    }

    /// Undecodable entries since the last call.
    pub fn take_invalid(&mut self) -> u64 {
        std::mem::take(&mut self.invalid)
    }

    /// Forgets everything read past the checkpoint (read again from there).
    pub fn reset(&mut self) {
        self.open = [None, None];
        self.held = 0;
        self.shipped = false;
    }

    /// Takes one entry: its bytes `raw` (without newline), at `start`, `consumed` bytes of the
    /// file with its newline; complete lines go to `ship` in the order they complete. Returns
    /// the parts of over-long lines shipped, and the reason the entry could not be decoded
    /// when it is the first such entry of the file (to be said once).
    pub fn entry(
        &mut self,
        format: Format,
        raw: &[u8],
        start: Offset,
        consumed: u64,
        max_line: usize,
        ship: &mut dyn FnMut(Decoded<'_>),
    ) -> (u64, Option<Invalid>) {
        let end = start + consumed;
        self.held += consumed;
        let decoded = match format {
            Format::Docker => entry::docker(raw),
            Format::Cri => entry::cri(raw),
            Format::Lines => Err(Invalid::NotCri),
        };
        let entry = match decoded {
            Ok(entry) => entry,
            Err(reason) => {
                self.interrupt(None);
                self.invalid += 1;
                self.shipped = true;
                ship(Decoded {
                    stream: None,
                    at: start,
                    end,
                    text: raw,
                    origin: None,
                });
                let first = !std::mem::replace(&mut self.said, true);
                return (0, first.then_some(reason));
            }
        };
        self.interrupt(Some(entry.stream));
        let index = entry.stream.index();
        if entry.ends_line && self.open[index].is_none() && entry.text.len() <= max_line {
            // Most entries are whole lines: shipped without a copy.
            self.shipped = true;
            ship(Decoded {
                stream: Some(entry.stream),
                at: start,
                end,
                text: &entry.text,
                origin: None,
            });
            return (0, None);
        }
        let parts = self.piece(entry.stream, &entry.text, start, end, max_line, ship);
        if entry.ends_line
            && let Some(open) = self.open[index].take()
        {
            self.shipped = true;
            ship(Decoded {
                stream: Some(entry.stream),
                at: open.at,
                end: open.end,
                text: &open.text,
                origin: open.origin,
            });
        }
        (parts, None)
    }

    /// An entry of another line than the open ones of streams other than `stream` came: their
    /// claims end where they are.
    fn interrupt(&mut self, stream: Option<Stream>) {
        for (index, open) in self.open.iter_mut().enumerate() {
            if stream.is_none_or(|s| s.index() != index)
                && let Some(open) = open
            {
                open.claiming = false;
            }
        }
    }

    /// Adds a piece of `stream` (the entry `[start, end)`) to its open line, opening one if
    /// none is; ships parts when the line would pass `max_line`. Returns the parts shipped.
    fn piece(
        &mut self,
        stream: Stream,
        mut text: &[u8],
        start: Offset,
        end: Offset,
        max_line: usize,
        ship: &mut dyn FnMut(Decoded<'_>),
    ) -> u64 {
        let slot = &mut self.open[stream.index()];
        let mut parts = 0;
        if let Some(open) = slot {
            if open.text.len() + text.len() <= max_line {
                open.text.extend_from_slice(text);
                if open.claiming {
                    open.end = end;
                }
                return 0;
            }
            // Past the limit: what is joined so far is a part; this piece starts the next.
            if let Some(open) = slot.take() {
                parts += 1;
                self.shipped = true;
                ship(Decoded {
                    stream: Some(stream),
                    at: open.at,
                    end: open.end,
                    text: &open.text,
                    origin: open.origin,
                });
            }
        }
        // A piece longer than a line may be: parts at the entry's offset plus their index,
        // each claiming one byte (the entry is longer than its text, so they stay inside it).
        let mut at = start;
        while text.len() > max_line {
            parts += 1;
            self.shipped = true;
            ship(Decoded {
                stream: Some(stream),
                at,
                end: at + 1,
                text: &text[..max_line],
                origin: None,
            });
            text = &text[max_line..];
            at += 1;
        }
        self.open[stream.index()] = Some(Open {
            origin: None,
            at,
            end,
            claiming: true,
            text: text.to_vec(),
        });
        parts
    }

    /// The file is finished: ships the open lines as they are, oldest first.
    pub fn finish(&mut self, ship: &mut dyn FnMut(Decoded<'_>)) {
        let mut open: Vec<(Stream, Open)> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter_map(|s| self.open[s.index()].take().map(|o| (s, o)))
            .collect();
        open.sort_by_key(|(_, o)| o.at);
        for (stream, line) in open {
            self.shipped = true;
            ship(Decoded {
                stream: Some(stream),
                at: line.at,
                end: line.end,
                text: &line.text,
                origin: line.origin,
            });
        }
    }

    /// The file is finished and the next file of its path follows: the open lines go on
    /// there (from `origin`, this file, unless they began in an older one). `None` if none is
    /// open.
    pub fn carry(&mut self, origin: Origin) -> Option<Carry> {
        let open: Vec<(Stream, Open)> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter_map(|s| self.open[s.index()].take().map(|o| (s, o)))
            .map(|(s, mut o)| {
                o.origin.get_or_insert(origin);
                // Its claim is in the older file: this one's entries do not extend it.
                o.claiming = false;
                (s, o)
            })
            .collect();
        (!open.is_empty()).then_some(Carry { open })
    }

    /// Takes the lines an older file of the path left open: this file's first pieces of
    /// their streams continue them.
    pub fn accept(&mut self, carry: &Carry) {
        for (stream, open) in &carry.open {
            self.open[stream.index()] = Some(open.clone());
        }
    }

    /// Whether a line an older file left open is still open.
    pub fn carrying(&self) -> bool {
        self.open.iter().flatten().any(|o| o.origin.is_some())
    }
}

#[cfg(test)]
mod tests;
