//! One raw entry of a container log, decoded: Docker's json-file line
//! (`{"log":"...","stream":"stdout","time":"..."}`) or a CRI line
//! (`<RFC 3339 time> <stdout|stderr> <P|F>[:<more tags>] <text>`).
//!
//! A Docker entry is a piece when its `log` does not end in `\n` (the daemon cuts a line at
//! 16 KiB and flags nothing else); a CRI entry is a piece when its tag is `P`. The text of a
//! piece or of a line is given without the runtime's newline.

use std::borrow::Cow;

use serde::Deserialize;

/// Which of a container's output streams an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// Its index in per-stream arrays.
    pub fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    /// Its name, as the runtimes write it and the envelope's `stream` field carries it.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn parse(name: &[u8]) -> Option<Stream> {
        match name {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// A decoded entry: some text of one stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub stream: Stream,
    /// The text, without the newline that ended the line.
    pub text: Cow<'a, [u8]>,
    /// Whether it ends the line (`false`: a piece, the rest follows in later entries).
    pub ends_line: bool,
}

/// Why an entry could not be decoded (it is shipped as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not a JSON object with a string `log` (Docker).
    NotJson,
    /// Not `<time> <stream> <tag> <text>` (CRI).
    NotCri,
    /// A stream other than stdout or stderr.
    UnknownStream,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invalid::NotJson => "not a json-file entry ({\"log\",\"stream\",\"time\"})",
            Invalid::NotCri => "not a CRI line (<time> <stream> <P|F> <text>)",
            Invalid::UnknownStream => "a stream other than stdout or stderr",
        })
    }
}

/// The fields of a json-file entry we use (others, such as `attrs`, are ignored).
#[derive(Deserialize)]
struct JsonEntry<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
}

/// Decodes a Docker json-file entry (its line in the file, without the newline).
pub fn docker(raw: &[u8]) -> Result<Entry<'_>, Invalid> {
    let entry: JsonEntry = serde_json::from_slice(raw).map_err(|_| Invalid::NotJson)?;
    let stream = Stream::parse(entry.stream.as_bytes()).ok_or(Invalid::UnknownStream)?;
    let text = match entry.log {
        Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
        Cow::Owned(text) => Cow::Owned(text.into_bytes()),
    };
    let ends_line = text.last() == Some(&b'\n');
    let text = if ends_line {
        match text {
            Cow::Borrowed(bytes) => Cow::Borrowed(&bytes[..bytes.len() - 1]),
            Cow::Owned(mut bytes) => {
                bytes.pop();
                Cow::Owned(bytes)
            }
        }
    } else {
        text
    };
    Ok(Entry {
        stream,
        text,
        ends_line,
    })
}

/// Decodes a CRI line (without its newline).
pub fn cri(raw: &[u8]) -> Result<Entry<'_>, Invalid> {
    let mut fields = raw.splitn(4, |&b| b == b' ');
    let (Some(time), Some(stream), Some(tags)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(Invalid::NotCri);
    };
    if time.is_empty() || !time[0].is_ascii_digit() {
        return Err(Invalid::NotCri);
    }
    let stream = Stream::parse(stream).ok_or(Invalid::UnknownStream)?;
    // The tag list is `:`-separated; its first tag says whether the line is complete.
    let ends_line = match tags.split(|&b| b == b':').next() {
        Some(b"F") => true,
        Some(b"P") => false,
        _ => return Err(Invalid::NotCri),
    };
    // An empty line may come without the space before its (empty) text.
    let text = fields.next().unwrap_or_default();
    Ok(Entry {
        stream,
        text: Cow::Borrowed(text),
        ends_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_entries_lines_and_pieces() {
        let line = docker(
            br#"{"log":"hello \"you\"\n","stream":"stdout","time":"2026-12-07T05:00:00.1Z"}"#,
        )
        .unwrap();
        assert_eq!(line.stream, Stream::Stdout);
        assert_eq!(&*line.text, b"hello \"you\"");
        assert!(line.ends_line);
        let piece =
            docker(br#"{"log":"abc","stream":"stderr","time":"x","attrs":{"a":"b"}}"#).unwrap();
        assert_eq!(
            (piece.stream, &*piece.text, piece.ends_line),
            (Stream::Stderr, &b"abc"[..], false)
        );
        let empty = docker(br#"{"log":"\n","stream":"stdout","time":"x"}"#).unwrap();
        assert_eq!((&*empty.text, empty.ends_line), (&b""[..], true));
        assert_eq!(docker(b"plain text"), Err(Invalid::NotJson));
        assert_eq!(
            docker(br#"{"log":"x\n","stream":"tty"}"#),
            Err(Invalid::UnknownStream)
        );
    }

    #[test]
    fn cri_lines_and_pieces() {
        let line = cri(b"2026-12-07T05:00:00.123456789Z stdout F hello world").unwrap();
        assert_eq!(
            (line.stream, &*line.text, line.ends_line),
            (Stream::Stdout, &b"hello world"[..], true)
        );
        let piece = cri(b"2026-12-07T05:00:00Z stderr P  two spaces").unwrap();
        assert_eq!(
            (piece.stream, &*piece.text, piece.ends_line),
            (Stream::Stderr, &b" two spaces"[..], false)
        );
        let empty = cri(b"2026-12-07T05:00:00Z stdout F").unwrap();
        assert_eq!((&*empty.text, empty.ends_line), (&b""[..], true));
        let tagged = cri(b"2026-12-07T05:00:00Z stdout F:x y").unwrap();
        assert_eq!(&*tagged.text, b"y");
        assert_eq!(cri(b"hello world"), Err(Invalid::NotCri));
        assert_eq!(
            cri(b"2026-12-07T05:00:00Z stdout X y"),
            Err(Invalid::NotCri)
        );
        assert_eq!(
            cri(b"2026-12-07T05:00:00Z other F y"),
            Err(Invalid::UnknownStream)
        );
    }
}
