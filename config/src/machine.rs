//! Facts about this machine that configs are checked against: its hostname, and whether a
//! directory is writable and holds state of a version this build reads.

use crate::error::KeyError;

/// This machine's hostname, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Creates `dir` if needed and proves it writable by creating and removing a file in it.
pub fn ensure_writable_dir(key: &str, dir: &std::path::Path) -> Result<(), KeyError> {
    let fail = |err: std::io::Error| {
        KeyError::new(
            key,
            format!(
                "cannot write to \"{}\": {}",
                dir.display(),
                error_text(&err)
            ),
        )
    };
    if dir.as_os_str().is_empty() {
        return Err(KeyError::new(key, "must not be empty"));
    }
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".logship-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Checks that `dir` is a directory whose entries can be listed (a journal directory).
pub fn ensure_readable_dir(key: &str, dir: &std::path::Path) -> Result<(), KeyError> {
    match std::fs::read_dir(dir) {
        Ok(_) => Ok(()),
        Err(err) => Err(KeyError::new(
            key,
            format!("cannot read \"{}\": {}", dir.display(), error_text(&err)),
        )),
    }
}

/// The layout of a state directory this build reads and writes.
pub const STATE_VERSION: &str = "logship-state 1";

/// Refuses a state directory written by an incompatible version (nothing in it is touched);
/// marks a new one with [`STATE_VERSION`].
pub fn check_state_version(dir: &std::path::Path) -> Result<(), KeyError> {
    let marker = dir.join("VERSION");
    match std::fs::read_to_string(&marker) {
        Ok(text) if text.trim() == STATE_VERSION => Ok(()),
        Ok(text) => Err(KeyError::new(
            "state_dir",
            format!(
                "\"{}\" holds state of an incompatible version \"{}\" (this build reads \"{STATE_VERSION}\")",
                dir.display(),
                text.trim()
            ),
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&marker, format!("{STATE_VERSION}\n")).map_err(|err| {
                KeyError::new(
                    "state_dir",
                    format!(
                        "cannot write to \"{}\": {}",
                        dir.display(),
                        error_text(&err)
                    ),
                )
            })
        }
        Err(err) => Err(KeyError::new(
            "state_dir",
            format!("cannot read \"{}\": {}", marker.display(), error_text(&err)),
        )),
    }
}

/// An io::Error's text without the `(os error N)` suffix.
fn error_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
