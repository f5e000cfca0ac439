//! The wire envelope: one line of one file, as JSON.
//!
//! ```json
//! {"v":1,"host":"web-1","path":"/var/log/app.log","file":{"dev":2049,"ino":131,"fp":"00c0ffee00c0ffee"},
//!  "gen":0,"offset":1024,"ts":1764028800123,"line":"GET / 200"}
//! ```
//! - `offset` is the byte offset of the line's first byte in the file (generation `gen`).
//! - `line` holds the line without its newline when it is valid UTF-8; otherwise `line_b64` holds
//!   its exact bytes in standard base64 and `line` is absent. Exactly one of the two is present.
//! - `ts` is milliseconds since the Unix epoch, when the agent read the line.
//! - `fields` (optional, omitted when empty) holds the input's labels, string to string. A
//!   collector that predates it ignores it (unknown fields are ignored within a version).
//! - A multiline event travels as one envelope: `line` holds its lines joined by `\n`, and its
//!   offset is its first line's.
//! - **Version 2** is a journal entry (`"kind":"journal"`): `offset` is not a byte position but
//!   the entry's sequence number in the journal's sequence-number id (whose 128 bits are `dev`
//!   and `ino`; `fp` names the input's unit filter, `gen` is 0), `ts` its realtime timestamp, and
//!   `skipped` (omitted when 0) the sequence numbers just before it that the same input passed
//!   over (other units' entries). A v1 collector rejects it (dead-letter) rather than read a
//!   sequence number as a byte offset.
//! - **Version 3** is a loss marker (`"kind":"lost"`, `"line":""`): the agent found the file
//!   truncated and could not read the end of generation `gen`. `offset` is that generation's
//!   size as last seen, and `lost` (at least 1, at most `offset`) the bytes just before it that
//!   were never read. It carries no line: the collector records `[offset - lost, offset)` as
//!   given up and writes nothing, so the audit names the range as a hole, also when nothing
//!   below it was committed. (A collector of issue 17 committed the byte past the end,
//!   `[offset, offset + 1)`, instead: the same hole whenever something below it had arrived.)
//!   A collector before v3 rejects it (dead-letter) rather than write it as an empty line.
//! - Version 3 also carries a **drop marker** (`"kind":"dropped"`, or `"dropped_journal"` when
//!   the offsets are a journal's sequence numbers; `"line":""`): the agent's spool dropped
//!   `[offset - lost, offset)` of the source (`drop_oldest`). Lines of that range published
//!   before the drop may still arrive; the rest never will. A collector of issue 17 (which knows
//!   only `"lost"`) rejects it (dead-letter) rather than misread it.
//! - **Version 4** is a line decoded from a container runtime's log (`"kind":"container"`:
//!   Docker's json-file entries, CRI lines). `offset` is the byte offset of the line's first
//!   entry (piece) in the file, and `end` (above `offset`) ends the part of the file it claims:
//!   the raw entries of the line that follow its first one with no other stream's entry between
//!   them. Its decoded text is shorter than its entries (and a joined line's pieces may be
//!   interleaved with the other stream's), so the v1 rule (its bytes and one more) would claim
//!   what is not its own; a collector before v4 rejects it (dead-letter) rather than misread it.
//!
//! Invariant: [`Envelope::message_id`] is a pure function of (host, file identity, generation,
//! offset), and for a drop marker of its whole range, so a line or marker read or sent twice
//! carries the same id, and a marker never shares an id with a line. Unknown fields are
//! ignored within a version; a breaking change bumps `v`, which older collectors reject
//! (dead-letter, not crash). [`Envelope::extent`] is the part of its source a message claims
//! (a line, an entry) or gives up (a loss marker): lines and entries of one source never claim
//! overlapping extents; a marker's extent may hold lines published before it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// The envelope version of a line of a file; a collector of this build also reads
/// [`VERSION_JOURNAL`].
pub const VERSION: u32 = 1;
/// The envelope version of a journal entry (offsets are sequence numbers).
pub const VERSION_JOURNAL: u32 = 2;
/// The envelope version of a loss marker (no line; see [`SourceKind::Lost`]).
pub const VERSION_LOST: u32 = 3;
/// The envelope version of a line decoded from a container log (see [`SourceKind::Entry`]).
pub const VERSION_ENTRY: u32 = 4;

