//! The journal input: entries of the systemd journal, read through a `journalctl
//! --output=export --follow` child, spooled like lines of a file.
//!
//! Why a child and not libsystemd: `journalctl` is on every systemd host, a crash or a SIGBUS
//! inside libsystemd on a rotating or vacuumed file (what Filebeat and Fluent Bit hit) takes
//! down only the child, which is restarted from the last spooled cursor; and the agent links
//! no C library and needs no thread pinned to a journal handle.
//!
//! Invariants:
//! - The saved cursor is a checkpoint: it names the last entry spooled, and advances in the
//!   same sled batch as the segment holding the entries up to it (see `spool`). It never
//!   passes an entry that is not spooled; entries read but not spooled when the child or the
//!   agent dies are read again from it.
//! - A (re)started child is given `--cursor=<saved>` and so shows the saved entry first; that
//!   entry is skipped (it is spooled). If the first entry shown is another one, the saved
//!   entry no longer exists (vacuumed): journalctl resumed at the first entry after its place,
//!   and the jump is said once and counted in `logship_agent_journal_gaps_total`: never a
//!   silent restart at "now", never a re-read of the whole journal.
//! - An entry's message id is a pure function of the entry and the input: file identity = the
//!   journal's sequence-number id (128 bits as dev and ino) and the input's id (fp), offset =
//!   the entry's sequence number. An entry read again carries the same id, and the collector's
//!   exactly-once by position covers it.
//! - A child that exits or writes garbage is restarted with backoff (said once per outage);
//!   journalctl missing ends the agent with exit 1. Never a running agent that stopped reading.

mod child;
pub mod cursor;
pub mod export;

use std::collections::HashMap;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logship_config::agent::{JournalInput, ReadFrom};
use logship_runtime::{EnvelopeRef, FileId, SourceKind};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::reader::pause::DiskPause;
use crate::spool::{Message, Spool, SpoolError};
use cursor::Place;
use export::{Entry, ExportError, ExportReader};

/// The program that reads the journal.
const JOURNALCTL: &str = "journalctl";
/// Entries per spool append at most (one segment, one fsync, one sled batch).
const BATCH_ENTRIES: usize = 2000;
/// Bytes of envelopes per spool append at most.
const BATCH_BYTES: usize = 2 << 20;
/// Entries are gathered this long after the first of a batch: one fsync per burst, not per
/// entry, while a lone entry is spooled within milliseconds.
const COALESCE: Duration = Duration::from_millis(5);
/// The longest the reader waits for an entry before it looks at `stop` again.
const WAIT_MAX: Duration = Duration::from_millis(250);
/// Restart delays of a child that exited: from the first to the last, doubling.
const RESTART_MIN: Duration = Duration::from_millis(200);
const RESTART_MAX: Duration = Duration::from_secs(5);
/// A child that dies again within this long after the last warning is not said again.
const QUIET: Duration = Duration::from_secs(60);
/// How long after a young entry without `MESSAGE` it is read again: its writer, which links
/// fields within microseconds, has long finished.
const REREAD_AFTER: Duration = Duration::from_millis(200);
/// An entry younger than this may have been read while it was being written (see [`Rereads`]).
const YOUNG_US: u64 = 10_000_000;

/// Why a journal input stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot run {JOURNALCTL}")]
    Missing(#[source] std::io::Error),
}

/// What `/status` and `/metrics` show of one journal input; the reader writes it.
#[derive(Debug, Default)]
pub struct JournalState {
    /// The input's key (`inputs[N]`).
    pub key: String,
    pub directory: Option<std::path::PathBuf>,
    pub units: Vec<String>,
    /// The cursor of the last entry spooled.
    pub cursor: Mutex<Option<String>>,
    /// Entries spooled since start.
    pub entries: AtomicU64,
    /// How old the last entry spooled was when it was spooled, in milliseconds.
    pub lag_ms: AtomicU64,
    /// Whether a journalctl child is running.
    pub reading: AtomicBool,
}

impl JournalState {
    fn of(input: &JournalInput) -> JournalState {
        JournalState {
            key: input.key.clone(),
            directory: input.directory.clone(),
            units: input.units.clone(),
            ..JournalState::default()
        }
    }
}

/// One journal input's reader; runs on a thread of its own.
pub struct JournalReader {
    input: JournalInput,
    /// The input's identity: its spool key, and the `fp` of its entries' file identity.
    id: u64,
    host: String,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    state: Arc<JournalState>,
    pause: DiskPause,
    rereads: Rereads,
}

/// How a child's session ended.
enum End {
    /// The agent is stopping.
    Stopped,
    /// The child's output ended: it exited. Restart it, with backoff.
    Exited,
    /// The child's output could not be read, or the child not started: restart it, with backoff.
    Failed(String),
    /// An entry may have been read half-written: read on from the saved cursor at once.
    Reread,
}

