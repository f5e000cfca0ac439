//! Files rotated while the agent was stopped: each unfinished checkpoint's file is found again
//! beside its old path (by its key, or for a container log, gzipped by its head) and drained
//! from the checkpoint before the path's current file. For a container log, the rotated files
//! of the path newer than that one which the agent never saw (the runtime rotated the path
//! again meanwhile, as it must have to gzip the older one) are drained after it, from their
//! start, oldest first.
//!
//! Invariant: a rotated file is drained only if it has a checkpoint or is newer than a file of
//! its path that has one: a rotated name is never a new source of its own.

use std::collections::HashMap;
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

/// A file to drain first, found again.
struct Rotated {
    modified: Option<SystemTime>,
    key: FileKey,
    file: File,
    checkpoint: Checkpoint,
    /// The name it was found under (its `.gz` for one found compressed).
    name: Option<PathBuf>,
}

impl Reader {
    /// Drains the files rotated while we were stopped before the new files at their paths.
    pub(super) fn resume_rotated(&mut self) -> Result<(), ReaderError> {
        self.resume_rotated_files()?;
        self.relink_due = true;
        Ok(())
    }

    fn resume_rotated_files(&mut self) -> Result<(), ReaderError> {
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
                    });
                }
                _ => match self.recover_compressed(key, &checkpoint) {
                    Some((modified, file, gz)) => found.push(Rotated {
                        modified,
                        key,
                        file,
                        checkpoint,
                        name: Some(gz),
                    }),
                    None => {
                        tracing::warn!(path = %checkpoint.path.display(), offset = checkpoint.offset,
                            "file rotated and removed while stopped; lines written after the checkpoint are gone");
                        self.spool.remove_checkpoint(key)?;
                    }
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
        for (index, rotated) in found.into_iter().enumerate() {
            let path = rotated.checkpoint.path.clone();
            tracing::info!(path = %path.display(), offset = rotated.checkpoint.offset, found = ?rotated.name,
                "file rotated while stopped, draining it first");
            let rules = self.rules_for(&path);
            let format = rules.format;
            let source =
                Source::rotated(&path, rotated.file, rotated.key, &rotated.checkpoint, rules);
            self.add_source(self.sources.len(), source);
            if let Some((last, rank)) = newest.get(&path)
                && *last == index
            {
                let heads = known.get(&path).map_or(&[][..], Vec::as_slice);
                self.drain_unseen(format, &path, rank, heads, &taken)?;
            }
        }
        Ok(())
    }

    /// Drains the rotated files of `path` newer than `newest` that the agent never saw (no
    /// checkpoint of the path has their head: keys say nothing here, as the runtime reuses
    /// inodes and gzips into new ones), oldest first, from their start; `taken` are drained
    /// already.
    fn drain_unseen(
        &mut self,
        format: Format,
        path: &Path,
        newest: &Rank,
        heads: &[Fingerprint],
        taken: &[PathBuf],
    ) -> Result<(), ReaderError> {
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
            let key = if gzipped || self.keys.contains(&key) {
                FileKey {
                    dev: key.dev | DECOMPRESSED,
                    ino: key.ino,
                }
            } else {
                key
            };
            if self.keys.contains(&key) {
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
            let checkpoint = Checkpoint {
                offset: 0,
                generation: 0,
                fingerprint: None,
                path: path.to_path_buf(),
                finished: false,
                mid_event: false,
            };
            let rules = self.rules_for(path);
            let source = Source::rotated(path, file, key, &checkpoint, rules);
            self.add_source(self.sources.len(), source);
        }
        Ok(())
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
