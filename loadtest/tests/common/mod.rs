//! Test helpers: a real roomcast node served in-process on 127.0.0.1:0, the shipped scenarios,
//! and the real `loadtest` binary run under a time limit.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use loadtest::Scenario;
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

/// What a run of the binary left behind.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs the `loadtest` binary with `args`, killing it if it outlives `limit`.
pub async fn run_binary(args: &[&str], limit: Duration) -> Ran {
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
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
