//! A throwaway RabbitMQ node of a test's own: its own node name, ports, data and log
//! directories in a tempdir, run from the installed `rabbitmq-server`. It can be stopped
//! cleanly, killed with SIGKILL, restarted on the same data, and clustered with another. It never
//! touches the machine's default node on 5672.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// Plugins a private node runs, as `scripts/ensure-rabbitmq.sh` enables them on the shared one:
/// partitioned collector groups need the consistent-hash exchange.
pub const PLUGINS: &[&str] = &["rabbitmq_consistent_hash_exchange"];

/// Whether a private node can be run here; if not, skips (or fails, see [`crate::skip`]).
pub fn available(test: &str) -> bool {
    let ok = Path::new(SERVER).exists() && Path::new(CTL).exists();
    if !ok {
        crate::skip(
            test,
            &format!("{SERVER} is not installed (apt-get install rabbitmq-server)"),
        );
    }
    ok
}

/// TLS files for the node's amqps listener.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A private node.
pub struct Node {
    pub name: String,
    pub port: u16,
    /// The amqps port, when started with TLS.
    pub tls_port: Option<u16>,
    base: PathBuf,
    /// Shared by clustered nodes: the Erlang cookie lives in `$HOME`.
    home: PathBuf,
    /// The running VM's pid, kept in memory: the pid file may be gone with its tempdir by the
    /// time the node is dropped.
    pid: std::cell::Cell<Option<i32>>,
}

impl Node {
    /// Starts a fresh node under `dir` (with an amqps listener too when `tls` is given) with
    /// [`PLUGINS`], and waits until it answers.
    pub fn start(dir: &Path, label: &str, tls: Option<&TlsFiles>) -> Node {
        Node::start_with_plugins(dir, label, tls, PLUGINS)
    }

