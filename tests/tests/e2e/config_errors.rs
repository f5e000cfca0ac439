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
