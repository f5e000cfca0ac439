//! From the inputs' globs to the files to tail.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logship_config::agent::{Input, ReadFrom};

use crate::identity::FileKey;
use crate::line_rules::LineRules;

/// A file an input matches.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    /// The file's key when the scan stat'ed it (`None` for a path an event named).
    pub key: Option<FileKey>,
    /// Its size when the scan stat'ed it: a file closed for the budget that changed is woken.
    pub size: Option<u64>,
    pub read_from: ReadFrom,
    /// Found by the scan, not named by an event: read only once it settled (see
    /// [`crate::source::SETTLE`]).
    pub by_scan: bool,
    /// How its bytes become messages.
    pub rules: Arc<LineRules>,
}

/// Problems met while expanding globs (unreadable directories and the like), by path; logged
/// by the caller, never fatal.
pub type ScanErrors = Vec<(PathBuf, std::io::Error)>;

/// Expands every input's globs, without directories and excluded paths, and hands each file to
/// `each` as it is found. A path matched by several inputs is taken once, with the first
/// input's settings.
///
/// No list of what was found is made: the safety rescan runs every few seconds, and its list
/// of 100k files (each with its path) was the agent's largest passing allocation, 19 MiB of
/// heap at its peak (issue 27 item 4, descriptors bench under heaptrack).
pub fn scan(inputs: &[Input], rules: &[Arc<LineRules>], mut each: impl FnMut(Found)) -> ScanErrors {
    let mut errors = Vec::new();
    // One glob never yields a path twice: the paths are remembered (a copy of each, 100k
    // allocations every rescan) only where several globs may match one file.
    let dedup = inputs.iter().map(|i| i.paths.len()).sum::<usize>() > 1;
    let mut seen = HashSet::new();
    for (index, input) in inputs.iter().enumerate() {
        // One set of rules per input, shared by its files (100k files must not hold a copy each).
        let rules = rules
            .get(index)
            .cloned()
            .unwrap_or_else(|| Arc::new(LineRules::of(input)));
        for pattern in &input.paths {
            expand(pattern, &mut |entry| {
                let path = match entry {
                    Ok(path) => path,
                    Err(error) => {
                        errors.push(error);
                        return;
                    }
                };
                if excluded(input, &path) || seen.contains(&path) {
                    return;
                }
                // One stat per file and scan: it tells directories apart, and its key and size
                // show a file closed for the budget that changed (opening stats the descriptor
                // again: the name may have moved on to another file meanwhile).
                let meta = match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_dir() => return,
                    Ok(meta) => Some(meta),
                    Err(_) => None,
                };
                if dedup {
                    seen.insert(path.clone());
                }
                let mut file = found(input, path, Arc::clone(&rules));
                file.key = meta.as_ref().map(FileKey::of);
                file.size = meta.as_ref().map(std::fs::Metadata::len);
                file.by_scan = true;
                each(file);
            });
        }
    }
    errors
}

/// The paths `pattern` matches, handed to `each` (with the directories that could not be read).
///
/// A pattern whose wildcards are all in its last part (`/var/log/app/*.log`) reads its
/// directory entry by entry, in the directory's order: the `glob` crate lists and sorts a whole
/// directory before it yields its first path, 17 MiB of heap for 100k files in one directory at
/// every rescan (issue 27 item 4). Any other pattern (a wildcard directory, `**`) goes through
/// `glob`, whose directories are listed whole but are each a pod's or a service's few files.
fn expand(pattern: &str, each: &mut dyn FnMut(Result<PathBuf, (PathBuf, std::io::Error)>)) {
    let path = Path::new(pattern);
    let streamed = match (path.parent(), path.file_name()) {
        // A trailing `/` asks `glob` for directories only.
        (Some(dir), Some(name))
            if !dir.as_os_str().is_empty()
                && !pattern.ends_with('/')
                && !dir.iter().any(is_wild)
                && is_wild(name)
                && name != "**" =>
        {
            glob::Pattern::new(&name.to_string_lossy())
                .ok()
                .map(|name| (dir, name))
        }
        _ => None,
    };
    let Some((dir, name)) = streamed else {
        let Ok(paths) = glob::glob(pattern) else {
            return;
        };
        for entry in paths {
            each(entry.map_err(|err| (err.path().to_path_buf(), err.into())));
        }
        return;
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // As `glob`: a directory that is not there (yet) matches nothing.
        Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return,
        Err(err) => return each(Err((dir.to_path_buf(), err))),
    };
    for entry in entries {
        match entry {
            Ok(entry) if name.matches(&entry.file_name().to_string_lossy()) => {
                each(Ok(entry.path()))
            }
            Ok(_) => {}
            Err(err) => each(Err((dir.to_path_buf(), err))),
        }
    }
}

/// Whether one part of a pattern holds a wildcard.
fn is_wild(part: &std::ffi::OsStr) -> bool {
    part.to_string_lossy().contains(['*', '?', '['])
}

/// Whether an input matches `path` (for a file an event names): the same rule as [`scan`],
/// for one path. Nothing is made: the watcher's thread asks it of every file created.
pub fn matches(inputs: &[Input], path: &Path) -> bool {
    matched(inputs, path).is_some()
}

