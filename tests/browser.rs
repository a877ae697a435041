//! The demo page and the browser client in a real browser: headless Chromium (Debian's
//! `chromium`) driven by playwright-core (`clients/js/node_modules`) runs
//! `clients/js/e2e/chat.e2e.mjs` against haproxy in front of two roomcast processes sharing one
//! Redis. Two pages chat in one room; the instance one page is on restarts while that page is
//! cut off and the other page keeps chatting; the page comes back, resumes, and shows every
//! message with no gap. A screenshot of the demo is saved to `target/artifacts/demo.png`
//! (and to `docs/demo.png` with `ROOMCAST_UPDATE_DOCS_SCREENSHOT=1`).
//!
//! The script asks this test to restart a node by printing `@@restart <node-id>`; the test
//! drains it (SIGTERM), starts it again on the same port and answers `@@restarted <node-id>`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::haproxy::Haproxy;
use common::redis::{RedisServer, redis_env, unique_prefix};
use common::wait_ready;

/// The whole browser run's bound (it takes about 10 s).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);
const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_chat_in_chromium_survives_a_node_restart_behind_the_balancer() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    require_browser_tools(&js);

    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let mut env: Vec<(String, String)> = redis_env(&redis, &prefix)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    // Drained clients come back within a second. A page cut off from the network cannot answer
    // the close handshake, so the drain waits out its grace: keep that short.
    env.push(("ROOMCAST_RECONNECT_SPREAD_MS".into(), "1000".into()));
    env.push(("ROOMCAST_SHUTDOWN_GRACE_MS".into(), "1500".into()));
    let mut nodes: HashMap<String, Node> = ["n1", "n2"]
        .into_iter()
        .map(|id| (id.to_owned(), Node::start(id, free_port(), &env)))
        .collect();
    for node in nodes.values() {
        wait_ready(&node.base(), 200).await;
    }
    let mut backends: Vec<String> = nodes.values().map(|n| n.addr()).collect();
    backends.sort();
    let lb = Haproxy::start(&backends);
    wait_ready(&lb.base(), 200).await;

    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("demo.png");
    let _ = std::fs::remove_file(&screenshot);

    let mut cmd = Command::new("node");
    cmd.arg("e2e/chat.e2e.mjs")
        .current_dir(&js)
        .env("ROOMCAST_LB_URL", lb.base())
        .env("ROOMCAST_CHROMIUM", CHROMIUM)
        .env("ROOMCAST_SCREENSHOT", &screenshot);
    let (ok, output) = tokio::task::spawn_blocking(move || {
        let result = run_script(cmd, &mut nodes, SCRIPT_TIMEOUT);
        drop(nodes);
        result
    })
    .await
    .unwrap();
    println!("{output}");
    assert!(ok, "chat.e2e.mjs failed; its output is above");
    let png = std::fs::read(&screenshot).expect("the script saved no screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} is not a real screenshot",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());
    if std::env::var_os("ROOMCAST_UPDATE_DOCS_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/demo.png");
        std::fs::write(&docs, &png).unwrap();
        println!("updated {}", docs.display());
    }
}

/// permessage-deflate in the browser: the unchanged demo page on a node per compression mode
/// (`clients/js/e2e/deflate.e2e.mjs`): Chromium's handshake negotiates it (seen through the
/// DevTools protocol) and two pages chat with short and long lines, the long ones sent to the
/// pages compressed (the node's `roomcast_deflate_frames_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_negotiates_permessage_deflate_in_chromium_and_chats() {
    use roomcast::config::CompressionMode;
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    require_browser_tools(&js);
    let node = |mode| {
        common::TestServer::with(move |c| {
            c.compression.enabled = true;
            c.compression.mode = mode;
        })
    };
    let shared = node(CompressionMode::Shared).await;
    let context = node(CompressionMode::Context).await;
    let urls = format!("shared={},context={}", shared.url(""), context.url(""));
    let mut cmd = Command::new("node");
    cmd.arg("e2e/deflate.e2e.mjs")
        .current_dir(&js)
        .env("ROOMCAST_DEFLATE_URLS", urls)
        .env("ROOMCAST_CHROMIUM", CHROMIUM);
    let (ok, output) =
        tokio::task::spawn_blocking(move || run_script(cmd, &mut HashMap::new(), SCRIPT_TIMEOUT))
            .await
            .unwrap();
    println!("{output}");
    assert!(ok, "deflate.e2e.mjs failed; its output is above");
    // The long lines went to the pages compressed: once per line in `shared` mode, once per
    // page and line in `context` mode. (Both nodes run in this process and share its metrics
    // registry, which keeps the modes apart.)
    let metrics = reqwest::get(shared.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (mode, least) in [("shared", 2.0), ("context", 4.0)] {
        let label = format!("mode=\"{mode}\"}}");
        let compressed: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("roomcast_deflate_frames_total{"))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| series.ends_with(&label))
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum();
        assert!(
            compressed >= least,
            "{mode}: {compressed} frames compressed, expected at least {least}\n{metrics}"
        );
    }
    shared.shutdown().await.unwrap();
    context.shutdown().await.unwrap();
}

