//! logship-agent: tails log files and publishes every line to the fanout exchange with
//! publisher confirms, spooling to disk while the broker is away.
//!
//! The path of a line:
//! ```text
//! wakeup (inotify, or polls) + discover (globs) -> source (one per file: lifecycle) + tailer
//!   (bytes to lines; container: a container log's entries decoded and pieces joined;
//!   compressed: a rotated log found only gzipped) on the reader thread ──┐
//! journal (journalctl's export stream: entries and their cursors) on a thread of its own ──┤
//!   -> spool (one segment file per turn, fsync'd, then its index record and the checkpoints
//!   in one sled batch) -> publisher (confirm window, waited for while the broker is heard
//!   from) -> exchange; a segment is removed once every line of it is cleanly acked
//! ```
//! Promises: no line lost (a checkpoint never passes a line that is neither spooled nor
//! confirmed; rotated files are drained and flushed before they are closed), no line duplicated
//! at the collector (message ids are a pure function of where a line came from, so resends are
//! recognisable), lines of a file in order (one reader per path, one spool, one channel).
//! Never up but idle: a reader or publisher that stops for any reason but a failing state disk
//! (which pauses reading) ends the agent with exit 1 and the cause. Beside the path, `trim`
//! sets glibc's malloc up for many small long-lived records among bursts of buffers and gives
//! the memory a burst freed back to the system once it is over (and counts the heap in use
//! for `/metrics`); `moment` keeps a file's times in 8 bytes.

pub mod compressed;
pub mod container;
pub mod discover;
pub mod identity;
pub mod journal;
pub mod line_rules;
pub mod metrics;
pub mod moment;
pub mod publish_error;
pub mod publisher;
pub mod reader;
pub mod source;
pub mod spool;
pub mod status;
pub mod tailer;
pub mod trim;
pub mod wakeup;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use logship_config::AgentConfig;
use logship_config::agent::RawAgentConfig;
use logship_runtime::signals::Signals;
use logship_runtime::systemd;
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;

/// Runs the agent until `signals.shutdown`: then stops reading, waits up to
/// `shutdown_timeout` for outstanding confirms, flushes the spool and returns.
/// SIGHUP reloads the inputs from `config_path`.
pub async fn run(
    config: AgentConfig,
    config_path: PathBuf,
    signals: Signals,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let mut running = start(&config, &signals, &metrics).await?;
    supervise(&mut running, &config, &config_path, &signals).await?;
    stop(running, &metrics).await
}

/// The agent's parts once started: the spool, the reader and journal threads, the publisher
/// task, and how to stop each and learn that it ended.
struct Running {
    spool: Arc<spool::Spool>,
    /// New inputs for the reader (SIGHUP).
    reload: std::sync::mpsc::Sender<Vec<logship_config::agent::Input>>,
    reader_stop: CancellationToken,
    reader_done: tokio::sync::oneshot::Receiver<Result<(), reader::ReaderError>>,
    /// Journal reader threads started; each reports once on `journal_done`.
    journals: usize,
    journal_done: tokio::sync::mpsc::UnboundedReceiver<JournalDone>,
    publisher_stop: CancellationToken,
    publisher: tokio::task::JoinHandle<Result<(), spool::SpoolError>>,
}