/// Entries shown without `MESSAGE` that are read again.
///
/// A journal writer makes an entry visible (links it into the file's entry array) before it
/// links the entry's fields' data objects to it, one by one; a data object written for this
/// entry (a new MESSAGE, say) is, for a moment, half-linked, and `sd_journal_enumerate_data`
/// skips a data object it reads in that state without a word. journalctl then shows the entry
/// without that field: its line would be shipped empty, and the entry's id would make the
/// collector drop the true one later. So a young entry without `MESSAGE` is read once more,
/// from the last spooled cursor, after [`REREAD_AFTER`]. Invariant: an entry is read again at
/// most once; and once a re-read shows an entry truly has no `MESSAGE`, none is read again for
/// [`YOUNG_US`], so a journal full of such entries costs one restart per 10 s, not one per entry.
#[derive(Default)]
struct Rereads {
    /// The cursor of the entry last read again.
    last: Option<String>,
    /// When a re-read last showed an entry without `MESSAGE` again (µs since the epoch).
    confirmed_us: Option<u64>,
}

impl Rereads {
    /// Whether the entry at `cursor`, shown without `MESSAGE`, is to be read again.
    fn wanted(&mut self, cursor: &str, realtime_us: u64, now_us: u64) -> bool {
        if self.last.as_deref() == Some(cursor) {
            self.confirmed_us = Some(now_us);
            return false;
        }
        let young = |at: u64| now_us.saturating_sub(at) < YOUNG_US;
        if !young(realtime_us) || self.confirmed_us.is_some_and(young) {
            return false;
        }
        self.last = Some(cursor.to_string());
        true
    }
}

impl JournalReader {
    /// A reader of `input` for this host.
    pub fn new(
        input: JournalInput,
        host: String,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
    ) -> JournalReader {
        JournalReader {
            id: input_id(&input),
            state: Arc::new(JournalState::of(&input)),
            input,
            host,
            spool,
            metrics,
            pause: DiskPause::default(),
            rereads: Rereads::default(),
        }
    }

    /// What it shows to `/status`.
    pub fn state(&self) -> Arc<JournalState> {
        self.state.clone()
    }

    /// Reads until `stop`, restarting the child as often as it dies.
    pub fn run(mut self, stop: CancellationToken) -> Result<(), JournalError> {
        let mut delay = RESTART_MIN;
        let mut last_said: Option<Instant> = None;
        let mut restarts = 0u64;
        let mut first = true;
        while !stop.is_cancelled() {
            let read_before = self.state.entries.load(Ordering::Relaxed);
            let end = self.session(&stop, first)?;
            first = false;
            let cause = match end {
                End::Stopped => break,
                End::Reread => {
                    Metrics::add(&self.metrics.journal_rereads, 1);
                    sleep_unless(&stop, REREAD_AFTER);
                    continue;
                }
                End::Failed(cause) => cause,
                // `session` turns this into `Failed` with the child's exit status.
                End::Exited => format!("{JOURNALCTL} exited"),
            };
            restarts += 1;
            Metrics::add(&self.metrics.journal_restarts, 1);
            if self.state.entries.load(Ordering::Relaxed) > read_before {
                delay = RESTART_MIN;
            }
            // Said once per outage; a child that dies again and again is said once a minute.
            if last_said.is_none_or(|at| at.elapsed() >= QUIET) {
                tracing::warn!(input = %self.input.key, cause, restarts, "journal reader stopped, restarting it");
                last_said = Some(Instant::now());
            } else {
                tracing::debug!(input = %self.input.key, cause, "journal reader stopped again");
            }
            sleep_unless(&stop, delay);
            delay = (delay * 2).min(RESTART_MAX);
        }
        match self.spool.flush() {
            Err(err) if err.is_disk_failure() => Ok(()),
            other => Ok(other?),
        }
    }

    /// Where this session starts: the saved cursor; without one, as `read_from` says (at the
    /// end: the newest entry's cursor, saved at once so a restart does not move it).
    fn start_cursor(&self) -> Result<Option<String>, JournalError> {
        if let Some(cursor) = self.spool.journal_cursor(self.id)? {
            return Ok(Some(cursor));
        }
        if self.input.read_from == ReadFrom::Beginning {
            return Ok(None);
        }
        let newest = self.newest_cursor()?;
        if let Some(cursor) = &newest {
            self.spool.set_journal_cursor(self.id, cursor)?;
            self.spool.flush()?;
        }
        tracing::info!(input = %self.input.key, cursor = newest.as_deref().unwrap_or("(empty journal)"), "journal input starts at the end");
        Ok(newest)
    }

    /// The cursor of the newest entry this input sees, `None` if there is none.
    fn newest_cursor(&self) -> Result<Option<String>, JournalError> {
        let output = self
            .command()
            .args(["--lines=1"])
            .stderr(Stdio::null())
            .output()
            .map_err(JournalError::Missing)?;
        let mut reader = ExportReader::new(output.stdout.as_slice(), 1 << 16);
        Ok(reader
            .next_entry()
            .ok()
            .flatten()
            .and_then(|entry| entry.text("__CURSOR").map(str::to_string)))
    }

