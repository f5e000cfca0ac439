//! logship-agent: tails log files and publishes every line to the fanout exchange with
//! publisher confirms, spooling to disk while the broker is away.
//!
//! This is the stub that precedes the agent proper (issue 3): it loads and validates the config
//! so operators and packaging can already check agent configs.

use logship_config::AgentConfig;

/// A one-line summary of what the agent would do with `config`.
pub fn summary(config: &AgentConfig) -> String {
    let globs: Vec<&str> = config
        .inputs
        .iter()
        .flat_map(|input| input.paths.iter().map(String::as_str))
        .collect();
    format!(
        "host={} exchange={} uris={} inputs={}",
        config.host,
        config.broker.exchange,
        config.broker.uris.len(),
        globs.join(",")
    )
}
