//! # The fault campaign
//!
//! `loadtest chaos loadtest/scenarios/chaos-redis.toml --seed 7` starts its own Redis (one
//! server, or a three-master cluster) and roomcast nodes on free loopback ports, drives a chat
//! load of resuming members, and injects a seeded random schedule of faults one at a time
//! (Redis SIGKILL and restart, empty or from its append-only file; SIGSTOP/SIGCONT;
//! `CLIENT KILL`; Redis at `maxmemory`; node SIGKILL; node SIGTERM; one node's link to Redis
//! stalled or cut by a proxy). It then holds the run to roomcast's promise (docs/protocol.md)
//! and reports the seed, the timeline and every violation.
//!
//! - [`scenario`]: the campaign's TOML.
//! - [`procs`], [`proxy`]: the processes and links it hurts; [`faults`]: the schedule and
//!   applying a fault.
//! - [`client`]: one chat user, logging what it sees; [`ready`]: `/readyz` samples.
//! - [`check`]: the verdict, from the logs alone; [`report`]: summary, JSON and SVG.

pub mod check;
pub mod client;
pub mod faults;
pub mod procs;
pub mod proxy;
pub mod ready;
pub mod report;
mod resp;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use report::ChaosReport;
pub use scenario::{ChaosScenario, RedisMode};

use faults::{Fault, Targets};
use procs::{Node, Redis};
use proxy::Proxy;

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{0}")]
    Setup(String),
}

pub struct Options {
    pub seed: u64,
    /// The roomcast binary the nodes run.
    pub roomcast: PathBuf,
    /// Where Redis data and node logs go.
    pub dir: PathBuf,
}

/// How long after the run's end users keep their connections, for their last presence lists.
const CLOSE_AFTER: Duration = Duration::from_secs(2);

/// Runs one campaign to its end and judges it. Errors only when it could not run (a process
/// would not start); every fault roomcast mishandles is in the report instead.
pub fn run(scenario: &ChaosScenario, options: &Options) -> Result<ChaosReport, ChaosError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ChaosError::Setup(format!("runtime: {e}")))?;
    let redis = Redis::start(scenario.redis, &options.dir)?;
    let links = runtime.block_on(links(scenario, &redis))?;
    let nodes = start_nodes(scenario, options, &redis, &links)?;
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let logs: Vec<PathBuf> = nodes.iter().map(|n| n.log().to_path_buf()).collect();
    let plan = faults::schedule(scenario, options.seed);
    let start = Instant::now();
    let targets = Targets {
        redis,
        nodes,
        links,
        start: start.into_std(),
    };
    let injector = std::thread::spawn({
        let plan = plan.clone();
        move || inject(targets, &plan)
    });
    let (users, samples) = runtime.block_on(drive(scenario, ports, start));
    let (targets, faults, failure) = injector.join().expect("fault thread panicked");
    drop(targets);
    if let Some(e) = failure {
        return Err(e);
    }
    write_events(&options.dir, &users, &samples);
    let grace = 1_000 + scenario.command_timeout_ms + 500;
    let verdict = check::check(&check::Input {
        logs: &users,
        faults: &faults,
        samples: &samples,
        ready_grace_ms: grace,
        lease_ms: scenario.presence_lease_ms,
    });
    Ok(ChaosReport::new(
        scenario,
        options.seed,
        plan,
        faults,
        verdict,
        &users,
        logs,
    ))
}

/// Every user's log and the readiness samples, one JSON document per line, beside the node
/// logs: what a violation in the report is investigated from.
fn write_events(dir: &Path, users: &[client::UserLog], samples: &[ready::Sample]) {
    let mut text = String::new();
    for u in users {
        text.push_str(&serde_json::to_string(u).unwrap_or_default());
        text.push('\n');
    }
    let _ = std::fs::write(dir.join("users.jsonl"), text);
    let _ = std::fs::write(
        dir.join("readyz.json"),
        serde_json::to_string(samples).unwrap_or_default(),
    );
}

/// A proxy per node in front of a single Redis; none in cluster mode (the cluster's own
/// addresses are what nodes are redirected to).
async fn links(scenario: &ChaosScenario, redis: &Redis) -> Result<Vec<Proxy>, ChaosError> {
    let mut links = Vec::new();
    if scenario.redis == RedisMode::Single {
        for _ in 0..scenario.nodes {
            let proxy = Proxy::start(redis.shards[0].port)
                .await
                .map_err(|e| ChaosError::Setup(format!("proxy: {e}")))?;
            links.push(proxy);
        }
    }
    Ok(links)
}

fn start_nodes(
    scenario: &ChaosScenario,
    options: &Options,
    redis: &Redis,
    links: &[Proxy],
) -> Result<Vec<Node>, ChaosError> {
    let seeds: Vec<String> = match scenario.redis {
        RedisMode::Cluster => redis
            .shards
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .collect(),
        RedisMode::Single => Vec::new(),
    };
    let mut nodes = Vec::new();
    for i in 0..scenario.nodes {
        let url = links
            .get(i)
            .map(|l| format!("redis://127.0.0.1:{}", l.port));
        let config = options.dir.join(format!("node{i}.toml"));
        std::fs::write(
            &config,
            procs::node_config(scenario, url.as_deref(), &seeds),
        )
        .map_err(|e| ChaosError::Setup(format!("writing {}: {e}", config.display())))?;
        let mut node = Node::new(i, &options.roomcast, &config, &options.dir)?;
        node.start()?;
        nodes.push(node);
    }
    Ok(nodes)
}

/// Applies the planned faults at their times, one after the other.
fn inject(
    mut targets: Targets,
    plan: &[faults::Planned],
) -> (Targets, Vec<Fault>, Option<ChaosError>) {
    let mut done = Vec::new();
    for planned in plan {
        let at = targets.start + Duration::from_millis(planned.at_ms);
        std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
        match targets.apply(planned) {
            Ok(fault) => done.push(fault),
            Err(e) => return (targets, done, Some(e)),
        }
    }
    (targets, done, None)
}

/// The users and the readiness poller, until the run's end.
async fn drive(
    scenario: &ChaosScenario,
    ports: Vec<u16>,
    start: Instant,
) -> (Vec<client::UserLog>, Vec<ready::Sample>) {
    let (stop_tx, stop) = watch::channel(false);
    let end = start + Duration::from_secs_f64(scenario.duration_secs);
    let plan = client::Plan {
        ports: ports.clone(),
        start,
        every: Duration::from_millis(scenario.publish_every_ms),
        publish_end: end - Duration::from_secs_f64(scenario.quiet_secs),
        stop: stop.clone(),
        close_at: end + CLOSE_AFTER,
    };
    let poller = tokio::spawn(ready::poll(ports, start, stop.clone()));
    let users: Vec<_> = (0..scenario.rooms * scenario.members)
        .map(|i| {
            let room = format!("room{}", i / scenario.members);
            tokio::spawn(client::run(i as u64, room, plan.clone()))
        })
        .collect();
    tokio::time::sleep_until(end).await;
    stop_tx.send_replace(true);
    let mut logs = Vec::new();
    for u in users {
        logs.push(u.await.expect("user task panicked"));
    }
    (logs, poller.await.expect("poller panicked"))
}

/// Where the roomcast binary is: beside this executable (target/release/loadtest →
/// target/release/roomcast).
pub fn default_roomcast() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.join("roomcast");
    beside.exists().then_some(beside)
}

/// A run's working directory for Redis data and node logs.
pub fn work_dir(base: &Path, seed: u64) -> std::io::Result<PathBuf> {
    let dir = base.join(format!("seed-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
