//! What logship-agent and logship-collector share at run time:
//!
//! - [`envelope`]: the wire format of one line, and its message id.
//! - [`amqp`], [`reconnect`], [`backoff`]: connecting (URIs in turn, TLS, the connect under a
//!   deadline), reconnecting (probing a node that is down, backing off from one that fails),
//!   declaring the exchange, and the properties every line is published with.
//! - [`socket`], [`silence`]: the kernel's view of a connection's socket (time since it last
//!   received, the receive low-water mark), and the rule that a connection is dead when it is
//!   silent past the heartbeat timeout, never because the broker is slow to answer.
//! - [`cli`], [`signals`], [`systemd`], [`rlimit`], [`http`], [`histogram`], [`status`]: the
//!   daemon plumbing: the command line and `main`, logging, signals, sd_notify, the open-file
//!   limit, the metrics, status and health pages, and the `status` subcommand.
//! - [`throttle`]: warnings about events that repeat, at most one line per interval.
//! - [`clock`]: the wall clock in Unix milliseconds, as both daemons record it.
//!
//! The invariant both daemons rely on: the message id of a line is a pure function of where the
//! line came from (host, file identity, generation, byte offset), so a line sent twice is
//! recognisable as the same line.

pub mod access;
pub mod amqp;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod disk;
pub mod envelope;
pub mod histogram;
pub mod http;
pub mod reconnect;
pub mod rlimit;
pub mod signals;
pub mod silence;
pub mod socket;
pub mod status;
pub mod systemd;
pub mod throttle;

pub use backoff::Backoff;
pub use envelope::{Envelope, EnvelopeError, EnvelopeRef, FileId, SourceKind};
pub use throttle::Throttle;

/// An error and its sources on one line: `cannot write "x": No space left on device (os error
/// 28)`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
