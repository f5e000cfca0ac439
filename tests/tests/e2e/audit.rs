//! The completeness audit against real daemons: holes an agent's drops and a truncation without
//! a copy leave, a hole a late resend fills, and `logship-collector audit`'s exit code.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use logship_tests::broker::{Broker, Topology};
use logship_tests::daemon::{binary, run};
use logship_tests::fixture::{Agent, Collector, Setup};
use logship_tests::lines::{append, envelopes, read_lines, text, wait_for_lines};
use logship_tests::proxy::Proxy;

const ARRIVAL: Duration = Duration::from_secs(90);

/// Holes count as losses one second after they open.
const GAP_AFTER: &str = "[audit]\ngap_after = \"1s\"\n";

/// `logship-collector audit` for `collector`: (exit code, stdout).
fn audit(collector: &Collector) -> (Option<i32>, String) {
    let (code, out, err) = run(
        &binary("logship-collector"),
        &[
            "--config".as_ref(),
            collector.config.as_os_str(),
            "audit".as_ref(),
        ],
    );
    eprintln!("audit: exit {code:?}\n{out}{err}");
    (code, out)
}

/// Polls the audit until it exits with `code` (lines reach the output file an instant before
/// their batch commits and the audit record is rewritten); returns its last answer.
fn audit_until(collector: &Collector, code: i32) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = audit(collector);
        if answer.0 == Some(code) || std::time::Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Byte offset of line `i` of `source` (lines as [`text`] makes them, each with a newline).
fn offset(source: &str, i: usize) -> u64 {
    (0..i).map(|k| text(source, k).len() as u64 + 1).sum()
}

/// A collector whose holes count after [`GAP_AFTER`], and an agent with a 64 KiB spool
/// (`when_full` as given) reaching the broker through a proxy the test can cut; neither started.
async fn behind_a_proxy(label: &str, when_full: &str) -> (Setup, Proxy, Agent) {
    let setup = Setup::new(label);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&setup.collector.config)
        .and_then(|mut f| f.write_all(GAP_AFTER.as_bytes()))
        .unwrap();
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let agent = setup.agent(
        &proxy.url(),
        &format!("[buffer]\nmax_bytes = \"64KiB\"\nwhen_full = \"{when_full}\""),
        "",
    );
    (setup, proxy, agent)
}

