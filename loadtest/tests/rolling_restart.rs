//! End to end on `scripts/cluster`: Redis, three roomcast processes and haproxy. The load
//! tester runs users through haproxy while every instance is restarted in turn (SIGTERM drain,
//! then a fresh start). Users on a draining instance get close 1001, reconnect through the
//! balancer and resume; the report must show zero lost, duplicated or out-of-order messages.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::run_binary;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the roomcast binary (a no-op when `cargo test --workspace` already did) and returns
/// its path, next to this test's own target directory.
fn roomcast_binary() -> PathBuf {
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

/// A base port P with P (haproxy), P+1..=P+3 (instances) and P+90 (Redis) all free.
fn free_base_port() -> u16 {
    for _ in 0..50 {
        let base = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base > 65_000 {
            continue;
        }
        let free = [0, 1, 2, 3, 90]
            .iter()
            .all(|d| TcpListener::bind(("127.0.0.1", base + d)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free port range found");
}

/// Runs `scripts/cluster` with this test's cluster settings.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl Cluster {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(repo().join("scripts/cluster"))
            .args(args)
            .current_dir(repo())
            .env("CLUSTER_DIR", self.dir.path())
            .env("CLUSTER_PORT", self.port.to_string())
            .env("CLUSTER_BIN", &self.bin)
            .env("CLUSTER_PREFIX", format!("rr{}", std::process::id()))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_through_haproxy_loses_nothing() {
    let cluster = Cluster {
        dir: tempfile::tempdir().unwrap(),
        port: free_base_port(),
        bin: roomcast_binary(),
    };
    cluster.cmd(&["up", "3"]);

    let url = format!("ws://127.0.0.1:{}/ws", cluster.port);
    let json = cluster.dir.path().join("report.json");
    let json_arg = json.to_str().unwrap().to_owned();
    let scenario = repo().join("loadtest/scenarios/churn-resume.toml");
    let scenario = scenario.to_str().unwrap().to_owned();
    let load = tokio::spawn(async move {
        let args = [
            scenario.as_str(),
            "--url",
            &url,
            "--users",
            "300",
            "--ramp",
            "300",
            "--rooms",
            "30",
            "--room-size",
            "10",
            "--publish-rate",
            "2",
            "--churn",
            "0",
            "--duration",
            "14",
            "--json",
            &json_arg,
            "--expect-no-loss",
            "-q",
        ];
        run_binary(&args, Duration::from_secs(90)).await
    });

    // Restart every instance in turn while the users publish.
    let restarts = {
        let cluster = &cluster;
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            for i in 1..=3 {
                let n = i.to_string();
                tokio::task::block_in_place(|| cluster.cmd(&["restart", &n]));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    restarts.await;
    let ran = load.await.unwrap();
    println!("{}", ran.stdout);
    assert_eq!(
        ran.code,
        Some(0),
        "loadtest failed:\nstdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let c = &report["correctness"];
    let m = &report["messages"];
    let conn = &report["connections"];
    println!(
        "rolling restart: {} users, {} acked, {} deliveries, {} drained by restarts, {} reconnects, {} resumes recovered, lost {}, duplicates {}, out of order {}",
        report["users"],
        m["acked"],
        m["deliveries"],
        conn["server_drains"],
        conn["reconnects_ok"],
        c["resumes_recovered"],
        c["lost"],
        c["duplicates"],
        c["out_of_order"]
    );
    assert_eq!(conn["ok"], 300, "every user connected");
    assert!(m["acked"].as_u64().unwrap() > 1000, "traffic flowed");
    // The restarts really hit users (close 1001), and they came back and resumed.
    assert!(conn["server_drains"].as_u64().unwrap() >= 150, "{conn}");
    assert_eq!(conn["unexpected_disconnects"], 0, "{conn}");
    assert_eq!(conn["reconnects_failed"], 0, "{conn}");
    assert!(c["resumes_recovered"].as_u64().unwrap() >= 150, "{c}");
    assert_eq!(c["resumes_unrecovered"], 0, "{c}");
    for key in ["lost", "duplicates", "out_of_order", "acked_not_observed"] {
        assert_eq!(c[key], 0, "{key}: {c}");
    }
    cluster.cmd(&["down"]);
}
