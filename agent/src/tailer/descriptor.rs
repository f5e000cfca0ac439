//! The tailer's descriptor: the file being read (or its copytruncate copy for a while), which
//! may be closed while the file is idle (the descriptor budget) and given back later. Closed,
//! the tailer keeps its position, head and partial line; it is never read until reopened.

use std::fs::File;

use super::Tailer;

impl Tailer {
    /// The descriptor being read; an error while it is closed (never read then).
    pub fn file(&self) -> std::io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("descriptor closed for the budget"))
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
        self.head_checked = None;
        self.partial.shrink_to_fit();
    }

    /// Gives the descriptor back (the caller checked it is the same file by its key); the
    /// head is compared again before the next read, so a file rewritten meanwhile is noticed.
    pub fn reopen(&mut self, file: File) {
        self.file = Some(file);
        self.head_checked = None;
    }

    /// The size of the file being read, if its descriptor is open.
    pub fn size(&self) -> Option<u64> {
        self.file.as_ref()?.metadata().ok().map(|m| m.len())
    }

    /// Reads `file` instead from now on (a copytruncate copy, then the file again); returns
    /// the one read so far (`None` if it was closed). The position does not change.
    pub fn swap_file(&mut self, file: File) -> Option<File> {
        self.partial.clear();
        self.event = None;
        self.reset_container();
        self.head_checked = None;
        self.file.replace(file)
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