/// The `kind` of a drop marker of a file (v3).
const KIND_DROPPED: &str = "dropped";
/// The `kind` of a drop marker of a journal (v3): offsets are sequence numbers.
const KIND_DROPPED_JOURNAL: &str = "dropped_journal";

/// What a message's source is, and so what its offset counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceKind {
    /// A file: the offset is a byte position (envelope v1).
    #[default]
    File,
    /// The systemd journal: the offset is the entry's sequence number, and `skipped` sequence
    /// numbers before it were passed over by the same input (envelope v2).
    Journal { skipped: u64 },
    /// A file's generation ended at `offset` (its size as last seen) and its `bytes` just before
    /// that were never read (a truncation without a copy): no line (envelope v3).
    Lost { bytes: u64 },
    /// The agent's spool dropped the `lost` units of its source just before `offset`
    /// (`drop_oldest`): no line (envelope v3). `journal` says the offsets are a journal's
    /// sequence numbers, not bytes.
    Dropped { lost: u64, journal: bool },
    /// A line decoded from a container runtime's log entries (envelope v4): it claims
    /// `[offset, end)` of the raw file, not its decoded bytes.
    Entry { end: u64 },
}

impl SourceKind {
    /// The units given up just before the offset, for a loss or drop marker.
    pub fn given_up(self) -> Option<u64> {
        match self {
            SourceKind::Lost { bytes } => Some(bytes),
            SourceKind::Dropped { lost, .. } => Some(lost),
            SourceKind::File | SourceKind::Journal { .. } | SourceKind::Entry { .. } => None,
        }
    }

    /// Whether the source's offsets are sequence numbers (a journal's), not bytes.
    pub fn counts_sequence(self) -> bool {
        matches!(
            self,
            SourceKind::Journal { .. } | SourceKind::Dropped { journal: true, .. }
        )
    }
}

/// Which file a line came from: (device, inode) plus a fingerprint of its first bytes, so a
/// reused inode is a different file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    /// 64-bit fingerprint, as 16 hex digits on the wire (JSON numbers lose bits past 2^53).
    #[serde(with = "hex_u64")]
    pub fp: u64,
}

/// One line and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub host: String,
    /// The source file's path on the agent's host.
    pub path: String,
    pub file: FileId,
    /// Bumped when the file is truncated in place (copytruncate), so offsets restart at 0.
    pub generation: u32,
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The line's exact bytes, without the newline.
    pub line: Vec<u8>,
    /// The input's labels.
    pub fields: BTreeMap<String, String>,
    /// A file's line, or a journal entry.
    pub kind: SourceKind,
}

/// Why a message body is not a usable envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not an envelope")]
    Json(#[source] serde_json::Error),
    #[error("unsupported envelope version {0}")]
    Version(u32),
    #[error("envelope has neither line nor line_b64")]
    NoLine,
    #[error("envelope has both line and line_b64")]
    TwoLines,
    #[error("line_b64 is not base64")]
    Base64(#[source] base64::DecodeError),
    #[error("envelope v{version} with kind {kind:?}")]
    Kind { version: u32, kind: Option<String> },
    #[error("journal entry skips {skipped} sequence numbers before {offset}")]
    Skipped { skipped: u64, offset: u64 },
    #[error("loss marker at {offset} with {lost} lost units or a line")]
    Lost { lost: u64, offset: u64 },
    #[error("container line at {offset} claims up to {end}, not past its offset")]
    Extent { end: u64, offset: u64 },
}

/// The JSON shape; borrowed on the way out, so encoding copies the line once.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    v: u32,
    #[serde(borrow)]
    host: Cow<'a, str>,
    #[serde(borrow)]
    path: Cow<'a, str>,
    file: FileId,
    #[serde(rename = "gen")]
    generation: u32,
    offset: u64,
    ts: i64,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    line: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line_b64: Option<String>,
    #[serde(default, skip_serializing_if = "no_fields")]
    fields: Cow<'a, BTreeMap<String, String>>,
    /// `"journal"` in v2; absent in v1.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    skipped: u64,
    /// The bytes a loss marker (v3) says were never read.
    #[serde(default, skip_serializing_if = "is_zero")]
    lost: u64,
    /// Where the file part a container line (v4) claims ends.
    #[serde(default, skip_serializing_if = "is_zero")]
    end: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

// serde hands `skip_serializing_if` a reference to the field itself.
#[allow(clippy::ptr_arg)]
fn no_fields(fields: &Cow<'_, BTreeMap<String, String>>) -> bool {
    fields.is_empty()
}

/// Only `v`, read first so that a newer version is reported as such, not as a missing field.
#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

/// An envelope borrowed from its parts, so a sender can encode a line without copying it.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeRef<'a> {
    pub host: &'a str,
    pub path: &'a str,
    pub file: FileId,
    pub generation: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub line: &'a [u8],
    pub fields: &'a BTreeMap<String, String>,
    pub kind: SourceKind,
}

