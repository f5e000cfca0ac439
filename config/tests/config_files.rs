//! The shipped example configs parse, and each bad snippet's error names its key.

use std::path::Path;

use logship_config::agent::RawAgentConfig;
use logship_config::collector::RawCollectorConfig;
use logship_config::load::parse;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn example_collector_config_parses() {
    let config =
        parse::<RawCollectorConfig>(Path::new("collector.toml"), &example("collector.toml"))
            .unwrap();
    assert_eq!(config.queue.name, "logs.archive");
    assert_eq!(config.queue.prefetch, 1000);
    assert_eq!(config.batch.max_messages, 500);
    assert_eq!(config.max_open_files, None);
    assert_eq!(config.broker.exchange, "logs");
    assert_eq!(
        config.queue.dead_letter_exchange.as_deref(),
        Some("logs.dead-letter")
    );
    // The packaged config serves metrics and /status on loopback.
    assert_eq!(config.metrics, Some("127.0.0.1:9188".parse().unwrap()));
}

#[test]
fn example_collector_config_with_partitions_uncommented_parses() {
    let text = example("collector.toml")
        .replace("# partitions = 4", "partitions = 4")
        .replace("# partition = 2", "partition = 2");
    let config = parse::<RawCollectorConfig>(Path::new("collector.toml"), &text).unwrap();
    let partition = config.queue.partition.expect("a partitioned member");
    assert_eq!((partition.count, partition.index), (4, 2));
    assert_eq!(config.queue.consumed(), "logs.archive.2");
}

#[test]
fn example_collector_config_with_the_archive_keys_uncommented_parses() {
    let mut text = example("collector.toml");
    for key in [
        "compression = \"none\"",
        "compression_level = 3",
        "retention = \"30d\"",
        "max_line_bytes = \"4 MiB\"",
        "gap_after = \"10m\"",
        "dead_letter_max_bytes = \"1 GiB\"",
    ] {
        assert!(text.contains(&format!("# {key}")), "{key}");
        text = text.replace(&format!("# {key}"), key);
    }
    let text = text.replace("compression = \"none\"", "compression = \"zstd\"");
    let config = parse::<RawCollectorConfig>(Path::new("collector.toml"), &text).unwrap();
    assert_eq!(
        config.archive.compression,
        logship_config::archive::Compression::Zstd { level: 3 }
    );
    assert_eq!(
        config.archive.retention,
        Some(std::time::Duration::from_secs(30 * 86400))
    );
    assert_eq!(config.queue.dead_letter_max_bytes, 1 << 30);
}

#[test]
fn example_agent_config_parses() {
    let config = parse::<RawAgentConfig>(Path::new("agent.toml"), &example("agent.toml")).unwrap();
    assert_eq!(config.buffer.max_bytes, 1 << 30);
    assert_eq!(config.inputs[0].paths, ["/var/log/app/*.log"]);
    assert_eq!(config.metrics, Some("127.0.0.1:9187".parse().unwrap()));
}

const COLLECTOR: &str = r#"
state_dir = "/tmp/x"
[broker]
uris = ["amqp://guest:hunter2@127.0.0.1:5672/%2f"]
queue = "q"
[output]
dir = "/tmp/y"
"#;

fn collector_error(edit: impl Fn(&str) -> String) -> String {
    let text = edit(COLLECTOR);
    let err = parse::<RawCollectorConfig>(Path::new("collector.toml"), &text).unwrap_err();
    let message = err.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(!message.contains("hunter2"), "no password: {message}");
    message
}

