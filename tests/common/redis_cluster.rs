//! A private Redis Cluster per test: `redis-server --cluster-enabled yes` processes on free
//! loopback ports, each with its own directory (so a node restarted on its port reads its
//! `nodes.conf` back and rejoins with its identity and slots), no persistence, killed on drop.
//!
//! Masters split the 16384 slots in equal consecutive ranges (`CLUSTER ADDSLOTSRANGE`), meet
//! through `CLUSTER MEET`, and optional replicas follow the first master. The cluster runs with
//! `cluster-require-full-coverage no`, as roomcast's cluster mode needs: a dead master without
//! a replica then takes down its own slots only.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Milliseconds before a silent node is suspected, then failed (and a replica may take over).
/// Short for quick failovers, not so short that a loaded 2-core machine trips it.
pub const NODE_TIMEOUT_MS: u64 = 2_000;

pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
    masters: usize,
    _dir: tempfile::TempDir,
}

pub struct ClusterNode {
    pub port: u16,
    /// The cluster bus port, chosen free like `port`. Left to Redis it would be `port + 10000`,
    /// which does not exist for a port above 55535 (about one free port in six here: Redis
    /// then exits at start) and may belong to another process below it.
    bus_port: u16,
    pub id: String,
    dir: PathBuf,
    child: Option<Child>,
}

/// Two distinct free ports (a client port and a bus port): both listeners are held until both
/// are chosen, so the second cannot be the first again.
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// Times a new node is started on fresh ports when it exits at start: between choosing a free
/// port and Redis binding it, another test's outgoing connection can take it (seen in CI:
/// "did not become ready: Disconnected").
const START_ATTEMPTS: usize = 5;

impl ClusterNode {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("{why}");
        }
    }

    /// Starts the process; `Err` when it exited (or stayed silent) before it was ready.
    fn try_spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &self.bus_port.to_string()])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--cluster-require-full-coverage", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start redis-server ({err}): this test needs Redis 7 on PATH; \
                     `scripts/test` installs it (apt-get install redis-server)"
                )
            });
        let stdout = self.child.insert(child).stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10)).map_err(|err| {
            self.kill();
            format!(
                "redis-server (cluster mode) on ports {} / {} did not become ready within 10 s: {err}",
                self.port, self.bus_port
            )
        })
    }

    /// Runs one command on this node.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ClusterNode {
    /// A node started on free ports, chosen again when it could not start on them.
    fn on_fresh_ports(dir: PathBuf) -> Self {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            // A failed start may have written its identity there under the ports given up.
            let _ = std::fs::remove_file(dir.join("nodes.conf"));
            let (port, bus_port) = free_ports();
            let mut node = ClusterNode {
                port,
                bus_port,
                id: String::new(),
                dir: dir.clone(),
                child: None,
            };
            match node.try_spawn() {
                Ok(()) => return node,
                Err(why) => failures.push(why),
            }
        }
        panic!("{}", failures.join("; "))
    }
}

impl RedisCluster {
    /// `masters` masters sharing every slot, plus `replicas` replicas of master 0. Returns once
    /// every node reports `cluster_state:ok` and knows every other node.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..masters + replicas {
            let node_dir = dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut node = ClusterNode::on_fresh_ports(node_dir);
            node.id = node.query(&["CLUSTER", "MYID"]).unwrap();
            // Distinct config epochs up front, as redis-cli --cluster create does.
            let _: () = node
                .query(&["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()])
                .unwrap();
            nodes.push(node);
        }
        let per = 16384 / masters;
        for (i, node) in nodes.iter().take(masters).enumerate() {
            let first = i * per;
            let last = if i + 1 == masters {
                16383
            } else {
                first + per - 1
            };
            let _: () = node
                .query(&[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ])
                .unwrap();
        }
        for node in &nodes[1..] {
            let _: () = node
                .query(&[
                    "CLUSTER",
                    "MEET",
                    "127.0.0.1",
                    &nodes[0].port.to_string(),
                    &nodes[0].bus_port.to_string(),
                ])
                .unwrap();
        }
        let cluster = Self {
            nodes,
            masters,
            _dir: dir,
        };
        cluster.wait_until("every node knows every other", |c| {
            c.nodes.iter().all(|n| {
                n.query::<String>(&["CLUSTER", "NODES"])
                    .is_ok_and(|nodes| nodes.lines().count() == c.nodes.len())
            })
        });
        let master = cluster.nodes[0].id.clone();
        for replica in &cluster.nodes[masters..] {
            let _: () = replica.query(&["CLUSTER", "REPLICATE", &master]).unwrap();
        }
        // With require-full-coverage off, `cluster_state:ok` can come before a node has heard
        // of every slot assignment: wait for that too.
        cluster.wait_until(
            "every node sees every slot assigned and the cluster ok",
            |c| {
                c.nodes.iter().all(|n| {
                    n.query::<String>(&["CLUSTER", "INFO"]).is_ok_and(|info| {
                        info.contains("cluster_state:ok")
                            && info.contains("cluster_slots_assigned:16384")
                    })
                })
            },
        );
        cluster
    }

    /// Polls `check` every 50 ms for up to 15 s.
    pub fn wait_until(&self, what: &str, check: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "redis cluster: {what}: not within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The masters' URLs, as `redis.cluster_nodes`.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes[..self.masters].iter().map(|n| n.url()).collect()
    }

    /// The slot of `key` (its hash tag if it has one), as Redis computes it.
    pub fn slot(&self, key: &str) -> u16 {
        let slot: i64 = self.nodes[0].query(&["CLUSTER", "KEYSLOT", key]).unwrap();
        slot as u16
    }

    /// The index of the master that started with `slot` (its range from `start`).
    pub fn first_owner(&self, slot: u16) -> usize {
        (usize::from(slot) / (16384 / self.masters)).min(self.masters - 1)
    }

    /// A room name starting with `base` whose slot started on master `master`.
    pub fn room_on(&self, master: usize, base: &str) -> String {
        (0..)
            .map(|i| format!("{base}{i}"))
            .find(|room| self.first_owner(self.slot(room)) == master)
            .unwrap()
    }

    /// SIGKILL: the node vanishes with what it held; its `nodes.conf` stays.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its port, from its `nodes.conf`, empty of data.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(("127.0.0.1", node.port)).is_err() {
            assert!(Instant::now() < deadline, "port {} stayed busy", node.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        node.spawn();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// Points `config` at `cluster` under `prefix`, with short timings so tests stay quick.
pub fn use_cluster(config: &mut roomcast::Config, cluster: &RedisCluster, prefix: &str) {
    config.redis.cluster_nodes = cluster.seeds();
    super::redis::redis_broker_for_tests(config, prefix);
}
