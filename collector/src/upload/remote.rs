//! `logship-collector audit --remote`: the bucket against the upload ledger. Per output file,
//! its objects must cover its store offsets `[0, end)` of the ledger contiguously, each
//! starting where the one before ended (so sizes are as recorded), with no overlap.
//!
//! Objects past a file's recorded end that continue it contiguously were confirmed by the
//! store but not yet recorded (an upload in flight, or a crash between the two): the next
//! upload puts the same key with the same bytes. They are shown, and are not a fault.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use logship_config::CollectorConfig;
use logship_config::archive::Compression;
use logship_config::collector::RawCollectorConfig;

use crate::upload::key;
use crate::upload::ledger::Ledger;
use crate::upload::store::{Listed, Store};

/// What one file's objects say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileAudit {
    pub objects: u64,
    /// `[0, end)` as recorded.
    pub end: u64,
    /// Ranges below `end` no object holds.
    pub missing: Vec<(u64, u64)>,
    /// Ranges held by more than one object, or past `end` with a hole before them.
    pub extra: Vec<(u64, u64)>,
    /// Bytes past `end`, contiguous: uploaded, not yet recorded.
    pub ahead: u64,
}

impl FileAudit {
    fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty()
    }
}

/// Checks one file's objects, `(offset, size)`, against its recorded end.
pub fn check(mut objects: Vec<(u64, u64)>, end: u64) -> FileAudit {
    objects.sort_unstable();
    let mut audit = FileAudit {
        objects: objects.len() as u64,
        end,
        ..FileAudit::default()
    };
    let mut at = 0;
    for (offset, size) in objects {
        let object_end = offset + size;
        if offset > at {
            if offset < end {
                audit.missing.push((at, offset));
            } else {
                if at < end {
                    audit.missing.push((at, end));
                }
                audit.extra.push((offset, object_end));
                at = at.max(object_end);
                continue;
            }
        } else if offset < at {
            audit.extra.push((offset, object_end.min(at)));
        }
        at = at.max(object_end);
    }
    if at < end {
        audit.missing.push((at, end));
    } else if audit.extra.iter().all(|&(_, e)| e <= end) {
        audit.ahead = at - end;
    }
    audit
}

/// The audit of every file in the ledger or the bucket, and the keys not of the key form.
pub fn audit(
    ledger: &Ledger,
    listed: &[Listed],
    prefix: &str,
    compressed: bool,
) -> (BTreeMap<String, FileAudit>, Vec<String>) {
    let mut objects: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut foreign = Vec::new();
    for object in listed {
        match key::parse(prefix, &object.key, compressed) {
            Some(name) => objects
                .entry(name.file)
                .or_default()
                .push((name.offset, object.size)),
            None => foreign.push(object.key.clone()),
        }
    }
    for file in ledger.files.keys() {
        objects.entry(file.clone()).or_default();
    }
    let files = objects
        .into_iter()
        .map(|(file, objects)| {
            let end = ledger.files.get(&file).map_or(0, |entry| entry.end());
            let audit = check(objects, end);
            (file, audit)
        })
        .collect();
    (files, foreign)
}

/// The report as printed, and whether every file is complete.
pub fn report(files: &BTreeMap<String, FileAudit>, foreign: &[String]) -> (String, bool) {
    let mut out = String::new();
    let mut complete = true;
    for (file, audit) in files {
        let state = if audit.is_complete() {
            "complete"
        } else {
            "INCOMPLETE"
        };
        let _ = writeln!(
            out,
            "{file}: {} objects, bytes 0..{} {state}",
            audit.objects, audit.end
        );
        for (start, end) in &audit.missing {
            let _ = writeln!(
                out,
                "  missing bytes {start}..{end} ({} bytes)",
                end - start
            );
        }
        for (start, end) in &audit.extra {
            let _ = writeln!(
                out,
                "  extra bytes {start}..{end} (overlapping, or past a hole)"
            );
        }
        if audit.ahead > 0 {
            let _ = writeln!(
                out,
                "  {} bytes past the record: uploaded, not yet recorded",
                audit.ahead
            );
        }
        complete &= audit.is_complete();
    }
    for key in foreign {
        let _ = writeln!(out, "not an archive object: {key}");
    }
    let incomplete = files.values().filter(|a| !a.is_complete()).count();
    let _ = writeln!(out, "{} files, {incomplete} incomplete", files.len());
    (out, complete)
}

/// `logship-collector audit --remote`: exit 0 when every file's objects are complete, 1 when
/// one is not, 2 when the config, the ledger or the bucket cannot be read.
pub fn main(binary: &str, config: &Path) -> ExitCode {
    let config: CollectorConfig = match logship_config::load::load::<RawCollectorConfig>(config) {
        Ok(config) => config,
        Err(err) => return logship_runtime::cli::fail(binary, &err.to_string(), 2),
    };
    let Some(upload) = config.upload.as_ref() else {
        return logship_runtime::cli::fail(
            binary,
            "audit --remote: the config has no [upload] table",
            2,
        );
    };
    let ledger = match Ledger::read(&config.state_dir) {
        Ok(ledger) => ledger,
        Err(err) => {
            return logship_runtime::cli::fail(binary, &logship_runtime::error_chain(&err), 2);
        }
    };
    let listed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| err.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                let store = Store::new(upload).map_err(|e| logship_runtime::error_chain(&e))?;
                store
                    .list(&upload.prefix)
                    .await
                    .map_err(|e| logship_runtime::error_chain(&e))
            })
        });
    let listed = match listed {
        Ok(listed) => listed,
        Err(err) => return logship_runtime::cli::fail(binary, &err, 2),
    };
    let compressed = config.archive.compression != Compression::None;
    let (files, foreign) = audit(&ledger, &listed, &upload.prefix, compressed);
    let (text, complete) = report(&files, &foreign);
    print!("{text}");
    if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_objects_are_complete_and_holes_and_overlaps_are_named() {
        assert!(check(vec![(10, 5), (0, 10)], 15).is_complete());
        let hole = check(vec![(0, 10), (12, 3)], 15);
        assert_eq!(hole.missing, [(10, 12)]);
        let overlap = check(vec![(0, 10), (8, 7)], 15);
        assert_eq!(overlap.extra, [(8, 10)]);
        let short = check(vec![(0, 10)], 15);
        assert_eq!(short.missing, [(10, 15)]);
        let ahead = check(vec![(0, 10), (10, 5)], 10);
        assert!(ahead.is_complete());
        assert_eq!(ahead.ahead, 5);
        let stray = check(vec![(0, 10), (20, 5)], 10);
        assert_eq!(stray.extra, [(20, 25)]);
        assert!(check(vec![], 0).is_complete());
        assert_eq!(check(vec![], 7).missing, [(0, 7)]);
    }
}
