//! Why a publishing session ended: the publisher's error type.

use std::time::Duration;

use lapin::PublisherConfirm;
use logship_runtime::access::{Op, Refused};

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
    /// as a refused permission, is the error of the oldest confirm still in flight (`oldest`).
    pub async fn closed(err: lapin::Error, oldest: Option<&mut PublisherConfirm>) -> PublishError {
        if let Some(confirm) = oldest
            && let Ok(Err(cause)) = tokio::time::timeout(CLOSE_REASON_WAIT, confirm).await
        {
            return cause.into();
        }
        err.into()
    }
}
