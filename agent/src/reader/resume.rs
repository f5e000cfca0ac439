//! Files rotated while the agent was stopped: each unfinished checkpoint's file is found again
//! beside its old path (by its key, or for a container log, gzipped by its head) and drained
//! from the checkpoint before the path's current file. For a container log, the rotated files
//! of the path newer than that one which the agent never saw (the runtime rotated the path
//! again meanwhile, as it must have to gzip the older one) are drained after it, from their
//! start, oldest first.
//!
//! Invariant: a rotated file is drained only if it has a checkpoint or is newer than a file of
//! its path that has one: a rotated name is never a new source of its own.
//!
//! Invariant: what is resumed comes from one consistent look at the container logs'
//! directories. The runtime keeps writing and rotating while the agent starts, and Docker's
//! rotated names shift (`.1` becomes `.2`, the file the path named becomes `.1`): files found
//! by name while that happens are the wrong ones (one is taken twice, the next one never), and
//! the file the path named when the look began is renamed away before it was ever opened. So
//! every file is opened (the path's current one included, held from then on) between two
//! listings of the names and their inodes; if they differ the look is made again, and nothing
//! is followed or forgotten (checkpoints removed) until a look holds.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use logship_config::agent::Format;

use super::opening::resumable;
use super::{Reader, ReaderError};
use crate::compressed;
use crate::container::rotation::{self, Rank};
use crate::identity::{self, FileKey, Fingerprint};
use crate::source::Source;
use crate::spool::Checkpoint;

/// Set in the device number of the key of a file decompressed from a `.gz` the agent never
/// saw: no real device number has it, so the key is never an inode's.
const DECOMPRESSED: u64 = 1 << 63;

/// Looks at the directories made before following them anyway, while the runtime keeps
/// rotating (each look takes milliseconds; a rotation fills a whole file first).
const LOOKS: usize = 20;

/// What a start resumes, from one look at the directories.
#[derive(Default)]
struct Plan {
    /// The rotated files to drain, in order.
    sources: Vec<Source>,
    /// Their keys.
    keys: HashSet<FileKey>,
    /// Checkpoints whose file is gone: removed once the look holds.
    gone: Vec<(FileKey, Checkpoint)>,
    /// The file each path with rotated files to drain names, opened in the same look: it
    /// follows them (the runtime may rename it away before a scan would open it).
    current: Vec<Current>,
}

/// The file a container log's path names, opened in the look that found its rotated files.
struct Current {
    path: PathBuf,
    file: File,
    key: FileKey,
}

/// A file to drain first, found again.
struct Rotated {
    modified: Option<SystemTime>,
    key: FileKey,
    file: File,
    checkpoint: Checkpoint,
    /// The name it was found under (its `.gz` for one found compressed).
    name: Option<PathBuf>,
    /// Found compressed: `file` is its `.gz` decompressed.
    decompressed: bool,
}

impl Reader {
    /// Drains the files rotated while we were stopped before the new files at their paths.
    pub(super) fn resume_rotated(&mut self) -> Result<(), ReaderError> {
        self.resume_rotated_files()?;
        self.sources.relink_later();
        Ok(())
    }

    fn resume_rotated_files(&mut self) -> Result<(), ReaderError> {
        let logs = self.container_logs_to_resume()?;
        let mut look = 1;
        loop {
            let before = rotated_names(&logs);
            let plan = self.plan_resume()?;
            if rotated_names(&logs) == before {
                return self.follow_plan(plan);
            }
            if look == LOOKS {
                tracing::warn!(
                    looks = LOOKS,
                    "container logs kept rotating while the agent looked for the files rotated while it was stopped; following what the last look found"
                );
                return self.follow_plan(plan);
            }
            tracing::info!(
                look,
                "a container log rotated while the agent looked for its rotated files, looking again"
            );
            look += 1;
        }
    }

    /// The container logs with an unfinished checkpoint, with their format.
    fn container_logs_to_resume(&self) -> Result<Vec<(PathBuf, Format)>, ReaderError> {
        let mut paths: Vec<PathBuf> = self
            .spool
            .checkpoints()?
            .into_iter()
            .filter(|(_, c)| !c.finished)
            .map(|(_, c)| c.path)
            .collect();
        paths.sort();
        paths.dedup();
        Ok(paths
            .into_iter()
            .map(|path| {
                let format = self.rules_for(&path).format;
                (path, format)
            })
            .filter(|(_, format)| *format != Format::Lines)
            .collect())
    }

