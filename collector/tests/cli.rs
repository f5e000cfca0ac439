//! The binary's edge: version, usage and config errors are one line with the right exit code.
//! (Also makes `cargo test --workspace` build the binary the end-to-end tests in tests/ run.)

use std::process::Command;

fn collector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logship-collector"))
}

#[test]
fn version_prints_and_exits_zero() {
    let out = collector().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("logship-collector "));
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    let out = collector().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("logship-collector: usage:"), "{stderr}");
}

#[test]
fn check_config_validates_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{0}/state\"\n[broker]\nuris = [\"amqp://u:pw@127.0.0.1:1/%2f\"]\nqueue = \"q\"\n[output]\ndir = \"{0}/out\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = collector()
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&config, "state_dir = 3\n").unwrap();
    let out = collector()
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("collector.toml: state_dir: "), "{stderr}");
}
