//! Where a line is written: `<output.dir>/<output.layout filled in>`; by default
//! `<host>/<source path without its leading '/'>` (see `logship_config::layout`).
//!
//! Invariant: no path built here resolves outside `output.dir`. Host, path, fields and time
//! come from the network, so every substituted part and every resulting component is checked:
//! no `..`, no `.`, no empty name, no NUL, no `/` inside a value, nothing that a leading `/` or
//! a `..` could turn into an escape. What cannot be made safe is refused (and dead-lettered),
//! never "repaired" into a different file. The same envelope always maps to the same file.

use std::path::PathBuf;

use logship_config::layout::{Component, Layout, Piece};
use logship_runtime::Envelope;

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
    #[error("unsafe value {value:?} of fields.{name}")]
    Field { name: String, value: String },
    #[error("unsafe output name {0:?}")]
    Name(String),
}

/// The output file of a line under `layout`, relative to `output.dir`.
pub fn relative(layout: &Layout, envelope: &Envelope) -> Result<PathBuf, OutpathError> {
    let host = &envelope.host;
    if !safe_component(host) {
        return Err(OutpathError::Host(host.to_string()));
    }
    let mut relative = PathBuf::new();
    // Components of source paths: the layout's own are few and fixed.
    let mut depth = 0;
    for component in &layout.components {
        match component {
            Component::Path => depth += push_source(&mut relative, &envelope.path)?,
            Component::Name(pieces) => {
                let name = fill(pieces, envelope)?;
                if !safe_component(&name) {
                    return Err(OutpathError::Name(name));
                }
                relative.push(name);
            }
        }
    }
    if depth > MAX_DEPTH {
        return Err(OutpathError::Path(envelope.path.clone()));
    }
    Ok(relative)
}

/// The output file of the last line, kept while lines come from the same host and source path
/// and the layout uses nothing else (no date, no field): most lines follow one from the same
/// file, and their path is then checked and built once.
#[derive(Debug, Default)]
pub struct Recent {
    last: Option<(String, String, PathBuf)>,
}

impl Recent {
    /// [`relative`], for a line after the ones this has seen.
    pub fn relative(
        &mut self,
        layout: &Layout,
        envelope: &Envelope,
    ) -> Result<PathBuf, OutpathError> {
        if !by_source_only(layout) {
            return relative(layout, envelope);
        }
        if let Some((host, path, file)) = &self.last
            && *host == envelope.host
            && *path == envelope.path
        {
            return Ok(file.clone());
        }
        let file = relative(layout, envelope)?;
        self.last = Some((envelope.host.clone(), envelope.path.clone(), file.clone()));
        Ok(file)
    }
}

/// Whether a line's output file under `layout` depends on its host and source path alone.
fn by_source_only(layout: &Layout) -> bool {
    layout.components.iter().all(|component| match component {
        Component::Path => true,
        Component::Name(pieces) => pieces
            .iter()
            .all(|piece| matches!(piece, Piece::Text(_) | Piece::Host)),
    })
}

/// Appends the source path's components; returns how many.
fn push_source(relative: &mut PathBuf, source: &str) -> Result<usize, OutpathError> {
    let refuse = || OutpathError::Path(source.to_string());
    if source.contains('\0') {
        return Err(refuse());
    }
    let mut depth = 0;
    // A leading '/' is the normal absolute source path; repeated '/' collapse.
    for component in source.split('/').filter(|c| !c.is_empty()) {
        if !safe_component(component) {
            return Err(refuse());
        }
        relative.push(component);
        depth += 1;
    }
    if depth == 0 {
        return Err(refuse());
    }
    Ok(depth)
}

/// One component's name from its pieces.
fn fill(pieces: &[Piece], envelope: &Envelope) -> Result<String, OutpathError> {
    let mut name = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => name.push_str(text),
            Piece::Host => name.push_str(&envelope.host),
            Piece::Date => name.push_str(&utc_day(envelope.timestamp_ms)),
            Piece::Field(field) => {
                let value = envelope
                    .fields
                    .get(field)
                    .map(String::as_str)
                    .filter(|v| !v.is_empty())
                    .unwrap_or("_");
                if value == "." || value == ".." || value.contains(['/', '\0']) {
                    return Err(OutpathError::Field {
                        name: field.clone(),
                        value: value.to_string(),
                    });
                }
                name.push_str(value);
            }
        }
    }
    Ok(name)
}