impl EnvelopeRef<'_> {
    /// The message id: `<dev>.<ino>.<fp>.<gen>.<offset>@<host>` (hex numbers). The host comes
    /// last, after a fixed-shape prefix, so distinct sources can never share an id. A drop
    /// marker's is `<dev>.<ino>.<fp>.<gen>.<from>-<offset>@<host>`: never a line's, and two
    /// markers of one source share it only if they give up the same range.
    pub fn message_id(&self) -> String {
        let (dev, ino, fp, generation) =
            (self.file.dev, self.file.ino, self.file.fp, self.generation);
        match self.kind {
            SourceKind::Dropped { lost, .. } => format!(
                "{dev:x}.{ino:x}.{fp:016x}.{generation:x}.{:x}-{:x}@{}",
                self.offset.saturating_sub(lost),
                self.offset,
                self.host
            ),
            _ => format!(
                "{dev:x}.{ino:x}.{fp:016x}.{generation:x}.{:x}@{}",
                self.offset, self.host
            ),
        }
    }

    /// Encodes to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let (line, line_b64) = match std::str::from_utf8(self.line) {
            Ok(text) => (Some(Cow::Borrowed(text)), None),
            Err(_) => (None, Some(BASE64.encode(self.line))),
        };
        let end = match self.kind {
            SourceKind::Entry { end } => end,
            _ => 0,
        };
        let (v, kind, skipped, lost) = match self.kind {
            SourceKind::File => (VERSION, None, 0, 0),
            SourceKind::Entry { .. } => (VERSION_ENTRY, Some(Cow::Borrowed("container")), 0, 0),
            SourceKind::Journal { skipped } => {
                (VERSION_JOURNAL, Some(Cow::Borrowed("journal")), skipped, 0)
            }
            SourceKind::Lost { bytes } => (VERSION_LOST, Some(Cow::Borrowed("lost")), 0, bytes),
            SourceKind::Dropped { lost, journal } => {
                let kind = if journal {
                    KIND_DROPPED_JOURNAL
                } else {
                    KIND_DROPPED
                };
                (VERSION_LOST, Some(Cow::Borrowed(kind)), 0, lost)
            }
        };
        let wire = Wire {
            v,
            host: Cow::Borrowed(self.host),
            path: Cow::Borrowed(self.path),
            file: self.file,
            generation: self.generation,
            offset: self.offset,
            ts: self.timestamp_ms,
            line,
            line_b64,
            fields: Cow::Borrowed(self.fields),
            kind,
            skipped,
            lost,
            end,
        };
        // unwrap: a struct of strings and integers always serializes
        serde_json::to_vec(&wire).expect("envelope serializes")
    }
}

