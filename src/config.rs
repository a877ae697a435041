//! Node configuration: defaults → `config/default.toml` (or `--config FILE`) → `ROOMCAST_…`
//! environment variables → command-line flags, each layer overriding the one before.
//!
//! Every field documents its default and why it has that value; `config/default.toml` repeats
//! them for operators. Errors always name the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The file read when no `--config` is given, relative to the working directory. Missing is fine.
pub const DEFAULT_FILE: &str = "config/default.toml";

/// Environment variables starting with this set configuration keys.
const ENV_PREFIX: &str = "ROOMCAST_";

/// Every key and section as a dotted path (`limits`, `limits.max_message_bytes`), read off the
/// defaults, so the list can never miss a field.
fn known_keys() -> std::collections::HashSet<String> {
    fn walk(prefix: &str, value: &serde_json::Value, keys: &mut std::collections::HashSet<String>) {
        let serde_json::Value::Object(fields) = value else {
            return;
        };
        for (name, value) in fields {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            walk(&key, value, keys);
            keys.insert(key);
        }
    }
    let mut keys = std::collections::HashSet::new();
    let defaults = serde_json::to_value(Config::default()).expect("the defaults serialize");
    walk("", &defaults, &mut keys);
    keys
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`: loopback until an operator opens it up.
    pub listen: SocketAddr,
    /// Identifies this node in `welcome` frames and logs. Default: `n-` and random hex.
    pub node_id: Option<String>,
    /// Which broker carries messages between nodes. Default `memory` (single node).
    pub broker: BrokerKind,
    /// Log output: `text` for people, `json` for collectors. Level comes from `RUST_LOG`.
    pub log_format: LogFormat,
    /// How long shutdown waits for sessions to flush and close. Default 10 s: long enough to
    /// drain full queues on a healthy network, short enough for orchestrators' kill timeouts.
    pub shutdown_grace_ms: u64,
    /// On shutdown each client is told to reconnect after a random delay up to this many
    /// milliseconds (`goaway` frame and close reason). Default 5000: a drained node's clients
    /// arrive at the others spread over seconds rather than all at once.
    pub reconnect_spread_ms: u64,
    /// Serve the demo chat page at `/`. Default true, for trying a node out; production
    /// configurations turn it off (config/production.toml). Needs `serve_client`.
    pub demo: bool,
    /// Load balancers and proxies in front of the node (`["10.0.0.0/8", "127.0.0.1"]`). From
    /// these peers only, the client's address is read from `X-Forwarded-For` (or `Forwarded`),
    /// and per-IP limits, logs and metrics use it; their connections are not held to
    /// `limits.max_pending_connections_per_ip`, which cannot know the client before the request.
    /// Default empty: every peer is the client, and a header naming another address is ignored.
    pub trusted_proxies: Vec<String>,
    /// Serve the browser client at `/roomcast.js`, so a web app can import the client that
    /// matches the node it talks to. Default true, production included: it is public code.
    pub serve_client: bool,
    /// Threads running connections. Default 0: one per core. One thread per node spends less
    /// CPU per delivery in chat-like traffic (no wake-ups across threads: 106,000 against
    /// 94,000 deliveries per CPU-second in docs/BENCHMARKS.md), so on a many-core machine
    /// several single-threaded nodes behind the load balancer can beat one wide node. Up to 1024.
    pub worker_threads: usize,
    pub limits: Limits,
    pub heartbeat: Heartbeat,
    pub history: History,
    pub socket: Socket,
    pub redis: Redis,
    pub auth: Auth,
    pub api: Api,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest inbound frame in bytes; larger ones close the socket with 1009. Default 64 KiB:
    /// chat payloads are small and a cap bounds what one client can make the node buffer.
    pub max_message_bytes: usize,
    /// Rooms one connection may be in at once. Default 100.
    pub max_rooms_per_connection: usize,
    /// Frames queued for one client before it is closed as a slow consumer (4000). Default 1024:
    /// absorbs bursts without letting one stalled reader hold unbounded memory.
    pub outbound_queue: usize,
    /// Bytes one client may hold (queued frames plus the write in progress) before it is closed
    /// as a slow consumer (4000). Default 1 MiB: a frame count alone let a stalled reader pin
    /// 1,024 unique 64 KiB direct messages, 64 MiB; shared room frames count in full too, since
    /// a stalled reader keeps them alive after everyone else has let go.
    pub outbound_queue_bytes: usize,
    /// A socket write that makes no progress this long closes the session with 4000. Default
    /// 10 s: a client whose TCP window stayed shut that long is gone or hostile, and its task
    /// keeps serving pings, reads and timers meanwhile.
    pub write_timeout_ms: u64,
    /// A message sent in fragments must be complete within this long, or the socket is closed
    /// with 1008. Default 10 s: a trickle of fragments would otherwise keep a half message
    /// buffered and the connection alive forever.
    pub message_timeout_ms: u64,
    /// Sustained inbound frames per second per connection (token bucket refill): messages, pings
    /// and pongs alike; a close is never limited. Default 50.
    pub inbound_rate_per_sec: u32,
    /// Inbound burst allowance (token bucket size). Default 100.
    pub inbound_burst: u32,
    /// Consecutive rate-limited frames after which the socket is closed with 4029. Default 100:
    /// a client that ignores `rate_limited` replies is misbehaving, not bursting.
    pub rate_limit_close_after: u32,
    /// Open connections from one IP address (429 `too_many_connections` beyond). Default 1000:
    /// room for a NAT full of users, not for one host exhausting the node.
    pub max_connections_per_ip: usize,
    /// New connections per second from one IP address, sustained (429 `connect_rate_limited`
    /// beyond). Default 50, with a burst of `connect_burst_per_ip`.
    pub connect_rate_per_ip: u32,
    /// Connection burst allowed from one IP address. Default 100.
    pub connect_burst_per_ip: u32,
    /// Open connections of one user across the whole cluster (429 `too_many_sessions`
    /// beyond). Default 20: several tabs and devices, not a bot farm.
    pub max_connections_per_user: usize,
    /// TCP connections from one IP that have not (yet) upgraded to a WebSocket: HTTP requests
    /// being read, API calls, idle keep-alives. Beyond it a new connection is answered 429 and
    /// closed at once. Default 128: a slowloris crowd from one address cannot hold the node's
    /// file descriptors, and a backend's keep-alive pool fits.
    pub max_pending_connections_per_ip: usize,
    /// How long a client may take to send a request's head (line and headers); the connection
    /// is closed after it. Default 10 s (hyper's own default of 30 s is off without a timer).
    pub header_timeout_ms: u64,
    /// Direct messages (`send`) per second per connection, sustained; past it `send` answers
    /// `rate_limited`. Default 10, with a burst of `direct_burst`: a chat user types far
    /// slower, and one connection cannot flood another user off.
    pub direct_rate_per_sec: u32,
    /// Direct-message burst per connection. Default 20.
    pub direct_burst: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Heartbeat {
    /// How often the server pings each client. Default 25 s: under the 30–60 s idle timeouts
    /// of common proxies and load balancers.
    pub interval_ms: u64,
    /// Silence (no frame of any kind) after which the socket is closed with 4008. Default 60 s:
    /// two missed pings plus slack.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct History {
    /// Messages kept per room for resume. Default 100.
    pub size: usize,
    /// How long a message stays in history, in seconds. Default 300: covers a phone switching
    /// networks or a laptop waking up.
    pub ttl_secs: u64,
    /// Bytes of history per room; the oldest messages go first past it. Default 512 KiB: 100
    /// chat lines are ~20 KiB, while 100 messages of 64 KiB would be 6.4 MiB per room. Both
    /// engines keep it (Redis in the room's log).
    pub max_room_bytes: usize,
    /// Bytes of history the whole node keeps (memory engine). Past it, the rooms published to
    /// least recently lose their history first, so their resumes answer `recovered: false`
    /// rather than the node growing. Default 256 MiB.
    pub max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Socket {
    /// Most bytes taken from the socket in one read. Default 1 KiB, at most 64 KiB. The read
    /// goes through a buffer on the stack; a socket keeps only a partial frame between reads,
    /// so an idle connection holds no read buffer at all. Larger frames still arrive, in more
    /// reads.
    pub read_buffer_bytes: usize,
    /// Most bytes the writer hands to one socket write (a vectored write of the queued frames'
    /// shared bytes, so nothing is copied or kept per socket, whatever this is). Default
    /// 16 KiB: with `write_delay_ms`, a delayed batch goes out in one write, where 4 KiB split
    /// it and cost a fifth more CPU (docs/BENCHMARKS.md).
    pub write_buffer_bytes: usize,
    /// How long the writer waits after the first queued frame before writing, to gather the
    /// frames that follow into the same `send()`. Default 0: write at once. A few milliseconds
    /// trade that much latency for fewer system calls when members receive many messages a
    /// second (a busy broadcast room); see docs/BENCHMARKS.md. Reads and pings go on during
    /// the wait; a close is acted on when it ends. At most 1000.
    pub write_delay_ms: u64,
}

impl Socket {
    pub fn write_delay(&self) -> Duration {
        Duration::from_millis(self.write_delay_ms)
    }
}

/// Who may connect. Off (anyone, user from `?user=`) unless `secret` or `public_key_file` is
/// set; then every connection needs a valid JWT whose `sub` is the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// `HS256` (shared `secret`), `RS256` or `ES256` (`public_key_file`). Default `HS256`.
    pub algorithm: JwtAlgorithm,
    /// Shared secret for HS256. Default empty (authentication off).
    pub secret: String,
    /// PEM public key for RS256/ES256. Default none.
    pub public_key_file: Option<PathBuf>,
    /// Longest token accepted, in bytes. Default 4096: real tokens are well under 1 KiB.
    pub max_token_bytes: usize,
    /// Clock skew tolerated on `exp` and `nbf`, seconds. Default 5.
    pub leeway_secs: u64,
    /// Origins browsers may connect from (`https://chat.example.com`). Default empty: any.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// The server API under `/api`, for the application's own backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    /// Keys accepted as `Authorization: Bearer <key>`. Default none: the API answers 401.
    pub keys: Vec<String>,
    /// Largest request body, bytes (413 beyond). Default 1 MiB.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive (408 beyond). Default 10 s: a body sent a
    /// byte at a time must not hold a connection forever.
    pub body_timeout_ms: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::HS256,
            secret: String::new(),
            public_key_file: None,
            max_token_bytes: 4096,
            leeway_secs: 5,
            allowed_origins: Vec::new(),
        }
    }
}