    /// Follows what a look found: the rotated files first, then the files their paths name.
    fn follow_plan(&mut self, plan: Plan) -> Result<(), ReaderError> {
        for (key, checkpoint) in plan.gone {
            tracing::warn!(path = %checkpoint.path.display(), offset = checkpoint.offset,
                "file rotated and removed while stopped; lines written after the checkpoint are gone");
            self.spool.remove_checkpoint(key)?;
        }
        for source in plan.sources {
            tracing::info!(path = %source.path().display(), offset = source.checkpoint().offset,
                "file rotated while stopped, draining it first");
            self.sources.push(source);
        }
        for Current { path, file, key } in plan.current {
            // A key a file read from its `.gz` has too (its inode reused) is held, and followed
            // once that one is closed (see `opening::Deferred`).
            if let Some(found) = self.matching(&path) {
                let first_scan = self.first_scan;
                self.open_held(found, file, key, first_scan)?;
            }
        }
        Ok(())
    }

    /// One look: the rotated files to drain, the checkpoints whose file is gone, and the files
    /// the paths name; nothing followed yet.
    fn plan_resume(&self) -> Result<Plan, ReaderError> {
        let mut plan = Plan::default();
        let mut found = Vec::new();
        // The heads of every file each path was read in, finished ones included: a rotated file
        // with one of them was seen (it may have been gzipped since, under another inode).
        let mut known: HashMap<PathBuf, Vec<Fingerprint>> = HashMap::new();
        for (key, checkpoint) in self.spool.checkpoints()? {
            if let Some(head) = checkpoint.fingerprint {
                known.entry(checkpoint.path.clone()).or_default().push(head);
            }
            if checkpoint.finished {
                continue;
            }
            let still_there =
                std::fs::metadata(&checkpoint.path).is_ok_and(|m| FileKey::of(&m) == key);
            // A container log's inode is reused at once when the runtime deletes (or gzips) a
            // rotated file and creates the next: another head under the key is another file,
            // and the checkpoint's file is looked for elsewhere (it is never truncated).
            let reused = still_there
                && self.rules_for(&checkpoint.path).format != Format::Lines
                && !File::open(&checkpoint.path).is_ok_and(|file| {
                    let size = file.metadata().map_or(0, |m| m.len());
                    resumable(&file, &checkpoint, size)
                });
            if still_there && !reused {
                continue;
            }
            match identity::find_named_by_key(&checkpoint.path, key) {
                Some((file, size, name)) if resumable(&file, &checkpoint, size) => {
                    let modified = file.metadata().and_then(|m| m.modified()).ok();
                    found.push(Rotated {
                        modified,
                        key,
                        file,
                        checkpoint,
                        name: Some(name),
                        decompressed: false,
                    });
                }
                _ => match self.recover_compressed(key, &checkpoint) {
                    Some((modified, file, gz)) => found.push(Rotated {
                        modified,
                        key,
                        file,
                        checkpoint,
                        name: Some(gz),
                        decompressed: true,
                    }),
                    None => plan.gone.push((key, checkpoint)),
                },
            }
        }
        // Several files of one path rotated while we were stopped: the one written to last is
        // the newest (checkpoints come in inode order, which says nothing about age).
        found.sort_by_key(|r| (r.modified, r.key));
        // Files found again are drained as such, never again as unseen.
        let taken: Vec<PathBuf> = found.iter().filter_map(|r| r.name.clone()).collect();
        // Per container log path: the newest rotated name found, after whose file the newer
        // rotated files it never saw are drained.
        let mut newest: HashMap<PathBuf, (usize, Rank)> = HashMap::new();
        for (index, rotated) in found.iter().enumerate() {
            let path = &rotated.checkpoint.path;
            let format = self.rules_for(path).format;
            let rank = rotated
                .name
                .as_deref()
                .and_then(|name| rotation::rank(format, path, name));
            if let Some(rank) = rank {
                let entry = newest.entry(path.clone()).or_insert((index, rank.clone()));
                *entry = (index, entry.1.clone().max(rank));
            }
        }
        let mut paths: Vec<PathBuf> = Vec::new();
        for (index, rotated) in found.into_iter().enumerate() {
            let path = rotated.checkpoint.path.clone();
            tracing::debug!(path = %path.display(), offset = rotated.checkpoint.offset, found = ?rotated.name,
                "file rotated while stopped");
            let rules = self.rules_for(&path);
            let format = rules.format;
            let mut source =
                Source::rotated(&path, rotated.file, rotated.key, &rotated.checkpoint, rules);
            if rotated.decompressed {
                source = source.from_gz();
            }
            plan.keys.insert(rotated.key);
            plan.sources.push(source);
            if let Some((last, rank)) = newest.get(&path)
                && *last == index
            {
                let heads = known.get(&path).map_or(&[][..], Vec::as_slice);
                self.drain_unseen(&mut plan, format, &path, rank, heads, &taken);
            }
            if format != Format::Lines && !paths.contains(&path) {
                paths.push(path);
            }
        }
        for path in paths {
            if let Ok(file) = File::open(&path)
                && let Ok(meta) = file.metadata()
            {
                let key = FileKey::of(&meta);
                plan.current.push(Current { path, file, key });
            }
        }
        Ok(plan)
    }

