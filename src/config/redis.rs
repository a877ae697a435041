//! `[redis]`: the Redis engine, one server or a cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The Redis engine (`broker = "redis"`): several nodes sharing rooms through one Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redis {
    /// Where Redis listens. Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key and channel, so several clusters can share one Redis. Default
    /// `roomcast`.
    pub prefix: String,
    /// How long a node's presence entries live without a refresh. Default 15 s: the users of a
    /// crashed node vanish from presence (with `presence_leave`) within 4/3 of this.
    pub presence_lease_ms: u64,
    /// How long a room stays subscribed after its last local member left. Default 1 s: a
    /// member that reconnects at once does not cost an UNSUBSCRIBE/SUBSCRIBE pair.
    pub unsubscribe_delay_ms: u64,
    /// How long a Redis command may take before the request gets `unavailable`. Default 2 s.
    pub command_timeout_ms: u64,
    /// Seed nodes of a Redis Cluster (`["redis://10.0.0.1:7000", ...]`). Non-empty switches
    /// to cluster mode, where each room lives on the shard owning its slot and `url` is not
    /// used; the rest of the cluster is discovered from any seed that answers. Default empty:
    /// one Redis at `url`, the simpler setup until one Redis is the bottleneck.
    pub cluster_nodes: Vec<String>,
    /// Most publications (to any rooms) ordered by one script call. Default 128: a script
    /// call's fixed cost in Redis is paid once per batch, and a room's keys are updated once
    /// for all its publications in the batch (docs/BENCHMARKS.md has what that saves); 128
    /// bounds one call's work to well under a millisecond. 1 turns batching off (one script per publication). Up to 1024. Batches
    /// only form while calls are in flight, so an idle node never waits. Single Redis only:
    /// cluster mode always runs one script per publication (see docs/architecture.md).
    pub publish_batch_max: usize,
    /// Batch calls in flight at once per node. Default 2: the next batch gathers while one is
    /// answered, and a second keeps Redis busy during the round trip; more only makes the
    /// batches smaller. Up to 64.
    pub publish_batches_in_flight: usize,
}

impl Default for Redis {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "roomcast".into(),
            presence_lease_ms: 15_000,
            unsubscribe_delay_ms: 1_000,
            command_timeout_ms: 2_000,
            cluster_nodes: Vec::new(),
            publish_batch_max: 128,
            publish_batches_in_flight: 2,
        }
    }
}

impl Redis {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Err(err) = redis::Client::open(self.url.as_str()) {
            return Err(ConfigError::Invalid {
                key: "redis.url",
                reason: err.to_string(),
            });
        }
        for node in &self.cluster_nodes {
            if let Err(err) = redis::Client::open(node.as_str()) {
                return Err(ConfigError::Invalid {
                    key: "redis.cluster_nodes",
                    reason: format!("{node}: {err}"),
                });
            }
        }
        if !crate::protocol::valid_name(&self.prefix) {
            return Err(ConfigError::Invalid {
                key: "redis.prefix",
                reason: format!("must be {}", crate::protocol::NAME_RULE),
            });
        }
        if self.presence_lease_ms < 100 {
            return Err(ConfigError::Invalid {
                key: "redis.presence_lease_ms",
                reason: "must be at least 100".into(),
            });
        }
        if self.command_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "redis.command_timeout_ms",
                reason: "must be greater than 0".into(),
            });
        }
        in_range("redis.publish_batch_max", self.publish_batch_max, 1, 1024)?;
        in_range(
            "redis.publish_batches_in_flight",
            self.publish_batches_in_flight,
            1,
            64,
        )?;
        Ok(())
    }

    pub fn presence_lease(&self) -> Duration {
        Duration::from_millis(self.presence_lease_ms)
    }

    pub fn unsubscribe_delay(&self) -> Duration {
        Duration::from_millis(self.unsubscribe_delay_ms)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }
}

/// Checks `min <= value <= max`.
fn in_range(key: &'static str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            key,
            reason: format!("must be between {min} and {max}"),
        });
    }
    Ok(())
}
