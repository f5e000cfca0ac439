//! Creating the output files of the next batch while the current one is written (see
//! [`crate::sink::ahead`]): the consumer keeps taking deliveries during a write, and hands the
//! output files of the lines taken to a creation on a blocking thread.
//!
//! Invariants:
//! - At most one creation runs. It never creates a file of the batch being written, and it has
//!   returned (and what it made is handed to the writer) before the next batch is written or a
//!   retention pass runs: [`Creator::settle`], [`Creator::idle`].

use std::collections::HashSet;
use std::path::PathBuf;

use tokio::task::JoinHandle;

use super::batch::Batch;
use crate::sink::ahead::{Ahead, Made};

/// Runs [`Ahead::create`] for the lines of the next batch, one creation at a time.
#[derive(Default)]
pub(crate) struct Creator {
    /// The creator while no creation runs; `None` while one does, or if none could be made.
    idle: Option<Ahead>,
    running: Option<JoinHandle<(Ahead, Made)>>,
    /// What the finished creations made, for the next batch's writer.
    made: Made,
    /// Lines of the next batch already handed to a creation.
    handed: usize,
}

impl Creator {
    /// Creates files with `ahead`; `None` creates nothing.
    pub fn new(ahead: Option<Ahead>) -> Creator {
        Creator {
            idle: ahead,
            ..Creator::default()
        }
    }

    /// A new next batch starts, empty: none of its lines is handed over yet.
    pub fn next_batch(&mut self) {
        self.handed = 0;
    }

    /// Hands the output files of `next`'s lines not handed over yet, except those of the batch
    /// being written (`writing`), to a creation on a blocking thread; unless one runs (they
    /// are handed when it finishes).
    pub fn hand(&mut self, next: &Batch, writing: &HashSet<PathBuf>) {
        if self.running.is_some() || self.handed >= next.lines.len() {
            return;
        }
        let Some(mut ahead) = self.idle.take() else {
            return;
        };
        let mut files: Vec<PathBuf> = Vec::new();
        for line in &next.lines[self.handed..] {
            if line.marker.is_none() && !writing.contains(&line.file) && !files.contains(&line.file)
            {
                files.push(line.file.clone());
            }
        }
        self.handed = next.lines.len();
        if files.is_empty() {
            self.idle = Some(ahead);
            return;
        }
        let mut made = std::mem::take(&mut self.made);
        self.running = Some(tokio::task::spawn_blocking(move || {
            ahead.create(&files, &mut made);
            (ahead, made)
        }));
    }

    /// Resolves when the running creation has returned; never while none runs.
    pub async fn finished(&mut self) {
        match self.running.as_mut() {
            Some(running) => {
                let joined = running.await;
                self.running = None;
                self.returned(joined);
            }
            None => std::future::pending().await,
        }
    }

    /// Waits for the running creation, if any.
    pub async fn idle(&mut self) {
        if let Some(running) = self.running.take() {
            let joined = running.await;
            self.returned(joined);
        }
    }

    /// Waits for the running creation, and takes what was made, for the writer of the next
    /// batch.
    pub async fn settle(&mut self) -> Made {
        self.idle().await;
        std::mem::take(&mut self.made)
    }

    fn returned(&mut self, joined: Result<(Ahead, Made), tokio::task::JoinError>) {
        match joined {
            Ok((ahead, made)) => {
                self.idle = Some(ahead);
                self.made = made;
            }
            // The files it made have no record: their batch notes their entries itself.
            Err(err) => {
                tracing::warn!(error = %err, "creating output files ahead failed; no longer done")
            }
        }
    }
}
