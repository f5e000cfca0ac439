//! Support for the end-to-end tests: a real broker (with names of its own per test, deleted
//! afterwards), a TCP proxy that can cut it off, the real daemons as child processes (under an
//! open-file limit if need be), and their output; a small tmpfs for a disk that fills up.

pub mod broker;
pub mod daemon;
pub mod fixture;
pub mod http;
pub mod journal;
pub mod lines;
pub mod many;
pub mod proxy;
pub mod rabbit;
pub mod tmpfs;
pub mod users;
