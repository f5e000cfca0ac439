//! systemd's notify protocol (`Type=notify`): READY, STATUS, WATCHDOG and STOPPING. Every call
//! does nothing when `NOTIFY_SOCKET` is unset, so the daemons run the same outside systemd and
//! nobody else needs a `cfg`.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Started: systemd may consider the unit active.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Sends STOPPING as soon as `shutdown` is cancelled (the drain that follows may take a while).
pub fn stopping_on(shutdown: CancellationToken) {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    });
}

/// When `WATCHDOG_USEC` is set, pings systemd at half its interval until `stop`, with `status`
/// for each ping's summary. The pings come from the daemon's runtime: if it stalls, they stop and
/// systemd restarts the service.
pub fn spawn_watchdog(stop: CancellationToken, status: impl Fn() -> String + Send + 'static) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                // cancel-safe: only observes the token
                _ = stop.cancelled() => break,
                // cancel-safe: an interval tick
                _ = ticks.tick() => send(&[NotifyState::Watchdog, NotifyState::Status(&status())]),
            }
        }
    });
}

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(error = %err, "cannot notify systemd");
    }
}