/// Where test artifacts go: `<target dir>/artifacts`.
fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target tmp dir has a parent")
        .join("artifacts")
}

/// Fails (never skips) when the browser, Node or playwright-core is missing.
fn require_browser_tools(js: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} not found: this test needs Debian's chromium; `scripts/test` installs it \
         (apt-get install chromium)"
    );
    common::require_node();
    assert!(
        js.join("node_modules/playwright-core/package.json")
            .exists(),
        "clients/js/node_modules/playwright-core is missing: `scripts/test` runs `npm ci` in \
         clients/js (or run it by hand)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A roomcast process on a fixed port, so the balancer's backend stays valid across restarts.
struct Node {
    id: String,
    port: u16,
    env: Vec<(String, String)>,
    child: Child,
}

impl Node {
    fn start(id: &str, port: u16, env: &[(String, String)]) -> Self {
        let child = spawn_node(id, port, env);
        Self {
            id: id.to_owned(),
            port,
            env: env.to_vec(),
            child,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Drains (SIGTERM: goaway, close 1001), waits for the exit, starts again on the same port.
    fn restart(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not drain in 15 s",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(exit.success(), "{} exited with {exit} on SIGTERM", self.id);
        // The listening port may take a moment to be free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "port {} stayed busy", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = spawn_node(&self.id, self.port, &self.env);
        wait_ready_blocking(&self.addr());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary and waits for its "listening" line (logs discarded).
fn spawn_node(id: &str, port: u16, env: &[(String, String)]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--node-id", id])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        // Where no config/default.toml exists, so only what the test gives applies.
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning roomcast");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("roomcast listening on "),
        "{id}: unexpected first line {line:?}"
    );
    child
}

/// Polls `GET /readyz` with a plain HTTP/1.0 request until 200 (from a blocking thread).
fn wait_ready_blocking(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = std::net::TcpStream::connect(addr)
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n")?;
                let mut head = [0u8; 12];
                s.read_exact(&mut head)?;
                Ok(head.ends_with(b"200"))
            })
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the script in its own process group, serving its `@@restart` requests; kills the whole
/// group if it outlives `limit`. Returns whether it succeeded and everything it printed.
fn run_script(
    mut cmd: Command,
    nodes: &mut HashMap<String, Node>,
    limit: Duration,
) -> (bool, String) {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning node");
    // Whatever happens (a failed restart panics), the script and its browser do not outlive us.
    let _group = KillGroup(child.id());
    let mut stdin: ChildStdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    drop(tx);

    let deadline = Instant::now() + limit;
    let mut output = String::new();
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
                if let Some(id) = line.strip_prefix("@@restart ") {
                    let node = nodes
                        .get_mut(id.trim())
                        .unwrap_or_else(|| panic!("the script asked to restart unknown {id:?}"));
                    let started = Instant::now();
                    node.restart();
                    output.push_str(&format!(
                        "[browser.rs] restarted {} in {:?}\n",
                        node.id,
                        started.elapsed()
                    ));
                    writeln!(stdin, "@@restarted {}", node.id).expect("writing to the script");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        kill_group(child.id());
        output.push_str(&format!("[browser.rs] killed: no end within {limit:?}\n"));
    }
    let status = child.wait().unwrap();
    let errors = errors.join().unwrap();
    if !errors.is_empty() {
        output.push_str("--- stderr ---\n");
        output.push_str(&errors);
    }
    (!timed_out && status.success(), output)
}

/// Kills a process group when dropped.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(leader: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{leader}")])
        .stderr(Stdio::null())
        .status();
}
