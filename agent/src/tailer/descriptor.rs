//! The tailer's descriptor: the file being read (or its copytruncate copy for a while), which
//! may be closed while the file is idle (the descriptor budget) and given back later. Closed,
//! the tailer keeps its position, head and partial line; it is never read until reopened.
//! What a look at the file found (its size and mtime when its head last matched) goes with the
//! descriptor: a file given back is looked at afresh.

use std::fs::File;
use std::time::SystemTime;

use super::Tailer;

/// An open file and what the last look at it found.
pub(super) struct Descriptor {
    file: File,
    /// (length, mtime) of the file when its head last matched the fingerprint.
    head_checked: Option<(u64, SystemTime)>,
}

impl Descriptor {
    pub(super) fn new(file: File) -> Box<Descriptor> {
        Box::new(Descriptor {
            file,
            head_checked: None,
        })
    }
}

impl Tailer {
    /// The descriptor being read; an error while it is closed (never read then).
    pub fn file(&self) -> std::io::Result<&File> {
        self.file
            .as_ref()
            .map(|d| &d.file)
            .ok_or_else(|| std::io::Error::other("descriptor closed for the budget"))
    }

    /// (length, mtime) of the file when its head last matched the fingerprint, if it did since
    /// the descriptor was opened (and not forgotten since).
    pub(super) fn head_checked(&self) -> Option<(u64, SystemTime)> {
        self.file.as_ref().and_then(|d| d.head_checked)
    }

    /// Records what the look that compared the head found (`None`: compare it next time).
    pub(super) fn set_head_checked(&mut self, stamp: Option<(u64, SystemTime)>) {
        if let Some(descriptor) = &mut self.file {
            descriptor.head_checked = stamp;
        }
    }

    /// The head is compared again at the next look.
    pub(super) fn forget_head_check(&mut self) {
        self.set_head_checked(None);
    }

    /// When the file was created (statx's birth time), if its descriptor is open and the
    /// filesystem records it.
    pub fn born(&self) -> Option<SystemTime> {
        self.file.as_ref()?.file.metadata().ok()?.created().ok()
    }

    /// Whether the descriptor is open.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Closes the descriptor (the file is idle); the position, head and partial line stay.
    /// The room its lines were cut in goes (a partial line keeps only its bytes): a closed
    /// file is a compact record.
    pub fn close_file(&mut self) {
        self.file = None;
        self.partial.shrink_to_fit();
    }

    /// Gives the descriptor back (the caller checked it is the same file by its key); the
    /// head is compared again before the next read, so a file rewritten meanwhile is noticed.
    pub fn reopen(&mut self, file: File) {
        self.file = Some(Descriptor::new(file));
    }

    /// The size of the file being read, if its descriptor is open.
    pub fn size(&self) -> Option<u64> {
        self.file.as_ref()?.file.metadata().ok().map(|m| m.len())
    }

    /// Reads `file` instead from now on (a copytruncate copy, then the file again); returns
    /// the one read so far (`None` if it was closed). The position does not change.
    pub fn swap_file(&mut self, file: File) -> Option<File> {
        self.partial.clear();
        self.event = None;
        self.reset_container();
        self.file
            .replace(Descriptor::new(file))
            .map(|descriptor| descriptor.file)
    }

    /// Whether the file has been deleted (no name left; a closed descriptor is only dropped for
    /// good once its file is gone).
    pub fn deleted(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.file()
            .and_then(File::metadata)
            .map(|m| m.nlink() == 0)
            .unwrap_or(true)
    }
}