    /// Like [`Node::start`], with these plugins enabled (none: `&[]`).
    pub fn start_with_plugins(
        dir: &Path,
        label: &str,
        tls: Option<&TlsFiles>,
        plugins: &[&str],
    ) -> Node {
        let port = free_port();
        let tls_port = tls.map(|_| free_port());
        let name = format!(
            "t{}{}{:x}@localhost",
            label,
            std::process::id(),
            fastrand::u32(..)
        );
        let base = dir.join(label);
        let home = dir.join("home");
        std::fs::create_dir_all(base.join("log")).unwrap();
        std::fs::create_dir_all(base.join("mnesia")).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let mut conf =
            format!("listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users.guest = false\n");
        if let (Some(tls), Some(tls_port)) = (tls, tls_port) {
            conf.push_str(&format!(
                "listeners.ssl.1 = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            ));
        }
        std::fs::write(base.join("rabbitmq.conf"), conf).unwrap();
        std::fs::write(
            base.join("enabled_plugins"),
            format!("[{}].\n", plugins.join(",")),
        )
        .unwrap();
        std::fs::write(base.join("advanced.config"), "[].\n").unwrap();
        std::fs::write(base.join("rabbitmq-env.conf"), "").unwrap();
        let node = Node {
            name,
            port,
            tls_port,
            base,
            home,
            pid: std::cell::Cell::new(None),
        };
        node.boot();
        node
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn env(&self, command: &mut Command) {
        let dist_port = self.port + DIST_OFFSET;
        command
            .env("HOME", &self.home)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.base.join("log"))
            .env("RABBITMQ_CONFIG_FILE", self.base.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                self.base.join("advanced.config"),
            )
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.base.join("enabled_plugins"),
            )
            .env(
                "RABBITMQ_CONF_ENV_FILE",
                self.base.join("rabbitmq-env.conf"),
            )
            .env("RABBITMQ_PID_FILE", self.base.join("pid"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            );
    }

    /// Starts the node on its data and waits until it answers.
    pub fn boot(&self) {
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("log/console.log"))
            .unwrap();
        let pid_file = self.base.join("pid");
        // A pid file left by a node killed -9 names a dead VM; `wait` would look at it.
        let _ = std::fs::remove_file(&pid_file);
        let mut command = Command::new(SERVER);
        self.env(&mut command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("start rabbitmq-server");
        // Reap the launcher whenever it exits, so no zombie is left behind.
        std::thread::spawn(move || child.wait());
        // `rabbitmqctl wait` fails at once (`garbage_in_pid_file`) if it reads the file while the
        // server is still writing it: wait for a whole pid first.
        let deadline = Instant::now() + Duration::from_secs(90);
        while read_pid(&pid_file).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = self.ctl(&["wait", "--timeout", "90", &pid_file.to_string_lossy()]);
        assert!(
            out.0,
            "node {} did not start: {}\n{}",
            self.name,
            out.1,
            self.console()
        );
        self.pid.set(read_pid(&pid_file));
        // `wait` returns when the app runs; the listener may take a moment more.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "node {} never listened on {}",
                self.name,
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the node cleanly; returns when its process has exited.
    pub fn stop(&self) {
        let pid_file = self.base.join("pid");
        let out = self.ctl(&["stop", &pid_file.to_string_lossy()]);
        assert!(out.0, "stop {}: {}", self.name, out.1);
        self.pid.set(None);
    }

    /// SIGKILL to the node's Erlang VM.
    pub fn kill9(&self) {
        let pid: i32 = std::fs::read_to_string(self.base.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: kill(2) on the pid of the VM this node started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(30);
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 {
            assert!(
                Instant::now() < deadline,
                "node {} survived SIGKILL",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `rabbitmqctl -n <node> args`; returns (success, output).
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        run_ctl(self.command(), &self.name, args)
    }

    /// `rabbitmqctl -n <node>` for another thread: runs it with the given arguments and
    /// returns its output (stdout and stderr).
    pub fn ctl_command(&self) -> impl Fn(&[&str]) -> String + Send + 'static {
        let (name, command) = (self.name.clone(), self.command());
        move |args| {
            let mut again = Command::new(command.get_program());
            for (key, value) in command.get_envs() {
                if let Some(value) = value {
                    again.env(key, value);
                }
            }
            run_ctl(again, &name, args).1
        }
    }

    /// A `rabbitmqctl` command with this node's environment.
    fn command(&self) -> Command {
        let mut command = Command::new(CTL);
        self.env(&mut command);
        command
    }

    /// Makes this node join `other`'s cluster (both must share a tempdir, hence a cookie).
    pub fn join(&self, other: &Node) {
        for args in [
            &["stop_app"][..],
            &["join_cluster", &other.name],
            &["start_app"],
        ] {
            let out = self.ctl(args);
            assert!(out.0, "{args:?} on {}: {}", self.name, out.1);
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.base.join("log/console.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) on the pid of the VM this node started; a node is never shared.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// How far above a node's AMQP port its Erlang distribution port is.
const DIST_OFFSET: u16 = 10000;

/// A free port whose distribution port ([`DIST_OFFSET`] above) is free too. Both lie below
/// Linux's ephemeral range (32768 up): a node stopped for a while must get its port back, and a
/// port in that range can meanwhile be taken as the source port of any connection (a test's
/// node once failed to restart with `eaddrinuse`).
fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(10000..22000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + DIST_OFFSET)).is_ok()
        {
            return port;
        }
    }
}

/// Makes a CA and a server certificate for `localhost` / 127.0.0.1 with openssl, in `dir`.
pub fn make_certs(dir: &Path, name: &str) -> TlsFiles {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// The pid in a node's pid file, once the server has written it (the file is created empty).
fn read_pid(pid_file: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Runs `command -n name args`; returns (success, stdout and stderr).
fn run_ctl(mut command: Command, name: &str, args: &[&str]) -> (bool, String) {
    let out = command
        .arg("-n")
        .arg(name)
        .args(args)
        .output()
        .expect("rabbitmqctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
