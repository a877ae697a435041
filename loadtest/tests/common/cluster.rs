//! `scripts/cluster` driven from a test: Redis, roomcast processes and haproxy on a free port
//! range, in a temporary directory, stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the roomcast binary (a no-op when `cargo test --workspace` already did) and returns
/// its path, next to this test's own target directory.
pub fn roomcast_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "roomcast", "--bin", "roomcast"])
        .current_dir(repo())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building roomcast failed");
    // This test runs from <target>/debug/deps/.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("roomcast")
}

/// A base port P with P (haproxy), P+1..=P+3 (instances), P+90 (Redis) and P+91 (haproxy's
/// runtime API) all free, below the kernel's ephemeral range: an instance started later (`scale`)
/// binds its port while the test's clients hold hundreds of outgoing connections, and one of
/// those could have taken a port from that range (seen once in CI).
pub fn free_base_port() -> u16 {
    let low = ephemeral_low();
    let seed =
        std::process::id() as u64 ^ std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64;
    for attempt in 0..200u64 {
        // Spread over [10000, low - 100), away from the ephemeral ports.
        let span = u64::from(low.saturating_sub(10_100).max(1));
        let base = 10_000
            + ((seed.wrapping_mul(6364136223846793005) ^ attempt.wrapping_mul(1442695040888963407))
                % span) as u16;
        let free = [0, 1, 2, 3, 90, 91]
            .iter()
            .all(|d| TcpListener::bind(("127.0.0.1", base + d)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free port range found below the ephemeral ports");
}

/// The first port the kernel hands out for outgoing connections (32768 by default).
pub fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Runs `scripts/cluster` with this test's cluster settings.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub bin: PathBuf,
    /// More `ROOMCAST_*` settings for every instance.
    pub env: Vec<(String, String)>,
}

impl Cluster {
    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(repo().join("scripts/cluster"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(repo())
            .env("CLUSTER_DIR", self.dir.path())
            .env("CLUSTER_PORT", self.port.to_string())
            .env("CLUSTER_BIN", &self.bin)
            .env("CLUSTER_PREFIX", format!("t{}", std::process::id()))
            // Every simulated user comes through haproxy's address.
            .env("ROOMCAST_LIMITS__MAX_CONNECTIONS_PER_IP", "100000")
            .env("ROOMCAST_LIMITS__CONNECT_RATE_PER_IP", "100000")
            .env("ROOMCAST_LIMITS__CONNECT_BURST_PER_IP", "100000")
            .env("ROOMCAST_LIMITS__MAX_PENDING_CONNECTIONS_PER_IP", "100000")
            .env("ROOMCAST_LIMITS__DIRECT_RATE_PER_SEC", "100000")
            .env("ROOMCAST_LIMITS__DIRECT_BURST", "100000")
            .env("ROOMCAST_LIMITS__INBOUND_RATE_PER_SEC", "100000")
            .env("ROOMCAST_LIMITS__INBOUND_BURST", "100000")
            .env("ROOMCAST_SHUTDOWN_GRACE_MS", "3000")
            .env("ROOMCAST_RECONNECT_SPREAD_MS", "500")
            .output()
            .unwrap_or_else(|e| panic!("scripts/cluster {args:?}: {e}"));
        assert!(
            out.status.success(),
            "scripts/cluster {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/cluster"))
            .arg("down")
            .env("CLUSTER_DIR", self.dir.path())
            .env("CLUSTER_PORT", self.port.to_string())
            .output();
    }
}

impl Cluster {
    /// A cluster of `n` instances, up.
    pub fn up(n: usize) -> Self {
        Self::up_with(n, &[])
    }

    /// A cluster of `n` instances with `env` set for every instance, up.
    pub fn up_with(n: usize, env: &[(&str, &str)]) -> Self {
        let cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            port: free_base_port(),
            bin: roomcast_binary(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        cluster.cmd(&["up", &n.to_string()]);
        cluster
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Instance `i`'s metric `name` (summed over its label sets), read from its `/metrics`.
    pub fn metric(&self, i: usize, name: &str) -> f64 {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.port + i as u16)).unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The JSON report of a load-tester run that exited 0 (panics with its output otherwise).
pub fn passed_report(ran: &super::Ran, json: &Path) -> serde_json::Value {
    assert_eq!(
        ran.code,
        Some(0),
        "loadtest failed:\nstdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

/// Users sent away by the cluster came back and resumed, and nothing was lost, duplicated or
/// reordered.
pub fn assert_resumed_without_loss(report: &serde_json::Value) {
    let (c, conn) = (&report["correctness"], &report["connections"]);
    assert_eq!(conn["unexpected_disconnects"], 0, "{conn}");
    assert_eq!(conn["reconnects_failed"], 0, "{conn}");
    assert_eq!(c["resumes_unrecovered"], 0, "{c}");
    for key in ["lost", "duplicates", "out_of_order", "acked_not_observed"] {
        assert_eq!(c[key], 0, "{key}: {c}");
    }
}
