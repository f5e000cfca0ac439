//! Compacting the tails of compressed files after a batch commits, and finishing a compaction a
//! crash interrupted (see [`super::frames`] for the format and the protocol).
//!
//! A round of compactions costs two syncs and two flushes of the commit record whatever the
//! number of files in it, so rounds run at most every [`ROUND_EVERY`], each compacting every
//! tail due since the last: measured on 400 files, a round after every batch (files due one by
//! one) cut the collector's throughput to 0.39 of plain output; tails then grow by at most that
//! interval's lines past their step.

use std::fs::File;
use std::os::fd::AsFd as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::{Sink, SinkError, frames, nofollow};

/// At most one compaction round per this interval.
pub const ROUND_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
use crate::commit::Commit;
use crate::commit::file_record::FileRecord;
use crate::sink::durable::Target;

impl Sink {
    /// Compacts the tails that the last committed batch made due: stages every compacted frame
    /// and commits that, then settles each and commits the shorter files. A failure leaves the
    /// files for recovery (a staged compaction is settled, anything else truncated). Returns
    /// the records it changed.
    pub fn compact(&mut self, commit: &Commit) -> Result<Vec<(PathBuf, FileRecord)>, SinkError> {
        let now = std::time::Instant::now();
        if self.compact_due.is_empty() || now < self.next_compaction {
            return Ok(Vec::new());
        }
        self.next_compaction = now + ROUND_EVERY;
        let due = std::mem::take(&mut self.compact_due);
        let Some(frames) = self.frames.as_mut() else {
            return Ok(Vec::new());
        };
        let mut staged: Vec<(PathBuf, File, FileRecord)> = Vec::new();
        let mut records = Vec::new();
        for relative in due {
            let Some(output) = self.open.peek(&relative) else {
                continue;
            };
            let record = output.record;
            let path = self.dir.join(&relative);
            let file = nofollow::open_existing(self.root.as_fd(), &relative).map_err(|source| {
                SinkError::Open {
                    path: path.clone(),
                    source,
                }
            })?;
            match frames
                .stage(&file, &record)
                .map_err(|source| SinkError::Compress {
                    path: path.clone(),
                    source,
                })? {
                Some((bytes, next)) => {
                    file.write_all_at(&bytes, record.len)
                        .map_err(|source| SinkError::Write { path, source })?;
                    staged.push((relative, file, next));
                }
                // Compressing the tail again saves nothing: it stays, and a new tail starts.
                None => records.push((relative, Some(FileRecord::at(record.len)))),
            }
        }
        let paths: Vec<PathBuf> = staged.iter().map(|(r, ..)| self.dir.join(r)).collect();
        let targets: Vec<Target<'_>> = staged
            .iter()
            .zip(&paths)
            .map(|((relative, file, _), path)| Target {
                file,
                path,
                on_output_fs: self.open.peek(relative).is_none_or(|o| o.on_output_fs),
            })
            .collect();
        self.fs.sync(&targets, &mut self.entries)?;
        records.extend(staged.iter().map(|(r, _, next)| (r.clone(), Some(*next))));
        commit.set_records(&records)?;
        // Copy every frame, make the copies durable at once, then cut every file.
        let mut settled = Vec::with_capacity(staged.len());
        for ((relative, file, next), path) in staged.iter().zip(&paths) {
            let record = frames::copy_staged(file, next).map_err(|source| SinkError::Write {
                path: path.clone(),
                source,
            })?;
            settled.push((relative.clone(), Some(record)));
        }
        self.fs.sync(&targets, &mut self.entries)?;
        for (((_, file, _), path), (_, record)) in staged.iter().zip(&paths).zip(&settled) {
            if let Some(record) = record {
                frames::cut(file, record).map_err(|source| SinkError::Truncate {
                    path: path.clone(),
                    len: record.len,
                    source,
                })?;
            }
        }
        self.fs.sync(&targets, &mut self.entries)?;
        commit.set_records(&settled)?;
        let mut changed = Vec::with_capacity(records.len() + settled.len());
        for (relative, record) in records.into_iter().chain(settled) {
            if let (Some(output), Some(record)) = (self.open.get_mut(&relative), record) {
                output.record = record;
                changed.push((relative, record));
            }
        }
        Ok(changed)
    }

    /// Finishes the staged compaction of `relative` (after a crash or a failed batch) and
    /// commits the result; `Open` with `NotFound` if the file is gone.
    pub(super) fn settle(
        &mut self,
        relative: &Path,
        record: &FileRecord,
        commit: &Commit,
    ) -> Result<FileRecord, SinkError> {
        let path = self.dir.join(relative);
        let file = nofollow::open_existing(self.root.as_fd(), relative).map_err(|source| {
            SinkError::Open {
                path: path.clone(),
                source,
            }
        })?;
        let settled = frames::settle(&file, record).map_err(|source| SinkError::Write {
            path: path.clone(),
            source,
        })?;
        commit.set_records(&[(relative.to_path_buf(), Some(settled))])?;
        tracing::info!(file = %path.display(), len = settled.len, "finished an interrupted compaction");
        Ok(settled)
    }
}
