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
//!
//! Modules: `session` runs one child and spools what it shows; `child` reads its pipes;
//! `export` parses the export format; `cursor` reads a cursor's place; `identity` makes an
//! entry's envelope and message id; `rereads` decides which entries are read again.

mod child;
pub mod cursor;
pub mod export;
mod identity;
mod rereads;
mod session;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logship_config::agent::{JournalInput, ReadFrom};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::reader::pause::DiskPause;
use crate::spool::{Spool, SpoolError};
use export::ExportReader;
pub use identity::input_id;
use rereads::{REREAD_AFTER, Rereads};
use session::End;

/// The program that reads the journal.
const JOURNALCTL: &str = "journalctl";
/// The longest the reader waits for an entry before it looks at `stop` again.
const WAIT_MAX: Duration = Duration::from_millis(250);
/// Restart delays of a child that exited: from the first to the last, doubling.
const RESTART_MIN: Duration = Duration::from_millis(200);
const RESTART_MAX: Duration = Duration::from_secs(5);
/// A child that dies again within this long after the last warning is not said again.
const QUIET: Duration = Duration::from_secs(60);

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
