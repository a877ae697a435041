//! `[heartbeat]`: server pings and the silence that ends a socket.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Heartbeat {
    /// How often the server pings each client. Default 25 s: under the 30–60 s idle timeouts
    /// of common proxies and load balancers.
    pub interval_ms: u64,
    /// Silence (no frame of any kind) after which the socket is closed with 4008. Default 60 s:
    /// two missed pings plus slack.
    pub timeout_ms: u64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval_ms: 25_000,
            timeout_ms: 60_000,
        }
    }
}

impl Heartbeat {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("heartbeat.interval_ms", self.interval_ms)?;
        if self.timeout_ms <= self.interval_ms {
            return Err(ConfigError::Invalid {
                key: "heartbeat.timeout_ms",
                reason: format!(
                    "must be greater than heartbeat.interval_ms ({}), or every client times out",
                    self.interval_ms
                ),
            });
        }
        Ok(())
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
