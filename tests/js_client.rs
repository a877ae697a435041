//! The JavaScript client (`clients/js/roomcast.js`) against real servers: runs its `node --test`
//! suite (`clients/js/test/*.test.mjs`) with the servers' addresses in the environment, prints
//! the suite's output, and fails unless every test passed. No Node, or one too old, fails too.
//!
//! What the suite gets:
//! - `ROOMCAST_URL`: a server with authentication off and an API key (`ROOMCAST_API_KEY`);
//! - `ROOMCAST_AUTH_URL`: a server with HS256 authentication (`ROOMCAST_AUTH_SECRET`), no leeway;
//! - `ROOMCAST_BIN`: the roomcast binary, for tests that drain, kill and restart their own nodes
//!   (and a private `redis-server`).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;

const API_KEY: &str = "js-client-test-key";
const SECRET: &str = "a-js-client-test-secret-long-enough-0123456789";
/// The whole suite's bound; it takes about 15 s.
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_suite_passes_against_real_servers() {
    common::require_node();
    let server = TestServer::with(|c| c.api.keys = vec![API_KEY.into()]).await;
    let auth = TestServer::with(|c| {
        c.auth.secret = SECRET.into();
        c.auth.leeway_secs = 0;
    })
    .await;
    let dir = js_dir();
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .expect("clients/js/test")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("test/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no clients/js/test/*.test.mjs");

    let mut cmd = Command::new("node");
    cmd.args(["--experimental-websocket", "--test", "--test-reporter=spec"])
        .args(&files)
        .current_dir(&dir)
        .env("ROOMCAST_URL", server.url(""))
        .env("ROOMCAST_API_KEY", API_KEY)
        .env("ROOMCAST_AUTH_URL", auth.url(""))
        .env("ROOMCAST_AUTH_SECRET", SECRET)
        .env("ROOMCAST_BIN", env!("CARGO_BIN_EXE_roomcast"));
    let (status, output) = tokio::task::spawn_blocking(move || run_bounded(cmd, SUITE_TIMEOUT))
        .await
        .unwrap();
    println!("{output}");
    assert!(
        status.success(),
        "node --test failed ({status}); its output is above"
    );
    server.shutdown().await.unwrap();
    auth.shutdown().await.unwrap();
}

/// `clients/js` of this checkout.
fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js")
}

/// Runs `cmd` in its own process group and returns its status with its stdout, then its stderr;
/// kills the whole group (node and whatever it spawned) if it outlives `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> (ExitStatus, String) {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning node");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let status = wait_or_kill(&mut child, limit);
    // Anything the suite left running (it kills its own children on exit) goes with it.
    kill_group(child.id());
    let mut output = stdout.join().unwrap();
    let errors = stderr.join().unwrap();
    if !errors.trim().is_empty() {
        output.push_str("--- stderr ---\n");
        output.push_str(&errors);
    }
    (status, output)
}

fn wait_or_kill(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            kill_group(child.id());
            let _ = child.wait();
            panic!("node --test did not finish within {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_group(leader: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{leader}")])
        .stderr(Stdio::null())
        .status();
}
