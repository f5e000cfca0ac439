//! An HTTP proxy in front of an object store that a test can make refuse every request with an
//! error status, as a throttling or overloaded S3 store does (`503 Slow Down`, `429 Too Many
//! Requests`), and then pass again. While it refuses, open connections are closed and each new
//! request is read whole and answered with the status and an S3 error body.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; stops when dropped.
pub struct StoreFaults {
    pub addr: SocketAddr,
    /// The status every request is answered with; `None`: requests pass to the store.
    refusing: watch::Sender<Option<u16>>,
    task: tokio::task::JoinHandle<()>,
}

impl StoreFaults {
    /// Proxies a local port to the store at `target`.
    pub async fn start(target: SocketAddr) -> StoreFaults {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (refusing, _) = watch::channel(None);
        let watch = refusing.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, target, watch.subscribe()));
            }
        });
        StoreFaults {
            addr,
            refusing,
            task,
        }
    }

    /// `http://<addr>`, the endpoint to give the collector.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers every request with `status` from now on (`None`: passes them again).
    pub fn refuse(&self, status: Option<u16>) {
        self.refusing.send_replace(status);
    }
}

impl Drop for StoreFaults {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection: passed to the store while nothing is refused (closed when refusing
/// starts), else every request on it answered with the refusal.
async fn serve(
    mut client: TcpStream,
    target: SocketAddr,
    mut refusing: watch::Receiver<Option<u16>>,
) {
    let status = *refusing.borrow_and_update();
    if let Some(status) = status {
        loop {
            tokio::select! {
                answered = refuse_one(&mut client, status) => if answered.is_none() { return },
                // A change of mode closes the connection: the client opens a new one.
                _ = refusing.changed() => return,
            }
        }
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = refusing.changed() => {}
    }
}

/// Reads one request (head and `Content-Length` body) and answers it with `status`; `None`
/// once the client is gone.
async fn refuse_one(client: &mut TcpStream, status: u16) -> Option<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    tokio::io::copy(&mut (&mut *client).take(length), &mut tokio::io::sink())
        .await
        .ok()?;
    let (reason, code) = match status {
        429 => ("Too Many Requests", "SlowDown"),
        503 => ("Service Unavailable", "SlowDown"),
        _ => ("Error", "InternalError"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{reason}</Message></Error>"
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await.ok()
}