impl Auth {
    /// Whether connections must present a token.
    pub fn enabled(&self) -> bool {
        !self.secret.is_empty() || self.public_key_file.is_some()
    }
}

impl Default for Api {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            max_body_bytes: 1024 * 1024,
            body_timeout_ms: 10_000,
        }
    }
}

/// The Redis engine (`broker = "redis"`): several nodes sharing rooms through one Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redis {
    /// Where Redis listens. Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key and channel, so several clusters can share one Redis. Default
    /// `roomcast`.
    pub prefix: String,
    /// How long a node's presence entries live without a refresh. Default 15 s: the users of a
    /// crashed node vanish from presence (with `presence_leave`) within 4/3 of this.
    pub presence_lease_ms: u64,
    /// How long a room stays subscribed after its last local member left. Default 1 s: a
    /// member that reconnects at once does not cost an UNSUBSCRIBE/SUBSCRIBE pair.
    pub unsubscribe_delay_ms: u64,
    /// How long a Redis command may take before the request gets `unavailable`. Default 2 s.
    pub command_timeout_ms: u64,
    /// Seed nodes of a Redis Cluster (`["redis://10.0.0.1:7000", ...]`). Non-empty switches
    /// to cluster mode, where each room lives on the shard owning its slot and `url` is not
    /// used; the rest of the cluster is discovered from any seed that answers. Default empty:
    /// one Redis at `url`, the simpler setup until one Redis is the bottleneck.
    pub cluster_nodes: Vec<String>,
    /// Most publications (to any rooms) ordered by one script call. Default 128: a script
    /// call's fixed cost in Redis is paid once per batch, and a room's keys are updated once
    /// for all its publications in the batch (docs/BENCHMARKS.md has what that saves); 128
    /// bounds one call's work to well under a millisecond. 1 turns batching off (one script per publication). Up to 1024. Batches
    /// only form while calls are in flight, so an idle node never waits. Single Redis only:
    /// cluster mode always runs one script per publication (see docs/architecture.md).
    pub publish_batch_max: usize,
    /// Batch calls in flight at once per node. Default 2: the next batch gathers while one is
    /// answered, and a second keeps Redis busy during the round trip; more only makes the
    /// batches smaller. Up to 64.
    pub publish_batches_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            node_id: None,
            broker: BrokerKind::Memory,
            log_format: LogFormat::Text,
            shutdown_grace_ms: 10_000,
            reconnect_spread_ms: 5_000,
            demo: true,
            serve_client: true,
            trusted_proxies: Vec::new(),
            worker_threads: 0,
            limits: Limits::default(),
            heartbeat: Heartbeat::default(),
            history: History::default(),
            socket: Socket::default(),
            redis: Redis::default(),
            auth: Auth::default(),
            api: Api::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_rooms_per_connection: 100,
            outbound_queue: 1024,
            outbound_queue_bytes: 1024 * 1024,
            write_timeout_ms: 10_000,
            message_timeout_ms: 10_000,
            inbound_rate_per_sec: 50,
            inbound_burst: 100,
            rate_limit_close_after: 100,
            max_connections_per_ip: 1000,
            connect_rate_per_ip: 50,
            connect_burst_per_ip: 100,
            max_connections_per_user: 20,
            max_pending_connections_per_ip: 128,
            header_timeout_ms: 10_000,
            direct_rate_per_sec: 10,
            direct_burst: 20,
        }
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval_ms: 25_000,
            timeout_ms: 60_000,
        }
    }
}

