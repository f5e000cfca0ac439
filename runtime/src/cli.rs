//! The command line both daemons share, parsed with clap from one definition (which also
//! renders the man page and the shell completions the packages ship), and what happens at the
//! binary's edge: logging set-up and the one-line error.
//!
//! ```text
//! logship-agent [--config FILE]                 run (default /etc/logship/agent.toml)
//! logship-agent [--config FILE] --check-config  validate and exit (also: --check-config FILE)
//! logship-agent [--config FILE] status          GET /status from metrics.listen, as a table
//! logship-collector [--config FILE] audit       the sources' missing ranges: exit 0 none, 1 some
//! logship-collector [--config FILE] audit --remote   the bucket's objects against the upload record
//! logship-agent --help | -h | --version | -V    exit 0
//! ```
//!
//! Exit codes: 0; 2 for usage and config errors (and `status` with metrics off); 1 for
//! failures at run time (and `status` when the daemon does not answer). Errors are one line on
//! stderr, `<binary>: <message>`.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use serde::de::DeserializeOwned;

use logship_config::load::{self, Validate};
use logship_config::metrics::RawMetricsOnly;
use logship_config::{AgentConfig, Broker, CollectorConfig};

pub use crate::rlimit::{open_file_limit, raise_open_file_limit};
use crate::signals::{self, Signals};
use crate::status;

/// The arguments as clap sees them; [`parse`] turns them into a [`Command`].
#[derive(Debug, Parser)]
#[command(
    about = "Ships log lines through RabbitMQ: no line lost, none duplicated, in order",
    disable_help_subcommand = true
)]
struct Args {
    /// The config file.
    #[arg(long, value_name = "FILE", global = true)]
    config: PathBuf,
    /// Validate the config file (FILE, else the --config one) and exit: 0, or 2 with one line
    /// naming the key.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,
    /// Print the man page (roff) and exit, of the binary or of its subcommand PAGE
    /// (`status`); the packages are built with it.
    #[arg(long, hide = true, value_name = "PAGE", num_args = 0..=1)]
    man: Option<Option<String>>,
    /// Print the completion script for SHELL and exit; the packages are built with it.
    #[arg(long, hide = true, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
    #[command(subcommand)]
    subcommand: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Ask the running daemon how it is doing (GET /status on metrics.listen) and print a
    /// short table: exit 2 if metrics are off in the config, 1 if the daemon does not answer.
    Status,
    /// logship-collector only: list, per host and path, the ranges of each source that never
    /// arrived (holes between committed ranges open longer than audit.gap_after) and since
    /// when; reads the state, also while the collector runs. Exit 0 when there is none, 1 when
    /// there is one, 2 if the config or the state cannot be read.
    Audit {
        /// Audit the object store instead ([upload]): list the bucket and check each output
        /// file's objects against the upload record: contiguous from its first byte, no
        /// overlap, sizes as recorded. Exit 0 when complete, 1 with the missing or extra ranges
        /// named, 2 if the config, the record or the bucket cannot be read.
        #[arg(long)]
        remote: bool,
    },
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run with this config file.
    Run(PathBuf),
    /// Validate this config file and exit.
    Check(PathBuf),
    /// Fetch the status page of the daemon this config file describes.
    Status(PathBuf),
    /// Audit the archive of the collector this config file describes (the binary answers it):
    /// its local record, or (`remote`) its object store.
    Audit { config: PathBuf, remote: bool },
    /// Print the man page of the binary (`None`) or of one of its subcommands.
    Man(Option<String>),
    /// Print the completion script for a shell.
    Completions(clap_complete::Shell),
}

/// The clap definition of `binary`: its name, version and default config file
/// (`/etc/logship/<agent|collector>.toml`).
pub fn definition(binary: &'static str, version: &'static str) -> clap::Command {
    let role = binary.strip_prefix("logship-").unwrap_or(binary);
    Args::command()
        .name(binary)
        .bin_name(binary)
        .version(version)
        // The derive marks a `PathBuf` required; the default makes it optional.
        .mut_arg("config", |arg| {
            arg.required(false)
                .default_value(format!("/etc/logship/{role}.toml"))
        })
        .mut_subcommand("audit", |audit| audit.hide(binary != "logship-collector"))
}

