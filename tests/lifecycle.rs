//! Start-up and shutdown: graceful drain in-process and as the real binary under SIGTERM, and
//! configuration errors that stop start-up with a message naming the key.

mod common;

use std::time::Duration;

use common::process::{Process, spawn_binary};
use common::{Client, Ended, TestServer};
use serde_json::json;

#[tokio::test]
async fn shutdown_flushes_queued_messages_then_closes_with_1001() {
    let mut server = TestServer::start().await;
    let mut publisher = server.connect("pub").await;
    let mut reader = server.connect("reader").await;
    publisher.join("room").await;
    reader.join("room").await;
    for i in 0..200 {
        publisher.publish("room", json!(i)).await;
    }
    // Everything above is acked, so it sits in `reader`'s queue or socket: none may be lost.
    server.trigger_shutdown();
    let (frames, ended) = reader.read_to_end(Duration::from_secs(10)).await;
    let offsets: Vec<u64> = frames.iter().filter_map(|f| f["offset"].as_u64()).collect();
    assert_eq!(offsets, (1..=200).collect::<Vec<_>>());
    assert_eq!(ended, Ended::Closed(1001));
    // Last comes the reconnect hint, jittered within `reconnect_spread_ms`.
    let goaway = frames.last().unwrap();
    assert_eq!(goaway["type"], "goaway", "{goaway}");
    assert!(goaway["reconnect_after_ms"].as_u64().unwrap() <= 5_000);
    assert_eq!(
        publisher.read_to_end(Duration::from_secs(10)).await.1,
        Ended::Closed(1001)
    );
    server.shutdown().await.expect("run returns Ok");
}

