//! Turning a delivery's body into a line we may write, or a reason to reject it.

use std::path::PathBuf;

use logship_runtime::{Envelope, EnvelopeError};

use crate::outpath::{self, OutpathError};
use crate::positions::{self, SourceHash};

/// A line that passed validation.
#[derive(Debug)]
pub struct Line {
    /// [`Envelope::message_id`]: the dedup key of last resort (see `commit`).
    pub id: String,
    /// Its source (host, file identity, generation): with `offset`, the dedup key.
    pub source: SourceHash,
    /// Byte offset of the line in its source.
    pub offset: u64,
    /// Output file, relative to `output.dir` (see [`outpath`]).
    pub file: PathBuf,
    /// The line's bytes, without a newline.
    pub bytes: Vec<u8>,
    /// The source host (for the host's last-seen time).
    pub host: String,
    /// The envelope's `ts`, unix milliseconds (for the delay histogram).
    pub ts_ms: i64,
}

/// Why a message is rejected (dead-lettered): it is never written.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Outpath(#[from] OutpathError),
}

/// Validates a message body.
pub fn line(body: &[u8]) -> Result<Line, Rejection> {
    let envelope = Envelope::from_json(body)?;
    let file = outpath::relative(&envelope.host, &envelope.path)?;
    Ok(Line {
        id: envelope.message_id(),
        source: positions::source_hash(
            &envelope.host,
            envelope.file.dev,
            envelope.file.ino,
            envelope.file.fp,
            envelope.generation,
        ),
        offset: envelope.offset,
        file,
        bytes: envelope.line,
        host: envelope.host,
        ts_ms: envelope.timestamp_ms,
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
        for body in bodies {
            assert!(line(&body).is_err(), "{:?}", String::from_utf8_lossy(&body));
        }
        assert!(line(&body("h", "/var/log/ok.log")).is_ok());
    }
}
