//! Config files and directories for the daemons, one tempdir per test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::broker::{Topology, amqp_url};
use crate::daemon::{Daemon, binary};
use crate::lines::output_file;

/// How long a daemon may take to start.
pub const STARTUP: Duration = Duration::from_secs(30);

/// A collector's config and directories.
pub struct Collector {
    pub config: PathBuf,
    pub output: PathBuf,
    pub log: PathBuf,
}

impl Collector {
    /// A collector consuming `queue` bound to `exchange`; `extra` is appended to its config.
    pub fn new(dir: &Path, name: &str, exchange: &str, queue: &str, extra: &str) -> Collector {
        Collector::with_uris(dir, name, &[&amqp_url()], exchange, queue, "", extra)
    }

    /// A collector of its own on `topology`'s first queue, serving `/metrics` and `/status`
    /// on a free loopback address (returned); `output` goes into `[output]`, `rest` after it.
    pub fn serving(
        dir: &Path,
        topology: &Topology,
        output: &str,
        rest: &str,
    ) -> (Collector, String) {
        let addr = crate::http::free_addr();
        let extra = format!("{output}\n[metrics]\nlisten = \"{addr}\"\n{rest}");
        let collector = Collector::new(dir, "c", &topology.exchange, &topology.queues[0], &extra);
        (collector, addr)
    }

    /// Like [`Collector::new`], on other brokers; `broker` goes into `[broker]`.
    pub fn with_uris(
        dir: &Path,
        name: &str,
        uris: &[&str],
        exchange: &str,
        queue: &str,
        broker: &str,
        extra: &str,
    ) -> Collector {
        let uris: Vec<String> = uris.iter().map(|u| format!("\"{u}\"")).collect();
        let root = dir.join(name);
        std::fs::create_dir_all(&root).expect("collector dir");
        let output = root.join("out");
        let config = root.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{state}\"\n[broker]\nuris = [{uris}]\nexchange = \"{exchange}\"\nqueue = \"{queue}\"\n{prefetch}{reconnect}{broker}\n[output]\ndir = \"{out}\"\n{extra}",
                state = root.join("state").display(),
                prefetch = test_prefetch(broker),
                reconnect = fast_reconnect(broker),
                uris = uris.join(", "),
                out = output.display(),
            ),
        )
        .expect("collector config");
        Collector {
            config,
            output,
            log: root.join("collector.log"),
        }
    }

    /// Starts it and waits until it consumes (its queue is bound from then on).
    pub fn start(&self) -> Daemon {
        self.start_within(STARTUP)
    }

    /// Like [`Collector::start`], waiting up to `timeout` (a broker under load may take its
    /// time to answer the consume).
    pub fn start_within(&self, timeout: Duration) -> Daemon {
        let before = count(&self.log, "consuming");
        let daemon = Daemon::start(&binary("logship-collector"), &self.config, &self.log);
        daemon.wait_for_log("consuming", before + 1, timeout);
        daemon
    }

    /// Like [`Collector::start`], under an open-file limit of `nofile` it cannot raise.
    pub fn start_with_nofile(&self, nofile: u64) -> Daemon {
        let before = count(&self.log, "consuming");
        let daemon = Daemon::start_with_nofile(
            &binary("logship-collector"),
            &self.config,
            &self.log,
            nofile,
        );
        daemon.wait_for_log("consuming", before + 1, STARTUP);
        daemon
    }

    /// Where the lines of `(host, path)` go.
    pub fn file(&self, host: &str, path: &Path) -> PathBuf {
        output_file(&self.output, host, &path.to_string_lossy())
    }
}

/// An agent's config and directories.
pub struct Agent {
    pub config: PathBuf,
    pub log: PathBuf,
    pub host: String,
    pub state: PathBuf,
}

impl Agent {
    /// An agent publishing to `exchange` at `url`, reading `globs`; `extra` goes into `[[inputs]]`
    /// and `top` at the top of the file.
    pub fn new(
        dir: &Path,
        name: &str,
        url: &str,
        exchange: &str,
        globs: &[&Path],
        top: &str,
        extra: &str,
    ) -> Agent {
        Agent::with_uris(dir, name, &[url], exchange, globs, top, "", extra)
    }

    /// Like [`Agent::new`], with several URIs; `broker` goes into `[broker]`.
    #[allow(clippy::too_many_arguments)]
    pub fn with_uris(
        dir: &Path,
        name: &str,
        uris: &[&str],
        exchange: &str,
        globs: &[&Path],
        top: &str,
        broker: &str,
        extra: &str,
    ) -> Agent {
        let globs: Vec<String> = globs
            .iter()
            .map(|g| format!("\"{}\"", g.display()))
            .collect();
        let inputs = format!("[[inputs]]\npaths = [{}]\n{extra}\n", globs.join(", "));
        Agent::with_inputs(dir, name, uris, exchange, top, broker, &inputs)
    }

