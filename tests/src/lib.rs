//! Support for the end-to-end tests: a real broker (with names of its own per test, deleted
//! afterwards), a TCP proxy that can cut it off, the real daemons as child processes (under an
//! open-file limit if need be), and their output; a small tmpfs for a disk that fills up; a
//! throwaway Garage node for the archive on an object store, and an HTTP proxy that makes it
//! answer 503 or 429.

pub mod broker;
pub mod daemon;
pub mod docker;
pub mod fixture;
pub mod garage;
pub mod http;
pub mod journal;
pub mod lines;
pub mod many;
pub mod proxy;
pub mod rabbit;
pub mod store_faults;
pub mod tmpfs;
pub mod users;

/// The variable that turns every skip for a missing tool or privilege into a failure: CI sets
/// it, since it runs as root with RabbitMQ, journalctl and zstd installed.
pub const REQUIRE_ALL: &str = "LOGSHIP_TEST_REQUIRE_ALL";

/// A test that cannot run here says why and returns: on a developer's machine it skips (says
/// `SKIPPED <test>: <why>` on stderr); with [`REQUIRE_ALL`]`=1` it fails, naming what is
/// missing, so a skip can never pass for a success in CI.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os(REQUIRE_ALL).is_some_and(|v| v == "1") {
        panic!("{test} cannot run: {why} ({REQUIRE_ALL}=1 makes that a failure)");
    }
    eprintln!("SKIPPED {test}: {why}");
}
