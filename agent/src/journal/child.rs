//! The journalctl child's pipes: its stdout parsed into entries on a thread of its own, its
//! stderr said line by line. Both threads end when the child's pipes close (the session kills
//! the child when it ends), or when the session stops listening.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use super::export::{Entry, ExportError, ExportReader};
use crate::metrics::Metrics;

/// Entries parsed ahead of the spool: bounds memory; past it journalctl blocks on its pipe.
const AHEAD: usize = 1024;
/// journalctl's stderr lines said at most once each, up to this many distinct ones.
const STDERR_DISTINCT: usize = 64;

/// Parses the child's stdout on a thread of its own into a bounded channel (closed when the
/// child's output ends), and says each distinct line of its stderr once (a corrupt file
/// journalctl skips, say), counting every one in `journal_errors`.
pub(super) fn pipe_entries(
    child: &mut Child,
    max_value: u64,
    input: &str,
    metrics: &Arc<Metrics>,
) -> Receiver<Result<Entry, ExportError>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(AHEAD);
    if let Some(stdout) = child.stdout.take() {
        let max_value = usize::try_from(max_value).unwrap_or(usize::MAX);
        spawn_named("logship-journal-parse", move || {
            parse_into(BufReader::with_capacity(256 << 10, stdout), max_value, &tx)
        });
    }
    if let Some(stderr) = child.stderr.take() {
        let (input, metrics) = (input.to_string(), metrics.clone());
        spawn_named("logship-journal-stderr", move || {
            let mut said = HashSet::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                Metrics::add(&metrics.journal_errors, 1);
                if said.len() < STDERR_DISTINCT && said.insert(line.clone()) {
                    tracing::warn!(input = %input, message = %line, "journalctl says");
                }
            }
        });
    }
    rx
}

fn parse_into(stdout: impl BufRead, max_value: usize, tx: &SyncSender<Result<Entry, ExportError>>) {
    let mut reader = ExportReader::new(stdout, max_value);
    loop {
        let next = match reader.next_entry() {
            Ok(Some(entry)) => Ok(entry),
            Ok(None) => return,
            Err(err) => Err(err),
        };
        let failed = next.is_err();
        if tx.send(next).is_err() || failed {
            return;
        }
    }
}

fn spawn_named(name: &str, work: impl FnOnce() + Send + 'static) {
    if let Err(err) = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(work)
    {
        // The session then sees its channel closed and restarts, with backoff.
        tracing::warn!(error = %err, thread = name, "cannot start a journal thread");
    }
}