impl Default for History {
    fn default() -> Self {
        Self {
            size: 100,
            ttl_secs: 300,
            max_room_bytes: 512 * 1024,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for Redis {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "roomcast".into(),
            presence_lease_ms: 15_000,
            unsubscribe_delay_ms: 1_000,
            command_timeout_ms: 2_000,
            cluster_nodes: Vec::new(),
            publish_batch_max: 128,
            publish_batches_in_flight: 2,
        }
    }
}

impl Default for Socket {
    fn default() -> Self {
        Self {
            read_buffer_bytes: 1024,
            write_buffer_bytes: 16 * 1024,
            write_delay_ms: 0,
        }
    }
}

/// Why a configuration was refused. The message always names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Overrides given as flags; `None` leaves the lower layers alone.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Loads every layer. `file` is `--config`; without it `config/default.toml` is read if present.
    /// `ROOMCAST_*` variables that name no configuration key are left out (see
    /// [`Self::unknown_env_vars`]): orchestrators set such variables themselves (Kubernetes
    /// sets `ROOMCAST_PORT=tcp://…` for a Service named roomcast), and refusing to start over
    /// them would be a crash loop. Unknown keys in a file are still an error.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let known = known_keys();
        let env = Env::prefixed(ENV_PREFIX)
            .split("__")
            // Keys are still in the variable's case here; figment lowercases them later.
            .filter(move |key| known.contains(&key.as_str().to_ascii_lowercase()));
        Self::load_with_env(file, overrides, env)
    }

    /// The `ROOMCAST_*` variables set now that name no configuration key; `load` leaves them
    /// out, and the node logs a warning naming them.
    pub fn unknown_env_vars() -> Vec<String> {
        let known = known_keys();
        let mut unknown: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| {
                name.strip_prefix(ENV_PREFIX).is_some_and(|key| {
                    let key = key.trim().to_ascii_lowercase().replace("__", ".");
                    !known.contains(&key)
                })
            })
            .collect();
        unknown.sort_unstable();
        unknown
    }

    fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: Env,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.is_file() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_FILE).is_file() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_FILE));
            }
            None => {}
        }
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &'static str, value: u64) -> Result<(), ConfigError> {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be greater than 0".into(),
                });
            }
            Ok(())
        }
        let l = &self.limits;
        positive("limits.max_message_bytes", l.max_message_bytes as u64)?;
        positive(
            "limits.max_rooms_per_connection",
            l.max_rooms_per_connection as u64,
        )?;
        positive("limits.outbound_queue", l.outbound_queue as u64)?;
        positive("limits.inbound_rate_per_sec", l.inbound_rate_per_sec.into())?;
        positive("limits.inbound_burst", l.inbound_burst.into())?;
        positive(
            "limits.rate_limit_close_after",
            l.rate_limit_close_after.into(),
        )?;
        positive(
            "limits.max_connections_per_ip",
            l.max_connections_per_ip as u64,
        )?;
        positive("limits.connect_rate_per_ip", l.connect_rate_per_ip.into())?;
        positive("limits.connect_burst_per_ip", l.connect_burst_per_ip.into())?;
        positive(
            "limits.max_connections_per_user",
            l.max_connections_per_user as u64,
        )?;
        positive("limits.write_timeout_ms", l.write_timeout_ms)?;
        positive("limits.message_timeout_ms", l.message_timeout_ms)?;
        positive(
            "limits.max_pending_connections_per_ip",
            l.max_pending_connections_per_ip as u64,
        )?;
        positive("limits.header_timeout_ms", l.header_timeout_ms)?;
        positive("limits.direct_rate_per_sec", l.direct_rate_per_sec.into())?;
        positive("limits.direct_burst", l.direct_burst.into())?;
        positive("api.body_timeout_ms", self.api.body_timeout_ms)?;
        positive("history.max_room_bytes", self.history.max_room_bytes as u64)?;
        if self.history.max_bytes < self.history.max_room_bytes {
            return Err(ConfigError::Invalid {
                key: "history.max_bytes",
                reason: format!(
                    "must be at least history.max_room_bytes ({})",
                    self.history.max_room_bytes
                ),
            });
        }
        // A resume replays up to a room's whole history while a live message may be queued.
        let needed = self.history.max_room_bytes + 2 * l.max_message_bytes;
        if l.outbound_queue_bytes < needed {
            return Err(ConfigError::Invalid {
                key: "limits.outbound_queue_bytes",
                reason: format!(
                    "must be at least history.max_room_bytes + 2 x limits.max_message_bytes \
                     ({needed}) so a full resume replay fits"
                ),
            });
        }
        positive("auth.max_token_bytes", self.auth.max_token_bytes as u64)?;
        positive("api.max_body_bytes", self.api.max_body_bytes as u64)?;
        if self.api.keys.iter().any(|k| k.len() < 16) {
            return Err(ConfigError::Invalid {
                key: "api.keys",
                reason: "every key must be at least 16 characters".into(),
            });
        }
        positive("heartbeat.interval_ms", self.heartbeat.interval_ms)?;
        positive("history.ttl_secs", self.history.ttl_secs)?;
        positive(
            "socket.read_buffer_bytes",
            self.socket.read_buffer_bytes as u64,
        )?;
        if self.socket.read_buffer_bytes > crate::ws::MAX_READ_CHUNK {
            return Err(ConfigError::Invalid {
                key: "socket.read_buffer_bytes",
                reason: format!("must be at most {}", crate::ws::MAX_READ_CHUNK),
            });
        }
        positive(
            "socket.write_buffer_bytes",
            self.socket.write_buffer_bytes as u64,
        )?;
        if let Err(reason) = crate::net::parse_ranges(&self.trusted_proxies) {
            return Err(ConfigError::Invalid {
                key: "trusted_proxies",
                reason,
            });
        }
        if self.demo && !self.serve_client {
            return Err(ConfigError::Invalid {
                key: "serve_client",
                reason: "the demo page (demo = true) imports /roomcast.js; turn demo off too"
                    .into(),
            });
        }
        if self.worker_threads > 1024 {
            return Err(ConfigError::Invalid {
                key: "worker_threads",
                reason: "must be at most 1024 (0 = one per core)".into(),
            });
        }
        if self.socket.write_delay_ms > 1000 {
            return Err(ConfigError::Invalid {
                key: "socket.write_delay_ms",
                reason: "must be at most 1000 (a longer wait is a stalled socket)".into(),
            });
        }
        if self.heartbeat.timeout_ms <= self.heartbeat.interval_ms {
            return Err(ConfigError::Invalid {
                key: "heartbeat.timeout_ms",
                reason: format!(
                    "must be greater than heartbeat.interval_ms ({}), or every client times out",
                    self.heartbeat.interval_ms
                ),
            });
        }
        if self.limits.outbound_queue <= self.history.size {
            return Err(ConfigError::Invalid {
                key: "limits.outbound_queue",
                reason: format!(
                    "must be greater than history.size ({}) so a full resume replay fits",
                    self.history.size
                ),
            });
        }
        if self.broker == BrokerKind::Redis {
            self.redis.validate()?;
        }
        // Loads the key now, so a bad secret or key file stops start-up naming the key.
        crate::auth::Verifier::new(&self.auth)?;
        if let Some(id) = &self.node_id {
            if !crate::protocol::valid_name(id) {
                return Err(ConfigError::Invalid {
                    key: "node_id",
                    reason: "must be 1-128 characters of [A-Za-z0-9_.:@-]".into(),
                });
            }
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

impl Limits {
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
}

impl Api {
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}

impl Redis {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Err(err) = redis::Client::open(self.url.as_str()) {
            return Err(ConfigError::Invalid {
                key: "redis.url",
                reason: err.to_string(),
            });
        }
        for node in &self.cluster_nodes {
            if let Err(err) = redis::Client::open(node.as_str()) {
                return Err(ConfigError::Invalid {
                    key: "redis.cluster_nodes",
                    reason: format!("{node}: {err}"),
                });
            }
        }
        if !crate::protocol::valid_name(&self.prefix) {
            return Err(ConfigError::Invalid {
                key: "redis.prefix",
                reason: "must be 1-128 characters of [A-Za-z0-9_.:@-]".into(),
            });
        }
        if self.presence_lease_ms < 100 {
            return Err(ConfigError::Invalid {
                key: "redis.presence_lease_ms",
                reason: "must be at least 100".into(),
            });
        }
        if self.command_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "redis.command_timeout_ms",
                reason: "must be greater than 0".into(),
            });
        }
        in_range("redis.publish_batch_max", self.publish_batch_max, 1, 1024)?;
        in_range(
            "redis.publish_batches_in_flight",
            self.publish_batches_in_flight,
            1,
            64,
        )?;
        Ok(())
    }

    pub fn presence_lease(&self) -> Duration {
        Duration::from_millis(self.presence_lease_ms)
    }

    pub fn unsubscribe_delay(&self) -> Duration {
        Duration::from_millis(self.unsubscribe_delay_ms)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }
}

