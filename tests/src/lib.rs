//! Support for the end-to-end tests: a real broker (with names of its own per test, deleted
//! afterwards), the real daemons as child processes, and their output.

pub mod broker;
pub mod daemon;
pub mod lines;