/// The number in field `name` of a log line (`u64::MAX` if there is none).
fn field(line: &str, name: &str) -> u64 {
    let rest = line.split(&format!(" {name}=")).nth(1).unwrap_or_default();
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_is_audited_after_gap_after_and_disappears_when_a_late_resend_fills_it() {
    let topology = Topology::new("audit-fill", 1);
    let dir = tempfile::tempdir().unwrap();
    let (collector, addr) = Collector::serving(dir.path(), &topology, "", GAP_AFTER);
    let mut daemon = collector.start();
    let broker = Broker::connect().await;
    let path = "/var/log/app.log";
    broker
        .publish(&topology.exchange, &envelopes("web-1", path, 7, 0..100))
        .await;
    let file = collector.file("web-1", Path::new(path));
    wait_for_lines(&file, 100, ARRIVAL);
    assert_eq!(audit(&collector).0, Some(0), "nothing missing");
    broker
        .publish(&topology.exchange, &envelopes("web-1", path, 7, 150..200))
        .await;
    wait_for_lines(&file, 150, ARRIVAL);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, out) = audit_until(&collector, 1);
    assert_eq!(code, Some(1));
    let (start, end) = (offset(path, 100), offset(path, 150));
    assert!(out.contains(&format!("web-1 {path}\n")), "{out}");
    assert!(
        out.contains(&format!(
            "missing bytes {start}..{end} ({} bytes)",
            end - start
        )),
        "{out}"
    );
    // The same hole on /status and in the metrics.
    let (_, page) = logship_tests::http::get(&addr, "/metrics");
    assert!(page.contains("\nlogship_collector_gaps 1\n"), "{page}");
    assert!(
        page.contains(&format!("\nlogship_collector_gap_bytes {}\n", end - start)),
        "{page}"
    );
    let (_, status) = logship_tests::http::get(&addr, "/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["gaps"][0]["start"], start, "{status}");
    assert_eq!(status["gaps"][0]["path"], path, "{status}");
    broker
        .publish(&topology.exchange, &envelopes("web-1", path, 7, 100..150))
        .await;
    wait_for_lines(&file, 200, ARRIVAL);
    assert_eq!(
        audit_until(&collector, 0).0,
        Some(0),
        "the late resend filled the hole"
    );
    assert!(daemon.stop(Duration::from_secs(20)).success());
    // And with the collector stopped, from the same record.
    assert_eq!(audit(&collector).0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_an_agent_drops_with_drop_oldest_are_audited_as_exactly_their_byte_ranges() {
    let (setup, proxy, agent) = behind_a_proxy("audit-drop", "drop_oldest").await;
    let mut collector = setup.collector.start();
    let mut daemon = agent.start(true);
    let log = setup.log("flood.log");
    append(&log, "flood", 0..100);
    let out = setup.out(&agent, "flood.log");
    wait_for_lines(&out, 100, ARRIVAL);
    assert_eq!(audit(&setup.collector).0, Some(0), "nothing dropped yet");
    // The broker goes away; the spool fills and drops its oldest lines.
    proxy.cut();
    append(&log, "flood", 100..5100);
    daemon.wait_for_log("dropped the oldest lines", 1, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let newest = text("flood", 5099);
    let deadline = std::time::Instant::now() + ARRIVAL;
    while read_lines(&out).last() != Some(&newest) {
        assert!(
            std::time::Instant::now() < deadline,
            "newest line never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What never arrived, as byte ranges of the source.
    let arrived: std::collections::HashSet<Vec<u8>> = read_lines(&out).into_iter().collect();
    let source = log.to_string_lossy().to_string();
    let mut holes: Vec<(u64, u64)> = Vec::new();
    for i in 0..5100 {
        if arrived.contains(&text("flood", i)) {
            continue;
        }
        let (start, end) = (offset("flood", i), offset("flood", i + 1));
        match holes.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => holes.push((start, end)),
        }
    }
    assert!(!holes.is_empty(), "the spool dropped lines");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, report) = audit_until(&setup.collector, 1);
    assert_eq!(code, Some(1));
    assert!(
        report.contains(&format!("{} {source}\n", agent.host)),
        "{report}"
    );
    let listed = report.matches("missing bytes").count();
    assert_eq!(listed, holes.len(), "{holes:?}\n{report}");
    for (start, end) in &holes {
        assert!(
            report.contains(&format!("missing bytes {start}..{end} ")),
            "{start}..{end}:\n{report}"
        );
    }
    // The agent's own log names the same file and, piece by piece, the same ranges.
    let agent_log = daemon.log_text();
    let mut logged: Vec<(u64, u64)> = Vec::new();
    for line in agent_log
        .lines()
        .filter(|l| l.contains(&format!("path={source} from=")))
    {
        let (from, to) = (field(line, "from"), field(line, "to"));
        match logged.last_mut() {
            Some(last) if last.1 == from => last.1 = to,
            _ => logged.push((from, to)),
        }
    }
    assert_eq!(logged, holes, "the agent's drops as logged\n{agent_log}");
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
}

/// The byte ranges of `source`'s lines `0..n` that are not among `arrived`, merged.
fn missing(source: &str, n: usize, arrived: &[Vec<u8>]) -> Vec<(u64, u64)> {
    let arrived: std::collections::HashSet<&Vec<u8>> = arrived.iter().collect();
    let mut holes: Vec<(u64, u64)> = Vec::new();
    let mut start = 0;
    for i in 0..n {
        let end = start + text(source, i).len() as u64 + 1;
        if !arrived.contains(&text(source, i)) {
            match holes.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => holes.push((start, end)),
            }
        }
        start = end;
    }
    holes
}

/// Cuts the agent off, appends `lines` of `source` to `log`, waits for a drop, and lets the
/// agent reach the broker again until the last of them arrived in `out`.
async fn burst_while_cut_off(
    proxy: &Proxy,
    daemon: &logship_tests::daemon::Daemon,
    (log, out): (&Path, &Path),
    (source, lines): (&str, std::ops::Range<usize>),
) {
    proxy.cut();
    let drops = daemon
        .log_text()
        .matches("dropped the oldest lines")
        .count();
    let last = text(source, lines.end - 1);
    append(log, source, lines);
    daemon.wait_for_log(
        "dropped the oldest lines",
        drops + 1,
        Duration::from_secs(30),
    );
    // The rest of the burst read and spooled before the broker is back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let deadline = std::time::Instant::now() + ARRIVAL;
    while read_lines(out).last() != Some(&last) {
        assert!(
            std::time::Instant::now() < deadline,
            "the burst's last line never arrived\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 27: a drop at a file's head left nothing committed below the hole, so the audit could
/// not see it; the drop now travels as a marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_at_a_files_head_and_in_its_middle_is_audited_as_exactly_the_missing_ranges_issue_27()
 {
    let (setup, proxy, agent) = behind_a_proxy("audit-head", "drop_oldest").await;
    let mut collector = setup.collector.start();
    let mut daemon = agent.start(true);
    // A fresh file, written while the broker is out of reach: its head is dropped; then again
    // later, so a piece of its middle is too.
    let log = setup.log("burst.log");
    let out = setup.out(&agent, "burst.log");
    burst_while_cut_off(&proxy, &daemon, (&log, &out), ("burst", 0..5000)).await;
    burst_while_cut_off(&proxy, &daemon, (&log, &out), ("burst", 5000..10000)).await;
    let arrived = read_lines(&out);
    let holes = missing("burst", 10000, &arrived);
    assert_eq!(holes.first().map(|h| h.0), Some(0), "the head was dropped");
    assert!(
        holes.iter().any(|h| h.0 >= offset("burst", 5000)),
        "a piece of the middle was dropped: {holes:?}"
    );
    // What did arrive arrived once, in order.
    let written: std::collections::HashSet<Vec<u8>> = arrived.iter().cloned().collect();
    let expected: Vec<Vec<u8>> = (0..10000)
        .map(|i| text("burst", i))
        .filter(|line| written.contains(line))
        .collect();
    assert!(
        arrived == expected,
        "{} lines, not once each in order",
        arrived.len()
    );
    // The audit fails and names exactly the missing byte ranges, the head's included.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, report) = audit_until(&setup.collector, 1);
    assert_eq!(code, Some(1), "{report}");
    let source = log.to_string_lossy().to_string();
    assert!(
        report.contains(&format!("{} {source}\n", agent.host)),
        "{report}"
    );
    assert_eq!(
        report.matches("missing bytes").count(),
        holes.len(),
        "{holes:?}\n{report}"
    );
    for (start, end) in &holes {
        assert!(
            report.contains(&format!(
                "missing bytes {start}..{end} ({} bytes)",
                end - start
            )),
            "{start}..{end}:\n{report}"
        );
    }
    // The agent's log names the same ranges, piece by piece.
    let agent_log = daemon.log_text();
    let mut logged: Vec<(u64, u64)> = Vec::new();
    for line in agent_log
        .lines()
        .filter(|l| l.contains(&format!("path={source} from=")))
    {
        let (from, to) = (field(line, "from"), field(line, "to"));
        match logged.last_mut() {
            Some(last) if last.1 == from => last.1 = to,
            _ => logged.push((from, to)),
        }
    }
    assert_eq!(logged, holes, "the agent's drops as logged\n{agent_log}");
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
}

/// What a truncation behind a paused agent left.
struct Truncated {
    /// The collector's lines of the file, in order.
    lines: Vec<Vec<u8>>,
    /// The old generation's size when it was truncated.
    size: u64,
    /// The agent's log.
    agent_log: String,
    /// `logship-collector audit`'s exit code and report.
    audit: (Option<i32>, String),
    /// The file's path, and the agent's host.
    source: String,
    host: String,
}

/// An agent ships 100 lines and stops; the broker goes away, 5000 lines are appended, and the
/// agent starts again: it sees the file at its full size and reads until its spool is full
/// (`block`). The file is then truncated (after a copy next to it if `copy`), 10 lines of a new
/// generation are written, and the broker comes back.
async fn truncate_behind_a_paused_agent(label: &str, copy: bool) -> Truncated {
    let (setup, proxy, agent) = behind_a_proxy(label, "block").await;
    let mut collector = setup.collector.start();
    let log = setup.log("flood.log");
    let out = setup.out(&agent, "flood.log");
    let mut daemon = agent.start(true);
    append(&log, "flood", 0..100);
    wait_for_lines(&out, 100, ARRIVAL);
    assert!(daemon.stop(Duration::from_secs(20)).success());
    proxy.cut();
    append(&log, "flood", 100..5100);
    let size = std::fs::metadata(&log).unwrap().len();
    assert_eq!(size, offset("flood", 5100));
    let mut daemon = agent.start(false);
    daemon.wait_for_log("spool full, reading paused", 1, Duration::from_secs(30));
    if copy {
        std::fs::copy(&log, setup.log("flood.log.1")).unwrap();
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(0))
        .unwrap();
    append(&log, "after", 0..10);
    proxy.restore();
    let last = text("after", 9);
    let deadline = std::time::Instant::now() + ARRIVAL;
    while read_lines(&out).last() != Some(&last) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new generation never arrived\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let audit = audit_until(&setup.collector, if copy { 0 } else { 1 });
    let truncated = Truncated {
        lines: read_lines(&out),
        size,
        agent_log: daemon.log_text(),
        audit,
        source: log.to_string_lossy().to_string(),
        host: agent.host.clone(),
    };
    assert!(daemon.stop(Duration::from_secs(20)).success());
    assert!(collector.stop(Duration::from_secs(20)).success());
    truncated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_a_truncation_without_a_copy_lost_are_audited_as_the_range_the_agent_logs() {
    let t = truncate_behind_a_paused_agent("audit-trunc", false).await;
    // The agent names the file and the range it never read: from where it stopped to the size
    // it had seen.
    let logged: Vec<&str> = t
        .agent_log
        .lines()
        .filter(|l| l.contains("never read") && l.contains(&format!("path={} ", t.source)))
        .collect();
    assert_eq!(logged.len(), 1, "{}", t.agent_log);
    let (from, to) = (field(logged[0], "from"), field(logged[0], "to"));
    assert_eq!(to, t.size, "{}", logged[0]);
    // It stopped at a line boundary past the first 100 lines; the lines before it arrived, in
    // order, then the new generation's.
    let read = (100..5100)
        .find(|&i| offset("flood", i) == from)
        .unwrap_or_else(|| panic!("{from} is not a line boundary: {}", logged[0]));
    let mut expected: Vec<Vec<u8>> = (0..read).map(|i| text("flood", i)).collect();
    expected.extend((0..10).map(|i| text("after", i)));
    assert!(t.lines == expected, "{} lines arrived", t.lines.len());
    // The audit lists exactly that range of that file.
    let (code, report) = t.audit;
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(&format!("{} {}\n", t.host, t.source)),
        "{report}"
    );
    assert_eq!(report.matches("missing bytes").count(), 1, "{report}");
    assert!(
        report.contains(&format!("missing bytes {from}..{to} ({} bytes)", to - from)),
        "{from}..{to}:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copytruncate_whose_copy_is_found_leaves_no_hole() {
    let t = truncate_behind_a_paused_agent("audit-copy", true).await;
    let mut expected: Vec<Vec<u8>> = (0..5100).map(|i| text("flood", i)).collect();
    expected.extend((0..10).map(|i| text("after", i)));
    assert!(t.lines == expected, "{} lines arrived", t.lines.len());
    assert!(!t.agent_log.contains("never read"), "{}", t.agent_log);
    assert_eq!(t.audit.0, Some(0), "{}", t.audit.1);
}