/// Opens the spool (recovering it), starts the reader, the journal readers and the publisher,
/// serves the HTTP pages, and tells systemd the agent is ready (even while the broker is down:
/// lines are spooled meanwhile) with a watchdog.
async fn start(
    config: &AgentConfig,
    signals: &Signals,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Running> {
    let (state_dir, max_bytes, when_full) = (
        config.state_dir.clone(),
        config.buffer.max_bytes,
        config.buffer.when_full,
    );
    let spool =
        tokio::task::spawn_blocking(move || spool::Spool::open(&state_dir, max_bytes, when_full))
            .await
            .context("spool recovery panicked")?
            .context("cannot open the spool")?;
    let spool = Arc::new(spool);
    tracing::info!(host = %config.host, state_dir = %config.state_dir.display(), exchange = %config.broker.exchange,
        inputs = config.inputs.len(), spooled = spool.lines(), spooled_bytes = spool.bytes(), "agent starting");

    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    let reader_stop = CancellationToken::new();
    let status = Arc::new(status::Status::default());
    let reader = reader::Reader::new(
        config.host.clone(),
        config.inputs.clone(),
        config.watch,
        spool.clone(),
        metrics.clone(),
    )
    .with_max_open_files(config.max_open_files)
    .with_status(status.clone());
    let stop = reader_stop.clone();
    let (reader_tx, reader_done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("logship-reader".into())
        .spawn(move || {
            let _ = reader_tx.send(reader.run(stop, reload_rx));
        })
        .context("cannot start the reader thread")?;

    let (journals, journal_done) = start_journals(config, &spool, metrics, &status, &reader_stop)?;

    let publisher_stop = CancellationToken::new();
    let publisher = tokio::spawn(
        publisher::Publisher::new(config.broker.clone(), spool.clone(), metrics.clone())
            .with_routing_key(config.host.clone())
            .with_status(status.clone())
            .run(publisher_stop.clone(), config.shutdown_timeout),
    );

    if let Some(addr) = config.metrics {
        let pages = pages(
            metrics.clone(),
            spool.clone(),
            status.clone(),
            config.host.clone(),
        );
        logship_runtime::http::serve(addr, signals.shutdown.clone(), pages).await?;
    }
    tokio::spawn(trim::run(metrics.clone(), signals.shutdown.clone()));
    // Ready even while the broker is down: lines are spooled meanwhile.
    systemd::ready("shipping");
    systemd::stopping_on(signals.shutdown.clone());
    let (status_metrics, status_spool) = (metrics.clone(), spool.clone());
    systemd::spawn_watchdog(signals.shutdown.clone(), move || {
        format!(
            "files={} spooled={} confirmed={}",
            status_metrics
                .files_watched
                .load(std::sync::atomic::Ordering::Relaxed),
            status_spool.lines(),
            status_metrics
                .confirmed
                .load(std::sync::atomic::Ordering::Relaxed)
        )
    });
    Ok(Running {
        spool,
        reload: reload_tx,
        reader_stop,
        reader_done,
        journals,
        journal_done,
        publisher_stop,
        publisher,
    })
}

/// Waits for `signals.shutdown` (then returns `Ok`), reloading the inputs on SIGHUP; a reader,
/// journal reader or publisher that ends meanwhile is an error naming it (the agent never runs
/// on without one).
async fn supervise(
    running: &mut Running,
    config: &AgentConfig,
    config_path: &std::path::Path,
    signals: &Signals,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            // cancel-safe: only observes the token
            _ = signals.shutdown.cancelled() => return Ok(()),
            // cancel-safe: a Notify permit is kept until taken
            _ = signals.reload.notified() => {
                match logship_config::load::load::<RawAgentConfig>(config_path) {
                    Ok(new) => {
                        if new.journals != config.journals {
                            tracing::warn!("journal inputs changed: they are read as configured at start until the agent restarts");
                        }
                        let _ = running.reload.send(new.inputs);
                    }
                    Err(err) => tracing::error!(error = format!("{:#}", anyhow::Error::from(err)), "reload refused, keeping the running config"),
                }
            }
            // cancel-safe: polling a oneshot receiver by reference keeps it
            result = &mut running.reader_done => {
                let cause = match result {
                    Ok(Ok(())) => anyhow::anyhow!("stopped without being asked to"),
                    Ok(Err(err)) => anyhow::Error::from(err),
                    Err(_) => anyhow::anyhow!("panicked"),
                };
                return Err(cause.context("reader failed"));
            }
            // cancel-safe: a message stays in the channel until received
            Some(JournalDone { input, result }) = running.journal_done.recv(), if running.journals > 0 => {
                let cause = match result {
                    Ok(()) => anyhow::anyhow!("stopped without being asked to"),
                    Err(err) => anyhow::Error::from(err),
                };
                return Err(cause.context(format!("journal reader of {input} failed")));
            }
            // cancel-safe: polling a JoinHandle by reference keeps it
            result = &mut running.publisher => {
                let cause = match result {
                    Ok(Ok(())) => anyhow::anyhow!("stopped without being asked to"),
                    Ok(Err(err)) => anyhow::Error::from(err),
                    Err(err) => anyhow::Error::from(err),
                };
                return Err(cause.context("publisher failed"));
            }
        }
    }
}

