//! A throwaway Garage node (an S3-compatible object store) of a test's own: its own ports,
//! metadata and data in a tempdir, `replication_factor = 1`, `db_engine = "sqlite"`, a layout
//! of one node, and a bucket and a key made by its CLI. It can be killed with SIGKILL and
//! started again on the same data. A cluster of several such nodes (`replication_factor` = the
//! number of nodes, a zone each) can lose one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt as _;
use object_store::ObjectStore as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};

/// The region the node answers for.
pub const REGION: &str = "garage";
/// The bucket every node gets.
pub const BUCKET: &str = "logship-archive";

/// The garage binary: `$GARAGE_BIN`, else `garage` on the `PATH`, else `~/.cargo/bin/garage`
/// (where `cargo install garage` puts it).
pub fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        return Some(PathBuf::from(bin)).filter(|bin| bin.is_file());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("garage"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let cargo = Path::new(&home).join(".cargo/bin/garage");
        cargo.is_file().then_some(cargo)
    })
}

/// Whether a node can be run here; if not, skips (or fails, see [`crate::skip`]).
pub fn available(test: &str) -> bool {
    let found = binary().is_some();
    if !found {
        crate::skip(
            test,
            "no garage binary (cargo install garage --locked, or set GARAGE_BIN)",
        );
    }
    found
}

/// One node of a Garage cluster: its config, its directory, its S3 port, its process.
struct Node {
    dir: PathBuf,
    config: PathBuf,
    s3_port: u16,
    child: Option<Child>,
}

/// A running (or stopped) cluster (of one node, or more) with its bucket and key. The S3
/// endpoint is the first node's.
pub struct Garage {
    binary: PathBuf,
    nodes: Vec<Node>,
    pub s3_port: u16,
    pub key_id: String,
    pub secret: String,
}

impl Garage {
    /// Starts a fresh node under `dir`, lays it out, and makes [`BUCKET`] and a key that may
    /// read and write it.
    pub fn start(dir: &Path) -> Garage {
        Garage::cluster(dir, 1)
    }

