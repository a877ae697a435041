//! `[rebalance]`: moving sessions off a node that holds more than its share of the cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rebalance {
    /// Shed sessions on its own when above the cluster mean (needs the Redis broker, which
    /// shares each node's session count). The `/api/shed` request works either way.
    pub enabled: bool,
    /// How often the node reports its session count and compares it with the others'.
    /// Default 2 s.
    pub interval_ms: u64,
    /// How far above the cluster mean, in percent, a node may be before it sheds. Default 5:
    /// inside the ±10 % operators are promised, with room for the sessions still on their way.
    pub margin_percent: u32,
    /// Most sessions shed per second, by both the automatic and the requested shedding: the
    /// bound on the reconnects this node sends to the others. Default 20.
    pub max_shed_per_sec: u32,
}

impl Default for Rebalance {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 2_000,
            margin_percent: 5,
            max_shed_per_sec: 20,
        }
    }
}

impl Rebalance {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("rebalance.interval_ms", self.interval_ms)?;
        positive("rebalance.max_shed_per_sec", self.max_shed_per_sec.into())?;
        if self.margin_percent > 100 {
            return Err(ConfigError::Invalid {
                key: "rebalance.margin_percent",
                reason: "must be at most 100".into(),
            });
        }
        Ok(())
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The time between two sheds at the full rate.
    pub fn shed_every(&self) -> Duration {
        Duration::from_secs(1) / self.max_shed_per_sec.max(1)
    }
}
