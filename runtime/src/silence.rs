//! When a broker connection counts as dead: when it went silent, never because an answer is slow.
//!
//! The broker sends a heartbeat whenever it has sent nothing else for half the negotiated
//! heartbeat timeout. A connection whose socket received nothing for a whole timeout (two
//! heartbeats missed) is silent: a network that lost its state, a half-open TCP connection, a
//! node that hangs. One that receives is alive, however long a confirm or the answer to a
//! session step takes: a broker that throttles its publishers (flow control, a resource alarm)
//! or answers a `basic.consume` on a deep queue slowly is slow, not dead, and is waited for.
//! Answering slowness with a reconnect and a resend multiplies the load that made it slow.
//!
//! Invariants:
//! - Nothing here fails a wait while the socket receives; a silent connection fails it within
//!   the timeout plus [`CHECK_MAX`].
//! - Where the socket cannot be asked (no TCP socket known, heartbeats turned off), the rule
//!   does not apply and waits rest on lapin, which fails the connection after two timeouts
//!   without a frame (and so every wait on it).

use std::future::Future;
use std::time::{Duration, Instant};

use lapin::Connection;

use crate::socket::Socket;

/// The longest time between two looks at the socket while waiting.
pub const CHECK_MAX: Duration = Duration::from_secs(1);

/// The silence rule of one connection.
#[derive(Debug, Clone)]
pub struct Silence {
    socket: Socket,
    /// The negotiated heartbeat timeout; `None` when heartbeats are off.
    limit: Option<Duration>,
}

impl Silence {
    /// The rule for `connection`, whose socket is `socket` (see [`crate::reconnect::Reconnect::socket`]).
    pub fn of(connection: &Connection, socket: Socket) -> Silence {
        let heartbeat = connection.configuration().heartbeat();
        Silence::new(socket, Duration::from_secs(u64::from(heartbeat)))
    }

    /// The rule for a socket and a heartbeat timeout (zero: heartbeats are off).
    pub fn new(socket: Socket, heartbeat: Duration) -> Silence {
        Silence {
            socket,
            limit: (!heartbeat.is_zero()).then_some(heartbeat),
        }
    }

    /// The heartbeat timeout the rule applies; `None` when heartbeats are off.
    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }

    /// How long the connection has been silent, once that is past the limit (`Duration::MAX`
    /// once its socket is gone).
    pub fn broken(&self) -> Option<Duration> {
        self.past_limit(self.socket.silent_for())
    }

    /// `quiet`, if it is past the limit (or the socket is gone).
    fn past_limit(&self, quiet: Option<Duration>) -> Option<Duration> {
        match (quiet?, self.limit) {
            (Duration::MAX, _) => Some(Duration::MAX),
            (quiet, Some(limit)) if quiet > limit => Some(quiet),
            _ => None,
        }
    }

    /// Resolves once the connection is silent past the limit, with the error that says so;
    /// never while it receives. It looks first after a sleep, so a wait that ends sooner (most
    /// confirms) costs no system call. Cancel-safe: it only sleeps and looks.
    pub async fn broke(&self) -> lapin::Error {
        let mut next = CHECK_MAX;
        loop {
            tokio::time::sleep(next).await;
            let quiet = self.socket.silent_for();
            if let Some(quiet) = self.past_limit(quiet) {
                return silent(quiet);
            }
            next = match (self.limit, quiet) {
                (Some(limit), Some(quiet)) => {
                    (limit.saturating_sub(quiet) + Duration::from_millis(50)).min(CHECK_MAX)
                }
                _ => CHECK_MAX,
            };
        }
    }

    /// Awaits one step of a session (`step` names it) for as long as the connection is alive;
    /// fails it only once the connection went silent. A step that takes longer than `slow` is
    /// said once, and again when it is answered.
    pub async fn wait<T>(
        &self,
        step: &'static str,
        slow: Duration,
        future: impl Future<Output = Result<T, lapin::Error>>,
    ) -> Result<T, lapin::Error> {
        let started = Instant::now();
        let mut future = std::pin::pin!(future);
        let slow_passed = tokio::time::sleep(slow);
        let mut slow_passed = std::pin::pin!(slow_passed);
        let mut said = false;
        loop {
            tokio::select! {
                // cancel-safe: the step's future is owned here and polled again next turn
                result = &mut future => {
                    if said && result.is_ok() {
                        tracing::info!(step, waited_secs = started.elapsed().as_secs(), "the broker answered");
                    }
                    return result;
                }
                // cancel-safe: only looks at the socket
                err = self.broke() => return Err(err),
                // cancel-safe: a sleep, pinned across turns
                _ = &mut slow_passed, if !said => {
                    said = true;
                    tracing::warn!(step, waited_secs = slow.as_secs(),
                        "the broker is slow to answer; waiting while it is heard from");
                }
            }
        }
    }
}

/// The error of a connection silent for `quiet` (`Duration::MAX`: its socket is gone).
pub fn silent(quiet: Duration) -> lapin::Error {
    let text = if quiet == Duration::MAX {
        "the connection's socket is closed".to_string()
    } else {
        format!(
            "nothing heard from the broker for {:.1}s (heartbeats missed): connection dead",
            quiet.as_secs_f64()
        )
    };
    std::io::Error::new(std::io::ErrorKind::TimedOut, text).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::tests::pair;

    #[tokio::test]
    async fn a_step_on_an_unknown_socket_is_waited_for() {
        let silence = Silence::new(Socket::default(), Duration::from_millis(10));
        let answer = silence
            .wait("test", Duration::from_millis(5), async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, lapin::Error>(7)
            })
            .await;
        assert_eq!(answer.ok(), Some(7));
        assert!(silence.broken().is_none());
    }

    #[tokio::test]
    async fn a_slow_answer_on_a_connection_that_receives_is_waited_for() {
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        let (ours, mut peer) = pair();
        let socket = Socket::default();
        socket.watch(ours.as_raw_fd());
        let silence = Silence::new(socket, Duration::from_millis(300));
        let beating = std::thread::spawn(move || {
            for _ in 0..15 {
                peer.write_all(b"beat").expect("write");
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let answer = silence
            .wait("slow step", Duration::from_millis(100), async {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                Ok::<_, lapin::Error>("answered")
            })
            .await;
        assert_eq!(answer.ok(), Some("answered"));
        beating.join().expect("writer");
    }

    #[tokio::test]
    async fn a_silent_connection_fails_the_wait_within_the_timeout() {
        let (ours, _peer) = pair();
        use std::os::fd::AsRawFd as _;
        let socket = Socket::default();
        socket.watch(ours.as_raw_fd());
        let silence = Silence::new(socket, Duration::from_millis(300));
        let started = Instant::now();
        let answer = silence
            .wait(
                "never answered",
                Duration::from_secs(5),
                std::future::pending::<Result<(), lapin::Error>>(),
            )
            .await;
        let err = answer.expect_err("a silent connection fails the step");
        assert!(
            err.to_string().contains("nothing heard from the broker"),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(300) + CHECK_MAX,
            "{:?}",
            started.elapsed()
        );
    }
}
