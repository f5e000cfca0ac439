//! Turning a delivery's body into a line we may write, or a reason to reject it.

use std::path::PathBuf;

use logship_config::{Envelope, EnvelopeError};

use crate::outpath::{self, OutpathError};

/// A line that passed validation.
#[derive(Debug)]
pub struct Line {
    /// [`Envelope::message_id`]: the dedup key.
    pub id: String,
    /// Output file, relative to `output.dir` (see [`outpath`]).
    pub file: PathBuf,
    /// The line's bytes, without a newline.
    pub bytes: Vec<u8>,
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
        file,
        bytes: envelope.line,
    })
}