#[test]
fn bad_collector_snippets_name_their_key() {
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|c| c.replace("queue = \"q\"", "queue = \"q\"\nprefetch = \"lots\"")),
            "collector.toml: broker.prefetch: expected an integer, found \"lots\"",
        ),
        (
            Box::new(|c| c.replace("queue = \"q\"", "queue = \"q\"\nprefech = 10")),
            "collector.toml: broker.prefech: unknown key",
        ),
        (
            Box::new(|c| c.replace("dir = \"/tmp/y\"", "dir = \"/tmp/y\"\ncolour = 1")),
            "collector.toml: output.colour: unknown key",
        ),
        (
            Box::new(|c| c.replace("dir = \"/tmp/y\"", "dir = \"/tmp/y\"\nmax_open_files = 0")),
            "collector.toml: output.max_open_files: must be at least 1",
        ),
        (
            Box::new(|c| c.replace("dir = \"/tmp/y\"", "dir = \"/tmp/y\"\nmax_open_files = -3")),
            "collector.toml: output.max_open_files: invalid value",
        ),
        (
            Box::new(|c| c.replace("amqp://guest", "http://guest")),
            "collector.toml: broker.uris[0]: invalid URI \"http://guest:***@127.0.0.1:5672/%2f\"",
        ),
        (
            Box::new(|c| c.replace("queue = \"q\"\n", "")),
            "collector.toml: broker.queue: missing key",
        ),
        (
            Box::new(|c| {
                c.replace(
                    "dir = \"/tmp/y\"",
                    "dir = \"/tmp/y\"\ncompression = \"gzip\"",
                )
            }),
            "collector.toml: output.compression: unknown compression \"gzip\" (none or zstd)",
        ),
        (
            Box::new(|c| {
                c.replace(
                    "dir = \"/tmp/y\"",
                    "dir = \"/tmp/y\"\ncompression = \"zstd\"\ncompression_level = 30",
                )
            }),
            "collector.toml: output.compression_level: 30 is out of range (1 to 22, or -7 to -1 for the fast levels)",
        ),
        (
            Box::new(|c| {
                c.replace(
                    "dir = \"/tmp/y\"",
                    "dir = \"/tmp/y\"\ncompression_level = 5",
                )
            }),
            "collector.toml: output.compression_level: set without output.compression = \"zstd\"",
        ),
        (
            Box::new(|c| c.replace("dir = \"/tmp/y\"", "dir = \"/tmp/y\"\nretention = \"30s\"")),
            "collector.toml: output.retention: \"30s\" is below one minute",
        ),
        (
            Box::new(|c| {
                c.replace(
                    "dir = \"/tmp/y\"",
                    "dir = \"/tmp/y\"\nmax_line_bytes = \"1MB\"",
                )
            }),
            "collector.toml: output.max_line_bytes: invalid size \"1MB\" (use a number of bytes or KiB, MiB, GiB, TiB)",
        ),
        (
            Box::new(|c| format!("{c}\n[audit]\ngap_after = \"soon\"\n")),
            "collector.toml: audit.gap_after: invalid duration \"soon\" (e.g. \"500ms\", \"30s\", \"7d\")",
        ),
        (
            Box::new(|c| {
                c.replace(
                    "queue = \"q\"",
                    "queue = \"q\"\ndead_letter_max_bytes = \"0\"",
                )
            }),
            "collector.toml: broker.dead_letter_max_bytes: must be above zero",
        ),
        (
            Box::new(|c| c.replace("state_dir = \"/tmp/x\"\n", "")),
            "collector.toml: state_dir: missing key",
        ),
        (
            Box::new(|c| format!("{c}[batch]\nmax_delay = \"soon\"\n")),
            "collector.toml: batch.max_delay: invalid duration \"soon\"",
        ),
        (
            Box::new(|c| format!("{c}[batch]\nmax_messages = 5000\n")),
            "collector.toml: batch.max_messages: 5000 is above broker.prefetch",
        ),
        (
            Box::new(|c| c.replace("queue = \"q\"", "queue = \"../q\"")),
            "collector.toml: broker.queue: invalid name \"../q\"",
        ),
        (
            Box::new(|c| c.replace("[output]", "[output")),
            "collector.toml: line 6, column",
        ),
    ];
    for (edit, expected) in cases {
        let message = collector_error(edit);
        assert!(
            message.starts_with(expected),
            "{message}\n  expected: {expected}"
        );
    }
}

#[test]
fn agent_refuses_collector_keys() {
    let text =
        example("agent.toml").replace("exchange = \"logs\"", "exchange = \"logs\"\nqueue = \"q\"");
    let err = parse::<RawAgentConfig>(Path::new("agent.toml"), &text).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("agent.toml: broker.queue: is a collector setting"),
        "{err}"
    );
    let text = example("agent.toml").replace("max_bytes = \"1GiB\"", "max_bytes = \"1GB\"");
    let err = parse::<RawAgentConfig>(Path::new("agent.toml"), &text).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("agent.toml: buffer.max_bytes: invalid size \"1GB\""),
        "{err}"
    );
    let text = example("agent.toml").replace("\"block\"", "\"sometimes\"");
    let err = parse::<RawAgentConfig>(Path::new("agent.toml"), &text).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("agent.toml: buffer.when_full: unknown variant"),
        "{err}"
    );
}

