//! The broker refused an operation for lack of permission: not a network fault, and said so.
//!
//! RabbitMQ answers a login with wrong credentials, a user without access to the vhost, an
//! operation on a queue or exchange the user has no `configure`, `write` or `read` permission
//! for, and a publish whose `user_id` is not the connection's user, by closing the channel or
//! the connection with a reply code and a text that names the permission and the object, e.g.
//! `ACCESS_REFUSED - write access to exchange 'logs' in vhost '/' refused for user 'web-1'`.
//!
//! Both daemons treat a refusal like an outage (the agent keeps spooling, the collector keeps
//! what it committed): they say it once, as one line naming what was refused, and retry with
//! the reconnect backoff, so granting the permission heals them without a restart.

use std::fmt;

/// AMQP reply code of a refused login or a missing permission.
pub const ACCESS_REFUSED: u16 = 403;
/// AMQP reply code of a user without access to the virtual host.
pub const NOT_ALLOWED: u16 = 530;
/// AMQP reply code the broker uses when a publish's `user_id` is not the connection's user.
pub const PRECONDITION_FAILED: u16 = 406;

/// What a daemon was doing when refused: with the kind of object the broker names, it tells
/// which permission was missing (RabbitMQ before 3.12 names only the object).
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// Declaring an exchange or a queue: `configure` on it.
    Declare,
    /// Declaring a queue that dead-letters to the exchange `dead_letter`: RabbitMQ then also
    /// checks `read` on the queue and `write` on that exchange.
    DeclareQueue { dead_letter: Option<&'a str> },
    /// Binding to the exchange `source`: `read` on the source, `write` on the destination.
    Bind { source: &'a str },
    /// Consuming a queue: `read` on it.
    Consume,
    /// Publishing to an exchange: `write` on it.
    Publish,
}

impl Op<'_> {
    /// The permission this operation needs on the object the broker's `text` names.
    fn permission(self, text: &str) -> &'static str {
        match self {
            Op::Declare => "configure",
            Op::DeclareQueue {
                dead_letter: Some(dlx),
            } if text.contains(&format!("exchange '{dlx}'")) => "write",
            Op::DeclareQueue {
                dead_letter: Some(_),
            } => "configure and read",
            Op::DeclareQueue { dead_letter: None } => "configure",
            Op::Bind { source } if text.contains(&format!("exchange '{source}'")) => "read",
            Op::Bind { .. } | Op::Publish => "write",
            Op::Consume => "read",
        }
    }
}

/// A refusal by the broker, with its own text (which names the object and the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The broker's reply text, e.g. `ACCESS_REFUSED - access to queue 'q' in vhost '/'
    /// refused for user 'u'`.
    pub reply: String,
    /// The permission the operation needed, when known (see [`Op`]).
    pub permission: Option<&'static str>,
}

impl Refused {
    /// The refusal `err` carries when it ended `op`, naming the missing permission.
    pub fn during(err: &lapin::Error, op: Op<'_>) -> Option<Refused> {
        Refused::of(err).map(|refused| Refused {
            permission: Some(op.permission(&refused.reply)),
            ..refused
        })
    }

    /// The refusal `err` carries, if it is one (see the module doc); `None` for anything else.
    pub fn of(err: &lapin::Error) -> Option<Refused> {
        let lapin::ErrorKind::ProtocolError(amqp) = err.kind() else {
            return None;
        };
        let reply = amqp.get_message().to_string();
        let refused = match amqp.get_id() {
            ACCESS_REFUSED | NOT_ALLOWED => true,
            // Validated user-id: "user_id property set to 'x' but authenticated user was 'y'".
            PRECONDITION_FAILED => reply.contains("user_id property"),
            _ => false,
        };
        refused.then_some(Refused {
            reply,
            permission: None,
        })
    }

    /// Whether the login itself was refused (credentials or vhost), not an operation.
    pub fn is_login(&self) -> bool {
        self.reply.contains("Login was refused") || self.reply.contains("access to vhost")
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RabbitMQ's text: "ACCESS_REFUSED - <permission> access to <object> refused for user
        // '<user>'"; the prefix repeats the reply code and is dropped.
        let text = self
            .reply
            .split_once(" - ")
            .map_or(self.reply.as_str(), |(_, rest)| rest);
        match self.permission {
            // "access to queue 'q' ..." becomes "read access to queue 'q' ..."; a newer
            // broker's text names the permission itself.
            Some(permission) if text.starts_with("access to ") => {
                write!(f, "the broker refused: {permission} {text}")
            }
            _ => write!(f, "the broker refused: {text}"),
        }
    }
}

/// Remembers the last refusal said, so that a refusal repeated on every reconnect is logged
/// once (at warn) and the repeats at debug, until a session ends for another reason.
#[derive(Debug, Default)]
pub struct RefusalLog {
    last: Option<String>,
}

impl RefusalLog {
    /// Logs a session that ended with `refused`: at warn if it differs from the last one.
    pub fn refused(&mut self, uri: &dyn fmt::Display, refused: &Refused) {
        if self.last.as_deref() == Some(refused.reply.as_str()) {
            tracing::debug!(uri = %uri, "{refused}");
        } else {
            tracing::warn!(uri = %uri, "{refused}; grant it on the broker (rabbitmqctl set_permissions), retrying");
            self.last = Some(refused.reply.clone());
        }
    }

    /// Whether the last session ended with a refusal (a reconnect then is no news either).
    pub fn active(&self) -> bool {
        self.last.is_some()
    }

    /// A session ended for another reason: the next refusal is news again.
    pub fn other(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPHardError, AMQPSoftError};

    fn error(kind: AMQPErrorKind, text: &str) -> lapin::Error {
        lapin::ErrorKind::ProtocolError(AMQPError::new(kind, text.into())).into()
    }

    #[test]
    fn refusals_are_recognised_and_name_what_was_refused() {
        let err = error(
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED),
            "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'",
        );
        let refused = Refused::during(&err, Op::Consume).unwrap();
        assert!(!refused.is_login());
        assert_eq!(
            refused.to_string(),
            "the broker refused: read access to queue 'q' in vhost '/' refused for user 'u'"
        );
        let bind = error(
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED),
            "ACCESS_REFUSED - access to exchange 'logs' in vhost '/' refused for user 'u'",
        );
        let refused = Refused::during(&bind, Op::Bind { source: "logs" }).unwrap();
        assert_eq!(refused.permission, Some("read"));
        let newer = error(
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED),
            "ACCESS_REFUSED - write access to exchange 'logs' in vhost '/' refused for user 'u'",
        );
        assert_eq!(
            Refused::during(&newer, Op::Publish).unwrap().to_string(),
            "the broker refused: write access to exchange 'logs' in vhost '/' refused for user 'u'"
        );
        let forged = error(
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED),
            "PRECONDITION_FAILED - user_id property set to 'a' but authenticated user was 'b'",
        );
        assert!(Refused::of(&forged).is_some());
        let vhost = error(
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED),
            "NOT_ALLOWED - access to vhost '/' refused for user 'u'",
        );
        assert!(Refused::of(&vhost).unwrap().is_login());
        let conflict = error(
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED),
            "PRECONDITION_FAILED - inequivalent arg 'durable'",
        );
        assert_eq!(Refused::of(&conflict), None);
    }
}
