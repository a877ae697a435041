//! The faults a campaign injects: their kinds, a seeded random schedule of them, and applying
//! one to the running processes. Faults run one at a time with a pause between them, so each
//! loss and each recovery is attributed to exactly one fault.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ChaosError;
use super::procs::{Node, Redis};
use super::proxy::{Link, Proxy};
use super::scenario::{ChaosScenario, RedisMode};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL a Redis (a cluster master), restart it empty.
    RedisKill,
    /// SIGKILL the Redis, restart it from its append-only file (single Redis only).
    RedisKillPersistent,
    /// SIGSTOP a Redis, SIGCONT it later: sockets stay open, nothing answers.
    RedisPause,
    /// `CLIENT KILL` every command and pub/sub connection of a Redis.
    RedisClientKill,
    /// `maxmemory` below what a Redis holds (`noeviction`): every write refused, reads answered.
    RedisFull,
    /// SIGKILL a roomcast node, start it again.
    NodeKill,
    /// SIGTERM a roomcast node (drain), start it again.
    NodeTerm,
    /// One node's link to Redis holds every byte, then lets them through (single Redis only).
    LinkStall,
    /// One node's link to Redis is closed and refused (single Redis only).
    LinkCut,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        Self::RedisKill,
        Self::RedisKillPersistent,
        Self::RedisPause,
        Self::RedisClientKill,
        Self::RedisFull,
        Self::NodeKill,
        Self::NodeTerm,
        Self::LinkStall,
        Self::LinkCut,
    ];

    pub fn runs_on(self, mode: RedisMode) -> bool {
        mode == RedisMode::Single
            || !matches!(
                self,
                Self::RedisKillPersistent | Self::LinkStall | Self::LinkCut
            )
    }

    /// How long the fault lasts (the outage, or the pause before a restart), in ms.
    fn length_ms(self) -> [u64; 2] {
        match self {
            Self::RedisClientKill => [0, 0],
            Self::RedisKill | Self::RedisKillPersistent | Self::LinkCut => [500, 3_000],
            Self::NodeKill | Self::NodeTerm => [500, 2_000],
            Self::RedisPause => [1_000, 5_000],
            Self::RedisFull | Self::LinkStall => [1_000, 4_000],
        }
    }

    fn targets_node(self) -> bool {
        matches!(
            self,
            Self::NodeKill | Self::NodeTerm | Self::LinkStall | Self::LinkCut
        )
    }
}

/// One planned fault: what, on which node or Redis shard, when (ms from the run's start).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    pub kind: FaultKind,
    pub target: usize,
    pub at_ms: u64,
    pub length_ms: u64,
}

/// One fault as it happened. `end_ms` is when the hurt part was whole again (a restarted
/// process answering).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// `n0`, `n1`… for a node or its link; `redis0`… for a Redis.
    pub target: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Nodes that cannot complete Redis commands during the fault: `/readyz` must say 503.
    #[serde(skip)]
    pub unready: Vec<usize>,
}

/// The faults of a run under `seed`: after the warm-up, gaps and lengths drawn in their
/// ranges, until the quiet period.
pub fn schedule(scenario: &ChaosScenario, seed: u64) -> Vec<Planned> {
    let mut rng = Rng::new(seed ^ 0xC4A0_5EED);
    // Neighbouring seeds start xorshift from close states; its first outputs stay alike.
    for _ in 0..16 {
        rng.next_u64();
    }
    let total: u32 = scenario.faults.values().sum();
    let end_ms = ((scenario.duration_secs - scenario.quiet_secs) * 1000.0) as u64;
    let shards = if scenario.redis == RedisMode::Cluster {
        3
    } else {
        1
    };
    let mut at = (scenario.warmup_secs * 1000.0) as u64;
    let mut plan = Vec::new();
    loop {
        let mut pick = (rng.next_u64() % u64::from(total)) as u32;
        let kind = *scenario
            .faults
            .iter()
            .find(|(_, w)| {
                let hit = pick < **w;
                pick = pick.saturating_sub(**w);
                hit
            })
            .expect("weights sum to total")
            .0;
        let length_ms = draw(&mut rng, kind.length_ms());
        let count = if kind.targets_node() {
            scenario.nodes
        } else {
            shards
        };
        let target = (rng.next_u64() % count as u64) as usize;
        if at + length_ms > end_ms {
            return plan;
        }
        plan.push(Planned {
            kind,
            target,
            at_ms: at,
            length_ms,
        });
        at += length_ms + draw(&mut rng, scenario.fault_gap_ms);
    }
}

