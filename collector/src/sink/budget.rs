//! How many output files the sink may keep open under the process's open-file limit.

/// Descriptors left for everything but output files when the open-file limit caps
/// `output.max_open_files`: sled, the commit journal, the broker connection, the runtime, the
/// metrics listener, and the files opened briefly to truncate or sync a directory.
const RESERVED_DESCRIPTORS: u64 = 64;

/// How many output files to keep open: `configured`, unless the open-file `limit` leaves fewer
/// after [`RESERVED_DESCRIPTORS`] (then that, or half the limit if it is tiny).
pub fn budget(configured: usize, limit: Option<u64>) -> usize {
    let Some(limit) = limit else {
        return configured;
    };
    let usable = if limit > 2 * RESERVED_DESCRIPTORS {
        limit - RESERVED_DESCRIPTORS
    } else {
        limit / 2
    };
    configured.min(usize::try_from(usable).unwrap_or(usize::MAX).max(1))
}