/// The input that matches `path`, if any, as [`matches`] says, with the rules of each input
/// made once (`rules[i]` is `inputs[i]`'s): the files an event names share them, as the files
/// a scan finds do.
pub fn matching_shared(inputs: &[Input], rules: &[Arc<LineRules>], path: &Path) -> Option<Found> {
    let index = matched(inputs, path)?;
    let rules = rules
        .get(index)
        .cloned()
        .unwrap_or_else(|| Arc::new(LineRules::of(&inputs[index])));
    Some(found(&inputs[index], path.to_path_buf(), rules))
}

/// The index of the first input whose globs match `path` and whose excludes do not.
fn matched(inputs: &[Input], path: &Path) -> Option<usize> {
    inputs.iter().position(|input| {
        let matched = input
            .paths
            .iter()
            .any(|pattern| glob::Pattern::new(pattern).is_ok_and(|p| p.matches_path(path)));
        matched && !excluded(input, path)
    })
}

/// The directories a watch must cover before any file is found: each glob's longest
/// wildcard-free directory prefix (so files appearing there are seen at once). Each matched
/// file's directory is watched too, as the scan finds it.
pub fn directories(inputs: &[Input]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for pattern in inputs.iter().flat_map(|i| &i.paths) {
        let (mut prefix, mut wild) = (PathBuf::new(), false);
        for part in Path::new(pattern).components() {
            if is_wild(part.as_os_str()) {
                wild = true;
                break;
            }
            prefix.push(part);
        }
        if !wild {
            prefix.pop();
        }
        dirs.push(prefix);
    }
    dirs.retain(|d| !d.as_os_str().is_empty());
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Whether files some input matches may lie below the directory `dir` (a glob has as many
/// components or more, and its leading ones match `dir`'s): a directory created there is
/// watched at once.
pub fn may_hold_matches(inputs: &[Input], dir: &Path) -> bool {
    let depth = dir.components().count();
    inputs.iter().flat_map(|i| &i.paths).any(|pattern| {
        let parts: Vec<_> = Path::new(pattern).components().collect();
        parts.len() > depth && {
            let prefix: PathBuf = parts[..depth].iter().collect();
            glob::Pattern::new(&prefix.to_string_lossy()).is_ok_and(|p| p.matches_path(dir))
        }
    })
}

fn excluded(input: &Input, path: &Path) -> bool {
    input
        .exclude
        .iter()
        .filter_map(|p| glob::Pattern::new(p).ok())
        .any(|e| {
            e.matches_path(path)
                || path
                    .file_name()
                    .is_some_and(|n| e.matches(&n.to_string_lossy()))
        })
}

fn found(input: &Input, path: PathBuf, rules: Arc<LineRules>) -> Found {
    Found {
        path,
        key: None,
        size: None,
        read_from: input.read_from,
        by_scan: false,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_read_entry_by_entry_matches_what_glob_matches() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "a.log",
            "b.log",
            "ab.log",
            ".hidden.log",
            "c.txt",
            "d.log.1",
        ] {
            std::fs::write(dir.path().join(name), b"x\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/e.log"), b"x\n").unwrap();
        let root = dir.path().display();
        for pattern in [
            format!("{root}/*.log"),
            format!("{root}/?.log"),
            format!("{root}/[ab].log*"),
            format!("{root}/*"),
            format!("{root}/*/"),
            format!("{root}/*/*.log"),
            format!("{root}/missing/*.log"),
            format!("{root}/a.log/*.log"),
            format!("{root}/b.log"),
        ] {
            let mut streamed = Vec::new();
            expand(&pattern, &mut |entry| streamed.push(entry.unwrap()));
            streamed.sort();
            let listed: Vec<PathBuf> = glob::glob(&pattern).unwrap().map(Result::unwrap).collect();
            assert_eq!(streamed, listed, "{pattern}");
        }
    }

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
            fields: Default::default(),
            multiline: None,
            format: Default::default(),
        };
        let inputs = [input];
        assert!(matches(&inputs, &dir.path().join("later.log")));
        assert!(!matches(&inputs, &dir.path().join("later.log.gz")));
        assert!(!matches(&inputs, &dir.path().join("later.txt")));
        assert_eq!(directories(&inputs), [dir.path().to_path_buf()]);
        assert!(!may_hold_matches(&inputs, &dir.path().join("sub.log")));
        let pods = [Input {
            paths: vec![format!("{}/*/*/*.log", dir.path().display())],
            ..inputs[0].clone()
        }];
        assert!(may_hold_matches(&pods, &dir.path().join("ns_pod_uid")));
        assert!(may_hold_matches(&pods, &dir.path().join("ns_pod_uid/c")));
        assert!(!may_hold_matches(
            &pods,
            &dir.path().join("ns_pod_uid/c/deeper")
        ));
        let [input] = inputs;
        let mut names = Vec::new();
        let errors = scan(&[input], &[], |f| {
            names.push(f.path.file_name().unwrap().to_string_lossy().into_owned())
        });
        assert!(errors.is_empty());
        names.sort();
        assert_eq!(names, ["a.log", "b.log"]);
    }
}
