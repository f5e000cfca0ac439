//! The runtimes' names for rotated logs, oldest first: Docker's `<id>-json.log.<k>` (the
//! higher `k`, the older) and the kubelet's `<N>.log.<YYYYMMDD-HHMMSS>`, each possibly
//! gzipped (`.gz`). Used at start to find the rotated files newer than the one a checkpoint
//! names that the agent never saw (the runtime rotated the path again while the agent was
//! stopped, which it must have to gzip the older one): they are drained before the path's
//! current file.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};

use logship_config::agent::Format;

/// Where a rotated name stands among its path's rotated files: older ones rank lower.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// Docker's `.<k>`: `.1` is the newest.
    Docker(Reverse<u32>),
    /// The kubelet's `.<YYYYMMDD-HHMMSS>`, which sorts as time does.
    Cri(String),
}

/// The rank of the file `name` as a rotated file of `path` (compressed or not), if it is one.
pub fn rank(format: Format, path: &Path, name: &Path) -> Option<Rank> {
    if name.parent() != path.parent() {
        return None;
    }
    let base = path.file_name()?.to_str()?;
    let rest = name
        .file_name()?
        .to_str()?
        .strip_prefix(base)?
        .strip_prefix('.')?;
    let rest = rest.strip_suffix(".gz").unwrap_or(rest);
    match format {
        Format::Docker => rest.parse().ok().map(|k| Rank::Docker(Reverse(k))),
        Format::Cri => {
            let stamp = rest.as_bytes();
            let shaped = stamp.len() == 15
                && stamp[8] == b'-'
                && stamp
                    .iter()
                    .enumerate()
                    .all(|(i, b)| i == 8 || b.is_ascii_digit());
            shaped.then(|| Rank::Cri(rest.to_string()))
        }
        Format::Lines => None,
    }
}

/// The rotated files of `path` beside it, oldest first (a file there both plain and gzipped,
/// while the runtime compresses it, comes once, plain).
pub fn rotated(format: Format, path: &Path) -> Vec<(Rank, PathBuf)> {
    let mut found: Vec<(Rank, PathBuf)> = names(format, path)
        .into_iter()
        .filter_map(|name| Some((rank(format, path, &name)?, name)))
        .collect();
    // Plain before gzipped at the same rank: the plain one is complete, its .gz may not be.
    found.sort_by_key(|(rank, name)| (rank.clone(), name.extension().is_some_and(|e| e == "gz")));
    found.dedup_by(|b, a| a.0 == b.0);
    found
}

/// Every rotated name of `path` beside it, in no order (plain and gzipped alike).
pub fn names(format: Format, path: &Path) -> Vec<PathBuf> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|name| rank(format, path, name).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("abc-json.log");
        let cri = dir.path().join("0.log");
        for name in [
            "abc-json.log.1",
            "abc-json.log.2.gz",
            "abc-json.log.10.gz",
            "abc-json.log.x",
            "0.log.20261207-050001",
            "0.log.20261207-050000.gz",
            "0.log.20261207-050000",
            "0.log.tmp",
            "1.log.20261207-050000",
        ] {
            std::fs::write(dir.path().join(name), b"x\n").unwrap();
        }
        let names = |format, path| -> Vec<String> {
            rotated(format, path)
                .into_iter()
                .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(Format::Docker, &docker),
            ["abc-json.log.10.gz", "abc-json.log.2.gz", "abc-json.log.1"]
        );
        assert_eq!(
            names(Format::Cri, &cri),
            ["0.log.20261207-050000", "0.log.20261207-050001"]
        );
    }
}
