//! Loading a config file in two stages: TOML into `Raw*` structs (serde, unknown keys refused),
//! then [`Validate::validate`] into the typed config. Both stages report the dotted key.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{ConfigError, KeyError};

/// A raw config table that can be checked and turned into its typed form.
pub trait Validate {
    /// The typed, validated config.
    type Config;
    /// Checks every value; the error names the first bad key. Touches nothing outside.
    fn validate(self) -> Result<Self::Config, KeyError>;
    /// Checks what the config needs from this machine, e.g. creates and probes directories.
    fn prepare(_config: &Self::Config) -> Result<(), KeyError> {
        Ok(())
    }
}

/// Reads and validates the config file at `path`, then [`Validate::prepare`]s this machine.
pub fn load<R: DeserializeOwned + Validate>(path: &Path) -> Result<R::Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let config = parse::<R>(path, &text)?;
    R::prepare(&config).map_err(|err| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: err.key,
        problem: err.problem,
    })?;
    Ok(config)
}

/// Parses and validates config `text`; `file` is only used in errors. No side effects.
pub fn parse<R: DeserializeOwned + Validate>(
    file: &Path,
    text: &str,
) -> Result<R::Config, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|err| ConfigError::Syntax {
        file: file.to_path_buf(),
        problem: syntax_problem(text, &err),
    })?;
    let raw: R = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let (key, problem) = describe(&err.path().to_string(), err.inner().message());
        ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            problem,
        }
    })?;
    raw.validate().map_err(|err| ConfigError::Invalid {
        file: file.to_path_buf(),
        key: err.key,
        problem: err.problem,
    })
}

/// Whether `path` can be read by every user of the machine (mode `o+r`).
pub fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// `line L, column C: message`, on one line (toml's `Display` is a multi-line snippet).
fn syntax_problem(text: &str, err: &toml::de::Error) -> String {
    let message = one_line(err.message());
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Turns serde's path and message into a dotted key and a short problem. A missing field is
/// reported at its parent table, so the field's name is moved into the key.
fn describe(path: &str, message: &str) -> (String, String) {
    let message = one_line(message);
    let join = |field: &str| {
        if path == field || path.ends_with(&format!(".{field}")) {
            path.to_string()
        } else if path.is_empty() || path == "." {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    if let Some(field) = quoted_after(&message, "unknown field `") {
        return (join(field), "unknown key".to_string());
    }
    if let Some(field) = quoted_after(&message, "missing field `") {
        return (join(field), "missing key".to_string());
    }
    let key = if path.is_empty() || path == "." {
        "(top level)".to_string()
    } else {
        path.to_string()
    };
    (key, reword_type_error(&message))
}

/// `invalid type: string "lots", expected u16` becomes `expected an integer, found "lots"`.
fn reword_type_error(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let Some((found, expected)) = rest.split_once(", expected ") else {
        return message.to_string();
    };
    let found = found.strip_prefix("string ").unwrap_or(found);
    let expected = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i64" | "i32" => "an integer",
        "a boolean" | "bool" => "a boolean",
        other => other,
    };
    format!("expected {expected}, found {found}")
}

fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_fields_name_the_field() {
        assert_eq!(
            describe(
                "broker.prefech",
                "unknown field `prefech`, expected one of `uris`"
            ),
            ("broker.prefech".into(), "unknown key".into())
        );
        assert_eq!(
            describe(".", "missing field `state_dir`"),
            ("state_dir".into(), "missing key".into())
        );
    }

    #[test]
    fn type_errors_say_what_was_expected() {
        assert_eq!(
            describe(
                "broker.prefetch",
                "invalid type: string \"lots\", expected u16"
            ),
            (
                "broker.prefetch".into(),
                "expected an integer, found \"lots\"".into()
            )
        );
    }
}
