//! A TCP proxy in front of the broker that a test can cut: every connection is closed and new
//! ones are dropped at once, until it is restored. The agent sees a broker outage.
//!
//! It can also silence every open connection for good while new ones pass, as when a NAT or a
//! firewall loses its state: both sockets stay open and nothing passes on them any more, in
//! either direction, with no FIN and no RST.
//!
//! And it can stall what clients send while the broker's side still flows, as a broker under
//! flow control does (it stops reading its publishers' sockets, and keeps sending heartbeats and
//! confirms): publishes wait in the sockets' buffers, confirms stop coming, heartbeats go on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped on every cut, so open connections close.
    cuts: watch::Sender<u64>,
    /// Bumped on every silence, so open connections stop passing bytes (and stay open).
    silences: watch::Sender<u64>,
    /// While true, nothing is read from clients (the broker's side still flows).
    stalled: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Proxies a local port to `target` (e.g. `127.0.0.1:5672`).
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let (silences, _) = watch::channel(0u64);
        let (stalled, _) = watch::channel(false);
        let (up_task, cuts_task, silences_task, stalled_task) =
            (up.clone(), cuts.clone(), silences.clone(), stalled.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !up_task.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = cuts_task.subscribe();
                let mut silence = silences_task.subscribe();
                let stall = stalled_task.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    let (client_read, mut client_write) = client.split();
                    let (mut server_read, server_write) = server.split();
                    tokio::select! {
                        _ = pass(client_read, server_write, stall) => {}
                        _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
                        _ = cut.changed() => return,
                        _ = silence.changed() => {}
                    }
                    // Silenced: hold both sockets, read nothing, write nothing, until cut.
                    let _ = cut.changed().await;
                    drop((client, server));
                });
            }
        });
        Proxy {
            addr,
            up,
            cuts,
            silences,
            stalled,
            task,
        }
    }

    /// An AMQP URL through the proxy.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Every connection open now goes silent for good (both sockets stay open); connections
    /// opened afterwards pass as usual.
    pub fn silence(&self) {
        self.silences.send_modify(|n| *n += 1);
    }

    /// Stops reading what clients send, on open connections and new ones, until
    /// [`Proxy::unstall`]; what the broker sends still passes.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Reads what clients send again.
    pub fn unstall(&self) {
        self.stalled.send_replace(false);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Copies `from` to `to`, reading nothing while `stall` holds true.
async fn pass(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    mut stall: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if stall.wait_for(|stalled| !stalled).await.is_err() {
            return;
        }
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
