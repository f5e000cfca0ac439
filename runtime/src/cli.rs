//! The command line both daemons share: `--config FILE`, `--check-config FILE`, `--version`;
//! and what happens at the binary's edge: logging set-up and the one-line error.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::de::DeserializeOwned;

use logship_config::load::{self, Validate};
use logship_config::{AgentConfig, Broker, CollectorConfig};

use crate::signals::{self, Signals};

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

/// A validated config that names its broker (for the password warning).
pub trait DaemonConfig {
    /// The `[broker]` settings.
    fn broker(&self) -> &Broker;
}

impl DaemonConfig for AgentConfig {
    fn broker(&self) -> &Broker {
        &self.broker
    }
}

impl DaemonConfig for CollectorConfig {
    fn broker(&self) -> &Broker {
        &self.broker
    }
}

/// The whole of a daemon's `main`: parses the command line, loads and validates the config
/// (`--check-config` stops there), sets up logging, installs the signal handlers before anything
/// is spawned, and runs `run` on a tokio runtime. Exit codes: 0, 2 for usage and config errors,
/// 1 for failures at run time; errors are one line on stderr.
pub fn daemon_main<R, F, Fut>(binary: &str, version: &str, run: F) -> ExitCode
where
    R: DeserializeOwned + Validate,
    R::Config: DaemonConfig,
    F: FnOnce(R::Config, PathBuf, Signals) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let (path, check_only) = match parse(binary, std::env::args().skip(1)) {
        Ok(Command::Version) => {
            println!("{binary} {version}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(path)) => (path, false),
        Ok(Command::Check(path)) => (path, true),
        Err(usage) => return fail(binary, &usage, 2),
    };
    let config = match load::load::<R>(&path) {
        Ok(config) => config,
        Err(err) => return fail(binary, &format!("{:#}", anyhow::Error::from(err)), 2),
    };
    if check_only {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    init_logging();
    raise_open_file_limit();
    if config.broker().password_in_config && load::world_readable(&path) {
        tracing::warn!(file = %path.display(),
            "the config holds a broker password and is world-readable: chmod o-r it, or use broker.password_file");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(binary, &format!("cannot start runtime: {err}"), 1),
    };
    let result = runtime.block_on(async {
        let signals = signals::install()?;
        run(config, path, signals).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(binary, &format!("{err:#}"), 1),
    }
}

/// Raises the soft limit on open files to the hard limit, so a daemon serving thousands of
/// files is bounded by what the administrator allows (systemd's `LimitNOFILE=`), not by the
/// 1024 soft default kept for programs that still use select(2). Logged once.
pub fn raise_open_file_limit() {
    match set_open_file_limit_to_hard() {
        Ok((before, after)) if before < after => {
            tracing::info!(from = before, to = after, "raised the open-file limit");
        }
        Ok((_, now)) => tracing::debug!(limit = now, "open-file limit already at its maximum"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
}

/// The current soft limit on open files; `None` if unlimited or unknown.
pub fn open_file_limit() -> Option<u64> {
    let limit = get_nofile().ok()?;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Sets the soft `RLIMIT_NOFILE` to the hard one; returns (before, after).
fn set_open_file_limit_to_hard() -> std::io::Result<(u64, u64)> {
    let mut limit = get_nofile()?;
    let before = limit.rlim_cur;
    // An unlimited hard limit is not a valid soft one for descriptors: the kernel caps it at
    // fs.nr_open.
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(before)
    } else {
        limit.rlim_max
    };
    if target <= before {
        return Ok((before, before));
    }
    limit.rlim_cur = target;
    // SAFETY: setrlimit with a valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((before, target))
}

fn get_nofile() -> std::io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(limit)
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

    #[test]
    fn the_soft_open_file_limit_reaches_the_hard_one() {
        let (_, after) = set_open_file_limit_to_hard().unwrap();
        let limit = get_nofile().unwrap();
        assert_eq!(limit.rlim_cur, after);
        assert!(limit.rlim_max == libc::RLIM_INFINITY || limit.rlim_cur == limit.rlim_max);
        assert_eq!(open_file_limit(), Some(after));
    }
}
