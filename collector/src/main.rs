//! logship-collector: parse `--config`, load it, set up tracing and signals, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use logship_collector::{Metrics, run, signals};
use logship_config::collector::RawCollectorConfig;

const USAGE: &str = "usage: logship-collector --config FILE | --version";

fn main() -> ExitCode {
    let path = match parse_args(std::env::args().skip(1)) {
        Ok(Some(path)) => path,
        Ok(None) => {
            println!("logship-collector {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => return fail(&message, 2),
    };
    let config = match logship_config::load::load::<RawCollectorConfig>(&path) {
        Ok(config) => config,
        Err(err) => return fail(&format!("{:#}", anyhow::Error::from(err)), 2),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOGSHIP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start runtime: {err}"), 1),
    };
    let result = runtime.block_on(async {
        let signals = signals::install()?;
        run(config, signals, Arc::new(Metrics::default())).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&format!("{err:#}"), 1),
    }
}

/// `Ok(None)` for `--version`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<PathBuf>, String> {
    match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--version"), None, None) => Ok(None),
        (Some("--config"), Some(path), None) => Ok(Some(PathBuf::from(path))),
        _ => Err(USAGE.to_string()),
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("logship-collector: {message}");
    ExitCode::from(code)
}