#[test]
fn example_agent_config_with_multiline_and_fields_uncommented_parses() {
    let text = example("agent.toml")
        .replacen("# fields = {", "fields = {", 1)
        .replace("# [inputs.multiline]", "[inputs.multiline]")
        .replace("# start = ", "start = ")
        .replace("# max_lines = 500", "max_lines = 500")
        .replace("# timeout = \"1s\"", "timeout = \"1s\"");
    let config = parse::<RawAgentConfig>(Path::new("agent.toml"), &text).unwrap();
    let input = &config.inputs[0];
    assert_eq!(input.fields.get("service").map(String::as_str), Some("web"));
    let multiline = input.multiline.as_ref().expect("multiline");
    assert_eq!(multiline.max_lines, 500);
}

#[test]
fn bad_multiline_snippets_name_their_key() {
    let base = example("agent.toml");
    for (snippet, key) in [
        (
            "[inputs.multiline]\nstart = '(unclosed'",
            "inputs[0].multiline.start: invalid regex",
        ),
        (
            "[inputs.multiline]\ncontinue = '['",
            "inputs[0].multiline.continue: invalid regex",
        ),
        (
            "[inputs.multiline]\nstart = 'a'\ncontinue = 'b'",
            "inputs[0].multiline: needs exactly one",
        ),
        (
            "[inputs.multiline]\nmax_lines = 5",
            "inputs[0].multiline: needs exactly one",
        ),
        (
            "[inputs.multiline]\nstart = 'a'\nmax_lines = 0",
            "inputs[0].multiline.max_lines",
        ),
        (
            "[inputs.multiline]\nstart = 'a'\ntimeout = \"soon\"",
            "inputs[0].multiline.timeout",
        ),
        ("fields = { service = 1 }", "inputs[0].fields.service"),
    ] {
        assert_refused(&base, snippet, key);
    }
}

#[test]
fn journal_inputs_parse_beside_file_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let text = example("agent.toml")
        + &format!(
            "\n[[inputs]]\ntype = \"journal\"\ndirectory = \"{}\"\nunits = [\"b.service\", \"a.service\", \"a\", \"c.socket\"]\nread_from = \"end\"\nfields = {{ source = \"journal\" }}\n",
            dir.path().display()
        );
    let config = parse::<RawAgentConfig>(Path::new("agent.toml"), &text).unwrap();
    assert_eq!(config.inputs.len(), 1);
    let journal = &config.journals[0];
    assert_eq!(journal.key, "inputs[1]");
    assert_eq!(journal.units, ["a.service", "b.service", "c.socket"]);
    assert_eq!(journal.read_from, logship_config::agent::ReadFrom::End);
    assert_eq!(journal.directory.as_deref(), Some(dir.path()));
    assert_eq!(
        journal.fields.get("source").map(String::as_str),
        Some("journal")
    );
    // The commented example in the shipped file parses too, with the system journal.
    let uncommented = example("agent.toml")
        .replace("# [[inputs]]\n# type", "[[inputs]]\ntype")
        .replace("# units = ", "units = ")
        .replace("# read_from = \"end\"", "read_from = \"end\"");
    let config = parse::<RawAgentConfig>(Path::new("agent.toml"), &uncommented).unwrap();
    assert_eq!(config.journals.len(), 1);
    assert_eq!(config.journals[0].directory, None);
}

#[test]
fn bad_journal_snippets_name_their_key() {
    let base = example("agent.toml");
    for (snippet, key) in [
        (
            "[[inputs]]\ntype = \"journal\"\npaths = [\"/x\"]",
            "inputs[1].paths: is a file setting",
        ),
        (
            "[[inputs]]\ntype = \"journal\"\nunits = [\"\"]",
            "inputs[1].units[0]: invalid unit name",
        ),
        (
            "[[inputs]]\ntype = \"journal\"\ndirectory = \"relative/dir\"",
            "inputs[1].directory: must be an absolute path",
        ),
        (
            "[[inputs]]\npaths = [\"/x\"]\nunits = [\"a.service\"]",
            "inputs[1].units: is a journal setting",
        ),
        (
            "[[inputs]]\ntype = \"socket\"",
            "inputs[1].type: unknown variant",
        ),
        (
            "[[inputs]]\ntype = \"journal\"\nmax_line_bytes = \"0\"",
            "inputs[1].max_line_bytes: must be above zero",
        ),
    ] {
        assert_refused(&base, snippet, key);
    }
}

