//! Real journal files for the journal input's tests: `systemd-journal-remote` writes a journal
//! file from entries in the export format fed on its stdin, while the test keeps feeding it
//! (Debian package `systemd-journal-remote`; `.ci/run` installs it).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

const REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// Whether journal files can be written here; if not, skips (or fails, see [`crate::skip`]).
pub fn available(test: &str) -> bool {
    let ok = Path::new(REMOTE).exists()
        && Command::new("journalctl")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        crate::skip(
            test,
            &format!("{REMOTE} or journalctl is missing (apt-get install systemd-journal-remote)"),
        );
    }
    ok
}

/// One entry to write.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `_SYSTEMD_UNIT`, if any.
    pub unit: Option<String>,
    /// `SYSLOG_IDENTIFIER`, if any.
    pub identifier: Option<String>,
    /// `MESSAGE`, if any.
    pub message: Option<Vec<u8>>,
}

impl Entry {
    /// An entry of `unit` with a text message.
    pub fn of(unit: &str, message: &str) -> Entry {
        Entry {
            unit: Some(unit.to_string()),
            identifier: None,
            message: Some(message.as_bytes().to_vec()),
        }
    }

    /// An entry of `unit` without a `MESSAGE`.
    pub fn without_message(unit: &str) -> Entry {
        Entry {
            message: None,
            ..Entry::of(unit, "")
        }
    }
}

/// A journal file being written.
pub struct Feed {
    child: Child,
    stdin: Option<ChildStdin>,
    pub path: PathBuf,
    /// `_BOOT_ID` of the entries written next: a test reboots by changing it.
    pub boot: String,
    /// The last monotonic timestamp written: it must grow within a boot, across files too (one
    /// boot id for all), or journalctl orders entries of different files by it wrongly.
    monotonic: u64,
}

impl Feed {
    /// Starts writing `<dir>/<name>.journal`.
    pub fn start(dir: &Path, name: &str) -> Feed {
        std::fs::create_dir_all(dir).expect("journal dir");
        let path = dir.join(format!("{name}.journal"));
        let mut child = Command::new(REMOTE)
            .arg(format!("--output={}", path.display()))
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-journal-remote");
        let stdin = child.stdin.take();
        Feed {
            child,
            stdin,
            path,
            boot: "6c0ffee0000000000000000000000001".to_string(),
            monotonic: 0,
        }
    }

    /// Writes entries (stamped now) and hands them to the writer at once.
    pub fn write(&mut self, entries: &[Entry]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut out = Vec::with_capacity(entries.len() * 200);
        for entry in entries {
            // Real time stands in for time since boot: it grows across feeds.
            self.monotonic = (self.monotonic + 1).max(now);
            out.extend_from_slice(
                format!(
                    "__REALTIME_TIMESTAMP={now}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={}\n_HOSTNAME=journal-test\nPRIORITY=6\n_PID=4242\n",
                    self.monotonic, self.boot
                )
                .as_bytes(),
            );
            if let Some(unit) = &entry.unit {
                out.extend_from_slice(format!("_SYSTEMD_UNIT={unit}\n").as_bytes());
            }
            if let Some(identifier) = &entry.identifier {
                out.extend_from_slice(format!("SYSLOG_IDENTIFIER={identifier}\n").as_bytes());
            }
            if let Some(message) = &entry.message {
                out.extend_from_slice(b"MESSAGE\n");
                out.extend_from_slice(&(message.len() as u64).to_le_bytes());
                out.extend_from_slice(message);
                out.push(b'\n');
            }
            out.push(b'\n');
        }
        let stdin = self.stdin.as_mut().expect("feed open");
        stdin.write_all(&out).expect("feed the journal writer");
        stdin.flush().expect("feed the journal writer");
    }

    /// Closes the file: the writer exits once it has written everything.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `MESSAGE` data object of a closed journal file put back into the state a writer leaves it
/// in for a moment while it links a new entry's fields: its first entry set, its entry count
/// not yet (journalctl skips such a field without a word). [`HalfLinked::restore`] finishes the
/// link.
pub struct HalfLinked {
    path: PathBuf,
    /// Where the data object's `n_entries` is, and what it held.
    at: u64,
    n_entries: [u8; 8],
}

impl HalfLinked {
    /// Half-links the data object of `MESSAGE=<message>` in the journal file at `path`; the
    /// message must be unique in the file and short (not compressed).
    pub fn message(path: &Path, message: &str) -> HalfLinked {
        use std::os::unix::fs::FileExt as _;
        let bytes = std::fs::read(path).expect("journal file");
        let needle = format!("MESSAGE={message}");
        let payload = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .expect("MESSAGE data object");
        // journal-def.h: a data object's payload follows 64 bytes of header and links, 72 in a
        // file with the compact flag (incompatible_flags at byte 12, bit 4); n_entries is at 56.
        let flags = u32::from_le_bytes(bytes[12..16].try_into().expect("header"));
        let object = payload - if flags & (1 << 4) != 0 { 72 } else { 64 };
        let at = (object + 56) as u64;
        let n_entries: [u8; 8] = bytes[object + 56..object + 64]
            .try_into()
            .expect("n_entries");
        assert_eq!(
            u64::from_le_bytes(n_entries),
            1,
            "a data object of one entry"
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("journal file");
        file.write_all_at(&[0; 8], at).expect("half-link");
        HalfLinked {
            path: path.to_path_buf(),
            at,
            n_entries,
        }
    }

    /// Links the data object to its entry again.
    pub fn restore(self) {
        use std::os::unix::fs::FileExt as _;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .expect("journal file");
        file.write_all_at(&self.n_entries, self.at)
            .expect("restore");
    }
}
