//! A real Docker daemon of a test's own, for the container input's tests: Debian's `dockerd`
//! (package `docker.io`) with its own data root, exec root and socket, no networking
//! (`--bridge=none`, no iptables), and an image made without a registry: `docker import` of a
//! tar holding the static busybox (package `busybox-static`). `.ci/run` installs both.
//!
//! Dropped, it removes its containers and stops the daemon (SIGTERM, then SIGKILL), so no
//! mount or process outlives the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image every container of the fixture runs: `/bin/busybox` and nothing else.
pub const IMAGE: &str = "logship-busybox:1";

/// How long the daemon may take to answer.
const STARTUP: Duration = Duration::from_secs(30);

/// Where the static busybox is (Debian's `busybox-static` installs it there).
const BUSYBOX: &str = "/bin/busybox";

/// A running `dockerd` of the test's own.
pub struct Dockerd {
    child: Child,
    root: PathBuf,
    host: String,
}

impl Dockerd {
    /// Starts one under `dir` with the busybox image imported, or says why it cannot (a skip,
    /// or a failure under [`crate::REQUIRE_ALL`]) and returns `None`.
    pub fn start(test: &str, dir: &Path) -> Option<Dockerd> {
        if let Err(why) = Self::available() {
            crate::skip(test, &why);
            return None;
        }
        let root = dir.join("d");
        std::fs::create_dir_all(&root).expect("dockerd dir");
        let host = format!("unix://{}", root.join("docker.sock").display());
        let log = std::fs::File::create(root.join("dockerd.log")).expect("dockerd log");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .args([
                "-H",
                &host,
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dockerd log"))
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        let dockerd = Dockerd { child, root, host };
        let deadline = Instant::now() + STARTUP;
        while !dockerd.docker(&["version"]).0 {
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within {STARTUP:?}:\n{}",
                dockerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        dockerd.import_image();
        Some(dockerd)
    }

    /// Why this machine cannot run a `dockerd` of a test's own, if it cannot.
    fn available() -> Result<(), String> {
        let found = |program: &str| {
            Command::new(program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !found("dockerd") || !found("docker") {
            return Err("dockerd or docker is missing (apt-get install docker.io)".into());
        }
        if !Path::new(BUSYBOX).exists() {
            return Err(format!(
                "{BUSYBOX} is missing (apt-get install busybox-static)"
            ));
        }
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("dockerd needs root".into());
        }
        Ok(())
    }

    /// `docker import` of a tar holding `/bin/busybox` as [`IMAGE`].
    fn import_image(&self) {
        let tree = self.root.join("image");
        std::fs::create_dir_all(tree.join("bin")).expect("image tree");
        std::fs::copy(BUSYBOX, tree.join("bin/busybox")).expect("busybox copied");
        let tar = self.root.join("image.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .arg("-cf")
            .arg(&tar)
            .arg("bin")
            .status()
            .expect("tar runs");
        assert!(status.success(), "tar of the image failed");
        let (ok, _, err) = self.docker(&["import", &tar.to_string_lossy(), IMAGE]);
        assert!(ok, "docker import failed: {err}");
    }

    /// Runs the docker client against this daemon: (success, stdout, stderr).
    pub fn docker(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("docker client runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Starts a detached container `name` of [`IMAGE`] running `script` in busybox's sh, with
    /// no network and the json-file log driver with `log_opts` (`max-size=1m`, ...); returns its
    /// id.
    pub fn run(&self, name: &str, log_opts: &[&str], script: &str) -> String {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--log-driver",
            "json-file",
        ];
        for opt in log_opts {
            args.extend(["--log-opt", opt]);
        }
        args.extend([IMAGE, "/bin/busybox", "sh", "-c", script]);
        let (ok, id, err) = self.docker(&args);
        assert!(ok, "docker run {name} failed: {err}");
        id
    }

    /// Waits until container `name` exits; returns its exit code.
    pub fn wait(&self, name: &str) -> i32 {
        let (ok, code, err) = self.docker(&["wait", name]);
        assert!(ok, "docker wait {name} failed: {err}");
        code.parse().unwrap_or(-1)
    }

    /// Where the daemon keeps its containers (and their logs): the docker input's `directory`.
    pub fn containers(&self) -> PathBuf {
        self.root.join("data").join("containers")
    }

    /// The daemon's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let (_, ids, _) = self.docker(&["ps", "-aq"]);
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.lines());
            let _ = self.docker(&args);
        }
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
