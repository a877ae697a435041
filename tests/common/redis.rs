//! A private `redis-server` per test: a free loopback port, no persistence (or, from
//! [`RedisServer::start_persistent`], an append-only file in a temp dir), killed on drop.
//! Never the machine's shared 6379, so tests can SIGKILL and restart it at will.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Where a persistent server keeps its append-only file; `None`: nothing is kept.
    dir: Option<tempfile::TempDir>,
}

/// A key prefix no other test (or test run) shares.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self::start_unspawned();
        server.spawn();
        server
    }

    /// A server with AOF on (`appendfsync always`, so even a SIGKILL loses nothing acked) in
    /// its own temp dir: [`Self::restart`] brings back what it held.
    pub fn start_persistent() -> Self {
        let mut server = Self::start_unspawned();
        server.dir = Some(tempfile::tempdir().expect("a temp dir for the AOF"));
        server.spawn();
        server
    }

    fn start_unspawned() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            port,
            child: None,
            dir: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--protected-mode", "no"]);
        match &self.dir {
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir.path()),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start redis-server ({err}): this test needs it on PATH; \
                     `scripts/test` installs it (apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server logs that it accepts connections.
    fn wait_ready(&mut self) {
        let stdout = self.child.as_mut().unwrap().stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("redis-server did not become ready within 10 s");
    }

    /// SIGKILL: Redis vanishes mid-traffic, taking everything it held.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: Redis hangs with its sockets open, as under a long fork or a stuck disk.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {}", child.id());
    }

    /// Starts Redis again on the same port: fresh and empty, or (persistent) with what its AOF
    /// kept.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        // The port may linger for a moment after the kill.
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "port {} stayed busy", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spawn();
    }

    /// Runs one command and returns its reply.
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// How many times Redis has run any of `commands` (lower case, as `INFO commandstats`
    /// names them) since it started.
    pub async fn command_calls(&self, commands: &[&str]) -> u64 {
        let stats: String = self.query(&["INFO", "commandstats"]).await;
        stats
            .lines()
            .filter_map(|l| l.strip_prefix("cmdstat_")?.split_once(':'))
            .filter(|(name, _)| commands.contains(name))
            .filter_map(|(_, fields)| {
                fields
                    .split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Points `config` at `redis` under `prefix`, with short timings so tests stay quick.
pub fn use_redis(config: &mut roomcast::Config, redis: &RedisServer, prefix: &str) {
    config.redis.url = redis.url();
    redis_broker_for_tests(config, prefix);
}

/// The Redis broker under `prefix`, with a short presence lease and unsubscribe delay.
pub fn redis_broker_for_tests(config: &mut roomcast::Config, prefix: &str) {
    config.broker = roomcast::config::BrokerKind::Redis;
    config.redis.prefix = prefix.to_owned();
    config.redis.presence_lease_ms = 1_500;
    config.redis.unsubscribe_delay_ms = 100;
}

/// The same settings as environment variables, for node processes.
pub fn redis_env(redis: &RedisServer, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ROOMCAST_BROKER", "redis".into()),
        ("ROOMCAST_REDIS__URL", redis.url()),
        ("ROOMCAST_REDIS__PREFIX", prefix.to_owned()),
        ("ROOMCAST_REDIS__PRESENCE_LEASE_MS", "1500".into()),
        ("ROOMCAST_REDIS__UNSUBSCRIBE_DELAY_MS", "100".into()),
        ("ROOMCAST_LIMITS__INBOUND_RATE_PER_SEC", "100000".into()),
        ("ROOMCAST_LIMITS__INBOUND_BURST", "100000".into()),
        ("ROOMCAST_LIMITS__CONNECT_RATE_PER_IP", "100000".into()),
        ("ROOMCAST_LIMITS__CONNECT_BURST_PER_IP", "100000".into()),
        // Behind haproxy every client has the balancer's address.
        (
            "ROOMCAST_LIMITS__MAX_PENDING_CONNECTIONS_PER_IP",
            "100000".into(),
        ),
    ]
}
