//! The completeness audit: which pieces of each source never arrived.
//!
//! The commit record keeps each source's committed ranges and the ranges its agent gave up
//! ([`crate::commit::positions`]); a hole between two committed ranges, or a piece of a
//! given-up range no committed range covers (also before the first committed byte: a `drop_oldest` at a
//! file's head), is a piece of the source that was not written. A hole younger than
//! `audit.gap_after` may still fill (a resend after a lost confirm, a redelivery); one older is a
//! loss: an agent's `drop_oldest`, a copytruncate without a copy, a spool deleted by hand, a bug.
//!
//! The collector writes every hole it holds to `<state_dir>/audit.json` ([`AuditRecord`]) at
//! start and after every batch that opened, changed or closed one, so `logship-collector audit`
//! answers from that file, also while the collector runs (sled admits one process). The file is
//! replaced by a rename, never written in place; it can lag the commit record by the one batch a
//! crash interrupts, and is rewritten on the next start.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use logship_config::CollectorConfig;
use logship_config::collector::RawCollectorConfig;
use logship_runtime::clock::now_ms;
use logship_runtime::status::Gap;
use serde::{Deserialize, Serialize};

use crate::commit::positions::OffsetKind;
use crate::commit::{Commit, CommitError};

/// The audit record's file name in `state_dir`.
pub const RECORD_FILE: &str = "audit.json";

/// What `audit.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// When it was written (unix milliseconds).
    pub written_ms: i64,
    /// Sources whose committed ranges are held.
    pub sources: u64,
    /// Every hole, however young.
    pub gaps: Vec<Gap>,
}

/// A failure to read or write the audit record.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot read the audit record \"{}\" (has the collector run with this state_dir?)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the audit record \"{}\"", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit record \"{}\" is not one", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Commit(#[from] CommitError),
}

impl AuditRecord {
    /// The holes `commit` holds now, named.
    pub fn of(commit: &Commit, now_ms: i64) -> Result<AuditRecord, CommitError> {
        let mut gaps: Vec<Gap> = commit
            .holes()?
            .into_iter()
            .map(|(hole, name)| {
                let (host, path) = name.map_or(("(unknown)".into(), "(unknown)".into()), |n| {
                    (n.host, n.path)
                });
                Gap {
                    host,
                    path,
                    source: format!("{:032x}", hole.source),
                    unit: hole.kind.unit().to_string(),
                    start: hole.start,
                    end: hole.end,
                    since_ms: hole.since_ms,
                }
            })
            .collect();
        gaps.sort_by(|a, b| {
            (&a.host, &a.path, &a.source, a.start).cmp(&(&b.host, &b.path, &b.source, b.start))
        });
        Ok(AuditRecord {
            written_ms: now_ms,
            sources: commit.source_count() as u64,
            gaps,
        })
    }

    /// Replaces `<state_dir>/audit.json` with this record.
    pub fn write(&self, state_dir: &Path) -> Result<(), AuditError> {
        let path = state_dir.join(RECORD_FILE);
        let partial = state_dir.join(format!("{RECORD_FILE}.new"));
        let fail = |source| AuditError::Write {
            path: path.clone(),
            source,
        };
        // unwrap_or_default: the record is plain data; serializing it cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        std::fs::write(&partial, json).map_err(fail)?;
        std::fs::rename(&partial, &path).map_err(fail)
    }

    /// Reads `<state_dir>/audit.json`.
    pub fn read(state_dir: &Path) -> Result<AuditRecord, AuditError> {
        let path = state_dir.join(RECORD_FILE);
        let bytes = std::fs::read(&path).map_err(|source| AuditError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| AuditError::Parse { path, source })
    }
}

/// The audit record is rewritten when only its count of sources changed at most this often.
const AUDIT_REFRESH_MS: i64 = 10_000;

/// Keeps the audit record up to date: written at start and after every batch that opened,
/// changed or closed a hole; when only the count of sources changed, at most every
/// [`AUDIT_REFRESH_MS`].
pub struct Auditor {
    state_dir: PathBuf,
    /// When the record was last written, and the sources it counted.
    audited: (i64, usize),
}

impl Auditor {
    pub fn new(state_dir: &Path) -> Auditor {
        Auditor {
            state_dir: state_dir.to_path_buf(),
            audited: (0, 0),
        }
    }

