//! The archive kept over time: retention deletes output files past `output.retention`, and the
//! audit reports the byte ranges of each source that never arrived.

pub mod audit;
pub(crate) mod retention;