    /// Like [`Garage::start`], with `nodes` nodes each in a zone of its own and
    /// `replication_factor = nodes`: every object on every node, and a write needs a majority.
    pub fn cluster(dir: &Path, nodes: usize) -> Garage {
        let binary = binary().expect("garage binary (checked with available())");
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", fastrand::u8(..)))
            .collect();
        let nodes: Vec<Node> = (0..nodes)
            .map(|i| Node::new(&dir.join(format!("garage-{i}")), &secret, nodes))
            .collect();
        let mut garage = Garage {
            binary,
            s3_port: nodes[0].s3_port,
            nodes,
            key_id: String::new(),
            secret: String::new(),
        };
        for i in 0..garage.nodes.len() {
            garage.run(i);
        }
        for i in 0..garage.nodes.len() {
            let id = garage.cli_on(i, &["node", "id", "-q"]);
            let id = id.trim().to_string();
            if i > 0 {
                garage.cli(&["node", "connect", &id]);
            }
            let short = id.split('@').next().unwrap_or_default().to_string();
            garage.cli(&[
                "layout",
                "assign",
                "-z",
                &format!("dc{i}"),
                "-c",
                "1G",
                &short,
            ]);
        }
        garage.cli(&["layout", "apply", "--version", "1"]);
        garage.cli(&["bucket", "create", BUCKET]);
        let key = garage.cli(&["key", "create", "logship-test"]);
        garage.key_id = field(&key, "Key ID:");
        garage.secret = field(&key, "Secret key:");
        garage.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            "logship-test",
        ]);
        garage.wait_serving();
        garage
    }

    /// `http://127.0.0.1:<s3 port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// An `[upload]` table for this node's bucket with `prefix` (the secret in a file beside
    /// the node's); `extra` keys are appended.
    pub fn upload_table(&self, prefix: &str, extra: &str) -> String {
        let secret_file = self.nodes[0].dir.join("secret");
        std::fs::write(&secret_file, format!("{}\n", self.secret)).unwrap();
        format!(
            "[upload]\nendpoint = \"{}\"\nregion = \"{REGION}\"\nbucket = \"{BUCKET}\"\nprefix = \"{prefix}\"\n\
             access_key_id = \"{}\"\nsecret_access_key_file = \"{}\"\n{extra}",
            self.endpoint(),
            self.key_id,
            secret_file.display()
        )
    }

    /// Kills every node with SIGKILL (their data stays).
    pub fn kill9(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9_node(i);
        }
    }

    /// Kills node `i` with SIGKILL (its data stays).
    pub fn kill9_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts every killed node again on its data and waits until the cluster serves.
    pub fn restart(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.run(i);
            }
        }
        self.wait_serving();
    }

    /// Every object under `prefix` with its bytes, in key order.
    pub async fn objects(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let client = self.client();
        let path = object_store::path::Path::from(prefix);
        let listed: Vec<_> = client
            .list((!prefix.is_empty()).then_some(&path))
            .try_collect()
            .await
            .expect("list the bucket");
        let mut objects = Vec::new();
        for meta in listed {
            let bytes = client
                .get(&meta.location)
                .await
                .expect("get an object")
                .bytes()
                .await
                .expect("read an object");
            objects.push((meta.location.to_string(), bytes.to_vec()));
        }
        objects.sort();
        objects
    }

    /// Begins a multipart upload at `key` and sends it one part, as a collector killed in the
    /// middle of one leaves it; returns its id.
    pub async fn begin_multipart(&self, key: &str) -> String {
        use object_store::multipart::MultipartStore as _;
        let client = self.client();
        let path = object_store::path::Path::from(key);
        let id = client
            .create_multipart(&path)
            .await
            .expect("begin a multipart upload");
        client
            .put_part(&path, &id, 0, vec![b'x'; 1024].into())
            .await
            .expect("send a part");
        id
    }

    /// Whether the multipart upload `id` at `key` still takes parts (it was not aborted).
    pub async fn multipart_open(&self, key: &str, id: &str) -> bool {
        use object_store::multipart::MultipartStore as _;
        let path = object_store::path::Path::from(key);
        self.client()
            .put_part(&path, &id.to_string(), 1, vec![b'y'; 1024].into())
            .await
            .is_ok()
    }

    /// Deletes the object at `key`.
    pub async fn delete(&self, key: &str) {
        self.client()
            .delete(&object_store::path::Path::from(key))
            .await
            .expect("delete an object");
    }

    fn client(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_region(REGION)
            .with_bucket_name(BUCKET)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
            .build()
            .expect("an S3 client for the node")
    }

    /// Starts node `i`'s server process and waits until its CLI answers.
    fn run(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("garage.log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start garage");
        self.nodes[i].child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.try_cli(i, &["status"]).0 {
            assert!(
                Instant::now() < deadline,
                "garage did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the S3 API answers a list of the bucket (the layout is in force). On a
    /// thread of its own, so that a test's runtime can call it.
    fn wait_serving(&self) {
        let client = self.client();
        let listed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match runtime.block_on(client.list_with_delimiter(None)) {
                    Ok(_) => return Ok(()),
                    Err(err) if Instant::now() > deadline => return Err(err.to_string()),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        })
        .join()
        .expect("the wait for garage panicked");
        if let Err(err) = listed {
            panic!("garage does not serve S3: {err}: {}", self.log());
        }
    }

    /// Runs the CLI against the first node; panics with its output on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_on(0, args)
    }

    /// Runs the CLI against node `i`; panics with its output on failure.
    fn cli_on(&self, i: usize, args: &[&str]) -> String {
        let (ok, out) = self.try_cli(i, args);
        assert!(ok, "garage {args:?} failed: {out}");
        out
    }

    fn try_cli(&self, i: usize, args: &[&str]) -> (bool, String) {
        match Command::new(&self.binary)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(err) => (false, err.to_string()),
        }
    }

    /// Every node's log.
    fn log(&self) -> String {
        self.nodes
            .iter()
            .map(|n| std::fs::read_to_string(n.dir.join("garage.log")).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

impl Node {
    /// A node's directory and config under `dir`, in a cluster of `nodes` sharing `secret`.
    fn new(dir: &Path, secret: &str, nodes: usize) -> Node {
        std::fs::create_dir_all(dir).unwrap();
        let (rpc_port, s3_port) = (free_port(), free_port());
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{dir}/meta\"\ndata_dir = \"{dir}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = {nodes}\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        Node {
            dir: dir.to_path_buf(),
            config,
            s3_port,
            child: None,
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The value after `label` on its line of the CLI's output.
fn field(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| value.trim().to_string())
        .unwrap_or_else(|| panic!("no {label} in: {output}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
