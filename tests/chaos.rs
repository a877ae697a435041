//! The fault campaign's short form, on every change (docs/BENCHMARKS.md has the long form):
//! `loadtest::chaos` starts its own Redis (one server, or a three-master cluster) and three
//! nodes of this build, drives 16 chat users that publish keyed messages and resume on another
//! node whenever their connection ends, and injects a seeded random schedule of faults for a
//! minute: Redis SIGKILL (restarted empty or from its append-only file), SIGSTOP/SIGCONT,
//! `CLIENT KILL`, `maxmemory`, node SIGKILL and SIGTERM, one node's link stalled or cut. Each
//! test fails on any silent loss or gap, duplicate, reorder, divergence, false ack, false
//! presence event, presence view wrong at the end, second of false readiness, or user left
//! unjoined, and prints the timeline and every violation. The campaigns run concurrently.

use std::path::{Path, PathBuf};

use loadtest::chaos::{self, ChaosScenario};

fn campaign(file: &str, seed: u64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scenario = ChaosScenario::from_file(&root.join("loadtest/scenarios").join(file))
        .expect("the shipped scenario is valid");
    let base = root.join("target/chaos-tests");
    let dir = chaos::work_dir(
        &base,
        seed + if file.contains("cluster") { 1000 } else { 0 },
    )
    .expect("work dir");
    let options = chaos::Options {
        seed,
        roomcast: PathBuf::from(env!("CARGO_BIN_EXE_roomcast")),
        dir: dir.clone(),
    };
    let report = chaos::run(&scenario, &options).unwrap_or_else(|e| {
        panic!(
            "the campaign could not run: {e} (needs redis-server on PATH; scripts/test installs it)"
        )
    });
    println!("{}", report.summary());
    assert!(
        !report.faults.is_empty(),
        "a campaign without faults proves nothing"
    );
    assert!(
        report.verdict.acked > 100,
        "too little traffic: {}",
        report.verdict.acked
    );
    assert!(
        report.passed(),
        "{file} seed {seed} broke the promise (logs and users.jsonl in {}):\n{}",
        dir.display(),
        report.summary()
    );
}

#[test]
fn single_redis_seed_1() {
    campaign("chaos-redis.toml", 1);
}

#[test]
fn single_redis_seed_2() {
    campaign("chaos-redis.toml", 2);
}

#[test]
fn single_redis_seed_3() {
    campaign("chaos-redis.toml", 3);
}

#[test]
fn redis_cluster_seed_1() {
    campaign("chaos-cluster.toml", 1);
}