/// Stops reading first (the reader flushes the spool as it exits), then the journal readers,
/// then the publisher (which waits for outstanding confirms), and flushes the spool.
async fn stop(mut running: Running, metrics: &Metrics) -> anyhow::Result<()> {
    running.reader_stop.cancel();
    running
        .reader_done
        .await
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))?
        .context("spool failed while reading")?;
    for _ in 0..running.journals {
        if let Some(JournalDone { input, result }) = running.journal_done.recv().await {
            result.with_context(|| format!("journal reader of {input} failed"))?;
        }
    }
    running.publisher_stop.cancel();
    running
        .publisher
        .await
        .context("publisher panicked")?
        .context("spool failed while publishing")?;
    let spool = running.spool.clone();
    let flushed = tokio::task::spawn_blocking(move || spool.flush())
        .await
        .context("spool flush panicked")?;
    match flushed {
        Err(err) if err.is_disk_failure() => {
            tracing::warn!(error = %err, "cannot flush the spool on the way out; unconfirmed lines are sent again on start")
        }
        other => other.context("cannot flush the spool")?,
    }
    tracing::info!(counters = %metrics.summary(), spooled = running.spool.lines(), "agent stopped");
    Ok(())
}

/// What a journal reader thread reports when it ends.
struct JournalDone {
    /// Its input's key.
    input: String,
    /// Why it ended.
    result: Result<(), journal::JournalError>,
}

/// Starts one thread per journal input; they stop with `stop`. Returns how many, and where
/// each reports when it ends.
fn start_journals(
    config: &AgentConfig,
    spool: &Arc<spool::Spool>,
    metrics: &Arc<Metrics>,
    status: &Arc<status::Status>,
    stop: &CancellationToken,
) -> anyhow::Result<(usize, tokio::sync::mpsc::UnboundedReceiver<JournalDone>)> {
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
    for input in &config.journals {
        let reader = journal::JournalReader::new(
            input.clone(),
            config.host.clone(),
            spool.clone(),
            metrics.clone(),
        );
        status.add_journal(reader.state());
        let (stop, done, key) = (stop.clone(), done_tx.clone(), input.key.clone());
        std::thread::Builder::new()
            .name("logship-journal".into())
            .spawn(move || {
                let result = reader.run(stop);
                let _ = done.send(JournalDone { input: key, result });
            })
            .context("cannot start a journal reader thread")?;
    }
    Ok((config.journals.len(), done_rx))
}

/// `/metrics` (the counters, the spool's gauges, the lag) and `/status`.
fn pages(
    metrics: Arc<Metrics>,
    spool: Arc<spool::Spool>,
    status: Arc<status::Status>,
    host: String,
) -> logship_runtime::http::Pages {
    let (metrics_spool, metrics_status) = (spool.clone(), status.clone());
    logship_runtime::http::Pages {
        metrics: Arc::new(move || {
            metrics.render(metrics::Gauges {
                spool_bytes: metrics_spool.bytes(),
                spool_lines: metrics_spool.lines(),
                spool_oldest_seconds: status::oldest_seconds(&metrics_spool).unwrap_or(0.0),
                lag_bytes: metrics_status.lag_bytes(),
                journal_lag_seconds: metrics_status.journal_lag_seconds(),
                containers: metrics_status.containers(),
                heap_bytes: trim::heap_in_use(),
            })
        }),
        status: Arc::new(move || {
            serde_json::to_string(&status.page(&host, &spool)).unwrap_or_default()
        }),
    }
}