impl Envelope {
    /// This envelope, borrowed.
    pub fn as_ref(&self) -> EnvelopeRef<'_> {
        EnvelopeRef {
            host: &self.host,
            path: &self.path,
            file: self.file,
            generation: self.generation,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            line: &self.line,
            fields: &self.fields,
            kind: self.kind,
        }
    }

    /// The half-open part `[start, end)` of its source this message claims, or a marker gives
    /// up. A file's line claims its bytes and the one after them (its newline, or the first
    /// byte of its next part); a journal entry claims its sequence number and the `skipped`
    /// ones before it; lines and entries of one source never claim overlapping parts. A loss
    /// or drop marker's extent is the range it gives up, `[offset - lost, offset)`: the
    /// collector records it as a hole, never as written (lines of it published before a drop
    /// may still arrive and fill it).
    pub fn extent(&self) -> (u64, u64) {
        match self.kind {
            SourceKind::File => (
                self.offset,
                self.offset
                    .saturating_add(self.line.len() as u64)
                    .saturating_add(1),
            ),
            SourceKind::Journal { skipped } => (
                self.offset.saturating_sub(skipped),
                self.offset.saturating_add(1),
            ),
            SourceKind::Lost { bytes: lost } | SourceKind::Dropped { lost, .. } => {
                (self.offset.saturating_sub(lost), self.offset)
            }
            SourceKind::Entry { end } => (self.offset, end),
        }
    }

    /// See [`EnvelopeRef::message_id`].
    pub fn message_id(&self) -> String {
        self.as_ref().message_id()
    }

    /// Encodes to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        self.as_ref().to_json()
    }

    /// Decodes and checks a message body.
    pub fn from_json(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        // One parse for a good envelope; only a body that does not parse is read again for
        // its version, so that a newer version is reported as such, not as a missing field.
        let known = |v: u32| [VERSION, VERSION_JOURNAL, VERSION_LOST, VERSION_ENTRY].contains(&v);
        let wire: Wire = match serde_json::from_slice(body) {
            Ok(wire) => wire,
            Err(err) => {
                return Err(match serde_json::from_slice::<VersionOnly>(body) {
                    Ok(version) if !known(version.v) => EnvelopeError::Version(version.v),
                    _ => EnvelopeError::Json(err),
                });
            }
        };
        if !known(wire.v) {
            return Err(EnvelopeError::Version(wire.v));
        }
        let kind = match (wire.v, wire.kind.as_deref()) {
            (VERSION, None) if wire.skipped == 0 && wire.lost == 0 && wire.end == 0 => {
                SourceKind::File
            }
            (VERSION_ENTRY, Some("container"))
                if wire.end > wire.offset && wire.skipped == 0 && wire.lost == 0 =>
            {
                SourceKind::Entry { end: wire.end }
            }
            (VERSION_ENTRY, Some("container")) => {
                return Err(EnvelopeError::Extent {
                    end: wire.end,
                    offset: wire.offset,
                });
            }
            (VERSION_JOURNAL, Some("journal")) if wire.skipped <= wire.offset && wire.lost == 0 => {
                SourceKind::Journal {
                    skipped: wire.skipped,
                }
            }
            (VERSION_JOURNAL, Some("journal")) if wire.skipped > wire.offset => {
                return Err(EnvelopeError::Skipped {
                    skipped: wire.skipped,
                    offset: wire.offset,
                });
            }
            (VERSION_LOST, Some("lost"))
                if (1..=wire.offset).contains(&wire.lost)
                    && wire.skipped == 0
                    && wire.line.as_deref() == Some("") =>
            {
                SourceKind::Lost { bytes: wire.lost }
            }
            (VERSION_LOST, Some(kind @ (KIND_DROPPED | KIND_DROPPED_JOURNAL)))
                if (1..=wire.offset).contains(&wire.lost)
                    && wire.skipped == 0
                    && wire.line.as_deref() == Some("") =>
            {
                SourceKind::Dropped {
                    lost: wire.lost,
                    journal: kind == KIND_DROPPED_JOURNAL,
                }
            }
            (VERSION_LOST, Some("lost" | KIND_DROPPED | KIND_DROPPED_JOURNAL)) => {
                return Err(EnvelopeError::Lost {
                    lost: wire.lost,
                    offset: wire.offset,
                });
            }
            (version, kind) => {
                return Err(EnvelopeError::Kind {
                    version,
                    kind: kind.map(str::to_string),
                });
            }
        };
        let line = match (wire.line, wire.line_b64) {
            (Some(text), None) => text.into_owned().into_bytes(),
            (None, Some(b64)) => BASE64.decode(b64).map_err(EnvelopeError::Base64)?,
            (None, None) => return Err(EnvelopeError::NoLine),
            (Some(_), Some(_)) => return Err(EnvelopeError::TwoLines),
        };
        Ok(Envelope {
            host: wire.host.into_owned(),
            path: wire.path.into_owned(),
            file: wire.file,
            generation: wire.generation,
            offset: wire.offset,
            timestamp_ms: wire.ts,
            line,
            fields: wire.fields.into_owned(),
            kind,
        })
    }
}

mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{value:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        u64::from_str_radix(&text, 16).map_err(|_| D::Error::custom("fp is not 16 hex digits"))
    }
}

#[cfg(test)]
mod tests;
