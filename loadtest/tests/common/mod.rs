//! Test helpers: a real roomcast node served in-process on 127.0.0.1:0, the shipped scenarios,
//! a run and the invariants of a clean one, the real `loadtest` binary run under a time limit,
//! and (`tls`) a haproxy TLS front end with throwaway certificates.
#![allow(dead_code)] // each test binary uses a different subset

pub mod tls;

pub mod cluster;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use loadtest::{Report, RunOptions, Scenario};
use roomcast::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A roomcast node serving on a free loopback port until dropped or stopped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), roomcast::server::ServerError>>,
}

impl Server {
    /// A node with default settings except the limits a load test trips by design (inbound
    /// rate per connection, connections and connection rate per IP: every simulated user comes
    /// from 127.0.0.1), raised so that test traffic is measured rather than throttled.
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// Like `start`, with `adjust` applied to the config.
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        config.limits.inbound_rate_per_sec = 100_000;
        config.limits.inbound_burst = 100_000;
        config.limits.max_connections_per_ip = 100_000;
        config.limits.connect_rate_per_ip = 100_000;
        config.limits.connect_burst_per_ip = 100_000;
        config.limits.max_pending_connections_per_ip = 100_000;
        config.limits.direct_rate_per_sec = 100_000;
        config.limits.direct_burst = 100_000;
        config.shutdown_grace_ms = 2_000;
        adjust(&mut config);
        config.validate().expect("test config must be valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(roomcast::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Shuts the node down and waits (bounded) for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.handle)
            .await
            .expect("server did not stop within 10 s")
            .expect("server task panicked")
            .expect("server failed");
    }
}

/// Path of a shipped scenario, e.g. `scenario_path("smoke")`.
pub fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

/// A shipped scenario, pointed at `urls`.
pub fn scenario(name: &str, urls: &[String]) -> Scenario {
    let mut s = Scenario::from_file(&scenario_path(name)).expect("shipped scenario must load");
    s.urls = urls.to_vec();
    s.validate().expect("scenario with test URLs must be valid");
    s
}

/// Runs `s` in-process (workers as threads); a run that cannot happen fails the test.
pub async fn run(s: &Scenario) -> Report {
    loadtest::run(s, RunOptions::default())
        .await
        .expect("run failed")
}

/// The invariants of a clean run: everyone connected and joined, every acknowledged message
/// reached members, none lost, repeated or reordered.
pub fn assert_clean(r: &Report) {
    let k = &r.connections;
    assert_eq!(
        (k.ok, k.failed, k.join_failed),
        (r.users, 0, 0),
        "{}",
        r.table()
    );
    assert_eq!(k.unexpected_disconnects, 0, "{}", r.table());
    let m = &r.messages;
    assert!(m.published > 0 && m.deliveries > 0, "{}", r.table());
    assert_eq!(
        m.acked,
        m.published,
        "every publish acknowledged\n{}",
        r.table()
    );
    let c = &r.correctness;
    assert_eq!(
        c.acked_distinct,
        m.acked,
        "acks carry distinct offsets\n{}",
        r.table()
    );
    assert_eq!(c.acked_not_observed, 0, "{}", r.table());
    assert_eq!(c.observed_distinct, c.acked_distinct, "{}", r.table());
    assert_eq!(
        (c.lost, c.duplicates, c.out_of_order),
        (0, 0, 0),
        "{}",
        r.table()
    );
    assert_eq!(
        (c.seq_regressions, c.foreign_payloads),
        (0, 0),
        "{}",
        r.table()
    );
    assert!(c.problem_rooms.is_empty(), "{}", r.table());
    assert!(r.problems(true).is_empty(), "{:?}", r.problems(true));
}

/// What a run of the binary left behind.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Generous bound for a run that must fail fast (the binary's own limit is 3 s of probing).
pub const FAIL_FAST: Duration = Duration::from_secs(15);

/// Runs the `loadtest` binary with `args`, killing it if it outlives `limit`.
pub async fn run_binary(args: &[&str], limit: Duration) -> Ran {
    run_binary_with(args, &[], limit).await
}

/// As [`run_binary`], with `env` added to the binary's environment.
pub async fn run_binary_with(args: &[&str], env: &[(&str, &Path)], limit: Duration) -> Ran {
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::time::timeout(limit, child)
        .await
        .unwrap_or_else(|_| panic!("loadtest {args:?} did not finish within {limit:?}"))
        .expect("running the loadtest binary");
    Ran {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// Bound on one binary run of a short scenario: ramp + 2 s + drain, plus process start-up in a
/// debug build.
pub const RUN_LIMIT: Duration = Duration::from_secs(40);

/// Runs the binary on the smoke scenario against `url` over `workers` worker processes, with
/// `--expect-no-loss` and `extra` flags; it must pass. Returns its output and `--json` report.
pub async fn smoke_binary(url: &str, workers: u32, extra: &[&str]) -> (Ran, Report) {
    smoke_binary_with(url, workers, extra, &[]).await
}

/// As [`smoke_binary`], with `env` added to the binary's environment.
pub async fn smoke_binary_with(
    url: &str,
    workers: u32,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> (Ran, Report) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let smoke = scenario_path("smoke");
    let workers = workers.to_string();
    let mut args = vec![
        smoke.to_str().unwrap(),
        "--url",
        url,
        "--workers",
        &workers,
        "--expect-no-loss",
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let ran = run_binary_with(&args, env, RUN_LIMIT).await;
    let report = passed_report(&ran, &json);
    (ran, report)
}

/// The binary ran and passed (exit code 0, `PASS`); returns the report it wrote to `json`.
fn passed_report(ran: &Ran, json: &Path) -> Report {
    assert_eq!(
        ran.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(ran.stdout.contains("PASS"), "{}", ran.stdout);
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

/// The binary refused to run: exit code 1, each of `wanted` in its message, within `FAIL_FAST`.
pub fn assert_refused(ran: &Ran, wanted: &[&str]) {
    assert_eq!(ran.code, Some(1), "exit code; stderr: {}", ran.stderr);
    for w in wanted {
        assert!(ran.stderr.contains(w), "stderr lacks {w:?}: {}", ran.stderr);
    }
    assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    assert!(ran.took < FAIL_FAST, "took {:?}", ran.took);
}
