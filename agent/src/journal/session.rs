//! One journalctl child: started from the saved cursor, its entries spooled in batches (one
//! segment, one fsync, one sled batch each) with the cursor of the last one, until it ends, an
//! entry is to be read again, or the agent stops.

use std::collections::HashMap;
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cursor::Place;
use super::export::{Entry, ExportError};
use super::{JOURNALCTL, JournalError, JournalReader, WAIT_MAX, child, now_us, sleep_unless};
use crate::metrics::Metrics;
use crate::spool::Message;

/// Entries per spool append at most (one segment, one fsync, one sled batch).
const BATCH_ENTRIES: usize = 2000;
/// Bytes of envelopes per spool append at most.
const BATCH_BYTES: usize = 2 << 20;
/// Entries are gathered this long after the first of a batch: one fsync per burst, not per
/// entry, while a lone entry is spooled within milliseconds.
const COALESCE: Duration = Duration::from_millis(5);

/// How a child's session ended.
pub(super) enum End {
    /// The agent is stopping.
    Stopped,
    /// The child's output ended: it exited. Restart it, with backoff.
    Exited,
    /// The child's output could not be read, or the child not started: restart it, with backoff.
    Failed(String),
    /// An entry may have been read half-written: read on from the saved cursor at once.
    Reread,
}