/// Parses the arguments (program name first). `Err` is clap's: help and version requests
/// included (see [`usage_error`]).
pub fn parse(
    binary: &'static str,
    version: &'static str,
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Command, clap::Error> {
    let mut definition = definition(binary, version);
    let matches = definition.try_get_matches_from_mut(args)?;
    let args = Args::from_arg_matches(&matches).map_err(|err| err.format(&mut definition))?;
    if let Some(page) = args.man {
        return Ok(Command::Man(page));
    }
    if let Some(shell) = args.completions {
        return Ok(Command::Completions(shell));
    }
    match (args.check_config, args.subcommand) {
        (Some(_), Some(_)) => Err(definition.error(
            ErrorKind::ArgumentConflict,
            "--check-config and a subcommand do not go together",
        )),
        (Some(file), None) => Ok(Command::Check(file.unwrap_or(args.config))),
        (None, Some(Sub::Status)) => Ok(Command::Status(args.config)),
        (None, Some(Sub::Audit { remote })) if binary == "logship-collector" => {
            Ok(Command::Audit {
                config: args.config,
                remote,
            })
        }
        (None, Some(Sub::Audit { .. })) => Err(definition.error(
            ErrorKind::InvalidSubcommand,
            "audit is a logship-collector command",
        )),
        (None, None) => Ok(Command::Run(args.config)),
    }
}

/// A clap error as one line: `usage: <what is wrong> (see --help)`; `None` for `--help` and
/// `--version`, which are answers, not errors.
pub fn usage_error(err: &clap::Error) -> Option<String> {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        return None;
    }
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let what = first.strip_prefix("error: ").unwrap_or(first);
    Some(format!("usage: {what} (see --help)"))
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

/// The `status` subcommand: reads `[metrics]` from the config at `path`, fetches the page and
/// prints it through `table`. Exit 2 when the file is bad or metrics are off, 1 when the daemon
/// does not answer (or answers something else).
fn status_command(
    binary: &str,
    path: &Path,
    table: fn(&str) -> Result<String, serde_json::Error>,
) -> ExitCode {
    let addr = match load::load::<RawMetricsOnly>(path) {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            let message = format!(
                "{}: metrics are off (set [metrics] listen, e.g. \"127.0.0.1:9187\", and restart the daemon)",
                path.display()
            );
            return fail(binary, &message, 2);
        }
        Err(err) => return fail(binary, &format!("{:#}", anyhow::Error::from(err)), 2),
    };
    let body = match status::fetch(addr) {
        Ok(body) => body,
        Err(err) => return fail(binary, &format!("{:#}", anyhow::Error::from(err)), 1),
    };
    match table(&body) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(
            binary,
            &format!("the daemon at {addr} answered a status page this version cannot read: {err}"),
            1,
        ),
    }
}

/// A validated config that names its broker (for the password warning), and knows how its
/// daemon's status page is shown.
pub trait DaemonConfig {
    /// The `[broker]` settings.
    fn broker(&self) -> &Broker;
    /// The `/status` JSON of this daemon as a short human table.
    fn status_table(json: &str) -> Result<String, serde_json::Error>;
}

impl DaemonConfig for AgentConfig {
    fn broker(&self) -> &Broker {
        &self.broker
    }

    fn status_table(json: &str) -> Result<String, serde_json::Error> {
        Ok(serde_json::from_str::<status::AgentStatus>(json)?.table())
    }
}

impl DaemonConfig for CollectorConfig {
    fn broker(&self) -> &Broker {
        &self.broker
    }

    fn status_table(json: &str) -> Result<String, serde_json::Error> {
        Ok(serde_json::from_str::<status::CollectorStatus>(json)?.table())
    }
}

