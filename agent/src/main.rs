//! logship-agent: parse the command line, load the config, set up tracing and signals, run.

use std::process::ExitCode;
use std::sync::Arc;

use logship_agent::{Metrics, run};
use logship_config::agent::RawAgentConfig;
use logship_config::cli::{self, Command};
use logship_config::signals;

fn main() -> ExitCode {
    let (path, check_only) = match cli::parse("logship-agent", std::env::args().skip(1)) {
        Ok(Command::Version) => {
            println!("logship-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(path)) => (path, false),
        Ok(Command::Check(path)) => (path, true),
        Err(usage) => return fail(&usage, 2),
    };
    let config = match logship_config::load::load::<RawAgentConfig>(&path) {
        Ok(config) => config,
        Err(err) => return fail(&format!("{:#}", anyhow::Error::from(err)), 2),
    };
    if check_only {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    cli::init_logging();
    if config.broker.password_in_config && logship_config::load::world_readable(&path) {
        tracing::warn!(file = %path.display(),
            "the config holds a broker password and is world-readable: chmod o-r it, or use broker.password_file");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start runtime: {err}"), 1),
    };
    let result = runtime.block_on(async {
        let signals = signals::install()?;
        run(config, path, signals, Arc::new(Metrics::default())).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&format!("{err:#}"), 1),
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    cli::fail("logship-agent", message, code)
}
