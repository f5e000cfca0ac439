//! How a publishing session ends, and what the agent tells the broker about itself.

use std::collections::VecDeque;
use std::time::Duration;

use logship_config::BrokerUri;
use logship_runtime::access::{Op, Refused};

use crate::publisher::InFlight;
use crate::spool::SpoolError;

/// How long to wait for the broker's reason once a publish found the channel closed.
const CLOSE_REASON_WAIT: Duration = Duration::from_secs(1);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("connection closed")]
    Lost,
    #[error("no confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("{0}")]
    Refused(Refused),
}

impl PublishError {
    /// The broker's refusal (a missing permission, a `user_id` it does not accept), if this is
    /// one; a refusal not taken while declaring was taken while publishing.
    pub fn refused(&self) -> Option<Refused> {
        match self {
            PublishError::Broker(err) => Refused::during(err, Op::Publish),
            PublishError::Refused(refused) => Some(refused.clone()),
            _ => None,
        }
    }

    /// A publish failed on a closed channel (`err` says only that): the broker's reason, such
    /// as a refused permission, is the error of the oldest confirm still in flight.
    pub async fn closed(err: lapin::Error, inflight: &mut VecDeque<InFlight>) -> PublishError {
        if let Some((_, _, confirm)) = inflight.front_mut()
            && let Ok(Err(cause)) = tokio::time::timeout(CLOSE_REASON_WAIT, confirm).await
        {
            return cause.into();
        }
        err.into()
    }
}

/// The user a connection to `uri` logs in as: the URI's user, or `guest` when it names none (as
/// lapin and RabbitMQ default). With `auth_mechanism=external` the broker takes the user from
/// the client certificate instead: the URI must then name that same user, or every publish is
/// refused (and said so).
pub fn user_of(uri: &BrokerUri) -> String {
    uri.uri.authority.userinfo.username.clone()
}
