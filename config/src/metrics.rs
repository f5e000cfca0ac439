//! `[metrics]`: where a daemon serves its metrics and health pages.

use std::net::SocketAddr;

use crate::error::KeyError;

/// `[metrics]` as written: absent or without `listen`, nothing is served.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// e.g. `"127.0.0.1:9187"`; keep it on loopback unless the network is trusted.
    pub listen: Option<String>,
}

impl RawMetrics {
    /// The address to serve on, if any.
    pub fn validate(&self) -> Result<Option<SocketAddr>, KeyError> {
        self.listen
            .as_deref()
            .map(|text| {
                text.parse().map_err(|_| {
                    KeyError::new(
                        "metrics.listen",
                        format!("invalid address \"{text}\" (e.g. \"127.0.0.1:9187\")"),
                    )
                })
            })
            .transpose()
    }
}

/// A daemon's file read for its `[metrics]` table only (every other key ignored, nothing on
/// this machine checked): what `status` needs to find the daemon, also as a user who cannot
/// write the state directory.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RawMetricsOnly {
    #[serde(default)]
    metrics: RawMetrics,
}

impl crate::load::Validate for RawMetricsOnly {
    type Config = Option<SocketAddr>;

    fn validate(self) -> Result<Self::Config, KeyError> {
        self.metrics.validate()
    }
}