fn draw(rng: &mut Rng, [lo, hi]: [u64; 2]) -> u64 {
    lo + (rng.unit() * (hi - lo) as f64) as u64
}

/// What the faults act on. Owned by the one thread that injects them.
pub struct Targets {
    pub redis: Redis,
    pub nodes: Vec<Node>,
    pub links: Vec<Proxy>,
    pub start: Instant,
}

impl Targets {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Applies `fault` (blocking for its length) and says how it went.
    pub fn apply(&mut self, fault: &Planned) -> Result<Fault, ChaosError> {
        let length = Duration::from_millis(fault.length_ms);
        let start_ms = self.now_ms();
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        // Cluster mode has no readiness write probe (a shard's loss is not the node's), so
        // readiness is held to the truth with a single Redis only.
        let whole_redis = if self.links.is_empty() {
            Vec::new()
        } else {
            all
        };
        let t = fault.target;
        let (target, unready) = match fault.kind {
            FaultKind::RedisKill | FaultKind::RedisKillPersistent => {
                self.redis.shards[t].kill();
                std::thread::sleep(length);
                let keep = fault.kind == FaultKind::RedisKillPersistent;
                self.redis.shards[t].restart(keep)?;
                (format!("redis{t}"), whole_redis)
            }
            FaultKind::RedisPause => {
                self.redis.shards[t].pause(true);
                std::thread::sleep(length);
                self.redis.shards[t].pause(false);
                (format!("redis{t}"), whole_redis)
            }
            FaultKind::RedisClientKill => {
                self.client_kill(t)?;
                (format!("redis{t}"), Vec::new())
            }
            FaultKind::RedisFull => {
                self.fill(t, length)?;
                (format!("redis{t}"), whole_redis)
            }
            FaultKind::NodeKill | FaultKind::NodeTerm => {
                if fault.kind == FaultKind::NodeKill {
                    self.nodes[t].kill();
                } else {
                    self.nodes[t].terminate();
                }
                std::thread::sleep(length);
                self.nodes[t].start()?;
                (format!("n{t}"), Vec::new())
            }
            FaultKind::LinkStall | FaultKind::LinkCut => {
                let how = if fault.kind == FaultKind::LinkStall {
                    Link::Stall
                } else {
                    Link::Cut
                };
                self.links[t].set(how);
                std::thread::sleep(length);
                self.links[t].set(Link::Pass);
                (format!("n{t}"), vec![t])
            }
        };
        Ok(Fault {
            kind: fault.kind,
            target,
            start_ms,
            end_ms: self.now_ms(),
            unready,
        })
    }

    /// `CLIENT KILL` of every command and pub/sub connection of shard `t`.
    fn client_kill(&self, t: usize) -> Result<(), ChaosError> {
        let port = self.redis.shards[t].port;
        for kind in ["normal", "pubsub"] {
            super::resp::command(port, &["CLIENT", "KILL", "TYPE", kind])
                .map_err(|e| ChaosError::Setup(format!("CLIENT KILL: {e}")))?;
        }
        Ok(())
    }

    /// Shard `t` at `maxmemory` (below what it holds, `noeviction`) for `length`.
    fn fill(&self, t: usize, length: Duration) -> Result<(), ChaosError> {
        let port = self.redis.shards[t].port;
        let set = |v: &str| {
            super::resp::command(port, &["CONFIG", "SET", "maxmemory", v])
                .map_err(|e| ChaosError::Setup(format!("CONFIG SET maxmemory: {e}")))
        };
        set("1")?;
        std::thread::sleep(length);
        set("0").map(drop)
    }
}
