//! What the collector's archive keeps and how: `output.compression`, `output.compression_level`,
//! `output.retention`, `output.max_line_bytes`, and the `[audit]` table.

use std::time::Duration;

use serde::Deserialize;

use crate::broker::duration_or;
use crate::error::KeyError;
use crate::units::parse_size;

/// The shortest `output.retention`.
pub const MIN_RETENTION: Duration = Duration::from_secs(60);

/// Default `output.max_line_bytes`: four times the agent's own default `max_line_bytes`
/// (1 MiB), room for the envelope's JSON escaping of a full-size part.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 4 << 20;

/// Default `output.compression_level`: zstd's own default, the knee of its speed/ratio curve.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// Default `audit.gap_after`: a resend after a lost confirm or a reconnect arrives well within it.
pub const DEFAULT_GAP_AFTER: Duration = Duration::from_secs(600);

/// Default `broker.dead_letter_max_bytes`: enough to inspect a burst of rejected messages, far
/// below RabbitMQ's default free-disk alarm margin on any real disk.
pub const DEFAULT_DEAD_LETTER_MAX_BYTES: u64 = 1 << 30;

/// How output files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain text, one line per line (the default).
    #[default]
    None,
    /// zstd frames at this level; files are named `<layout>.zst`.
    Zstd { level: i32 },
}

impl Compression {
    /// The suffix added to the layout's file name (`""` for plain files).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd { .. } => ".zst",
        }
    }
}

/// The archive's settings, from `[output]` and `[audit]`.
#[derive(Debug, Clone)]
pub struct Archive {
    /// `output.compression` and `output.compression_level`.
    pub compression: Compression,
    /// `output.retention`: output files whose last write is older are deleted; `None`: kept
    /// forever.
    pub retention: Option<Duration>,
    /// `output.max_line_bytes`: a message body larger than this is dead-lettered unparsed
    /// (`reason="too_large"`).
    pub max_line_bytes: u64,
    /// `audit.gap_after`: a hole between committed ranges open this long is a loss.
    pub gap_after: Duration,
}

impl Default for Archive {
    fn default() -> Archive {
        Archive {
            compression: Compression::None,
            retention: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            gap_after: DEFAULT_GAP_AFTER,
        }
    }
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub gap_after: Option<String>,
}

/// The archive keys of `[output]`, as written.
#[derive(Debug, Default)]
pub struct RawArchive<'a> {
    pub compression: Option<&'a str>,
    pub compression_level: Option<i32>,
    pub retention: Option<&'a str>,
    pub max_line_bytes: Option<&'a str>,
    pub audit: Option<&'a RawAudit>,
}

impl RawArchive<'_> {
    /// Validates the keys; errors name them.
    pub fn validate(&self) -> Result<Archive, KeyError> {
        let level = self.compression_level.unwrap_or(DEFAULT_COMPRESSION_LEVEL);
        // zstd's range; negative levels are its "fast" levels.
        if !(-7..=22).contains(&level) || level == 0 {
            return Err(KeyError::new(
                "output.compression_level",
                format!("{level} is out of range (1 to 22, or -7 to -1 for the fast levels)"),
            ));
        }
        let compression = match self.compression {
            None | Some("none") => {
                if self.compression_level.is_some() {
                    return Err(KeyError::new(
                        "output.compression_level",
                        "set without output.compression = \"zstd\"",
                    ));
                }
                Compression::None
            }
            Some("zstd") => Compression::Zstd { level },
            Some(other) => {
                return Err(KeyError::new(
                    "output.compression",
                    format!("unknown compression \"{other}\" (none or zstd)"),
                ));
            }
        };
        let retention = match self.retention {
            None => None,
            Some(text) => {
                let age = duration_or("output.retention", &Some(text.to_string()), Duration::ZERO)?;
                // A pass runs every 1/60 of the retention (at most hourly, at least every
                // second): below a minute, passes would walk the archive more than once a second.
                if age < MIN_RETENTION {
                    return Err(KeyError::new(
                        "output.retention",
                        format!("\"{text}\" is below one minute"),
                    ));
                }
                Some(age)
            }
        };
        let max_line_bytes = match self.max_line_bytes {
            None => DEFAULT_MAX_LINE_BYTES,
            Some(text) => match parse_size(text) {
                Ok(0) => return Err(KeyError::new("output.max_line_bytes", "must be above zero")),
                Ok(n) => n,
                Err(problem) => return Err(KeyError::new("output.max_line_bytes", problem)),
            },
        };
        let gap_after = duration_or(
            "audit.gap_after",
            &self.audit.and_then(|a| a.gap_after.clone()),
            DEFAULT_GAP_AFTER,
        )?;
        Ok(Archive {
            compression,
            retention,
            max_line_bytes,
            gap_after,
        })
    }
}

/// Validates `broker.dead_letter_max_bytes`.
pub fn dead_letter_max_bytes(value: Option<&str>) -> Result<u64, KeyError> {
    match value {
        None => Ok(DEFAULT_DEAD_LETTER_MAX_BYTES),
        Some(text) => match parse_size(text) {
            Ok(0) => Err(KeyError::new(
                "broker.dead_letter_max_bytes",
                "must be above zero",
            )),
            Ok(n) => Ok(n),
            Err(problem) => Err(KeyError::new("broker.dead_letter_max_bytes", problem)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values_name_their_key() {
        let archive = RawArchive::default().validate().unwrap();
        assert_eq!(archive.compression, Compression::None);
        assert_eq!(archive.retention, None);
        assert_eq!(archive.max_line_bytes, 4 << 20);
        let zstd = RawArchive {
            compression: Some("zstd"),
            retention: Some("30d"),
            ..RawArchive::default()
        }
        .validate()
        .unwrap();
        assert_eq!(zstd.compression, Compression::Zstd { level: 3 });
        assert_eq!(zstd.retention, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(
            dead_letter_max_bytes(None).unwrap(),
            DEFAULT_DEAD_LETTER_MAX_BYTES
        );
    }
}
