//! The real daemons as child processes: started with a config, killed with SIGKILL or stopped
//! with SIGTERM, their stderr kept in a log file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A built binary of this workspace (`target/<profile>/<name>`), or `LOGSHIP_<NAME>_BIN`.
pub fn binary(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(&var) {
        return PathBuf::from(path);
    }
    // The test binary is target/<profile>/deps/e2e-<hash>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (or set {var})",
        path.display()
    );
    path
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// Its stderr.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `binary --config config`, appending its stderr to `log`.
    pub fn start(binary: &Path, config: &Path, log: &Path) -> Daemon {
        Daemon::start_with_env(binary, config, log, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_with_env(
        binary: &Path,
        config: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::spawn(Daemon::command(binary, config, log, env), log)
    }

    /// Like [`Daemon::start`], with the open-file limit (soft and hard) set to `nofile`, as
    /// `prlimit --nofile=N:N` would: the daemon cannot raise it.
    pub fn start_with_nofile(binary: &Path, config: &Path, log: &Path, nofile: u64) -> Daemon {
        use std::os::unix::process::CommandExt as _;
        let mut command = Daemon::command(binary, config, log, &[]);
        let limit = libc::rlimit {
            rlim_cur: nofile,
            rlim_max: nofile,
        };
        // SAFETY: setrlimit(2) is async-signal-safe and touches only the child's own limits.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Daemon::spawn(command, log)
    }

    fn command(binary: &Path, config: &Path, log: &Path, env: &[(&str, &str)]) -> Command {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log");
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .env("LOGSHIP_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        command
    }

    fn spawn(mut command: Command, log: &Path) -> Daemon {
        let child = command.spawn().expect("spawn daemon");
        Daemon {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (counted from `skip` occurrences on), or panics.
    pub fn wait_for_log(&self, needle: &str, occurrences: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log_text().matches(needle).count() < occurrences {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in log within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGTERM, then waits for the exit (panics after `timeout`).
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "no exit within {timeout:?} of SIGTERM:\n{}",
                self.log_text()
            )
        })
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log lines at WARN level, but the one about the test config's password (the shared
    /// broker's guest password in a world-readable tempfile).
    pub fn warnings(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" WARN ") && !l.contains("world-readable"))
            .map(str::to_string)
            .collect()
    }

    /// How many regular files under `dir` it holds open now.
    pub fn open_under(&self, dir: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return 0;
        };
        entries
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target: &PathBuf| target.starts_with(dir) && target.is_file())
            .count()
    }

    /// CPU time it used so far (utime + stime), in seconds: [`cpu_seconds`] of its pid.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Peak resident memory so far (VmHWM), in KiB; 0 once the process is gone.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory now (VmRSS), in KiB; 0 once the process is gone.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// A `kB` field of `/proc/<pid>/status`; 0 once the process is gone.
    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|line| line.starts_with(field))
                    .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

/// utime + stime of a process, in seconds (fields 14 and 15 of `/proc/<pid>/stat`); 0 once it
/// is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces: count fields after its closing parenthesis (field 3 on).
    let rest = &stat[stat.rfind(')').map_or(0, |at| at + 1)..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (field(11) + field(12)) as f64 / per_second
}

/// The pids of a process's children (of all its threads).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Bytes of every file under `dir` (a spool, an output tree).
pub fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_bytes(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Lines of a daemon's log shown when its test fails.
const LOG_TAIL: usize = 80;

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A failing test shows what the daemon said; cargo prints it with the test's output.
        if std::thread::panicking() {
            keep_log(&self.log);
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "--- last {} lines of {} ---\n{}\n---",
                tail.len(),
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

/// Where a failing test's daemon logs are copied whole (they go with the test's tempdir
/// otherwise, and the tail printed below may not reach back to the cause).
const KEEP_LOGS: &str = "LOGSHIP_TEST_KEEP_LOGS";

/// Copies `log` whole into the directory named by [`KEEP_LOGS`], if it is set.
fn keep_log(log: &Path) {
    let Some(dir) = std::env::var_os(KEEP_LOGS) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let name = format!(
        "{}-{}-{}",
        std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "."),
        std::process::id(),
        log.file_name()
            .map_or("log".into(), |n| n.to_string_lossy())
    );
    let copied = std::fs::create_dir_all(&dir).and_then(|()| std::fs::copy(log, dir.join(&name)));
    match copied {
        Ok(_) => eprintln!("--- whole log kept in {} ---", dir.join(&name).display()),
        Err(err) => eprintln!(
            "--- could not keep {} in {}: {err} ---",
            log.display(),
            dir.display()
        ),
    }
}

/// Runs a binary to completion with `args`; returns (exit code, stdout, stderr).
pub fn run(binary: &Path, args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(binary).args(args).output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
