//! logship-collector: the command line, config, logging and signals are the shared daemon
//! `main`; this binary only says what runs.

use std::process::ExitCode;
use std::sync::Arc;

use logship_collector::{Metrics, run};
use logship_config::collector::RawCollectorConfig;
use logship_runtime::cli;

const BINARY: &str = "logship-collector";

fn main() -> ExitCode {
    if let Ok(cli::Command::Audit { config, remote }) =
        cli::parse(BINARY, env!("CARGO_PKG_VERSION"), std::env::args_os())
    {
        return if remote {
            logship_collector::upload::remote::main(BINARY, &config)
        } else {
            logship_collector::archive::audit::main(BINARY, &config)
        };
    }
    cli::daemon_main::<RawCollectorConfig, _, _>(
        BINARY,
        env!("CARGO_PKG_VERSION"),
        |config, _path, signals| {
            let metrics = Arc::new(Metrics::new(config.dedup.max_age, config.archive.gap_after));
            run(config, signals, metrics)
        },
    )
}