#[tokio::test]
async fn while_draining_readiness_fails_and_new_sockets_are_refused() {
    let mut server = TestServer::start().await;
    // A client that never reads keeps the drain open: the server waits (bounded) for its
    // close handshake.
    let _stalled = server.connect("stalled").await;
    server.trigger_shutdown();
    let http = reqwest::Client::new();
    let ready = http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "draining"
    );
    let err = tokio_tungstenite::connect_async(server.ws_url("late"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    let healthy = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200, "alive while draining");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_stuck_sessions_after_the_grace_period() {
    let mut server = TestServer::with(|c| c.shutdown_grace_ms = 300).await;
    let _stalled = server.connect("stalled").await;
    server.trigger_shutdown();
    let started = std::time::Instant::now();
    server.shutdown().await.unwrap();
    // Bounded by the grace period, not by the 5 s close handshake timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigterm_drains_and_the_binary_exits_0() {
    let process = Process::start(&["--node-id", "n-test"]);
    let url = format!("ws://{}/ws?user=", process.addr);
    let mut publisher = Client::connect(&format!("{url}pub")).await;
    let mut reader = Client::connect(&format!("{url}reader")).await;
    assert_eq!(reader.welcome["node"], "n-test");
    publisher.join("room").await;
    reader.join("room").await;
    for i in 0..50 {
        publisher.publish("room", json!(i)).await;
    }
    process.signal("-TERM");
    let (frames, ended) = reader.read_to_end(Duration::from_secs(10)).await;
    assert_eq!(frames.iter().filter(|f| f["type"] == "message").count(), 50);
    assert_eq!(ended, Ended::Closed(1001));
    let status = tokio::task::spawn_blocking(move || process.wait(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[tokio::test]
async fn worker_threads_sizes_the_runtime_and_one_thread_serves() {
    let process = Process::start_with_env(&[], &[("ROOMCAST_WORKER_THREADS", "1")]);
    let metrics = reqwest::get(format!("http://{}/metrics", process.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let workers = metrics
        .lines()
        .find(|l| l.starts_with("roomcast_worker_threads{"))
        .unwrap_or_else(|| panic!("no roomcast_worker_threads in\n{metrics}"));
    assert!(workers.ends_with(" 1"), "{workers}");
    let mut publisher = Client::connect(&process.ws_url("pub")).await;
    let mut reader = Client::connect(&process.ws_url("reader")).await;
    publisher.join("room").await;
    reader.join("room").await;
    for i in 0..20 {
        publisher.publish("room", json!(i)).await;
    }
    for i in 0..20 {
        assert_eq!(reader.recv_message().await["data"], json!(i));
    }
}

/// The node turns glibc's per-thread allocation caches off by re-executing itself with
/// `GLIBC_TUNABLES` (their pages outlived a departed crowd; docs/operations.md), and leaves a
/// value the operator set, even an empty one, alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_node_turns_glibcs_thread_caches_off_unless_the_operator_chose() {
    let tunables = |process: &Process| {
        let environ = std::fs::read(format!("/proc/{}/environ", process.child.id())).unwrap();
        environ
            .split(|&b| b == 0)
            .find_map(|var| var.strip_prefix(b"GLIBC_TUNABLES="))
            .map(|value| String::from_utf8_lossy(value).into_owned())
    };
    let default = Process::start_without_env(&["GLIBC_TUNABLES"]);
    assert_eq!(
        tunables(&default).as_deref(),
        Some("glibc.malloc.tcache_count=0")
    );
    let chosen = Process::start_with_env(&[], &[("GLIBC_TUNABLES", "")]);
    assert_eq!(tunables(&chosen).as_deref(), Some(""));
}

/// The node asks for an accept queue of 4,096 (tokio's default of 1,024 overflowed in load
/// test ramps); the kernel grants at most `net.core.somaxconn`. For a listening socket, `ss`
/// shows the queue's size as Send-Q.
#[cfg(target_os = "linux")]
#[test]
fn the_listener_asks_for_a_deep_accept_queue() {
    let process = Process::start(&[]);
    let port = process.addr.rsplit(':').next().unwrap();
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("`ss` not found: install iproute2 (scripts/test does)");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let backlog: u32 = line
        .split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket on port {port} in {line:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(backlog, somaxconn.min(4096), "{line}");
}

#[tokio::test]
async fn sigint_with_no_sessions_exits_0_promptly() {
    let process = Process::start(&[]);
    process.signal("-INT");
    let status = tokio::task::spawn_blocking(move || process.wait(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Runs the binary expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let child = spawn_binary(args, env);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {:?}",
        out.status
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let file_arg = file.to_str().unwrap();

    std::fs::write(&file, "[limits]\nmax_message_bytes = -5\n").unwrap();
    let err = refused(&["--config", file_arg], &[]);
    assert!(err.contains("limits.max_message_bytes"), "{err}");

    std::fs::write(&file, "[heartbeat]\ninterval_ms = 0\n").unwrap();
    let err = refused(&["--config", file_arg], &[]);
    assert!(err.contains("heartbeat.interval_ms"), "{err}");

    std::fs::write(&file, "[limits]\nbogus_limit = 1\n").unwrap();
    let err = refused(&["--config", file_arg], &[]);
    assert!(err.contains("bogus_limit"), "{err}");

    std::fs::write(&file, "this is not toml = = =\n").unwrap();
    let err = refused(&["--config", file_arg], &[]);
    assert!(err.contains("bad.toml"), "{err}");

    let err = refused(&["--config", "/nonexistent/roomcast.toml"], &[]);
    assert!(err.contains("/nonexistent/roomcast.toml"), "{err}");

    // figment names an environment key as the variable spells it, upper case.
    let err = refused(&[], &[("ROOMCAST_LIMITS__OUTBOUND_QUEUE", "lots")]);
    assert!(
        err.to_lowercase().contains("limits.outbound_queue"),
        "{err}"
    );

    let err = refused(&[], &[("ROOMCAST_WORKER_THREADS", "5000")]);
    assert!(err.contains("worker_threads"), "{err}");

    let err = refused(&[], &[("ROOMCAST_HISTORY__SIZE", "5000")]);
    assert!(err.contains("limits.outbound_queue"), "{err}");

    // The port is taken: the message names `listen`.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = refused(&["--listen", &addr], &[]);
    assert!(err.contains("listen"), "{err}");
}

/// Kubernetes sets `ROOMCAST_PORT=tcp://…`, `ROOMCAST_SERVICE_HOST` and the like for a Service
/// named roomcast. The node starts anyway, serves, and warns naming the variables it ignored;
/// before, it exited with code 2 ("unknown field `port`") and the pod crash-looped.
#[test]
fn kubernetes_service_variables_are_ignored_with_a_warning_naming_them() {
    use std::io::{BufRead, BufReader};
    let mut child = spawn_binary(
        &["--listen", "127.0.0.1:0"],
        &[
            ("ROOMCAST_PORT", "tcp://10.96.0.12:8080"),
            ("ROOMCAST_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
            ("ROOMCAST_SERVICE_HOST", "10.96.0.12"),
            ("ROOMCAST_SERVICE_PORT", "8080"),
            ("ROOMCAST_LIMITS__INBOUND_BURST", "7"),
            ("RUST_LOG", "warn"),
        ],
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().strip_prefix("roomcast listening on ");
    let addr = addr
        .unwrap_or_else(|| panic!("did not start: {line:?}"))
        .to_owned();
    let health = std::process::Command::new("curl")
        .args(["-fsS", &format!("http://{addr}/healthz")])
        .output()
        .expect("running curl");
    assert!(health.status.success(), "{health:?}");
    child.kill().unwrap();
    let mut warned = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        warned.push_str(&line.unwrap());
    }
    child.wait().unwrap();
    for name in [
        "ROOMCAST_PORT",
        "ROOMCAST_SERVICE_HOST",
        "ROOMCAST_PORT_8080_TCP",
    ] {
        assert!(warned.contains(name), "{name} not named: {warned}");
    }
    assert!(
        !warned.contains("INBOUND_BURST"),
        "a real key is not unknown: {warned}"
    );
}

/// At `info`, every closed connection gets one line with the client's address, the user, how
/// long it lasted and the close code; a crowd closing at once gets at most the log budget
/// (a burst of 200, then 50 a second), and the next line written reports how many were left
/// out. Before, `info` said nothing of connections, abuse closes included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_are_logged_at_info_within_a_budget() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};
    let mut child = spawn_binary(
        &["--listen", "127.0.0.1:0", "--log-json"],
        &[
            ("RUST_LOG", "info"),
            ("ROOMCAST_LIMITS__CONNECT_RATE_PER_IP", "100000"),
            ("ROOMCAST_LIMITS__CONNECT_BURST_PER_IP", "100000"),
            ("ROOMCAST_LIMITS__MAX_CONNECTIONS_PER_IP", "100000"),
        ],
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("roomcast listening on ")
        .unwrap()
        .to_owned();
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(json) = serde_json::from_str(&line) {
                sink.lock().unwrap().push(json);
            }
        }
    });
    let closes = |lines: &Arc<Mutex<Vec<serde_json::Value>>>| -> Vec<serde_json::Value> {
        let lines = lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l["fields"]["message"] == "connection closed")
            .cloned()
            .collect()
    };
    let wait_for = |n: usize| {
        let lines = lines.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while closes(&lines).len() < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "only {:?}",
                    closes(&lines)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let url = |user: &str| format!("ws://{addr}/ws?user={user}");
    let mut abuser = Client::connect(&url("abuser")).await;
    abuser.send_text("not json").await;
    abuser
        .send_message(tokio_tungstenite::tungstenite::Message::Binary(
            vec![0x80; 3].into(),
        ))
        .await;
    drop(abuser);
    wait_for(1).await;
    let first = closes(&lines)[0].clone();
    assert_eq!(first["fields"]["user"], "abuser", "{first}");
    assert_eq!(first["fields"]["peer"], "127.0.0.1", "{first}");
    assert!(first["fields"]["secs"].as_f64().is_some(), "{first}");

    // A crowd of 400 connections closing at once: the budget's burst, not 400 lines.
    let started = std::time::Instant::now();
    let mut crowd = Vec::new();
    for i in 0..400 {
        crowd.push(Client::connect(&url(&format!("c{i}"))).await);
    }
    drop(crowd);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let logged = closes(&lines).len() - 1;
    let allowed = 200 + (50.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        logged < 400 && logged <= allowed,
        "{logged} lines, allowed {allowed}"
    );
    // The next line reports what was left out.
    let last = Client::connect(&url("last")).await;
    drop(last);
    wait_for(logged + 2).await;
    let report = closes(&lines).last().unwrap().clone();
    assert_eq!(report["fields"]["user"], "last", "{report}");
    assert!(
        report["fields"]["suppressed"].as_u64().unwrap() > 0,
        "{report}"
    );
    println!(
        "a crowd of 400 closes logged {logged} lines; the next reported {}",
        report["fields"]["suppressed"]
    );
    let _ = child.kill();
    let _ = child.wait();
}
