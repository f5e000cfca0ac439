//! logship-agent: the command line, config, logging and signals are the shared daemon `main`;
//! this binary only says what runs.

use std::process::ExitCode;
use std::sync::Arc;

use logship_agent::{Metrics, run};
use logship_config::agent::RawAgentConfig;
use logship_runtime::cli;

fn main() -> ExitCode {
    logship_agent::trim::tune_allocator();
    cli::daemon_main::<RawAgentConfig, _, _>(
        "logship-agent",
        env!("CARGO_PKG_VERSION"),
        |config, path, signals| run(config, path, signals, Arc::new(Metrics::default())),
    )
}
