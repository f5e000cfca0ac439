//! SIGTERM/SIGINT stop a daemon; SIGHUP asks it to reload (agent: inputs; collector: reopen
//! output files).
//!
//! Registered before anything else is spawned: SIGHUP's default action would kill us.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the signal handlers drive.
#[derive(Clone)]
pub struct Signals {
    /// Cancelled on SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
    /// Notified on SIGHUP; a notification while nobody waits is kept, not lost.
    pub reload: Arc<Notify>,
}

/// Installs the handlers and spawns the task that listens to them. Must run inside a runtime.
pub fn install() -> std::io::Result<Signals> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let signals = Signals {
        shutdown: CancellationToken::new(),
        reload: Arc::new(Notify::new()),
    };
    let handles = signals.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!(signal = "SIGTERM", "shutting down");
                    handles.shutdown.cancel();
                }
                _ = int.recv() => {
                    tracing::info!(signal = "SIGINT", "shutting down");
                    handles.shutdown.cancel();
                }
                _ = hup.recv() => {
                    tracing::info!(signal = "SIGHUP", "reloading");
                    handles.reload.notify_one();
                }
            }
        }
    });
    Ok(signals)
}
