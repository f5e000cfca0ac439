//! From the inputs' globs to the files to tail.

use std::path::PathBuf;

use logship_config::agent::{Input, ReadFrom};

/// A file an input matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub read_from: ReadFrom,
    pub max_line_bytes: usize,
}

/// Problems met while expanding globs; logged by the caller, never fatal.
#[derive(Debug, Default)]
pub struct Scan {
    pub found: Vec<Found>,
    /// Unreadable directories and the like, by path.
    pub errors: Vec<(PathBuf, std::io::Error)>,
}

/// Expands every input's globs, without directories and excluded paths. A path matched by
/// several inputs is taken once, with the first input's settings.
pub fn scan(inputs: &[Input]) -> Scan {
    let mut scan = Scan::default();
    for input in inputs {
        let excludes: Vec<glob::Pattern> = input
            .exclude
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .collect();
        for pattern in &input.paths {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for entry in paths {
                let path = match entry {
                    Ok(path) => path,
                    Err(err) => {
                        let path = err.path().to_path_buf();
                        scan.errors.push((path, err.into()));
                        continue;
                    }
                };
                let excluded = excludes.iter().any(|e| {
                    e.matches_path(&path)
                        || path
                            .file_name()
                            .is_some_and(|n| e.matches(&n.to_string_lossy()))
                });
                if excluded || path.is_dir() || scan.found.iter().any(|f| f.path == path) {
                    continue;
                }
                scan.found.push(Found {
                    path,
                    read_from: input.read_from,
                    max_line_bytes: usize::try_from(input.max_line_bytes).unwrap_or(usize::MAX),
                });
            }
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_excludes_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.log", "b.log", "c.log.gz", "d.txt"] {
            std::fs::write(dir.path().join(name), b"x\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.log")).unwrap();
        let input = Input {
            paths: vec![format!("{}/*.log*", dir.path().display())],
            exclude: vec!["*.gz".into()],
            read_from: ReadFrom::Beginning,
            max_line_bytes: 1024,
        };
        let mut names: Vec<_> = scan(&[input])
            .found
            .into_iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.log", "b.log"]);
    }
}