    /// Writes the audit record of `commit` and returns its gaps. A record that cannot be
    /// written is said, not fatal: the output and its commit are unaffected.
    pub fn write(&mut self, commit: &Commit) -> Vec<Gap> {
        self.audited = (now_ms(), commit.source_count());
        let record = match AuditRecord::of(commit, now_ms()) {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(error = %logship_runtime::error_chain(&err), "cannot list gaps for the audit");
                return Vec::new();
            }
        };
        if let Err(err) = record.write(&self.state_dir) {
            tracing::warn!(error = %logship_runtime::error_chain(&err), "cannot write the audit record");
        }
        record.gaps
    }

    /// After a batch: rewrites the record if the batch changed a hole (`holes_changed`), or if
    /// only the count of sources changed and the record is older than [`AUDIT_REFRESH_MS`];
    /// its gaps if it did.
    pub fn after_batch(&mut self, commit: &Commit, holes_changed: bool) -> Option<Vec<Gap>> {
        let (audited_ms, audited_sources) = self.audited;
        let refresh =
            commit.source_count() != audited_sources && now_ms() - audited_ms >= AUDIT_REFRESH_MS;
        (holes_changed || refresh).then(|| self.write(commit))
    }
}

/// The gaps open longer than `gap_after` at `now_ms`: losses.
pub fn overdue(gaps: &[Gap], gap_after: Duration, now_ms: i64) -> impl Iterator<Item = &Gap> {
    let oldest = now_ms.saturating_sub(i64::try_from(gap_after.as_millis()).unwrap_or(i64::MAX));
    gaps.iter().filter(move |gap| gap.since_ms <= oldest)
}

/// Whether a gap counts bytes (sources whose offsets are byte positions).
pub fn is_bytes(gap: &Gap) -> bool {
    gap.unit == OffsetKind::Bytes.unit()
}

/// The audit as printed: per host and path, each source's missing ranges and since when; and
/// the number of overdue gaps.
pub fn report(record: &AuditRecord, gap_after: Duration, now_ms: i64) -> (String, usize) {
    use std::fmt::Write as _;
    let overdue: Vec<&Gap> = overdue(&record.gaps, gap_after, now_ms).collect();
    let mut out = String::new();
    let mut last: Option<(&str, &str)> = None;
    for gap in &overdue {
        if last != Some((&gap.host, &gap.path)) {
            let _ = writeln!(out, "{} {}", gap.host, gap.path);
            last = Some((&gap.host, &gap.path));
        }
        let since = UNIX_EPOCH + Duration::from_millis(u64::try_from(gap.since_ms).unwrap_or(0));
        let missing = if is_bytes(gap) {
            format!(
                "missing bytes {}..{} ({} bytes)",
                gap.start,
                gap.end,
                gap.end - gap.start
            )
        } else {
            format!(
                "offsets are sequence numbers: missing {}..{} ({} entries)",
                gap.start,
                gap.end,
                gap.end - gap.start
            )
        };
        let _ = writeln!(
            out,
            "  source {}: {missing}, since {}",
            &gap.source[..16],
            humantime::format_rfc3339_seconds(since)
        );
    }
    let pending = record.gaps.len() - overdue.len();
    let bytes: u64 = overdue
        .iter()
        .filter(|g| is_bytes(g))
        .map(|g| g.end - g.start)
        .sum();
    let _ = writeln!(
        out,
        "{} gaps ({bytes} bytes) open longer than {} over {} sources; {pending} younger gaps may still fill (record written {})",
        overdue.len(),
        humantime::format_duration(gap_after),
        record.sources,
        humantime::format_rfc3339_seconds(
            UNIX_EPOCH + Duration::from_millis(u64::try_from(record.written_ms).unwrap_or(0))
        ),
    );
    (out, overdue.len())
}

/// `logship-collector audit`: prints the report for the collector of `config`; exit 0 when no
/// gap is overdue, 1 when one is, 2 when the config or the record cannot be read.
pub fn main(binary: &str, config: &Path) -> ExitCode {
    let config: CollectorConfig = match logship_config::load::load::<RawCollectorConfig>(config) {
        Ok(config) => config,
        Err(err) => return logship_runtime::cli::fail(binary, &err.to_string(), 2),
    };
    let record = match AuditRecord::read(&config.state_dir) {
        Ok(record) => record,
        Err(err) => {
            return logship_runtime::cli::fail(binary, &logship_runtime::error_chain(&err), 2);
        }
    };
    let (text, overdue) = report(&record, config.archive.gap_after, now_ms());
    print!("{text}");
    if overdue == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