/// The whole of a daemon's `main`: parses the command line, answers `--help`, `--version`,
/// `status` and the packaging flags, loads and validates the config (`--check-config` stops
/// there), sets up logging, installs the signal handlers before anything is spawned, and runs
/// `run` on a tokio runtime.
pub fn daemon_main<R, F, Fut>(binary: &'static str, version: &'static str, run: F) -> ExitCode
where
    R: DeserializeOwned + Validate,
    R::Config: DaemonConfig,
    F: FnOnce(R::Config, PathBuf, Signals) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let (path, check_only) = match parse(binary, version, std::env::args_os()) {
        Ok(Command::Run(path)) => (path, false),
        Ok(Command::Check(path)) => (path, true),
        Ok(Command::Status(path)) => {
            return status_command(binary, &path, R::Config::status_table);
        }
        // The collector's binary answers `audit` before calling us; parse refuses it elsewhere.
        Ok(Command::Audit { .. }) => {
            return fail(binary, "usage: audit is a logship-collector command", 2);
        }
        Ok(Command::Man(page)) => return man_page(binary, version, page.as_deref()),
        Ok(Command::Completions(shell)) => {
            let mut definition = definition(binary, version);
            clap_complete::generate(shell, &mut definition, binary, &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            return match usage_error(&err) {
                Some(line) => fail(binary, &line, 2),
                None => {
                    let _ = err.print();
                    ExitCode::SUCCESS
                }
            };
        }
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

/// Prints the man page of `binary`, or of its subcommand `page` (`logship-agent-status(1)`,
/// which the main page refers to).
fn man_page(binary: &'static str, version: &'static str, page: Option<&str>) -> ExitCode {
    let mut definition = definition(binary, version);
    definition.build();
    let command = match page {
        None => definition,
        Some(name) => match definition.find_subcommand(name) {
            Some(sub) => sub
                .clone()
                .name(format!("{binary}-{name}"))
                .version(version),
            None => return fail(binary, &format!("usage: no man page \"{name}\""), 2),
        },
    };
    match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(binary, &format!("cannot write the man page: {err}"), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(list: &[&str]) -> Result<Command, clap::Error> {
        parse(
            "logship-x",
            "1.0",
            std::iter::once("logship-x").chain(list.iter().copied()),
        )
    }

    #[test]
    fn commands() {
        let default = PathBuf::from("/etc/logship/x.toml");
        assert_eq!(parse_args(&[]).unwrap(), Command::Run(default.clone()));
        assert_eq!(
            parse_args(&["--config", "a.toml"]).unwrap(),
            Command::Run("a.toml".into())
        );
        for check in [
            &["--check-config", "a.toml"][..],
            &["--config", "a.toml", "--check-config"],
            &["--check-config", "--config", "a.toml"],
        ] {
            assert_eq!(parse_args(check).unwrap(), Command::Check("a.toml".into()));
        }
        assert_eq!(
            parse_args(&["--check-config"]).unwrap(),
            Command::Check(default)
        );
        assert_eq!(
            parse_args(&["status", "--config", "a.toml"]).unwrap(),
            Command::Status("a.toml".into())
        );
        assert_eq!(
            parse_args(&["--config", "a.toml", "status"]).unwrap(),
            Command::Status("a.toml".into())
        );
        assert_eq!(parse_args(&["--man"]).unwrap(), Command::Man(None));
        assert_eq!(
            parse_args(&["--man", "status"]).unwrap(),
            Command::Man(Some("status".into()))
        );
    }

    #[test]
    fn help_and_version_are_answers_and_usage_errors_one_line() {
        for answer in [&["--help"][..], &["-h"], &["--version"], &["-V"]] {
            let err = parse_args(answer).unwrap_err();
            assert_eq!(usage_error(&err), None, "{answer:?}");
        }
        for bad in [
            &["--bogus"][..],
            &["--config"],
            &["--config", "a", "b"],
            &["-c", "a"],
            &["--check-config", "a", "status"],
        ] {
            let line = usage_error(&parse_args(bad).unwrap_err()).unwrap();
            assert!(line.starts_with("usage: "), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn the_definition_is_consistent() {
        definition("logship-x", "1.0").debug_assert();
    }
}
