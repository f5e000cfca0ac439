//! What the collector benches share: running the real `logship-collector`, waiting for its
//! queue, and measuring its output and memory.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

/// Starts `logship-collector --config config`, its stderr appended to `<dir>/collector.log`.
pub fn spawn_collector(config: &Path, dir: &Path) -> Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("collector.log"))
        .expect("log");
    Command::new(env!("CARGO_BIN_EXE_logship-collector"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn collector")
}

/// Waits until `queue` exists (the collector declared it), or panics after 10 s.
pub async fn wait_for_queue(connection: &Connection, queue: &str) {
    for _ in 0..200 {
        let channel = connection.create_channel().await.expect("channel");
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("collector never declared {queue}");
}

/// SIGTERM, then waits; the collector must exit 0.
pub fn stop(child: &mut Child) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait collector");
    assert!(status.success(), "collector exited with {status}");
}

/// Bytes of every file under `dir`.
pub fn output_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => output_bytes(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Peak resident memory of `pid` (VmHWM), in KiB; 0 once it is gone.
pub fn rss_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
