//! The processes a campaign runs and hurts: `redis-server` (one, or the masters of a Redis
//! Cluster) and roomcast nodes, each on a fixed free loopback port so that a restarted process
//! comes back where its peers and clients look for it. Blocking calls; the campaign runs them
//! off its async threads.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ChaosError;
use super::resp;
use super::scenario::{ChaosScenario, RedisMode};

/// How long a process may take to become ready after a (re)start.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to drain and exit after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

pub fn free_port() -> Result<u16, ChaosError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| setup("free port", e))?;
    Ok(listener
        .local_addr()
        .map_err(|e| setup("free port", e))?
        .port())
}

fn setup(what: &str, e: impl std::fmt::Display) -> ChaosError {
    ChaosError::Setup(format!("{what}: {e}"))
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pid is our
    // unreaped child's, so it cannot name another process.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// One `redis-server` process.
pub struct RedisProc {
    pub port: u16,
    /// The cluster bus port, chosen free like `port`: Redis's default, `port + 10000`, does not
    /// exist above port 55535 (Redis then exits at start) and may be taken below it.
    bus_port: u16,
    dir: PathBuf,
    cluster: bool,
    child: Option<Child>,
}

impl RedisProc {
    fn new(base: &Path, name: &str, cluster: bool) -> Result<Self, ChaosError> {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| setup("redis dir", e))?;
        Ok(Self {
            port: free_port()?,
            bus_port: free_port()?,
            dir,
            cluster,
            child: None,
        })
    }

    fn start(&mut self) -> Result<(), ChaosError> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--protected-mode", "no", "--save", ""])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(&self.dir);
        if self.cluster {
            cmd.args(["--appendonly", "no", "--cluster-enabled", "yes"])
                .args(["--cluster-port", &self.bus_port.to_string()])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--cluster-require-full-coverage", "no"]);
        } else {
            // fsync on every write: a restart with persistence then keeps every ordered offset,
            // and the campaign tests roomcast, not the durability of `everysec`.
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        let log = File::create(self.dir.join("redis.log")).map_err(|e| setup("redis log", e))?;
        let child = cmd.stdout(log).stderr(Stdio::null()).spawn().map_err(|e| {
            setup(
                "starting redis-server (scripts/test installs it: apt-get install redis-server)",
                e,
            )
        })?;
        self.child = Some(child);
        let began = Instant::now();
        while began.elapsed() < START_TIMEOUT {
            if resp::command(self.port, &["PING"]).is_ok_and(|r| r == "PONG") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(setup(
            "redis-server",
            format!("not ready on {} after 20 s", self.port),
        ))
    }

    /// SIGKILL, reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port; without `keep_data` its data files are gone first (a
    /// cluster master keeps `nodes.conf`, so it rejoins with its identity and slots).
    pub fn restart(&mut self, keep_data: bool) -> Result<(), ChaosError> {
        self.kill();
        if !keep_data {
            let _ = std::fs::remove_dir_all(self.dir.join("appendonlydir"));
            let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        }
        self.start()
    }

    pub fn pause(&self, paused: bool) {
        if let Some(child) = &self.child {
            signal(child, if paused { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.pause(false);
        self.kill();
    }
}

/// The campaign's Redis: one server, or the three masters of a cluster.
pub struct Redis {
    pub shards: Vec<RedisProc>,
}

impl Redis {
    pub fn start(mode: RedisMode, dir: &Path) -> Result<Self, ChaosError> {
        let cluster = mode == RedisMode::Cluster;
        let count = if cluster { 3 } else { 1 };
        let mut shards = Vec::new();
        for i in 0..count {
            let mut shard = RedisProc::new(dir, &format!("redis{i}"), cluster)?;
            shard.start()?;
            shards.push(shard);
        }
        let redis = Self { shards };
        if cluster {
            redis.form_cluster()?;
        }
        Ok(redis)
    }

    /// Splits the slots in equal ranges, introduces the masters and waits until every one
    /// sees all the slots assigned.
    fn form_cluster(&self) -> Result<(), ChaosError> {
        let n = self.shards.len();
        for (i, shard) in self.shards.iter().enumerate() {
            let lo = (16_384 * i / n).to_string();
            let hi = (16_384 * (i + 1) / n - 1).to_string();
            resp::command(shard.port, &["CLUSTER", "ADDSLOTSRANGE", &lo, &hi])
                .map_err(|e| setup("CLUSTER ADDSLOTSRANGE", e))?;
        }
        for shard in &self.shards[1..] {
            let (port, bus) = (shard.port.to_string(), shard.bus_port.to_string());
            resp::command(
                self.shards[0].port,
                &["CLUSTER", "MEET", "127.0.0.1", &port, &bus],
            )
            .map_err(|e| setup("CLUSTER MEET", e))?;
        }
        let began = Instant::now();
        while began.elapsed() < START_TIMEOUT {
            let formed = self.shards.iter().all(|s| {
                resp::command(s.port, &["CLUSTER", "INFO"]).is_ok_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_assigned:16384")
                        && info.contains(&format!("cluster_known_nodes:{n}"))
                })
            });
            if formed {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(setup("redis cluster", "did not form within 20 s"))
    }
}

/// One roomcast node process.
pub struct Node {
    pub index: usize,
    pub port: u16,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn new(index: usize, bin: &Path, config: &Path, dir: &Path) -> Result<Self, ChaosError> {
        Ok(Self {
            index,
            port: free_port()?,
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
            log: dir.join(format!("node{index}.log")),
            child: None,
        })
    }

    /// Starts the node and waits for its "listening" line.
    pub fn start(&mut self) -> Result<(), ChaosError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| setup("node log", e))?;
        let mut child = Command::new(&self.bin)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--config")
            .arg(&self.config)
            .env("ROOMCAST_NODE_ID", format!("n{}", self.index))
            // No config/default.toml there: only the campaign's settings apply.
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| setup(&format!("starting {}", self.bin.display()), e))?;
        let stdout = child.stdout.take().expect("piped");
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(START_TIMEOUT).map_err(|_| {
            setup(
                "roomcast node",
                format!(
                    "n{} not listening after 20 s (log: {})",
                    self.index,
                    self.log.display()
                ),
            )
        })
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the drain to end (SIGKILL past [`DRAIN_TIMEOUT`]).
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, libc::SIGTERM);
        let began = Instant::now();
        while began.elapsed() < DRAIN_TIMEOUT {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The config file every node of a campaign runs with: its broker, short leases, and the
/// per-IP limits raised (every simulated user comes from 127.0.0.1). `redis_url` for a single
/// Redis, `seeds` for a cluster.
pub fn node_config(scenario: &ChaosScenario, redis_url: Option<&str>, seeds: &[String]) -> String {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"broker = "redis"
shutdown_grace_ms = 1000
reconnect_spread_ms = 500
demo = false

[limits]
max_connections_per_ip = 100000
connect_rate_per_ip = 100000
connect_burst_per_ip = 100000
max_pending_connections_per_ip = 100000

[redis]
url = "{url}"
cluster_nodes = [{seeds}]
prefix = "chaos"
presence_lease_ms = {lease}
command_timeout_ms = {timeout}
"#,
        url = redis_url.unwrap_or("redis://127.0.0.1:6379"),
        seeds = seeds.join(", "),
        lease = scenario.presence_lease_ms,
        timeout = scenario.command_timeout_ms,
    )
}
