//! The one error type of config loading: it always names the file, and the dotted key when
//! there is one, so an operator can fix the file from a single line of output.

use std::path::PathBuf;

/// A config file that cannot be used. `Display` is one line; no variant prints a password.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}: {problem}", file.display())]
    Syntax { file: PathBuf, problem: String },
    /// A key is missing, unknown, of the wrong type or has a bad value.
    #[error("{}: {key}: {problem}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        problem: String,
    },
}

/// A problem with one key, found while validating; [`crate::load`] adds the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Dotted path of the key, e.g. `broker.prefetch`.
    pub key: String,
    /// What is wrong, lowercase, quoting the bad value.
    pub problem: String,
}

impl KeyError {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        KeyError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}
