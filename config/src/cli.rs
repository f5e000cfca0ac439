//! The command line both daemons share: `--config FILE`, `--check-config FILE`, `--version`.

use std::path::PathBuf;

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
