//! The reconnect policy both daemons share: the URIs in turn, every attempt under a deadline,
//! and a wait between attempts that depends on how the last one failed.
//!
//! Invariants:
//! - A node that refuses or does not take connections (nothing listens, no route, no answer
//!   within `broker.connect_timeout`) is tried again after a short delay that does not grow: at most
//!   [`PROBE_MAX`] (or `broker.reconnect_max_delay` if lower), drawn at random from its upper
//!   three quarters so that many hosts spread their attempts. A refused TCP connection costs the
//!   broker nothing, and the daemon resumes within about a second of the node taking
//!   connections again, however long the outage lasted.
//! - A session that was lost, or a node that took the connection but failed the session start
//!   (AMQP refused, a step past its deadline, a declaration refused), is retried after the
//!   exponential backoff of [`Backoff`]: a broker that accepts connections but cannot serve them
//!   is not hammered. The backoff starts over once a session is established.
//! - An outage is logged once, at warn, by whoever notices it (the daemon's "connection lost"
//!   line, or the first failed attempt); every retry after that is logged at debug.

use std::time::{Duration, Instant};

use lapin::Connection;
use tokio_util::sync::CancellationToken;

use logship_config::{Broker, BrokerUri};

use crate::backoff::Backoff;
use crate::socket::Socket;

/// The longest wait between attempts on a node that does not take connections: with the time a
/// session start takes, work resumes within about two seconds of the node being back.
pub const PROBE_MAX: Duration = Duration::from_secs(1);

/// A new connection.
pub struct Connected {
    pub connection: Connection,
    /// The URI it went to.
    pub uri: BrokerUri,
    /// How long the outage before it lasted, if there was one.
    pub outage: Option<Duration>,
}

/// How the last attempt (or session) failed: it decides the wait before the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The node did not take the connection: probe again soon.
    Unreachable,
    /// The node took it but the session failed or was lost: back off.
    Session,
}

/// Reconnect state across a daemon's sessions.
pub struct Reconnect {
    backoff: Backoff,
    probe_max: Duration,
    next_uri: usize,
    /// Since when the broker is unreachable (or the last session was lost).
    outage: Option<Instant>,
    last: Failure,
    /// The socket of the last connection.
    socket: Socket,
}

impl Reconnect {
    /// A policy for `broker`'s URIs and delays.
    pub fn new(broker: &Broker) -> Reconnect {
        Reconnect {
            backoff: Backoff::new(broker),
            probe_max: PROBE_MAX.min(broker.reconnect_max_delay),
            next_uri: 0,
            outage: None,
            last: Failure::Session,
            socket: Socket::default(),
        }
    }

    /// Connects to the next URI, after a delay when the last attempt or session failed. Logs
    /// the first failure of an outage at warn and the rest at debug. `None` once `stop` is
    /// cancelled.
    pub async fn connect(
        &mut self,
        broker: &Broker,
        stop: &CancellationToken,
    ) -> Option<Connected> {
        loop {
            if self.outage.is_some() {
                let delay = self.delay();
                tokio::select! {
                    // cancel-safe: only observes the token
                    _ = stop.cancelled() => return None,
                    // cancel-safe: a sleep
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            let uri = broker.uris[self.next_uri % broker.uris.len()].clone();
            self.next_uri += 1;
            let result = tokio::select! {
                // cancel-safe: abandoning a connect in progress loses nothing
                _ = stop.cancelled() => return None,
                result = crate::amqp::connect_watched(broker, &uri, &self.socket) => result,
            };
            match result {
                Ok(connection) => {
                    let outage = self.outage.take().map(|since| since.elapsed());
                    return Some(Connected {
                        connection,
                        uri,
                        outage,
                    });
                }
                Err(err) => {
                    self.last = if unreachable(&err) {
                        Failure::Unreachable
                    } else {
                        Failure::Session
                    };
                    let refused = crate::access::Refused::of(&err);
                    if let Some(refused) = refused.filter(|_| self.outage.is_none()) {
                        // Credentials or vhost access, not the network: said as such.
                        tracing::warn!(uri = %uri, user = %uri.uri.authority.userinfo.username,
                            "{refused}; check the user, its password and its vhost permissions, retrying");
                    } else if self.outage.is_none() {
                        tracing::warn!(uri = %uri, error = %err, "cannot connect to broker, retrying");
                    } else {
                        tracing::debug!(uri = %uri, error = %err, "cannot connect to broker");
                    }
                    self.outage.get_or_insert_with(Instant::now);
                }
            }
        }
    }

    /// The socket of each connection made from now on (the current one's, at any time).
    pub fn socket(&self) -> Socket {
        self.socket.clone()
    }

    /// The session is up: the next failure starts with the shortest delay again.
    pub fn established(&mut self) {
        self.backoff.reset();
    }

    /// The session was lost (or its start failed after connecting): the next connect waits a
    /// backoff delay first.
    pub fn lost(&mut self) {
        self.outage = Some(Instant::now());
        self.last = Failure::Session;
    }

    /// The wait before the next attempt.
    fn delay(&mut self) -> Duration {
        match self.last {
            Failure::Unreachable => probe_delay(self.probe_max),
            Failure::Session => self.backoff.next_delay(),
        }
    }
}

/// A delay drawn from `[max / 4, max]`: short, and spread so that a fleet's attempts on a node
/// coming back do not arrive together.
fn probe_delay(max: Duration) -> Duration {
    let quarter = max / 4;
    quarter + (max - quarter).mul_f64(fastrand::f64())
}

/// Whether `err` says the node did not take the connection at all (as opposed to a session the
/// node took and then failed or refused).
fn unreachable(err: &lapin::Error) -> bool {
    use std::io::ErrorKind as Io;
    match err.kind() {
        lapin::ErrorKind::IOError(io) => matches!(
            io.kind(),
            Io::ConnectionRefused
                | Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::NotConnected
                | Io::HostUnreachable
                | Io::NetworkUnreachable
                | Io::AddrNotAvailable
                | Io::TimedOut
                | Io::NotFound
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_delays_stay_short_and_spread() {
        let delays: Vec<Duration> = (0..200).map(|_| probe_delay(PROBE_MAX)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= PROBE_MAX / 4 && *d <= PROBE_MAX)
        );
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*max - *min > PROBE_MAX / 4, "spread: {min:?}..{max:?}");
    }

    #[test]
    fn a_refused_connection_is_unreachable_and_a_protocol_failure_is_not() {
        let refused: lapin::Error =
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(unreachable(&refused));
        let deadline = crate::amqp::timed_out("connect", Duration::from_secs(1));
        assert!(unreachable(&deadline));
        let state: lapin::Error =
            lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "closed").into();
        assert!(!unreachable(&state));
    }
}
