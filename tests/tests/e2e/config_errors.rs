//! A bad config gets exit code 2 and one line on stderr naming the file and the key.

use std::path::Path;

use logship_tests::daemon::{binary, run};

const GOOD: &str = r#"
state_dir = "STATE"
[broker]
uris = ["amqp://guest:hunter2@127.0.0.1:5672/%2f"]
queue = "q"
[output]
dir = "OUT"
"#;

fn check(dir: &Path, text: &str, expected: &str) {
    let config = dir.join("collector.toml");
    std::fs::write(&config, text).unwrap();
    let (code, _, stderr) = run(
        &binary("logship-collector"),
        &["--config".as_ref(), config.as_os_str()],
    );
    assert_eq!(
        code,
        Some(2),
        "exit code for {expected:?}; stderr: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    let wanted = format!("logship-collector: {}: {expected}", config.display());
    assert!(
        stderr.starts_with(&wanted),
        "got: {stderr}\nwanted: {wanted}"
    );
}

#[test]
fn invalid_collector_configs_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = GOOD
        .replace("STATE", &dir.path().join("state").display().to_string())
        .replace("OUT", &dir.path().join("out").display().to_string());
    check(
        dir.path(),
        &good.replace("queue = \"q\"", "queue = \"q\"\nprefech = 10"),
        "broker.prefech: unknown key",
    );
    check(
        dir.path(),
        &good.replace("queue = \"q\"", "queue = \"q\"\nprefetch = \"lots\""),
        "broker.prefetch: expected an integer, found \"lots\"",
    );
    check(
        dir.path(),
        &good.replace(
            "amqp://guest:hunter2@127.0.0.1:5672",
            "amqp://guest:hunter2@127.0.0.1:notaport",
        ),
        "broker.uris[0]: invalid URI \"amqp://guest:***@127.0.0.1:notaport/%2f\"",
    );
    std::fs::write(dir.path().join("afile"), b"").unwrap();
    let unwritable = dir.path().join("afile/state");
    check(
        dir.path(),
        &good.replace(
            &dir.path().join("state").display().to_string(),
            &unwritable.display().to_string(),
        ),
        &format!(
            "state_dir: cannot write to \"{}\": Not a directory",
            unwritable.display()
        ),
    );
}

#[test]
fn invalid_security_settings_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = GOOD
        .replace("STATE", &dir.path().join("state").display().to_string())
        .replace("OUT", &dir.path().join("out").display().to_string());
    for (security, expected) in [
        (
            "host_from_user = \"yes\"",
            "security.host_from_user: unknown value \"yes\" (off or require)",
        ),
        (
            "host_from_user = true",
            "security.host_from_user: expected a string, found boolean `true`",
        ),
        (
            "hosts_from_user = \"off\"",
            "security.hosts_from_user: unknown key",
        ),
        (
            "[security.hosts]\n\"agent-web\" = [\"web-1\", \"../etc\"]",
            "security.hosts.agent-web: invalid host \"../etc\"",
        ),
        (
            "[security.hosts]\n\"agent-web\" = \"web-1\"",
            "security.hosts.agent-web: expected a sequence, found \"web-1\"",
        ),
    ] {
        check(
            dir.path(),
            &format!("{good}[security]\n{security}\n"),
            expected,
        );
    }
}

#[test]
fn a_missing_config_file_exits_2() {
    let (code, _, stderr) = run(
        &binary("logship-collector"),
        &["--config".as_ref(), "/nonexistent/collector.toml".as_ref()],
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr.trim(),
        "logship-collector: /nonexistent/collector.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn a_state_dir_of_an_incompatible_version_exits_2_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("VERSION"), "logship-state 99\n").unwrap();
    std::fs::write(state.join("precious"), "keep").unwrap();
    let good = GOOD
        .replace("STATE", &state.display().to_string())
        .replace("OUT", &dir.path().join("out").display().to_string());
    check(
        dir.path(),
        &good,
        &format!(
            "state_dir: \"{}\" holds state of an incompatible version \"logship-state 99\"",
            state.display()
        ),
    );
    assert_eq!(
        std::fs::read_to_string(state.join("precious")).unwrap(),
        "keep"
    );
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 2);
}

#[test]
fn a_world_readable_config_with_a_password_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let agent = logship_tests::fixture::Agent::new(
        dir.path(),
        "a",
        "amqp://guest:hunter2@127.0.0.1:1/%2f",
        "x.logs",
        &[&logs.join("*.log")],
        "",
        "",
    );
    std::fs::set_permissions(&agent.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut daemon = agent.start(false);
    assert!(daemon.stop(std::time::Duration::from_secs(20)).success());
    let log = daemon.log_text();
    assert!(
        log.contains("world-readable") && !log.contains("hunter2"),
        "{log}"
    );
}

#[test]
fn a_journal_directory_that_cannot_be_read_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let missing = dir.path().join("no-such-journal");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[broker]\nuris = [\"amqp://127.0.0.1:5672/%2f\"]\n[[inputs]]\ntype = \"journal\"\ndirectory = \"{}\"\n",
            dir.path().join("state").display(),
            missing.display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = run(
        &binary("logship-agent"),
        &["--config".as_ref(), config.as_os_str()],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let wanted = format!(
        "logship-agent: {}: inputs[0].directory: cannot read \"{}\": No such file or directory",
        config.display(),
        missing.display()
    );
    assert!(
        stderr.starts_with(&wanted),
        "got: {stderr}\nwanted: {wanted}"
    );
}
