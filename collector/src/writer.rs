//! Applying one batch: dedup, append, fsync, commit. Blocking; run it off the async threads.
//!
//! Invariant: when [`Writer::write`] returns `Ok`, every line it reports written is fsync'd and
//! its id and file length are flushed in the commit record, so the batch may be acked. When it
//! returns `Err`, nothing may be acked: call [`Writer::recover`] before the next batch.

use std::time::{SystemTime, UNIX_EPOCH};

use logship_config::CollectorConfig;

use crate::commit::Commit;
use crate::dedup;
use crate::sink::{self, Sink, SinkError};
use crate::validate::Line;

/// What became of a batch.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: u64,
    pub duplicates: u64,
    /// Positions in the batch of lines whose output path can never be written, with why.
    pub refused: Vec<(usize, String)>,
    /// Time spent writing and fsyncing the output files.
    pub fsync: std::time::Duration,
}

/// Owns the output files and the commit record.
pub struct Writer {
    sink: Sink,
    commit: Commit,
}

impl Writer {
    /// Opens the record and truncates every output file back to its committed length.
    pub fn open(config: &CollectorConfig) -> Result<Writer, SinkError> {
        let commit = Commit::open(&config.state_dir, &config.dedup, now_ms())?;
        let max_open = sink::budget(
            config.max_open_files,
            logship_config::cli::open_file_limit(),
        );
        if max_open < config.max_open_files {
            tracing::warn!(
                configured = config.max_open_files,
                open_file_limit = logship_config::cli::open_file_limit(),
                using = max_open,
                "output.max_open_files leaves too few descriptors under the open-file limit; keeping fewer output files open"
            );
        }
        let sink = Sink::open(&config.output_dir, &commit, max_open)?;
        tracing::info!(
            files = commit.files()?.len(),
            seen_ids = commit.seen_count(),
            max_open_files = sink.max_open(),
            "state recovered"
        );
        Ok(Writer { sink, commit })
    }

    /// Writes a batch of lines, in order.
    pub fn write(&mut self, lines: Vec<Line>) -> Result<Outcome, SinkError> {
        let numbered: Vec<(usize, Line)> = lines.into_iter().enumerate().collect();
        let (fresh, duplicates) = dedup::fresh(numbered, &self.commit);
        let refused_files = self.sink.open_all(
            fresh.iter().map(|(_, line)| line.file.as_path()),
            &self.commit,
        )?;
        let mut outcome = Outcome {
            duplicates,
            ..Outcome::default()
        };
        let mut ids = Vec::with_capacity(fresh.len());
        for (position, line) in fresh {
            if let Some((_, err)) = refused_files.iter().find(|(file, _)| *file == line.file) {
                outcome.refused.push((position, format!("{err:#}")));
                continue;
            }
            self.sink.append(&line.file, &line.bytes);
            ids.push(line.id);
        }
        let started = std::time::Instant::now();
        let lengths = self.sink.sync(&self.commit)?;
        outcome.fsync = started.elapsed();
        self.commit.record(&ids, &lengths, now_ms())?;
        outcome.written = ids.len() as u64;
        Ok(outcome)
    }

    /// After a failed batch: close every file and truncate back to the committed lengths.
    pub fn recover(&mut self) -> Result<(), SinkError> {
        self.sink.recover(&self.commit)
    }

    /// SIGHUP: close every output file; each is reopened (and re-checked) when next written.
    pub fn reopen(&mut self) {
        self.sink.close_all();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
