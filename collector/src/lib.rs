//! logship-collector: consumes lines from its own durable queue bound to the fanout exchange,
//! writes each to `<output.dir>/<host>/<source path>`, fsyncs, commits, and only then acks.
//!
//! The path of a delivery:
//! ```text
//! consumer (prefetch N) -> validate -> batch (what is waiting) -> writer: dedup -> sink (append,
//! at most `output.max_open_files` open, durable: fdatasync or one syncfs) -> commit (one
//! write-ahead record, one fdatasync; sled holds its checkpoints) -> consumer: ack(multiple)
//! ```
//! A kill -9 at any instant neither loses nor duplicates a line: what was acked is durable and
//! committed; what was written but not acked is truncated on start and redelivered; what is
//! delivered twice is dropped by id. A batch that cannot be written (full disk, no descriptors,
//! EIO) stays unacked and is retried with backoff (`outage`); only a failing state database
//! stops the collector. The collector is its queue's single active consumer (`topology`,
//! `session`), so a consumer that vanished silently cannot have its lines overtaken; a consumer
//! that stops receiving, or stands by behind a consumer that nobody serves, is noticed within
//! seconds (`liveness`). A broker that is slow (flow control, a deep queue) is waited for while
//! it is heard from, never answered with a reconnect (`logship_runtime::silence`).
//!
//! Modules, along a delivery's path:
//! - [`consumer`]: the broker side: `session` (start and end of a session), `topology` (what
//!   is declared), `liveness` (a consumer that stopped receiving), `validate` (a delivery's
//!   body into a line), the batch policy, `ahead` (the next batch's new output files made
//!   while a batch is written) and the acks.
//! - `writer`: one batch applied: dedup, append, sync, commit; `outage`: a batch that cannot be
//!   written is retried with backoff.
//! - [`sink`]: the output files: `outpath` (where a line goes), `lru` (descriptors bounded),
//!   `durable` (fdatasync or one syncfs), `ahead` (files made ahead of their batch), `frames`
//!   (zstd frames).
//! - [`commit`]: the commit record: `wal` (the write-ahead log), `positions` (each source's
//!   committed ranges), `dedup` and `seen` (ids already written), `file_record` (an output
//!   file's committed length), the migration of legacy state.
//! - [`archive`]: `retention` and `audit`, the archive kept over time.
//! - [`upload`]: with `[upload]`, what is committed then goes to an object store, beside the
//!   path above: one object per contiguous range of an output file, recorded only once the
//!   store confirmed it; the consumer pauses while too much waits for the store.
//! - `metrics` and `hosts`: what `/metrics` and `/status` show.

pub mod archive;
pub mod commit;
pub(crate) mod consumer;
pub(crate) mod hosts;
pub(crate) mod metrics;
pub(crate) mod outage;
pub mod sink;
pub mod upload;
pub(crate) mod writer;

use std::sync::Arc;

use logship_config::CollectorConfig;

use logship_runtime::signals::Signals;
pub use metrics::Metrics;

/// Runs the collector until `signals.shutdown` is cancelled; returns after the open batch is
/// committed and acked and the connection closed.
pub async fn run(
    config: CollectorConfig,
    signals: Signals,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let writer_config = config.clone();
    let mut writer = tokio::task::spawn_blocking(move || writer::Writer::open(&writer_config))
        .await
        .context("state recovery panicked")?
        .context("cannot recover state")?;
    metrics.set_gaps(writer.audit());
    let mut uploading = None;
    let mut paused = None;
    if let Some(upload) = config.upload.clone() {
        let backlog = Arc::new(
            upload::backlog::Backlog::open(
                &config.state_dir,
                upload.max_backlog,
                upload.object_bytes,
            )
            .context("cannot read the upload ledger")?,
        );
        metrics.show_backlog(backlog.clone());
        writer
            .upload_to(backlog.clone())
            .context("cannot read the committed files for the upload")?;
        let compressed = config.archive.compression != logship_config::archive::Compression::None;
        let uploader = upload::Uploader::start(
            upload,
            config.output_dir.clone(),
            compressed,
            backlog.clone(),
            metrics.clone(),
        )
        .await?;
        paused = Some(backlog.paused());
        uploading = Some(tokio::spawn(uploader.run(signals.shutdown.child_token())));
    }
    if let Some(addr) = config.metrics {
        let (render_metrics, status_metrics) = (metrics.clone(), metrics.clone());
        let queue = config.queue.consumed();
        let pages = logship_runtime::http::Pages {
            metrics: Arc::new(move || render_metrics.render()),
            status: Arc::new(move || {
                serde_json::to_string(&status_metrics.status(&queue)).unwrap_or_default()
            }),
        };
        logship_runtime::http::serve(addr, signals.shutdown.clone(), pages).await?;
    }
    // Ready once the state is recovered; the consumer keeps reconnecting to the broker.
    logship_runtime::systemd::ready("consuming");
    logship_runtime::systemd::stopping_on(signals.shutdown.clone());
    let status_metrics = metrics.clone();
    logship_runtime::systemd::spawn_watchdog(signals.shutdown.clone(), move || {
        status_metrics.summary()
    });
    let mut consumer = consumer::Consumer::new(config, writer, metrics.clone());
    if let Some(paused) = paused {
        consumer = consumer.pause_while(paused);
    }
    consumer.run(&signals).await?;
    if let Some(uploading) = uploading {
        // The token is cancelled: the uploader stops after the request in flight.
        let _ = uploading.await;
    }
    tracing::info!(counters = %metrics.summary(), "collector stopped");
    Ok(())
}
