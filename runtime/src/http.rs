//! A tiny HTTP/1.1 responder for operators: `GET /metrics` (Prometheus text format),
//! `GET /status` (JSON, see [`status`](crate::status)) and `GET /health`. One request per
//! connection; anything else gets 404. No framework needed for three read-only pages, and
//! nothing here is on the lines' path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Renders a page.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The pages a daemon serves.
#[derive(Clone)]
pub struct Pages {
    /// `/metrics`, Prometheus text format.
    pub metrics: Render,
    /// `/status`, JSON.
    pub status: Render,
}

/// Binds `addr` and serves until `stop`. The bind happens before this returns, so a busy
/// address is an error at start-up, naming the address.
pub async fn serve(addr: SocketAddr, stop: CancellationToken, pages: Pages) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|err| std::io::Error::new(err.kind(), format!("metrics.listen {addr}: {err}")))?;
    tracing::info!(addr = %addr, "serving /metrics, /status and /health");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                // cancel-safe: only observes the token
                _ = stop.cancelled() => break,
                // cancel-safe: a connection not yet accepted stays in the backlog
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let pages = pages.clone();
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond(stream, pages)).await;
                        });
                    }
                }
            }
        }
    });
    Ok(())
}

async fn respond(mut stream: TcpStream, pages: Pages) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = match line {
        b"GET /metrics HTTP/1.1" | b"GET /metrics HTTP/1.0" => (
            "200 OK",
            "text/plain; version=0.0.4",
            render(pages.metrics).await,
        ),
        b"GET /status HTTP/1.1" | b"GET /status HTTP/1.0" => {
            ("200 OK", "application/json", render(pages.status).await)
        }
        b"GET /health HTTP/1.1" | b"GET /health HTTP/1.0" => {
            ("200 OK", "text/plain", "ok\n".to_string())
        }
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Renders a page on a blocking thread: a page may wait for a daemon's thread to answer (the
/// agent's list of files comes from its reader), which must not hold up the async workers.
async fn render(page: Render) -> String {
    tokio::task::spawn_blocking(move || page())
        .await
        .unwrap_or_default()
}

/// Appends one metric in Prometheus text format.
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// How one counter of a daemon is shown: see [`counters!`](crate::counters).
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    pub metric: &'static str,
    pub kind: &'static str,
    /// Its key in the one-line summary; empty: not in it.
    pub summary: &'static str,
    /// Counted units per shown unit (milliseconds counted, seconds shown: 1000).
    pub per_unit: f64,
    /// The lines of its doc comment: its help text.
    pub help: &'static [&'static str],
}

/// Appends every counter in Prometheus text format, its doc comment as its help.
pub fn render_counters(out: &mut String, counters: &[(Counter, u64)]) {
    for (counter, value) in counters {
        let help = counter
            .help
            .iter()
            .map(|line| line.trim())
            .collect::<Vec<_>>()
            .join(" ");
        let value = *value as f64 / counter.per_unit;
        metric(out, counter.metric, counter.kind, &help, value);
    }
}

/// `key=value` for every counter with a summary key, for a log line.
pub fn summarize(counters: &[(Counter, u64)]) -> String {
    counters
        .iter()
        .filter(|(counter, _)| !counter.summary.is_empty())
        .map(|(counter, value)| format!("{}={value}", counter.summary))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Declares a daemon's counters once: each field's doc comment, Prometheus name, type, key in
/// the summary line (`""`: none) and, optionally, `/ N` counted units per shown unit. Gives the
/// struct (all `AtomicU64`, `Default`), `add` (the one way a counter grows) and `counters()`,
/// which both renderings read.
#[macro_export]
macro_rules! counters {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[doc = $doc:literal])+ $field:ident => $metric:literal, $kind:literal, $summary:literal $(/ $per:literal)?;)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[doc = $doc])+ pub $field: ::std::sync::atomic::AtomicU64,)+
        }

        impl $name {
            /// Adds `n` to a counter (of this struct, or any other the daemon keeps beside it).
            pub fn add(counter: &::std::sync::atomic::AtomicU64, n: u64) {
                counter.fetch_add(n, ::std::sync::atomic::Ordering::Relaxed);
            }

            /// Every counter with how it is shown and its value, in declaration order.
            pub fn counters(&self) -> ::std::vec::Vec<($crate::http::Counter, u64)> {
                ::std::vec![$((
                    $crate::http::Counter {
                        metric: $metric,
                        kind: $kind,
                        summary: $summary,
                        per_unit: 1.0 $(* $per as f64)?,
                        help: &[$($doc),+],
                    },
                    self.$field.load(::std::sync::atomic::Ordering::Relaxed),
                )),+]
            }
        }
    };
}
