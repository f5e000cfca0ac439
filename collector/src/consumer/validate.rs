//! Turning a delivery's body into a line we may write, or a reason to reject it.

use std::path::PathBuf;

use logship_config::CollectorConfig;
use logship_config::layout::Layout;
use logship_config::security::Security;
use logship_runtime::{Envelope, EnvelopeError, SourceKind};

use crate::commit::positions::{self, Claim, OffsetKind, SourceName};
use crate::commit::seen::{self, IdHash};
use crate::sink::outpath::{OutpathError, Recent};

/// A line that passed validation.
#[derive(Debug)]
pub struct Line {
    /// The hash of [`Envelope::message_id`]: the dedup key of last resort (see `commit`).
    pub id: IdHash,
    /// What it claims of its source (host, file identity, generation): the dedup key. Its
    /// [`Envelope::extent`], in bytes for a file's line, in sequence numbers for a journal
    /// entry.
    pub claim: Claim,
    /// Output file, relative to `output.dir` (see [`crate::sink::outpath`]).
    pub file: PathBuf,
    /// The line's bytes, without a newline.
    pub bytes: Vec<u8>,
    /// The source host and path (for the host's last-seen time, and the audit's names).
    pub name: SourceName,
    /// The envelope's `ts`, unix milliseconds (for the delay histogram).
    pub ts_ms: i64,
    /// A loss or drop marker (envelope v3): nothing is written, its claim (the range given
    /// up) is recorded as a hole in the audit.
    pub marker: Option<Marker>,
}

/// What a marker says its agent gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// The file was truncated and the end of its generation never read.
    Truncated,
    /// The agent's spool dropped the range (`drop_oldest`); lines of it published before the
    /// drop may still arrive.
    Dropped,
}

impl Line {
    /// What the line claims of its source.
    pub fn claim(&self) -> Claim {
        self.claim
    }
}

/// Why a message is rejected (dead-lettered): it is never written.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Outpath(#[from] OutpathError),
    /// `[security] host_from_user = "require"`: the broker-validated user may not write for
    /// this host (or the message carries no `user_id`).
    #[error("host {host:?} is not allowed for user {}", user.as_deref().map_or("(no user_id)".into(), |u| format!("{u:?}")))]
    HostNotAllowed { host: String, user: Option<String> },
    /// The message is larger than `output.max_line_bytes`: never parsed.
    #[error("message of {size} bytes is above output.max_line_bytes ({limit})")]
    TooLarge { size: usize, limit: u64 },
}

impl Rejection {
    /// Its label in `logship_collector_rejected_total`.
    pub fn reason(&self) -> Reason {
        match self {
            Rejection::Envelope(_) => Reason::Malformed,
            Rejection::Outpath(_) => Reason::UnsafePath,
            Rejection::HostNotAllowed { .. } => Reason::HostNotAllowed,
            Rejection::TooLarge { .. } => Reason::TooLarge,
        }
    }
}

/// Why messages are rejected, as counted (`logship_collector_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not an envelope this collector reads.
    Malformed = 0,
    /// Its output path is unsafe: an escape, or a symbolic link or non-directory on the way.
    UnsafePath = 1,
    /// Its host is not allowed for its validated user (`[security]`).
    HostNotAllowed = 2,
    /// Larger than `output.max_line_bytes`.
    TooLarge = 3,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 4] = [
        Reason::Malformed,
        Reason::UnsafePath,
        Reason::HostNotAllowed,
        Reason::TooLarge,
    ];

    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnsafePath => "unsafe_path",
            Reason::HostNotAllowed => "host_not_allowed",
            Reason::TooLarge => "too_large",
        }
    }
}

/// Takes a delivery's body as `config` says: a body larger than `output.max_line_bytes` is
/// refused before it is parsed; a line's output file carries the compression's suffix (a `.zst`
/// file and a plain one never share a path).
pub fn intake(
    body: &[u8],
    config: &CollectorConfig,
    user: Option<&str>,
    recent: &mut Recent,
) -> Result<Line, Rejection> {
    if body.len() as u64 > config.archive.max_line_bytes {
        return Err(Rejection::TooLarge {
            size: body.len(),
            limit: config.archive.max_line_bytes,
        });
    }
    let mut line = line(body, &config.layout, user, &config.security, recent)?;
    let suffix = config.archive.compression.suffix();
    if !suffix.is_empty() {
        line.file.as_mut_os_string().push(suffix);
    }
    Ok(line)
}

