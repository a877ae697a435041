//! A fault campaign's scenario: the cluster it starts, the chat load it drives and the faults
//! it may inject, from a TOML file (`loadtest/scenarios/chaos-*.toml`). Validation names the
//! offending key. The seed is not part of the file: one scenario runs under many seeds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::faults::FaultKind;

/// Which Redis the campaign starts for its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// One `redis-server` (append-only file, fsync always), reached by every node through its
    /// own TCP proxy so that one node's link can be stalled or cut.
    Single,
    /// A Redis Cluster of three masters without replicas, reached directly.
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChaosScenario {
    pub name: String,
    pub redis: RedisMode,
    /// roomcast nodes (2–9).
    pub nodes: usize,
    /// Rooms, each with `members` users spread over the nodes (members × rooms ≤ 200).
    pub rooms: usize,
    pub members: usize,
    /// Each member publishes one message, waits for its ack (retrying with the same key), and
    /// publishes the next this long after.
    pub publish_every_ms: u64,
    /// The whole run: warm-up, faults, then `quiet_secs` without faults or publishes.
    pub duration_secs: f64,
    /// No fault before this.
    pub warmup_secs: f64,
    /// Without faults at the end, so every retry, resume and lease settles before the check.
    pub quiet_secs: f64,
    /// Pause between one fault's end and the next one's start, drawn in [min, max].
    pub fault_gap_ms: [u64; 2],
    /// The nodes' `redis.presence_lease_ms`; short, so that lease expiry happens inside faults.
    pub presence_lease_ms: u64,
    /// The nodes' `redis.command_timeout_ms`.
    pub command_timeout_ms: u64,
    /// Fault kinds with their relative weights (`[faults]` table, e.g. `redis_pause = 2`); a
    /// kind left out is never drawn.
    pub faults: BTreeMap<FaultKind, u32>,
}

impl Default for ChaosScenario {
    fn default() -> Self {
        Self {
            name: "chaos".into(),
            redis: RedisMode::Single,
            nodes: 3,
            rooms: 4,
            members: 4,
            publish_every_ms: 400,
            duration_secs: 60.0,
            warmup_secs: 4.0,
            quiet_secs: 10.0,
            fault_gap_ms: [1_500, 4_000],
            presence_lease_ms: 3_000,
            command_timeout_ms: 1_000,
            faults: FaultKind::ALL
                .iter()
                .filter(|k| k.runs_on(RedisMode::Single))
                .map(|k| (*k, 1))
                .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChaosScenarioError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("`{key}` {why}")]
    Invalid { key: &'static str, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> ChaosScenarioError {
    ChaosScenarioError::Invalid {
        key,
        why: why.into(),
    }
}

impl ChaosScenario {
    pub fn from_file(path: &Path) -> Result<Self, ChaosScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ChaosScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut scenario: Self =
            toml::from_str(&text).map_err(|source| ChaosScenarioError::Parse {
                path: shown,
                source,
            })?;
        if scenario.name.is_empty() {
            scenario.name = path
                .file_stem()
                .map_or("chaos".into(), |s| s.to_string_lossy().into());
        }
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn validate(&self) -> Result<(), ChaosScenarioError> {
        if !(2..=9).contains(&self.nodes) {
            return Err(invalid("nodes", "must be 2–9"));
        }
        if self.rooms == 0 || self.members < 2 || self.rooms * self.members > 200 {
            return Err(invalid(
                "members",
                "needs rooms ≥ 1, members ≥ 2 and rooms × members ≤ 200",
            ));
        }
        if self.publish_every_ms < 20 {
            return Err(invalid("publish_every_ms", "must be at least 20"));
        }
        let busy = self.duration_secs - self.warmup_secs - self.quiet_secs;
        if !(busy >= 5.0 && self.duration_secs <= 3_600.0) {
            return Err(invalid(
                "duration_secs",
                "must leave at least 5 s of faults after warmup_secs and before quiet_secs, \
                 and be at most 3,600",
            ));
        }
        if self.quiet_secs * 1000.0 < 2.0 * self.presence_lease_ms as f64 {
            return Err(invalid(
                "quiet_secs",
                "must be at least twice presence_lease_ms, so that leases settle before the check",
            ));
        }
        let [lo, hi] = self.fault_gap_ms;
        if lo > hi || hi > 60_000 {
            return Err(invalid(
                "fault_gap_ms",
                "must be [min, max] with min ≤ max ≤ 60000",
            ));
        }
        if self.presence_lease_ms < 500 || self.command_timeout_ms < 100 {
            return Err(invalid(
                "presence_lease_ms",
                "must be ≥ 500 (and command_timeout_ms ≥ 100)",
            ));
        }
        if self.faults.values().all(|w| *w == 0) {
            return Err(invalid(
                "faults",
                "needs at least one kind with a weight above 0",
            ));
        }
        if let Some((kind, _)) = self
            .faults
            .iter()
            .find(|(k, w)| **w > 0 && !k.runs_on(self.redis))
        {
            return Err(invalid(
                "faults",
                format!("{kind:?} cannot run with redis = {:?}", self.redis),
            ));
        }
        Ok(())
    }
}