/// Checks `min <= value <= max`.
fn in_range(key: &'static str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            key,
            reason: format!("must be between {min} and {max}"),
        });
    }
    Ok(())
}

impl Heartbeat {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl History {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }
}

#[cfg(test)]
mod tests {
    // figment::Jail closures must return figment::Error, which is large; that is its API.
    #![allow(clippy::result_large_err)]
    use super::*;
    use std::io::Write;

    /// Loads `toml` as the config file with no environment layer.
    fn load(toml: &str) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Config::load_with_env(Some(file.path()), &Overrides::default(), no_env())
    }

    fn no_env() -> Env {
        Env::raw().only(&[])
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.limits.max_message_bytes, 65536);
        assert_eq!(c.heartbeat.interval_ms, 25_000);
        assert_eq!(c.history.size, 100);
        assert_eq!(c.history.ttl_secs, 300);
    }

    #[test]
    fn the_shipped_default_file_matches_the_code() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_FILE);
        let loaded = Config::load_with_env(Some(&path), &Overrides::default(), no_env()).unwrap();
        assert_eq!(loaded, Config::default());
    }

    #[test]
    fn file_values_override_defaults() {
        let c = load("[limits]\nmax_rooms_per_connection = 7\n").unwrap();
        assert_eq!(c.limits.max_rooms_per_connection, 7);
    }

    #[test]
    fn errors_name_the_key() {
        let err = load("[limits]\nmax_message_bytes = \"big\"\n").unwrap_err();
        assert!(
            err.to_string().contains("limits.max_message_bytes"),
            "{err}"
        );
        let err = load("[limits]\nmax_mesage_bytes = 5\n").unwrap_err();
        assert!(err.to_string().contains("max_mesage_bytes"), "{err}");
        let err = load("[heartbeat]\ninterval_ms = 100\ntimeout_ms = 50\n").unwrap_err();
        assert!(err.to_string().contains("heartbeat.timeout_ms"), "{err}");
        let err = load("[socket]\nwrite_delay_ms = 5000\n").unwrap_err();
        assert!(err.to_string().contains("socket.write_delay_ms"), "{err}");
        let err = load("[socket]\nread_buffer_bytes = 65537\n").unwrap_err();
        assert!(
            err.to_string().contains("socket.read_buffer_bytes"),
            "{err}"
        );
        let err = load("[socket]\nwrite_buffer_bytes = 0\n").unwrap_err();
        assert!(
            err.to_string().contains("socket.write_buffer_bytes"),
            "{err}"
        );
        for (toml, key) in [
            (
                "[limits]\noutbound_queue_bytes = 100000\n",
                "limits.outbound_queue_bytes",
            ),
            (
                "[limits]\nwrite_timeout_ms = 0\n",
                "limits.write_timeout_ms",
            ),
            (
                "[limits]\nmessage_timeout_ms = 0\n",
                "limits.message_timeout_ms",
            ),
            (
                "[limits]\nmax_pending_connections_per_ip = 0\n",
                "limits.max_pending_connections_per_ip",
            ),
            (
                "[limits]\nheader_timeout_ms = 0\n",
                "limits.header_timeout_ms",
            ),
            ("[limits]\ndirect_burst = 0\n", "limits.direct_burst"),
            ("[api]\nbody_timeout_ms = 0\n", "api.body_timeout_ms"),
            ("[history]\nmax_bytes = 1000\n", "history.max_bytes"),
            ("[history]\nmax_room_bytes = 0\n", "history.max_room_bytes"),
        ] {
            let err = load(toml).unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        let err = load("trusted_proxies = [\"10.0.0.0/40\"]\n").unwrap_err();
        assert!(err.to_string().contains("trusted_proxies"), "{err}");
        let err = load("serve_client = false\n").unwrap_err();
        assert!(err.to_string().contains("serve_client"), "{err}");
        let err = load("broker = \"carrier-pigeon\"\n").unwrap_err();
        assert!(err.to_string().contains("broker"), "{err}");
        let err = load("listen = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn publish_batching_values_are_checked() {
        let redis = |body: &str| load(&format!("broker = \"redis\"\n[redis]\n{body}\n"));
        let c = redis("publish_batch_max = 1\npublish_batches_in_flight = 4").unwrap();
        assert_eq!(c.redis.publish_batch_max, 1);
        assert_eq!(c.redis.publish_batches_in_flight, 4);
        for (body, key) in [
            ("publish_batch_max = 0", "redis.publish_batch_max"),
            ("publish_batch_max = 1025", "redis.publish_batch_max"),
            ("publish_batch_max = -1", "redis.publish_batch_max"),
            ("publish_batch_max = \"many\"", "redis.publish_batch_max"),
            (
                "publish_batches_in_flight = 0",
                "redis.publish_batches_in_flight",
            ),
            (
                "publish_batches_in_flight = 65",
                "redis.publish_batches_in_flight",
            ),
            ("publish_batch_window_us = 150", "publish_batch_window_us"),
        ] {
            let err = redis(body).unwrap_err();
            assert!(err.to_string().contains(key), "{body}: {err}");
        }
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "listen = \"127.0.0.1:1000\"\n[limits]\ninbound_burst = 5\n",
            )?;
            jail.set_env("ROOMCAST_LIMITS__INBOUND_BURST", "9");
            jail.set_env("ROOMCAST_LISTEN", "127.0.0.1:2000");
            let flags = Overrides {
                listen: Some("127.0.0.1:3000".parse().unwrap()),
                ..Overrides::default()
            };
            let c = Config::load(Some(Path::new("c.toml")), &flags).map_err(|e| e.to_string())?;
            assert_eq!(c.limits.inbound_burst, 9);
            assert_eq!(c.listen.port(), 3000);
            Ok(())
        });
    }

    #[test]
    fn environment_variables_that_name_no_key_are_left_out_and_reported() {
        figment::Jail::expect_with(|jail| {
            // What Kubernetes sets for a Service named roomcast.
            jail.set_env("ROOMCAST_PORT", "tcp://10.0.0.7:8080");
            jail.set_env("ROOMCAST_SERVICE_HOST", "10.0.0.7");
            jail.set_env("ROOMCAST_PORT_8080_TCP_ADDR", "10.0.0.7");
            jail.set_env("ROOMCAST_LIMITS__INBOUND_BURST", "9");
            jail.set_env("ROOMCAST_NODE_ID", "n-k8s");
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.limits.inbound_burst, 9);
            assert_eq!(
                c.node_id.as_deref(),
                Some("n-k8s"),
                "an Option field is a key too"
            );
            let unknown = Config::unknown_env_vars();
            for name in [
                "ROOMCAST_PORT",
                "ROOMCAST_PORT_8080_TCP_ADDR",
                "ROOMCAST_SERVICE_HOST",
            ] {
                assert!(unknown.iter().any(|u| u == name), "{unknown:?}");
            }
            assert!(
                !unknown
                    .iter()
                    .any(|u| u.contains("INBOUND_BURST") || u.contains("NODE_ID"))
            );
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Config::load(
            Some(Path::new("/nonexistent/roomcast.toml")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile(_)));
    }
}
