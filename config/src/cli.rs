//! The command line both daemons share: `--config FILE`, `--check-config FILE`, `--version`;
//! and what happens at the binary's edge: logging set-up and the one-line error.

use std::path::PathBuf;
use std::process::ExitCode;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run with this config file.
    Run(PathBuf),
    /// Validate this config file and exit.
    Check(PathBuf),
    /// Print the version and exit.
    Version,
}

/// Parses the arguments after the program name; the error is the usage line.
pub fn parse(binary: &str, mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let command = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--version"), None, None) => Command::Version,
        (Some("--config"), Some(path), None) => Command::Run(PathBuf::from(path)),
        (Some("--check-config"), Some(path), None) => Command::Check(PathBuf::from(path)),
        _ => {
            return Err(format!(
                "usage: {binary} --config FILE | --check-config FILE | --version"
            ));
        }
    };
    Ok(command)
}

/// Default log filter. lapin logs every connection error itself, and the daemons log each one
/// with its URI and what they do about it: one line per event, so lapin's own lines are off.
pub const DEFAULT_LOG_FILTER: &str = "info,lapin=off";

/// Logs to stderr through `tracing`, filtered by `LOGSHIP_LOG` (default [`DEFAULT_LOG_FILTER`]),
/// without colours unless stderr is a terminal (journald shows escape codes as they are).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOGSHIP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Prints `<binary>: <message>` as one line on stderr (never the multi-line "Caused by" form)
/// and returns `code`.
pub fn fail(binary: &str, message: &str, code: u8) -> ExitCode {
    eprintln!("{binary}: {message}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn commands() {
        assert_eq!(parse("x", args(&["--version"])), Ok(Command::Version));
        assert_eq!(
            parse("x", args(&["--config", "a.toml"])),
            Ok(Command::Run("a.toml".into()))
        );
        assert_eq!(
            parse("x", args(&["--check-config", "a.toml"])),
            Ok(Command::Check("a.toml".into()))
        );
        for bad in [
            &[][..],
            &["--config"],
            &["--config", "a", "b"],
            &["-c", "a"],
        ] {
            assert!(parse("x", args(bad)).unwrap_err().starts_with("usage: x"));
        }
    }
}