    /// `journalctl` with the input's directory and unit matches, writing the export format.
    fn command(&self) -> Command {
        let mut command = Command::new(JOURNALCTL);
        if let Some(dir) = &self.input.directory {
            command.arg("--directory").arg(dir);
        }
        // --merge: every boot. Without it, journalctl 252 --follow shows the latest boot only,
        // even after a cursor, and the tail of the previous boot (written after the agent
        // stopped for a reboot) would never be read.
        command.args(["--output=export", "--merge", "--quiet", "--no-pager"]);
        // Matches on one field are alternatives (journalctl(1)).
        for unit in &self.input.units {
            command.arg(format!("_SYSTEMD_UNIT={unit}"));
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        command
    }

    /// Runs one child from the saved cursor until it ends, an entry is to be read again, or
    /// `stop`. The first session says where it starts.
    fn session(&mut self, stop: &CancellationToken, first: bool) -> Result<End, JournalError> {
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

    /// The envelope of an entry.
    fn message(&self, entry: &Entry, place: &Place, skipped: u64) -> Message {
        let name = entry
            .text("_SYSTEMD_UNIT")
            .or_else(|| entry.text("SYSLOG_IDENTIFIER"))
            .map_or_else(|| "unknown".to_string(), safe_name);
        let path = format!("journal/{name}");
        let mut fields = self.input.fields.clone();
        for field in &export::KEPT[3..] {
            if let Some(value) = entry.get(field) {
                fields.insert(
                    (*field).to_string(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
        let realtime_us = entry
            .text("__REALTIME_TIMESTAMP")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(place.realtime_us);
        let envelope = EnvelopeRef {
            host: &self.host,
            path: &path,
            file: FileId {
                dev: (place.seqnum_id >> 64) as u64,
                ino: place.seqnum_id as u64,
                fp: self.id,
            },
            generation: 0,
            offset: place.seqnum,
            timestamp_ms: i64::try_from(realtime_us / 1000).unwrap_or(i64::MAX),
            line: entry.get("MESSAGE").unwrap_or_default(),
            fields: &fields,
            kind: SourceKind::Journal { skipped },
        };
        (envelope.message_id(), envelope.to_json())
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
        self.bytes += message.1.len();
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

/// The identity of an input: FNV-1a 64 of its directory and sorted units. It keys the input's
/// cursor in the spool and is the `fp` of its entries, so two inputs over one journal with
/// other unit filters never claim each other's sequence numbers at the collector.
pub fn input_id(input: &JournalInput) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let mut text = b"journal\0".to_vec();
    if let Some(dir) = &input.directory {
        text.extend_from_slice(dir.as_os_str().as_bytes());
    }
    for unit in &input.units {
        text.push(0);
        text.extend_from_slice(unit.as_bytes());
    }
    crate::identity::fnv1a(&text)
}

/// A unit or identifier as one path component: `/`, NUL and control characters become `_`; an
/// empty name, `.` and `..` become `unknown`.
fn safe_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    match safe.as_str() {
        "" | "." | ".." => "unknown".to_string(),
        _ => safe,
    }
}

fn sleep_unless(stop: &CancellationToken, total: Duration) {
    let until = Instant::now() + total;
    while !stop.is_cancelled() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(WAIT_MAX));
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn names_become_one_safe_component() {
        assert_eq!(safe_name("nginx.service"), "nginx.service");
        assert_eq!(safe_name("a/../b"), "a_.._b");
        assert_eq!(safe_name(".."), "unknown");
        assert_eq!(safe_name("tab\there"), "tab_here");
    }

    #[test]
    fn a_young_entry_without_message_is_read_again_once_and_a_confirmed_one_quiets_rereads() {
        let now = 100 * YOUNG_US;
        let mut rereads = Rereads::default();
        assert!(rereads.wanted("c1", now - 1000, now));
        // Read again and still without MESSAGE: it has none; shipped as it is.
        assert!(!rereads.wanted("c1", now - 1000, now + 1));
        // Another one soon after is not read again: the journal has such entries.
        assert!(!rereads.wanted("c2", now, now + 2));
        // Later it is.
        assert!(rereads.wanted("c3", now + YOUNG_US, now + YOUNG_US + 2));
        // An old entry is not being written.
        let mut rereads = Rereads::default();
        assert!(!rereads.wanted("c4", now - YOUNG_US, now));
    }

    #[test]
    fn the_input_id_depends_on_directory_and_units_only() {
        let input = |dir: Option<&str>, units: &[&str]| JournalInput {
            key: "inputs[0]".into(),
            directory: dir.map(Into::into),
            units: units.iter().map(|u| u.to_string()).collect(),
            read_from: ReadFrom::Beginning,
            max_line_bytes: 1,
            fields: BTreeMap::new(),
        };
        let a = input_id(&input(None, &["a.service"]));
        assert_eq!(a, input_id(&input(None, &["a.service"])));
        assert_ne!(a, input_id(&input(None, &[])));
        assert_ne!(a, input_id(&input(Some("/j"), &["a.service"])));
    }
}