    /// Drains the rotated files of `path` newer than `newest` that the agent never saw (no
    /// checkpoint of the path has their head: keys say nothing here, as the runtime reuses
    /// inodes and gzips into new ones), oldest first, from their start; `taken` are drained
    /// already.
    fn drain_unseen(
        &self,
        plan: &mut Plan,
        format: Format,
        path: &Path,
        newest: &Rank,
        heads: &[Fingerprint],
        taken: &[PathBuf],
    ) {
        for (_, name) in rotation::rotated(format, path)
            .into_iter()
            .filter(|(rank, _)| rank > newest)
        {
            let Ok(meta) = std::fs::metadata(&name) else {
                continue;
            };
            let key = FileKey::of(&meta);
            let gzipped = name.extension().is_some_and(|e| e == "gz");
            let seen = heads.iter().any(|&head| {
                if gzipped {
                    compressed::starts_with(&name, head)
                } else {
                    File::open(&name).is_ok_and(|f| identity::matches(&f, head).unwrap_or(false))
                }
            });
            if seen || taken.contains(&name) {
                continue;
            }
            // A file found again keeps the key of its inode, which the runtime may have given
            // since to this .gz: a decompressed file is keyed apart from every inode (its
            // device number with the top bit set, which no device has), the same at every start.
            let key = if gzipped || plan.keys.contains(&key) {
                FileKey {
                    dev: key.dev | DECOMPRESSED,
                    ino: key.ino,
                }
            } else {
                key
            };
            if plan.keys.contains(&key) {
                continue;
            }
            let file = if gzipped {
                match compressed::decompress_whole(&name, key, self.spool.dir()) {
                    Ok((file, cut_short)) => {
                        if let Some(reason) = cut_short {
                            tracing::warn!(gz = %name.display(), %reason,
                                "compressed rotated file ends in an error; its lines past that are lost");
                        }
                        file
                    }
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %logship_runtime::error_chain(&err),
                            "cannot read a compressed rotated file");
                        continue;
                    }
                }
            } else {
                match File::open(&name) {
                    Ok(file) => file,
                    Err(_) => continue,
                }
            };
            tracing::info!(path = %path.display(), rotated = %name.display(),
                "file rotated while stopped and never read, draining it from its start");
            let checkpoint = Checkpoint::start(path);
            let rules = self.rules_for(path);
            plan.keys.insert(key);
            let source = Source::rotated(path, file, key, &checkpoint, rules);
            plan.sources
                .push(if gzipped { source.from_gz() } else { source });
        }
    }

    /// The file of `checkpoint`, rotated away and found only gzipped beside its path (see
    /// [`crate::compressed`]), decompressed; with when the `.gz` was last modified, and its name.
    fn recover_compressed(
        &self,
        key: FileKey,
        checkpoint: &Checkpoint,
    ) -> Option<(Option<SystemTime>, File, PathBuf)> {
        match compressed::recover(checkpoint, key, self.spool.dir()) {
            Ok(Some(found)) => {
                let size = found.file.metadata().map_or(0, |m| m.len());
                if !resumable(&found.file, checkpoint, size) {
                    return None;
                }
                tracing::info!(path = %checkpoint.path.display(), gz = %found.gz.display(), offset = checkpoint.offset,
                    size, "file rotated and compressed while stopped, reading it from the checkpoint in its .gz");
                if let Some(reason) = &found.cut_short {
                    tracing::warn!(gz = %found.gz.display(), %reason,
                        "compressed rotated file ends in an error; its lines past that are lost");
                }
                Some((found.modified, found.file, found.gz))
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(path = %checkpoint.path.display(), error = %logship_runtime::error_chain(&err),
                    "cannot read the compressed rotated file");
                None
            }
        }
    }
}

/// The names (and inodes) of `logs` and of their rotated files: a look at them holds if these
/// did not change meanwhile.
fn rotated_names(logs: &[(PathBuf, Format)]) -> Vec<(PathBuf, FileKey)> {
    let mut names = Vec::new();
    for (path, format) in logs {
        for name in rotation::names(*format, path)
            .into_iter()
            .chain([path.clone()])
        {
            if let Ok(meta) = std::fs::symlink_metadata(&name) {
                names.push((name, FileKey::of(&meta)));
            }
        }
    }
    names.sort();
    names
}
