//! The daemons' operator pages from a test: a plain HTTP GET, and a free loopback port to
//! serve them on.

use std::io::{Read as _, Write as _};

/// `GET path` on `addr`; returns the whole response: status line, headers and body.
pub fn response(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
}

/// The body of `GET path` on `addr`, `None` while nothing answers there.
pub fn try_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_string())
}

/// `GET path` on `addr`; returns (the status line, the body).
pub fn get(addr: &str, path: &str) -> (String, String) {
    let response = response(addr, path);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// A loopback address nothing listens on (bound then released).
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").to_string()
}

/// The sample names of a Prometheus text page (`name{labels} value` or `name value`).
pub fn sample_names(page: &str) -> std::collections::BTreeSet<String> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Counter `name` (its metric name, without labels) on the `/metrics` page at `addr`; 0 when
/// it is absent or nothing answers there.
pub fn counter(addr: &str, name: &str) -> u64 {
    try_get(addr, "/metrics")
        .and_then(|page| {
            page.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        })
        .unwrap_or(0)
}