/// `YYYY-MM-DD` of a time in milliseconds since the epoch, in UTC (the proleptic Gregorian
/// calendar, from the day count: no time zone database needed).
fn utc_day(timestamp_ms: i64) -> String {
    let days = timestamp_ms.div_euclid(86_400_000);
    // Days since 0000-03-01, in 400-year eras (H. Hinnant's civil-from-days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
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

    use logship_runtime::FileId;

    use super::*;

    fn envelope(host: &str, path: &str) -> Envelope {
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
            timestamp_ms: 1_764_547_200_000,
            line: b"x".to_vec(),
            fields: [("service".to_string(), "web".to_string())].into(),
            kind: Default::default(),
        }
    }

    fn default_relative(host: &str, path: &str) -> Result<PathBuf, OutpathError> {
        relative(&Layout::default(), &envelope(host, path))
    }

    #[test]
    fn days_in_utc() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_764_547_200_000), "2025-12-01");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(-1), "1969-12-31");
    }

    #[test]
    fn layouts_fill_date_fields_and_host() {
        let layout = Layout::parse("{date}/{fields.service}/{fields.team}/{host}/{path}").unwrap();
        assert_eq!(
            relative(&layout, &envelope("web-1", "/var/log/a.log")).unwrap(),
            PathBuf::from("2025-12-01/web/_/web-1/var/log/a.log")
        );
        let mut hostile = envelope("web-1", "/a.log");
        hostile.fields.insert("service".into(), "../..".into());
        assert!(relative(&layout, &hostile).is_err());
        hostile.fields.insert("service".into(), "a/b".into());
        assert!(relative(&layout, &hostile).is_err());
        let flat = Layout::parse("{host}.log").unwrap();
        assert_eq!(
            relative(&flat, &envelope("web-1", "/x")).unwrap(),
            PathBuf::from("web-1.log")
        );
    }

    #[test]
    fn the_recent_file_is_reused_only_for_the_same_host_and_path() {
        let mut recent = Recent::default();
        let layout = Layout::default();
        let a = envelope("web-1", "/var/log/a.log");
        assert_eq!(
            recent.relative(&layout, &a).unwrap(),
            PathBuf::from("web-1/var/log/a.log")
        );
        assert_eq!(
            recent.relative(&layout, &a).unwrap(),
            PathBuf::from("web-1/var/log/a.log")
        );
        for (host, path) in [("web-2", "/var/log/a.log"), ("web-1", "/var/log/b.log")] {
            assert_eq!(
                recent.relative(&layout, &envelope(host, path)).unwrap(),
                relative(&layout, &envelope(host, path)).unwrap()
            );
        }
        assert!(
            recent
                .relative(&layout, &envelope("web-1", "/../x"))
                .is_err()
        );
        // A layout with a date depends on more than the source: never reused.
        let dated = Layout::parse("{date}/{host}/{path}").unwrap();
        let mut later = envelope("web-1", "/var/log/b.log");
        later.timestamp_ms += 86_400_000;
        recent
            .relative(&dated, &envelope("web-1", "/var/log/b.log"))
            .unwrap();
        assert_eq!(
            recent.relative(&dated, &later).unwrap(),
            PathBuf::from("2025-12-02/web-1/var/log/b.log")
        );
    }

    #[test]
    fn normal_sources_map_under_the_host() {
        assert_eq!(
            default_relative("web-1", "/var/log/app.log").unwrap(),
            PathBuf::from("web-1/var/log/app.log")
        );
        assert_eq!(
            default_relative("web-1", "relative//x.log").unwrap(),
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
            assert!(default_relative(host, path).is_err(), "{host:?} {path:?}");
        }
        let long = "x".repeat(256);
        assert!(default_relative("h", &format!("/{long}")).is_err());
        assert!(default_relative("h", &"/a".repeat(65)).is_err());
    }

    #[test]
    fn every_accepted_path_stays_inside() {
        let dir = Path::new("/srv/logs");
        for (host, path) in [("h", "/a/b"), ("h..", "/..a/b.."), ("h", "/...")] {
            let full = dir.join(default_relative(host, path).unwrap());
            assert!(full.starts_with(dir));
            assert!(
                !full
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            );
        }
    }
}
