//! What wakes the reader: inotify events on the watched directories, or a poll timer.
//!
//! inotify (through the `notify` crate) watches directories, not files, without recursion: a
//! write, a creation, a rename or a deletion of any name in them wakes the reader at once, and
//! idle files cost nothing between events. Where inotify is unavailable (no instance, no watch
//! left, a network filesystem whose remote writes it never sees) the reader falls back to
//! polling, said once. A lost event is never fatal: the reader also rescans on a slow timer,
//! and an inotify queue overflow asks for a full pass at once.
//!
//! A matching file that is created is opened at once, on the watcher's own thread, and handed
//! to the reader with the event ([`Wake::opened`]): a file rotated away and deleted within a
//! few hundred milliseconds of its creation is then read even if the reader was busy (or
//! starved of CPU) for all of its life. At most [`OPENED_MAX`] such descriptors wait at a time.
//!
//! Events are folded into the next [`Wake`] as they come, on the watcher's thread (`Inbox`),
//! not queued: what waits for a busy reader is one record per name (a name written a thousand
//! times is one), never one per event. Queued, the events of 50k files created while the reader
//! was busy held 21 MiB until it took them (issue 27 item 4, descriptors bench under heaptrack).

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use logship_config::agent::{Input, WatchMode};
use notify::event::{CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

/// Filesystems whose changes made on another machine inotify does not report (statfs magic
/// numbers): NFS, SMB/CIFS (two), FUSE, 9p, Ceph, AFS.
const REMOTE_FILESYSTEMS: [i64; 8] = [
    0x6969,
    0xff53_4d42,
    0xfe53_4d42,
    0x6573_5546,
    0x0102_1997,
    0x00c3_6400,
    0x5346_414f,
    0x6b41_4653,
];

/// Files opened at creation and not yet taken by the reader, at most: a burst of creations
/// cannot take more descriptors than this from the reader's budget.
const OPENED_MAX: usize = 16;

/// A file opened by the watcher the moment it was created, with the name it was created at;
/// counted as waiting until taken or dropped.
#[derive(Debug)]
pub struct Opened {
    path: PathBuf,
    file: Option<File>,
    waiting: Arc<AtomicUsize>,
}

impl Opened {
    /// The name it was created at, and the file.
    pub fn take(mut self) -> Option<(PathBuf, File)> {
        let file = self.file.take()?;
        Some((std::mem::take(&mut self.path), file))
    }

    /// `file`, as if the watcher had opened it when it was created at `path` (for tests that
    /// hand the reader a wake-up of their own).
    #[cfg(test)]
    pub fn created(path: PathBuf, file: File) -> Opened {
        Opened {
            path,
            file: Some(file),
            waiting: Arc::new(AtomicUsize::new(1)),
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What happened since the last wait.
#[derive(Debug, Default)]
pub struct Wake {
    /// Look at every file (polling, a queue overflow, an error of the watcher).
    pub all: bool,
    /// Expand the globs again now (events were lost).
    pub rescan: bool,
    /// Names written to, truncated, renamed away or deleted.
    pub changed: HashSet<PathBuf>,
    /// Names that appeared (created, or renamed to).
    pub appeared: Vec<PathBuf>,
    /// Renames within a watched directory, in order: (old name, new name).
    pub renamed: Vec<(PathBuf, PathBuf)>,
    /// Matching files opened as they were created, in order.
    pub opened: Vec<Opened>,
    /// Directories created in a watched directory: globs with a wildcard directory (a
    /// container's, a pod's) may match files in them, so they are watched and the globs
    /// expanded again.
    pub directories: Vec<PathBuf>,
}

/// What the watcher's thread noted since the reader last took it: the next [`Wake`], folded
/// event by event, and whether anything came at all.
#[derive(Default)]
struct Noted {
    wake: Wake,
    /// An event came (opens and closes too: each wakes the reader, as it always did).
    woken: bool,
    /// The watcher's thread has ended (its handler was dropped): no event comes any more.
    closed: bool,
}

/// Where the watcher's thread leaves what it noted, and the reader waits for it.
#[derive(Default)]
struct Inbox {
    noted: Mutex<Noted>,
    arrived: Condvar,
}

impl Inbox {
    /// What was noted (a poisoned lock only means a thread panicked while holding it: the
    /// record itself is whole, every change to it being one call).
    fn lock(&self) -> MutexGuard<'_, Noted> {
        self.noted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Folds one event (and the files it created, opened) into the next wake-up.
    fn note(&self, event: notify::Result<notify::Event>, opened: Vec<Opened>) {
        let mut noted = self.lock();
        note(&mut noted.wake, event, opened);
        noted.woken = true;
        self.arrived.notify_one();
    }

    /// The watcher's thread has ended.
    fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_one();
    }

    /// Waits up to `timeout` for an event (`None`: none came), then `settle` more so that a
    /// burst makes one wake-up, and takes what was noted. `Err(())`: the watcher has ended.
    fn take(&self, timeout: Duration, settle: Duration) -> Result<Option<Wake>, ()> {
        let deadline = Instant::now() + timeout;
        let mut noted = self.lock();
        while !noted.woken && !noted.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            noted = self
                .arrived
                .wait_timeout(noted, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        if noted.closed && !noted.woken {
            return Err(());
        }
        if !settle.is_zero() {
            drop(noted);
            std::thread::sleep(settle);
            noted = self.lock();
        }
        noted.woken = false;
        Ok(Some(std::mem::take(&mut noted.wake)))
    }
}

/// Tells the inbox when the watcher's thread ends: the handler that owns it is dropped then.
struct Closer(Arc<Inbox>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The reader's source of wake-ups.
pub struct Wakeups {
    /// `None` once polling.
    watcher: Option<(RecommendedWatcher, Arc<Inbox>)>,
    /// The inputs whose files the watcher opens at creation.
    inputs: Arc<Mutex<Vec<Input>>>,
    watched: HashSet<PathBuf>,
    /// Directories polled because inotify cannot see their changes.
    polled: HashSet<PathBuf>,
}

impl Wakeups {
    /// inotify unless `mode` asks for polling or inotify cannot be had.
    pub fn new(mode: WatchMode) -> Wakeups {
        let inputs: Arc<Mutex<Vec<Input>>> = Arc::default();
        let watcher = match mode {
            WatchMode::Poll => {
                tracing::info!("watch = \"poll\": polling every file");
                None
            }
            WatchMode::Inotify => {
                let inbox = Arc::new(Inbox::default());
                let closer = Closer(inbox.clone());
                let opener = Opener {
                    inputs: inputs.clone(),
                    waiting: Arc::default(),
                };
                let handler = move |event: notify::Result<notify::Event>| {
                    let opened = opener.open_created(&event);
                    closer.0.note(event, opened);
                };
                match notify::recommended_watcher(handler) {
                    Ok(watcher) => Some((watcher, inbox)),
                    Err(err) => {
                        tracing::warn!(error = %err, "inotify unavailable, polling every file instead");
                        None
                    }
                }
            }
        };
        Wakeups {
            watcher,
            inputs,
            watched: HashSet::new(),
            polled: HashSet::new(),
        }
    }

    /// The inputs whose created files the watcher opens at once (the reader's, after a reload).
    pub fn set_inputs(&self, inputs: &[Input]) {
        if let Ok(mut held) = self.inputs.lock() {
            *held = inputs.to_vec();
        }
    }

    /// Whether every file is polled.
    pub fn polling(&self) -> bool {
        self.watcher.is_none()
    }

    /// Whether files in `dir` must be polled (inotify cannot see them).
    pub fn polled(&self, dir: &Path) -> bool {
        self.watcher.is_none() || self.polled.contains(dir)
    }

    /// Watches `dir` (once). A directory that does not exist yet is tried again on the next
    /// call; one inotify cannot serve is polled, said once.
    pub fn watch(&mut self, dir: &Path) {
        let Some((watcher, _)) = &mut self.watcher else {
            return;
        };
        if self.watched.contains(dir) || self.polled.contains(dir) {
            return;
        }
        if remote_filesystem(dir) {
            tracing::warn!(dir = %dir.display(), "network filesystem: inotify misses remote writes, polling its files");
            self.polled.insert(dir.to_path_buf());
            return;
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(dir.to_path_buf());
            }
            Err(err) if matches!(&err.kind, notify::ErrorKind::PathNotFound) => {}
            Err(err) if matches!(&err.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound) =>
                {}
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err,
                    "cannot watch directory with inotify (raise fs.inotify.max_user_watches?), polling its files");
                self.polled.insert(dir.to_path_buf());
            }
        }
    }

    /// Waits up to `timeout` for something to happen, then `settle` more (so a burst of writes
    /// makes one wake-up), then takes everything noted since the last wait.
    pub fn wait(&mut self, timeout: Duration, settle: Duration) -> Wake {
        let Some((_, inbox)) = &self.watcher else {
            std::thread::sleep(timeout);
            return Wake {
                all: true,
                ..Wake::default()
            };
        };
        match inbox.take(timeout, settle) {
            Ok(wake) => wake.unwrap_or_default(),
            Err(()) => {
                tracing::warn!("inotify watcher stopped, polling every file instead");
                self.watcher = None;
                Wake {
                    all: true,
                    rescan: true,
                    ..Wake::default()
                }
            }
        }
    }

    /// Names the next wake-up holds so far (what waits for a busy reader).
    #[cfg(test)]
    fn noted_names(&self) -> usize {
        self.watcher.as_ref().map_or(0, |(_, inbox)| {
            let noted = inbox.lock();
            noted.wake.changed.len() + noted.wake.appeared.len()
        })
    }
}

/// Opens matching files as they are created, on the watcher's thread.
struct Opener {
    inputs: Arc<Mutex<Vec<Input>>>,
    waiting: Arc<AtomicUsize>,
}

impl Opener {
    /// The regular files `event` created under a matching name, opened (without blocking: a
    /// FIFO is not waited on), while fewer than [`OPENED_MAX`] wait. A file that cannot be
    /// opened here is opened by the reader as before.
    fn open_created(&self, event: &notify::Result<notify::Event>) -> Vec<Opened> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let Ok(event) = event else {
            return Vec::new();
        };
        if !matches!(event.kind, EventKind::Create(_)) {
            return Vec::new();
        }
        let Ok(inputs) = self.inputs.lock() else {
            return Vec::new();
        };
        let mut opened = Vec::new();
        for path in &event.paths {
            if !crate::discover::matches(&inputs, path) {
                continue;
            }
            if self.waiting.fetch_add(1, Ordering::Relaxed) >= OPENED_MAX {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                break;
            }
            // Counted from here: dropped (and uncounted) if the file cannot be had.
            let mut held = Opened {
                path: path.clone(),
                file: None,
                waiting: self.waiting.clone(),
            };
            held.file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .ok()
                .filter(|file| file.metadata().is_ok_and(|m| m.is_file()));
            if held.file.is_some() {
                opened.push(held);
            }
        }
        opened
    }
}

/// Folds one event, and the matching files it created (opened), into `wake`.
fn note(wake: &mut Wake, event: notify::Result<notify::Event>, opened: Vec<Opened>) {
    wake.opened.extend(opened);
    let event = match event {
        Ok(event) => event,
        Err(err) => {
            tracing::debug!(error = %err, "inotify error, looking at every file");
            wake.all = true;
            wake.rescan = true;
            return;
        }
    };
    if event.need_rescan() {
        tracing::debug!("inotify queue overflowed, looking at every file");
        wake.all = true;
        wake.rescan = true;
        return;
    }
    match event.kind {
        EventKind::Create(CreateKind::Folder) => {
            wake.rescan = true;
            wake.directories.extend(event.paths);
        }
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            wake.appeared.extend(event.paths.iter().cloned());
            wake.changed.extend(event.paths);
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            if let [from, to] = event.paths.as_slice() {
                wake.changed.insert(from.clone());
                wake.changed.insert(to.clone());
                wake.appeared.push(to.clone());
                wake.renamed.push((from.clone(), to.clone()));
            }
        }
        EventKind::Modify(_) | EventKind::Remove(_) => wake.changed.extend(event.paths),
        // Opens and closes (ours included) change nothing to read.
        _ => {}
    }
}

