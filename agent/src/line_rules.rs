//! How a file's lines become the messages shipped: one line each, or (opt-in per input) events
//! of several lines joined by a multiline rule, with the input's fields.
//!
//! Event rule (`[inputs.multiline]`): with `start`, a line matching it starts an event and any
//! other line continues the current one (lines before the first start line are events of
//! their own); with `continue`, a line matching it continues the current event and any other
//! line starts one. An event is shipped when the next one starts, when it would pass
//! `max_lines` or `max_line_bytes` (then it is cut, and the cut counted), when no line came for
//! `timeout`, or when the file is finished. Its bytes are its lines joined by `\n` (exactly as
//! they were in the file), its offset its first line's.
//!
//! Invariant: the lines of the event being assembled are not shipped, so the file's checkpoint
//! stays at the event's first line; after a restart the event is read again whole and keeps
//! its message id. A checkpoint at the rest of a cut event says so (`mid_event`), so that rest
//! is read again as one event, not as lines of their own: the same boundaries, the same ids.

use std::collections::BTreeMap;
use std::time::Instant;

use logship_config::agent::{Format, Input, Multiline, MultilineRule};

/// An input's rules for turning bytes into messages.
#[derive(Debug, Clone)]
pub struct LineRules {
    /// A longer line is shipped in parts of this size.
    pub max_line: usize,
    pub multiline: Option<Multiline>,
    /// The input's labels, carried by every message.
    pub fields: BTreeMap<String, String>,
    /// Plain lines, or a container runtime's entries to decode (see [`crate::container`]).
    pub format: Format,
}

impl LineRules {
    /// The rules of an input.
    pub fn of(input: &Input) -> LineRules {
        LineRules {
            max_line: usize::try_from(input.max_line_bytes)
                .unwrap_or(usize::MAX)
                .max(1),
            multiline: input.multiline.clone(),
            fields: input.fields.clone(),
            format: input.format,
        }
    }

    /// One line per message, no fields.
    pub fn plain(max_line: usize) -> LineRules {
        LineRules {
            max_line: max_line.max(1),
            multiline: None,
            fields: BTreeMap::new(),
            format: Format::Lines,
        }
    }
}

/// The event being assembled.
#[derive(Debug, Default)]
pub struct Event {
    /// Its lines joined by `\n`.
    pub bytes: Vec<u8>,
    /// Bytes of the file it covers, newlines included.
    pub consumed: u64,
    pub lines: u32,
    /// When its last line was added.
    pub last: Option<Instant>,
    /// It began where a longer event was cut: its first line is a continuation.
    pub cut: bool,
}

/// What to do with a complete line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ship it alone (after the event being assembled, if any).
    Alone,
    /// Ship the event being assembled (if any), then start a new one with it.
    Start,
    /// Add it to the event being assembled.
    Append,
    /// The event is full: ship it (a cut, counted), then start a new one with it.
    Cut,
    /// Start an event with it as the rest of a cut event (read again after a restart).
    Resume,
}

impl Event {
    /// Whether an event is being assembled.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Where `line` goes under `rules` (no multiline rule: alone).
    pub fn decide(&self, rules: &LineRules, line: &[u8]) -> Action {
        let Some(multiline) = &rules.multiline else {
            return Action::Alone;
        };
        let starts = match &multiline.rule {
            MultilineRule::Start(re) => re.is_match(line),
            MultilineRule::Continue(re) => !re.is_match(line),
        };
        match (&multiline.rule, self.is_empty(), starts) {
            // Before the first start line: a line of its own.
            (MultilineRule::Start(_), true, false) => Action::Alone,
            (_, true, _) | (_, false, true) => Action::Start,
            (_, false, false)
                if self.lines >= multiline.max_lines
                    || self.bytes.len() + 1 + line.len() > rules.max_line =>
            {
                Action::Cut
            }
            (_, false, false) => Action::Append,
        }
    }

    /// Starts the event with `line`, which took `consumed` bytes of the file; `cut`: the rest
    /// of an event that was cut.
    pub fn start(&mut self, line: &[u8], consumed: u64, cut: bool) {
        self.cut = cut;
        self.bytes.clear();
        self.bytes.extend_from_slice(line);
        self.consumed = consumed;
        self.lines = 1;
        self.last = Some(Instant::now());
    }

    /// Adds `line` to the event.
    pub fn append(&mut self, line: &[u8], consumed: u64) {
        self.bytes.push(b'\n');
        self.bytes.extend_from_slice(line);
        self.consumed += consumed;
        self.lines += 1;
        self.last = Some(Instant::now());
    }

    /// Forgets the event (it was shipped, or the file is read again).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.consumed = 0;
        self.lines = 0;
        self.last = None;
        self.cut = false;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rules(rule: MultilineRule, max_lines: u32) -> LineRules {
        LineRules {
            max_line: 100,
            multiline: Some(Multiline {
                rule,
                max_lines,
                timeout: Duration::from_secs(1),
            }),
            fields: BTreeMap::new(),
            format: Format::Lines,
        }
    }

    fn re(pattern: &str) -> regex::bytes::Regex {
        regex::bytes::Regex::new(pattern).unwrap()
    }

    #[test]
    fn start_rule_joins_continuations_and_cuts_long_events() {
        let rules = rules(MultilineRule::Start(re(r"^\d{4}-")), 2);
        let mut event = Event::default();
        assert_eq!(event.decide(&rules, b"  orphan"), Action::Alone);
        assert_eq!(event.decide(&rules, b"2026-12-01 boom"), Action::Start);
        event.start(b"2026-12-01 boom", 16, false);
        assert_eq!(event.decide(&rules, b"  at a()"), Action::Append);
        event.append(b"  at a()", 9);
        assert_eq!(event.decide(&rules, b"  at b()"), Action::Cut);
        assert_eq!(event.decide(&rules, b"2026-12-02 next"), Action::Start);
        assert_eq!(event.bytes, b"2026-12-01 boom\n  at a()");
        assert_eq!(event.consumed, 25);
    }

    #[test]
    fn continue_rule_and_plain_lines() {
        let rules = rules(MultilineRule::Continue(re(r"^\s")), 500);
        let mut event = Event::default();
        assert_eq!(event.decide(&rules, b"  leading"), Action::Start);
        event.start(b"Exception", 10, false);
        assert_eq!(event.decide(&rules, b"\tat x"), Action::Append);
        assert_eq!(event.decide(&rules, b"next"), Action::Start);
        let long = vec![b' '; 100];
        assert_eq!(event.decide(&rules, &long), Action::Cut);
        assert_eq!(
            Event::default().decide(&LineRules::plain(10), b"x"),
            Action::Alone
        );
    }
}
