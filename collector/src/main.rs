//! logship-collector: the command line, config, logging and signals are the shared daemon
//! `main`; this binary only says what runs.

use std::process::ExitCode;
use std::sync::Arc;

use logship_collector::{Metrics, run};
use logship_config::collector::RawCollectorConfig;
use logship_runtime::cli;

fn main() -> ExitCode {
    cli::daemon_main::<RawCollectorConfig, _, _>(
        "logship-collector",
        env!("CARGO_PKG_VERSION"),
        |config, _path, signals| {
            let metrics = Arc::new(Metrics::new(config.dedup.max_age));
            run(config, signals, metrics)
        },
    )
}
