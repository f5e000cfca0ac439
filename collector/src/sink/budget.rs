//! How many output files the sink may keep open under the process's open-file limit.

/// How many output files to keep open: `configured`, unless the open-file `limit` leaves fewer
/// after the descriptors kept for everything else (sled, the commit journal, the broker
/// connection, the runtime, the metrics listener, the files opened briefly to truncate or sync
/// a directory; see `logship_runtime::rlimit::files_under`).
pub fn budget(configured: usize, limit: Option<u64>) -> usize {
    configured.min(logship_runtime::rlimit::files_under(limit).unwrap_or(usize::MAX))
}
