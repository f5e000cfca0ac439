//! The journal export format (`journalctl --output=export`), as far as the agent needs it.
//!
//! An entry is a run of fields ended by an empty line. A field is `NAME=value\n` when its value
//! is text, or `NAME\n` followed by its length (u64, little endian), its bytes and `\n` when
//! the value may hold anything (binary, newlines). Only the fields the agent ships are kept;
//! the others are skipped without being held in memory, and a kept value longer than the limit
//! is cut to it (and said so), so an entry costs bounded memory whatever the journal holds.

use std::io::{BufRead, Read};

/// The fields of an entry the agent ships; the rest are skipped.
pub const KEPT: [&str; 9] = [
    "__CURSOR",
    "__REALTIME_TIMESTAMP",
    "MESSAGE",
    "_SYSTEMD_UNIT",
    "SYSLOG_IDENTIFIER",
    "PRIORITY",
    "_PID",
    "_BOOT_ID",
    "_HOSTNAME",
];

/// Field names are short; a longer "name" line means the stream is not in the export format.
const MAX_NAME: usize = 1024;

/// One entry: the kept fields, in the order they came.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Entry {
    pub fields: Vec<(&'static str, Vec<u8>)>,
    /// `MESSAGE` was longer than the limit and is cut.
    pub truncated: bool,
}

impl Entry {
    /// The value of a kept field.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// A kept field as text (`None` if absent or not UTF-8).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Why the stream cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read the export stream")]
    Io(#[from] std::io::Error),
    #[error("malformed export stream: {0}")]
    Malformed(&'static str),
}

/// Reads entries from an export stream; values are cut at `max_value` bytes.
pub struct ExportReader<R> {
    input: R,
    max_value: usize,
    /// The line being read: a field's name, or a whole text field.
    line: Vec<u8>,
}

impl<R: BufRead> ExportReader<R> {
    /// A reader of `input`.
    pub fn new(input: R, max_value: usize) -> ExportReader<R> {
        ExportReader {
            input,
            max_value,
            line: Vec::with_capacity(256),
        }
    }

    /// The next entry; `None` at the end of the stream (an entry cut short by the end is
    /// dropped: it was not complete).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ExportError> {
        let mut entry = Entry::default();
        let mut started = false;
        loop {
            self.line.clear();
            let limit = (MAX_NAME + self.max_value + 2) as u64;
            let read = Read::take(&mut self.input, limit).read_until(b'\n', &mut self.line)?;
            if read == 0 {
                return Ok(None);
            }
            let complete = self.line.last() == Some(&b'\n');
            if complete {
                self.line.pop();
            } else if (read as u64) < limit || !self.skip_line()? {
                // The stream ended inside a field.
                return Ok(None);
            }
            if self.line.is_empty() {
                if started {
                    return Ok(Some(entry));
                }
                continue;
            }
            started = true;
            let name_end = self.line.len().min(MAX_NAME + 1);
            match self.line[..name_end].iter().position(|&b| b == b'=') {
                Some(eq) => {
                    if let Some(name) = kept_name(&self.line[..eq]) {
                        let value = self.line[eq + 1..].to_vec();
                        entry.truncated |= !complete;
                        self.keep(&mut entry, name, value);
                    }
                }
                None if !complete || self.line.len() > MAX_NAME => {
                    return Err(ExportError::Malformed("field name too long"));
                }
                None => {
                    if !self.binary_field(&mut entry)? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Skips the rest of a line longer than the limit; `false` if the stream ended first.
    fn skip_line(&mut self) -> Result<bool, ExportError> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.input.consume(at + 1);
                    return Ok(true);
                }
                None => {
                    let len = buf.len();
                    self.input.consume(len);
                }
            }
        }
    }

    /// `NAME\n<len u64 LE><bytes>\n`; `false` when the stream ended inside it.
    fn binary_field(&mut self, entry: &mut Entry) -> Result<bool, ExportError> {
        let kept = kept_name(&self.line);
        let mut len = [0u8; 8];
        if let Err(err) = self.input.read_exact(&mut len) {
            return end_or(err);
        }
        let len = u64::from_le_bytes(len);
        let keep = kept.map_or(0, |_| len.min(self.max_value as u64 + 1));
        let mut value = Vec::with_capacity(usize::try_from(keep).unwrap_or(0).min(1 << 20));
        let got = Read::take(&mut self.input, keep).read_to_end(&mut value)?;
        if (got as u64) < keep {
            return Ok(false);
        }
        let rest = len - keep;
        let skipped = std::io::copy(&mut Read::take(&mut self.input, rest), &mut std::io::sink())?;
        if skipped < rest {
            return Ok(false);
        }
        let mut newline = [0u8; 1];
        if let Err(err) = self.input.read_exact(&mut newline) {
            return end_or(err);
        }
        if newline[0] != b'\n' {
            return Err(ExportError::Malformed(
                "binary field not ended by a newline",
            ));
        }
        if let Some(name) = kept {
            if len > keep {
                // Longer than the limit: cut, and say so through `truncated`.
                value.truncate(self.max_value);
                entry.truncated = true;
            }
            self.keep(entry, name, value);
        }
        Ok(true)
    }

    fn keep(&self, entry: &mut Entry, name: &'static str, mut value: Vec<u8>) {
        if value.len() > self.max_value {
            value.truncate(self.max_value);
            entry.truncated = true;
        }
        entry.fields.push((name, value));
    }
}

/// The kept field of this name, if it is one.
fn kept_name(name: &[u8]) -> Option<&'static str> {
    KEPT.iter().copied().find(|k| k.as_bytes() == name)
}

