//! logship-agent: parse the command line, load the config, and (for now) report it.

use std::process::ExitCode;

use logship_config::agent::RawAgentConfig;
use logship_config::cli::{self, Command};

fn main() -> ExitCode {
    let path = match cli::parse("logship-agent", std::env::args().skip(1)) {
        Ok(Command::Version) => {
            println!("logship-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(path) | Command::Check(path)) => path,
        Err(usage) => return fail(&usage, 2),
    };
    match logship_config::load::load::<RawAgentConfig>(&path) {
        Ok(config) => {
            println!(
                "{}: ok ({})",
                path.display(),
                logship_agent::summary(&config)
            );
            ExitCode::SUCCESS
        }
        Err(err) => fail(&format!("{:#}", anyhow::Error::from(err)), 2),
    }
}

/// One line on stderr, never the multi-line "Caused by" form.
fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("logship-agent: {message}");
    ExitCode::from(code)
}
