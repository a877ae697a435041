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
/// runtime API) all free.
pub fn free_base_port() -> u16 {
    for _ in 0..50 {
        let base = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base > 65_000 {
            continue;
        }
        let free = [0, 1, 2, 3, 90, 91]
            .iter()
            .all(|d| TcpListener::bind(("127.0.0.1", base + d)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free port range found");
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