fn remote_filesystem(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) with a NUL-terminated path and a zeroed out-parameter it fills.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    REMOTE_FILESYSTEMS.contains(&(stat.f_type as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_what_changed_appeared_and_was_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let mut wakeups = Wakeups::new(WatchMode::Inotify);
        assert!(!wakeups.polling());
        wakeups.watch(dir.path());
        let (a, b) = (dir.path().join("a.log"), dir.path().join("a.log.1"));
        std::fs::write(&a, b"x\n").unwrap();
        std::fs::rename(&a, &b).unwrap();
        let mut seen = Wake::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.renamed.is_empty() && Instant::now() < deadline {
            let wake = wakeups.wait(Duration::from_millis(100), Duration::ZERO);
            seen.appeared.extend(wake.appeared);
            seen.changed.extend(wake.changed);
            seen.renamed.extend(wake.renamed);
        }
        assert!(seen.appeared.contains(&a));
        assert!(seen.changed.contains(&a));
        assert_eq!(seen.renamed, [(a, b)]);
    }

    #[test]
    fn a_burst_waits_as_one_record_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut wakeups = Wakeups::new(WatchMode::Inotify);
        wakeups.watch(dir.path());
        let files: Vec<PathBuf> = (0..200)
            .map(|i| dir.path().join(format!("{i}.log")))
            .collect();
        for path in &files {
            std::fs::write(path, b"x\n").unwrap();
        }
        for _ in 0..5 {
            for path in &files {
                let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                std::io::Write::write_all(&mut file, b"y\n").unwrap();
            }
        }
        // Every file appeared once and changed: two names each, however many events came.
        let deadline = Instant::now() + Duration::from_secs(5);
        while wakeups.noted_names() < 2 * files.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(wakeups.noted_names(), 2 * files.len());
        let wake = wakeups.wait(Duration::from_secs(1), Duration::ZERO);
        assert_eq!(wake.appeared.len(), files.len());
        assert!(files.iter().all(|path| wake.changed.contains(path)));
        assert_eq!(wakeups.noted_names(), 0);
        // Nothing new: the next wait times out empty.
        let wake = wakeups.wait(Duration::from_millis(50), Duration::ZERO);
        assert!(wake.appeared.is_empty() && wake.changed.is_empty() && !wake.all);
    }

    #[test]
    fn polling_wakes_for_everything() {
        let mut wakeups = Wakeups::new(WatchMode::Poll);
        assert!(wakeups.polling());
        assert!(wakeups.wait(Duration::from_millis(1), Duration::ZERO).all);
    }
}
