//! When each source host's last line was committed: `logship_collector_host_last_seen_seconds`.
//!
//! Bounded cardinality: one series per host (never per file), a host not seen for
//! `dedup.max_age` is forgotten (its series disappears), and at most [`MAX_HOSTS`] are kept,
//! the least recently seen dropped first. A fleet larger than that shows its most recent hosts.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The most hosts shown: a bound on the page's size and on Prometheus' series.
pub const MAX_HOSTS: usize = 10_000;

/// Last commit time (unix seconds) of each source host.
#[derive(Debug)]
pub struct HostsSeen {
    last: HashMap<String, u64>,
    /// Hosts older than this are forgotten (`dedup.max_age`).
    max_age: Duration,
    /// When silent hosts were last looked for (unix seconds): once a minute is enough.
    pruned_at: u64,
}

/// How often silent hosts are looked for, in seconds.
const PRUNE_EVERY: u64 = 60;

impl HostsSeen {
    /// Forgets hosts silent for `max_age`.
    pub fn new(max_age: Duration) -> HostsSeen {
        HostsSeen {
            last: HashMap::new(),
            max_age,
            pruned_at: 0,
        }
    }

    /// `hosts` had lines committed at `now` (unix seconds); prunes what is too old or too many.
    pub fn committed<'a>(&mut self, hosts: impl IntoIterator<Item = &'a str>, now: u64) {
        for host in hosts {
            match self.last.get_mut(host) {
                Some(at) => *at = now,
                None => {
                    self.last.insert(host.to_string(), now);
                }
            }
        }
        if now >= self.pruned_at + PRUNE_EVERY {
            let horizon = now.saturating_sub(self.max_age.as_secs());
            self.last.retain(|_, at| *at >= horizon);
            self.pruned_at = now;
        }
        if self.last.len() > MAX_HOSTS {
            let mut times: Vec<u64> = self.last.values().copied().collect();
            let cut = self.last.len() - MAX_HOSTS;
            let (_, &mut oldest_kept, _) = times.select_nth_unstable(cut);
            self.last.retain(|_, at| *at >= oldest_kept);
            // Ties at the cut may leave a few more; drop any of them to honour the cap.
            let excess = self.last.len().saturating_sub(MAX_HOSTS);
            let drop: Vec<String> = self
                .last
                .iter()
                .filter(|(_, at)| **at == oldest_kept)
                .take(excess)
                .map(|(host, _)| host.clone())
                .collect();
            drop.iter().for_each(|host| {
                self.last.remove(host);
            });
        }
    }

    /// Hosts remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Appends the gauge, one series per host (label value escaped as Prometheus wants).
    pub fn render(&self, out: &mut String, name: &str) {
        let _ = writeln!(
            out,
            "# HELP {name} Unix time of the last line committed from each source host (hosts silent for dedup.max_age are dropped).\n# TYPE {name} gauge"
        );
        let mut hosts: Vec<(&String, &u64)> = self.last.iter().collect();
        hosts.sort();
        for (host, at) in hosts {
            let _ = writeln!(out, "{name}{{host=\"{}\"}} {at}", escape(host));
        }
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_hosts_are_forgotten_and_the_count_is_capped() {
        let mut seen = HostsSeen::new(Duration::from_secs(100));
        seen.committed(["a", "b"], 1000);
        seen.committed(["b"], 1050);
        seen.committed(["c"], 1101);
        assert_eq!(seen.len(), 2);
        let mut page = String::new();
        seen.render(&mut page, "m");
        assert!(!page.contains("host=\"a\""), "{page}");
        assert!(page.contains("m{host=\"b\"} 1050\n"), "{page}");
        let mut seen = HostsSeen::new(Duration::from_secs(1_000_000));
        let names: Vec<String> = (0..MAX_HOSTS + 5).map(|i| format!("h{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            seen.committed([name.as_str()], 2000 + i as u64 / 3);
        }
        assert_eq!(seen.len(), MAX_HOSTS);
        assert!(!seen.last.contains_key("h0"));
        assert!(seen.last.contains_key(&format!("h{}", MAX_HOSTS + 4)));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
