//! Where a line is written: `<output.dir>/<host>/<source path without its leading '/'>`.
//!
//! Invariant: no path built here resolves outside `output.dir`. Host and path come from the
//! network, so every component is checked: no `..`, no `.`, no empty host, no NUL, no `/` in the
//! host, nothing that a leading `/` or a `..` could turn into an escape. What cannot be made safe
//! is refused (and dead-lettered), never "repaired" into a different file.

use std::path::PathBuf;

/// The longest file or directory name most Linux file systems accept.
const MAX_COMPONENT: usize = 255;
/// Deeper trees than this are refused: a hostile message should not make us mkdir forever.
const MAX_DEPTH: usize = 64;

/// Why a host or path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutpathError {
    #[error("unsafe host {0:?}")]
    Host(String),
    #[error("unsafe path {0:?}")]
    Path(String),
}

/// The output file of `(host, source path)`, relative to `output.dir`.
pub fn relative(host: &str, source: &str) -> Result<PathBuf, OutpathError> {
    if !safe_component(host) {
        return Err(OutpathError::Host(host.to_string()));
    }
    let refuse = || OutpathError::Path(source.to_string());
    if source.contains('\0') {
        return Err(refuse());
    }
    let mut relative = PathBuf::from(host);
    let mut depth = 0;
    // A leading '/' is the normal absolute source path; repeated '/' collapse.
    for component in source.split('/').filter(|c| !c.is_empty()) {
        if !safe_component(component) {
            return Err(refuse());
        }
        relative.push(component);
        depth += 1;
    }
    if depth == 0 || depth > MAX_DEPTH {
        return Err(refuse());
    }
    Ok(relative)
}

fn safe_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= MAX_COMPONENT
        && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn normal_sources_map_under_the_host() {
        assert_eq!(
            relative("web-1", "/var/log/app.log").unwrap(),
            PathBuf::from("web-1/var/log/app.log")
        );
        assert_eq!(
            relative("web-1", "relative//x.log").unwrap(),
            PathBuf::from("web-1/relative/x.log")
        );
    }

    #[test]
    fn escapes_are_refused() {
        for (host, path) in [
            ("..", "/x"),
            (".", "/x"),
            ("", "/x"),
            ("a/b", "/x"),
            ("a\0", "/x"),
            ("h", "/../../etc/passwd"),
            ("h", "../x"),
            ("h", "/var/./log"),
            ("h", "/var/log/.."),
            ("h", "/"),
            ("h", ""),
            ("h", "/a\0b"),
        ] {
            assert!(relative(host, path).is_err(), "{host:?} {path:?}");
        }
        let long = "x".repeat(256);
        assert!(relative("h", &format!("/{long}")).is_err());
        assert!(relative("h", &"/a".repeat(65)).is_err());
    }

    #[test]
    fn every_accepted_path_stays_inside() {
        let dir = Path::new("/srv/logs");
        for (host, path) in [("h", "/a/b"), ("h..", "/..a/b.."), ("h", "/...")] {
            let full = dir.join(relative(host, path).unwrap());
            assert!(full.starts_with(dir));
            assert!(
                !full
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            );
        }
    }
}