    /// An agent whose `[[inputs]]` tables are `inputs` (a container input, say); `top` and
    /// `broker` as for [`Agent::with_uris`].
    pub fn with_inputs(
        dir: &Path,
        name: &str,
        uris: &[&str],
        exchange: &str,
        top: &str,
        broker: &str,
        inputs: &str,
    ) -> Agent {
        let uris: Vec<String> = uris.iter().map(|u| format!("\"{u}\"")).collect();
        let root = dir.join(name);
        std::fs::create_dir_all(&root).expect("agent dir");
        let host = crate::broker::unique("host");
        let state = root.join("state");
        let config = root.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "host = \"{host}\"\nstate_dir = \"{state}\"\nshutdown_timeout = \"5s\"\n{top}\n[broker]\nuris = [{uris}]\nexchange = \"{exchange}\"\n{reconnect}{broker}\n{inputs}",
                state = state.display(),
                reconnect = fast_reconnect(broker),
                uris = uris.join(", "),
            ),
        )
        .expect("agent config");
        Agent {
            config,
            log: root.join("agent.log"),
            host,
            state,
        }
    }

    /// The same agent, shipping as `host` instead of its unique one.
    pub fn with_host(mut self, host: &str) -> Agent {
        let text = std::fs::read_to_string(&self.config).expect("agent config");
        let text = text.replacen(
            &format!("host = \"{}\"", self.host),
            &format!("host = \"{host}\""),
            1,
        );
        std::fs::write(&self.config, text).expect("agent config");
        self.host = host.to_string();
        self
    }

    /// Starts it and waits until it publishes (or tries to, when `connected` is false).
    pub fn start(&self, connected: bool) -> Daemon {
        let needle = if connected {
            "publishing"
        } else {
            "agent starting"
        };
        let before = count(&self.log, needle);
        let daemon = Daemon::start(&binary("logship-agent"), &self.config, &self.log);
        daemon.wait_for_log(needle, before + 1, STARTUP);
        daemon
    }

    /// Starts it under an open-file limit of `nofile` it cannot raise (as `prlimit
    /// --nofile=N:N` would), and waits until it publishes.
    pub fn start_with_nofile(&self, nofile: u64) -> Daemon {
        let before = count(&self.log, "publishing");
        let daemon =
            Daemon::start_with_nofile(&binary("logship-agent"), &self.config, &self.log, nofile);
        daemon.wait_for_log("publishing", before + 1, STARTUP);
        daemon
    }
}

/// A test's tempdir with a `logs` directory, its own exchange and queue, and a collector on them.
pub struct Setup {
    /// Everything of the test lives here and goes with it.
    pub dir: tempfile::TempDir,
    pub logs: PathBuf,
    pub topology: Topology,
    pub collector: Collector,
}

impl Setup {
    /// A fresh one; `label` goes into the broker names.
    pub fn new(label: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        let topology = Topology::new(label, 1);
        let collector = Collector::new(
            dir.path(),
            "collector",
            &topology.exchange,
            &topology.queues[0],
            "",
        );
        Setup {
            dir,
            logs,
            topology,
            collector,
        }
    }

    /// An agent at `url` reading `logs/*.log` (so rotated copies such as `app.log.1` do not
    /// match); `top` and `input` as for [`Agent::new`].
    pub fn agent(&self, url: &str, top: &str, input: &str) -> Agent {
        let glob = self.logs.join("*.log");
        Agent::new(
            self.dir.path(),
            "agent",
            url,
            &self.topology.exchange,
            &[&glob],
            top,
            input,
        )
    }

    /// An agent at the shared broker whose `[[inputs]]` tables are `inputs` (a container input,
    /// say); `top` at the top of its file.
    pub fn agent_with_inputs(&self, top: &str, inputs: &str) -> Agent {
        Agent::with_inputs(
            self.dir.path(),
            "agent",
            &[&amqp_url()],
            &self.topology.exchange,
            top,
            "",
            inputs,
        )
    }

    /// A file in the logs directory.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    /// The collector's copy of a file in the logs directory.
    pub fn out(&self, agent: &Agent, name: &str) -> PathBuf {
        self.collector.file(&agent.host, &self.log(name))
    }
}

/// Short reconnect delays for tests, unless the test's `[broker]` lines set their own (a test
/// of the defaults says `reconnect_delay = "500ms"` and `reconnect_max_delay = "30s"`).
fn fast_reconnect(broker: &str) -> &'static str {
    if broker.contains("reconnect_") {
        ""
    } else {
        "reconnect_delay = \"100ms\"\nreconnect_max_delay = \"1s\"\n"
    }
}

/// A smaller prefetch than the default for tests, unless the test's `[broker]` lines set one.
fn test_prefetch(broker: &str) -> &'static str {
    if broker.contains("prefetch") {
        ""
    } else {
        "prefetch = 500\n"
    }
}

fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}
