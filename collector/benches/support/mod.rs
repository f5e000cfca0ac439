//! What the collector benches share, from the test harness: running the real
//! `logship-collector`, waiting for its queue, and measuring its output.

use std::path::Path;

use logship_tests::broker::Broker;
pub use logship_tests::daemon::{Daemon, tree_bytes as output_bytes};

/// How long the collector may take to stop (SIGTERM) and exit 0.
const STOP: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts `logship-collector --config config`, its stderr appended to `<dir>/collector.log`.
pub fn spawn_collector(config: &Path, dir: &Path) -> Daemon {
    Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_logship-collector")),
        config,
        &dir.join("collector.log"),
    )
}

/// Waits until `queue` exists (the collector declared it), or panics after 10 s.
pub async fn wait_for_queue(queue: &str) {
    Broker::connect().await.wait_declared(queue).await;
}

/// SIGTERM, then waits; the collector must exit 0.
pub fn stop(collector: &mut Daemon) {
    let status = collector.stop(STOP);
    assert!(status.success(), "collector exited with {status}");
}
