//! The agent binary loads and checks its config (the example conffile included).

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logship-agent"))
}

#[test]
fn version_prints_and_exits_zero() {
    let out = agent().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("logship-agent "));
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let example = include_str!("../../config/agent.toml").replace(
        "/var/lib/logship-agent",
        &dir.path().join("state").display().to_string(),
    );
    std::fs::write(&config, &example).unwrap();
    let out = agent().arg("--check-config").arg(&config).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&config, example.replace("\"block\"", "\"never\"")).unwrap();
    let out = agent().arg("--check-config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1);
    assert!(
        stderr.contains("agent.toml: buffer.when_full: unknown variant"),
        "{stderr}"
    );
}
