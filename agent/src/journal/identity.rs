//! An entry's identity and envelope: its message id is a pure function of the entry and the
//! input (file identity = the journal's sequence-number id as dev and ino, and the input's id
//! as fp; offset = the entry's sequence number), so an entry read again carries the same id.

use logship_config::agent::JournalInput;
use logship_runtime::{EnvelopeRef, FileId, SourceKind};

use super::JournalReader;
use super::cursor::Place;
use super::export::{self, Entry};
use crate::spool::Message;

impl JournalReader {
    /// The envelope of an entry.
    pub(super) fn message(&self, entry: &Entry, place: &Place, skipped: u64) -> Message {
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
        Message::of(&envelope)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use logship_config::agent::ReadFrom;

    use super::*;

    #[test]
    fn names_become_one_safe_component() {
        assert_eq!(safe_name("nginx.service"), "nginx.service");
        assert_eq!(safe_name("a/../b"), "a_.._b");
        assert_eq!(safe_name(".."), "unknown");
        assert_eq!(safe_name("tab\there"), "tab_here");
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