/// Validates a message body; its output file follows `layout`. `user` is the message's
/// `user_id` property (validated by the broker), checked against the envelope's host as
/// `security` says.
pub fn line(
    body: &[u8],
    layout: &Layout,
    user: Option<&str>,
    security: &Security,
    recent: &mut Recent,
) -> Result<Line, Rejection> {
    let envelope = Envelope::from_json(body)?;
    if !security.allows(user, &envelope.host) {
        return Err(Rejection::HostNotAllowed {
            host: envelope.host,
            user: user.map(str::to_string),
        });
    }
    let file = recent.relative(layout, &envelope)?;
    let (start, end) = envelope.extent();
    let (source, mut id) = positions::hashes(
        &envelope.host,
        envelope.file.dev,
        envelope.file.ino,
        envelope.file.fp,
        envelope.generation,
        Some(envelope.offset),
    );
    let marker = match envelope.kind {
        SourceKind::Lost { .. } => Some(Marker::Truncated),
        SourceKind::Dropped { .. } => {
            // Its id names its range, not an offset (see `Envelope::message_id`); markers are
            // rare, so the string is built.
            id = seen::hash(&envelope.message_id());
            Some(Marker::Dropped)
        }
        SourceKind::File | SourceKind::Journal { .. } | SourceKind::Entry { .. } => None,
    };
    let claim = Claim {
        source,
        start,
        end,
        kind: if envelope.kind.counts_sequence() {
            OffsetKind::Sequence
        } else {
            OffsetKind::Bytes
        },
        given_up: marker.is_some(),
    };
    Ok(Line {
        id,
        claim,
        file,
        bytes: envelope.line,
        name: SourceName {
            host: envelope.host,
            path: envelope.path,
        },
        ts_ms: envelope.timestamp_ms,
        marker,
    })
}

#[cfg(test)]
mod tests {
    use logship_runtime::FileId;

    use super::*;

    fn body(host: &str, path: &str) -> Vec<u8> {
        Envelope {
            host: host.into(),
            path: path.into(),
            file: FileId {
                dev: 1,
                ino: 2,
                fp: 3,
            },
            generation: 0,
            offset: 0,
            timestamp_ms: 0,
            line: b"x".to_vec(),
            fields: Default::default(),
            kind: Default::default(),
        }
        .to_json()
    }

    #[test]
    fn malformed_and_hostile_bodies_are_rejected() {
        let mut bodies: Vec<Vec<u8>> = vec![
            b"not json at all".to_vec(),
            b"".to_vec(),
            b"{\"v\":2,\"host\":\"h\"}".to_vec(),
            b"{\"v\":1}".to_vec(),
            b"[1,2,3]".to_vec(),
            vec![0xff; 64],
        ];
        for (host, path) in [
            ("h", "/../../etc/passwd"),
            ("h", "../escape"),
            ("..", "/x.log"),
            ("a/b", "/x.log"),
            ("h", "/with\0nul"),
            ("h\0", "/x.log"),
            ("h", "/"),
        ] {
            bodies.push(body(host, path));
        }
        let off = Security::default();
        for body in bodies {
            assert!(
                line(
                    &body,
                    &Layout::default(),
                    None,
                    &off,
                    &mut Recent::default()
                )
                .is_err(),
                "{:?}",
                String::from_utf8_lossy(&body)
            );
        }
        assert!(
            line(
                &body("h", "/var/log/ok.log"),
                &Layout::default(),
                None,
                &off,
                &mut Recent::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn required_hosts_must_match_the_user() {
        let require = Security {
            host_from_user: logship_config::security::HostFromUser::Require,
            ..Security::default()
        };
        let ok = body("web-1", "/x.log");
        assert!(
            line(
                &ok,
                &Layout::default(),
                Some("web-1"),
                &require,
                &mut Recent::default()
            )
            .is_ok()
        );
        for user in [None, Some("web-2")] {
            let err = line(
                &ok,
                &Layout::default(),
                user,
                &require,
                &mut Recent::default(),
            )
            .unwrap_err();
            assert_eq!(err.reason(), Reason::HostNotAllowed);
        }
    }
}