#[test]
fn agent_max_open_files_parses_and_zero_is_refused() {
    let path = Path::new("agent.toml");
    let config = parse::<RawAgentConfig>(path, &example("agent.toml")).unwrap();
    assert_eq!(config.max_open_files, None);
    let text = example("agent.toml").replace("# max_open_files = 4096", "max_open_files = 4096");
    let config = parse::<RawAgentConfig>(path, &text).unwrap();
    assert_eq!(config.max_open_files, Some(4096));
    let text = example("agent.toml").replace("# max_open_files = 4096", "max_open_files = 0");
    let err = parse::<RawAgentConfig>(path, &text).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("agent.toml: max_open_files: must be at least 1"),
        "{err}"
    );
}

#[test]
fn container_inputs_are_file_inputs_over_the_runtimes_directory() {
    use logship_config::agent::Format;
    let text = example("agent.toml")
        + "\n[[inputs]]\ntype = \"docker\"\nfields = { team = \"web\" }\n\
           [[inputs]]\ntype = \"cri\"\ndirectory = \"/srv/pods/\"\nmax_line_bytes = \"64KiB\"\n";
    let config = parse::<RawAgentConfig>(Path::new("agent.toml"), &text).unwrap();
    let docker = &config.inputs[1];
    assert_eq!(docker.format, Format::Docker);
    assert_eq!(docker.paths, ["/var/lib/docker/containers/*/*-json.log"]);
    assert_eq!(docker.fields.get("team").map(String::as_str), Some("web"));
    assert!(docker.multiline.is_none());
    let cri = &config.inputs[2];
    assert_eq!(cri.format, Format::Cri);
    assert_eq!(cri.paths, ["/srv/pods/*/*/*.log"]);
    assert_eq!(cri.max_line_bytes, 64 << 10);
    assert_eq!(config.inputs[0].format, Format::Lines);
}

#[test]
fn the_daemonset_config_parses() {
    let manifest = example("../packaging/kubernetes/daemonset.yaml");
    // The ConfigMap's `agent.toml: |` block, unindented.
    let text: String = manifest
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("agent.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    // The Secret's file, mounted there in a pod.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "hunter2\n").unwrap();
    let text = text.replace(
        "/etc/logship-broker/password",
        &secret.path().display().to_string(),
    );
    let config = parse::<RawAgentConfig>(Path::new("agent.toml"), &text).unwrap();
    assert_eq!(config.inputs[0].paths, ["/var/log/pods/*/*/*.log"]);
}

#[test]
fn bad_container_snippets_name_their_key() {
    let base = example("agent.toml");
    for (snippet, key) in [
        (
            "[[inputs]]\ntype = \"docker\"\npaths = [\"/x\"]",
            "inputs[1].paths: is not a setting of type = \"docker\"",
        ),
        (
            "[[inputs]]\ntype = \"cri\"\nunits = [\"a\"]",
            "inputs[1].units: is not a setting of type = \"cri\"",
        ),
        (
            "[[inputs]]\ntype = \"cri\"\n[inputs.multiline]\nstart = 'x'",
            "inputs[1].multiline: is not a setting of type = \"cri\"",
        ),
        (
            "[[inputs]]\ntype = \"docker\"\ndirectory = \"containers\"",
            "inputs[1].directory: must be an absolute path",
        ),
        (
            "[[inputs]]\ntype = \"docker\"\ndirectory = \"/var/lib/*/containers\"",
            "inputs[1].directory: must not hold a glob character",
        ),
        (
            "[[inputs]]\ntype = \"cri\"\nmax_line_bytes = \"0\"",
            "inputs[1].max_line_bytes: must be above zero",
        ),
    ] {
        assert_refused(&base, snippet, key);
    }
}

/// Asserts `base` with `snippet` appended is refused in one line naming `key` first.
fn assert_refused(base: &str, snippet: &str, key: &str) {
    let text = format!("{base}{snippet}\n");
    let err = parse::<RawAgentConfig>(Path::new("agent.toml"), &text).unwrap_err();
    let message = err.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(
        message.starts_with(&format!("agent.toml: {key}")),
        "{message}"
    );
}