fn end_or(err: std::io::Error) -> Result<bool, ExportError> {
    if err.kind() == std::io::ErrorKind::UnexpectedEof {
        Ok(false)
    } else {
        Err(err.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = format!("{name}\n").into_bytes();
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    #[test]
    fn text_and_binary_fields_and_entry_boundaries() {
        let mut stream = b"__CURSOR=s=ab;i=1\nMESSAGE=hello\nOTHER=skipped\n\n".to_vec();
        stream.extend_from_slice(b"__CURSOR=s=ab;i=2\n");
        stream.extend(binary("MESSAGE", b"bin\0ary\nline\xff"));
        stream.extend(binary("_COREDUMP", &[7u8; 5000]));
        stream.extend_from_slice(b"_SYSTEMD_UNIT=a.service\n\n");
        let mut reader = ExportReader::new(stream.as_slice(), 1 << 20);
        let first = reader.next_entry().unwrap().unwrap();
        assert_eq!(first.text("MESSAGE"), Some("hello"));
        assert_eq!(first.get("OTHER"), None);
        let second = reader.next_entry().unwrap().unwrap();
        assert_eq!(second.get("MESSAGE"), Some(&b"bin\0ary\nline\xff"[..]));
        assert_eq!(second.text("_SYSTEMD_UNIT"), Some("a.service"));
        assert_eq!(second.fields.len(), 3);
        assert!(reader.next_entry().unwrap().is_none());
    }

    #[test]
    fn long_values_are_cut_and_an_unfinished_entry_is_not_returned() {
        let mut stream = binary("MESSAGE", &[b'x'; 100]);
        stream.extend_from_slice(b"\nMESSAGE=");
        stream.extend_from_slice(&[b'y'; 50]);
        stream.extend_from_slice(b"\n\n__CURSOR=s=1;i=9\nMESSAGE=cut sh");
        let mut reader = ExportReader::new(stream.as_slice(), 10);
        let first = reader.next_entry().unwrap().unwrap();
        assert_eq!(first.get("MESSAGE"), Some(&[b'x'; 10][..]));
        assert!(first.truncated);
        let second = reader.next_entry().unwrap().unwrap();
        assert_eq!(second.get("MESSAGE"), Some(&[b'y'; 10][..]));
        assert!(reader.next_entry().unwrap().is_none());
    }

    #[test]
    fn a_long_text_value_is_cut_and_the_next_field_read() {
        let mut stream = b"MESSAGE=".to_vec();
        stream.extend_from_slice(&[b'm'; 5000]);
        stream.extend_from_slice(b"\nPRIORITY=6\n\n");
        let mut reader = ExportReader::new(stream.as_slice(), 10);
        let entry = reader.next_entry().unwrap().unwrap();
        assert_eq!(entry.get("MESSAGE"), Some(&[b'm'; 10][..]));
        assert_eq!(entry.text("PRIORITY"), Some("6"));
        assert!(entry.truncated);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut stream = vec![b'z'; 5000];
        stream.push(b'\n');
        let mut reader = ExportReader::new(stream.as_slice(), 10);
        assert!(reader.next_entry().is_err());
        let mut bad = binary("MESSAGE", b"abc");
        bad.pop();
        bad.push(b'!');
        let mut reader = ExportReader::new(bad.as_slice(), 10);
        assert!(reader.next_entry().is_err());
    }
}
