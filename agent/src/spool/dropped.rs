//! What `drop_oldest` drops, as ranges of sources: the agent's log names each, so an operator
//! can match it with the hole the collector's audit reports for the same file (or journal).

use logship_runtime::Envelope;

use super::Message;

/// A contiguous piece of one source (path, file identity, generation) dropped from the spool:
/// the part `[from, to)` that its lines claim at the collector ([`Envelope::extent`]: bytes of
/// a file, sequence numbers of a journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub generation: u32,
    pub from: u64,
    pub to: u64,
    pub lines: u64,
}

/// Adds the lines of one dropped segment to `ranges`, merging each with the range of its source
/// it continues. A body that is not an envelope is skipped (it is counted as dropped all the
/// same).
pub fn add(ranges: &mut Vec<DroppedRange>, messages: &[Message]) {
    for (_, body) in messages {
        let Ok(envelope) = Envelope::from_json(body) else {
            continue;
        };
        let (from, to) = envelope.extent();
        let continued = ranges.iter_mut().rev().find(|r| {
            r.path == envelope.path
                && (r.dev, r.ino, r.generation)
                    == (envelope.file.dev, envelope.file.ino, envelope.generation)
                && r.to == from
        });
        match continued {
            Some(range) => {
                range.to = to;
                range.lines += 1;
            }
            None => ranges.push(DroppedRange {
                path: envelope.path,
                dev: envelope.file.dev,
                ino: envelope.file.ino,
                generation: envelope.generation,
                from,
                to,
                lines: 1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use logship_runtime::FileId;

    use super::*;

    fn message(path: &str, ino: u64, offset: u64, line: &str) -> Message {
        let envelope = Envelope {
            host: "h".into(),
            path: path.into(),
            file: FileId { dev: 1, ino, fp: 2 },
            generation: 0,
            offset,
            timestamp_ms: 0,
            line: line.as_bytes().to_vec(),
            fields: Default::default(),
            kind: Default::default(),
        };
        (envelope.message_id(), envelope.to_json())
    }

    #[test]
    fn lines_of_each_file_merge_into_ranges() {
        let mut ranges = Vec::new();
        add(
            &mut ranges,
            &[
                message("/a", 1, 0, "abc"),
                message("/b", 2, 10, "x"),
                message("/a", 1, 4, "de"),
            ],
        );
        add(
            &mut ranges,
            &[message("/a", 1, 7, "f"), message("/a", 1, 20, "g")],
        );
        let spans: Vec<(&str, u64, u64, u64)> = ranges
            .iter()
            .map(|r| (r.path.as_str(), r.from, r.to, r.lines))
            .collect();
        assert_eq!(
            spans,
            [("/a", 0, 9, 3), ("/b", 10, 12, 1), ("/a", 20, 22, 1)]
        );
    }
}