impl JournalReader {
    /// Runs one child from the saved cursor until it ends, an entry is to be read again, or
    /// `stop`. The first session says where it starts.
    pub(super) fn session(
        &mut self,
        stop: &CancellationToken,
        first: bool,
    ) -> Result<End, JournalError> {
        let start = self.start_cursor()?;
        let mut command = self.command();
        command.args(["--follow", "--no-tail"]);
        if let Some(cursor) = &start {
            command.arg(format!("--cursor={cursor}"));
        }
        command.stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; the child dies with the thread that started it,
        // so a kill -9 of the agent leaves no journalctl behind.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(JournalError::Missing(err));
            }
            Err(err) => return Ok(End::Failed(format!("cannot start {JOURNALCTL}: {err}"))),
        };
        if first {
            tracing::info!(input = %self.input.key, directory = ?self.input.directory, units = ?self.input.units,
                cursor = start.as_deref().unwrap_or("(beginning)"), "journal reading");
        }
        let entries = child::pipe_entries(
            &mut child,
            self.input.max_line_bytes,
            &self.input.key,
            &self.metrics,
        );
        self.state.reading.store(true, Ordering::Relaxed);
        let end = self.follow(stop, &entries, start.as_deref().and_then(Place::of));
        self.state.reading.store(false, Ordering::Relaxed);
        let _ = child.kill();
        let status = child.wait();
        Ok(match (end?, status) {
            (End::Exited, Ok(status)) => End::Failed(format!("{JOURNALCTL} exited ({status})")),
            (End::Exited, Err(err)) => End::Failed(format!("{JOURNALCTL} lost: {err}")),
            (end, _) => end,
        })
    }

    /// Spools the entries the child shows, in batches, until it ends or `stop`. `expect` is the
    /// saved entry the child shows first.
    fn follow(
        &mut self,
        stop: &CancellationToken,
        entries: &Receiver<Result<Entry, ExportError>>,
        mut expect: Option<Place>,
    ) -> Result<End, JournalError> {
        let mut batch = Batch::default();
        // The last sequence number shipped per sequence-number id, for `skipped`.
        let mut last: HashMap<u128, u64> = HashMap::new();
        if let Some(place) = expect {
            last.insert(place.seqnum_id, place.seqnum);
        }
        loop {
            if stop.is_cancelled() {
                self.spool_batch(&mut batch, stop)?;
                return Ok(End::Stopped);
            }
            if !self.spool.has_room() {
                // The publisher drains the spool; journalctl waits on its pipe meanwhile.
                sleep_unless(stop, Duration::from_millis(100));
                continue;
            }
            let wait = if batch.is_empty() { WAIT_MAX } else { COALESCE };
            match entries.recv_timeout(wait) {
                Ok(Ok(entry)) => {
                    let Some((cursor, place)) = entry
                        .text("__CURSOR")
                        .and_then(|c| Some((c.to_string(), Place::of(c)?)))
                    else {
                        Metrics::add(&self.metrics.journal_errors, 1);
                        continue;
                    };
                    if let Some(saved) = expect.take() {
                        if saved.same_entry(&place) {
                            continue;
                        }
                        self.gap(&saved, &place);
                        last.clear();
                    }
                    if entry.get("MESSAGE").is_none()
                        && self.rereads.wanted(&cursor, place.realtime_us, now_us())
                    {
                        // What came before it is spooled: the saved cursor is the entry before.
                        self.spool_batch(&mut batch, stop)?;
                        return Ok(End::Reread);
                    }
                    let skipped = match last.insert(place.seqnum_id, place.seqnum) {
                        // Only with a unit filter are missing numbers other units' entries.
                        Some(prev) if !self.input.units.is_empty() && place.seqnum > prev => {
                            place.seqnum - prev - 1
                        }
                        _ => 0,
                    };
                    if entry.truncated {
                        Metrics::add(&self.metrics.journal_truncated, 1);
                    }
                    batch.push(self.message(&entry, &place, skipped), cursor, &place);
                    if batch.full() {
                        self.spool_batch(&mut batch, stop)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.spool_batch(&mut batch, stop)?,
                Ok(Err(err)) => {
                    self.spool_batch(&mut batch, stop)?;
                    Metrics::add(&self.metrics.journal_errors, 1);
                    return Ok(End::Failed(logship_runtime::error_chain(&err)));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.spool_batch(&mut batch, stop)?;
                    return Ok(End::Exited);
                }
            }
        }
    }

    /// The saved entry is gone: say how far reading jumped, once, and count it.
    fn gap(&self, saved: &Place, resumed: &Place) {
        Metrics::add(&self.metrics.journal_gaps, 1);
        let jumped_secs = resumed.realtime_us.saturating_sub(saved.realtime_us) / 1_000_000;
        let same_journal = saved.seqnum_id == resumed.seqnum_id;
        tracing::warn!(
            input = %self.input.key,
            jumped_secs,
            from_seqnum = saved.seqnum,
            to_seqnum = resumed.seqnum,
            same_journal,
            "journal cursor no longer in the journal (vacuumed or rotated away); resumed at the first entry after it"
        );
    }

    /// Spools the batch with its last cursor; on a failing state disk, waits (said once per
    /// outage) and tries again, so nothing read is lost and nothing is read past it meanwhile.
    fn spool_batch(
        &mut self,
        batch: &mut Batch,
        stop: &CancellationToken,
    ) -> Result<(), JournalError> {
        let Some(cursor) = batch.cursor.take() else {
            return Ok(());
        };
        loop {
            match self.spool.append_journal(&batch.messages, self.id, &cursor) {
                Ok(dropped) => {
                    self.pause.succeeded();
                    Metrics::add(&self.metrics.dropped, dropped.lines);
                    dropped.log(self.spool.dropped());
                    break;
                }
                Err(err) if err.is_disk_failure() && !stop.is_cancelled() => {
                    self.pause.failed(&err, self.spool.dir(), &self.metrics);
                    while let Some(wait) = self.pause.wait().filter(|w| !w.is_zero()) {
                        if stop.is_cancelled() {
                            break;
                        }
                        std::thread::sleep(wait.min(WAIT_MAX));
                    }
                }
                Err(err) if err.is_disk_failure() => {
                    // Stopping: what is not spooled is read again from the saved cursor.
                    batch.clear();
                    return Ok(());
                }
                Err(err) => return Err(err.into()),
            }
        }
        let count = batch.messages.len() as u64;
        Metrics::add(&self.metrics.journal_entries, count);
        self.state.entries.fetch_add(count, Ordering::Relaxed);
        let lag = now_us().saturating_sub(batch.realtime_us) / 1000;
        self.state.lag_ms.store(lag, Ordering::Relaxed);
        if let Ok(mut saved) = self.state.cursor.lock() {
            *saved = Some(cursor);
        }
        batch.clear();
        Ok(())
    }
}

/// Entries read since the last spool append.
#[derive(Default)]
struct Batch {
    messages: Vec<Message>,
    bytes: usize,
    /// The cursor of the last entry in it.
    cursor: Option<String>,
    /// Its last entry's time, for the lag.
    realtime_us: u64,
}

impl Batch {
    fn push(&mut self, message: Message, cursor: String, place: &Place) {
        self.bytes += message.body.len();
        self.messages.push(message);
        self.cursor = Some(cursor);
        self.realtime_us = place.realtime_us;
    }

    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn full(&self) -> bool {
        self.messages.len() >= BATCH_ENTRIES || self.bytes >= BATCH_BYTES
    }

    fn clear(&mut self) {
        self.messages.clear();
        self.bytes = 0;
        self.cursor = None;
    }
}
