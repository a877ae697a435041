//! Node configuration: defaults → `config/default.toml` (or `--config FILE`) → `ROOMCAST_…`
//! environment variables → command-line flags, each layer overriding the one before.
//!
//! Every field documents its default and why it has that value; `config/default.toml` repeats
//! them for operators. Errors always name the offending key. Each `[section]` is its own file:
//! its struct, defaults and checks together; this file holds the top-level keys, the layering
//! and the checks that relate sections. Validation does no I/O.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod api;
mod auth;
mod compression;
mod heartbeat;
mod history;
mod limits;
mod rebalance;
mod redis;
mod socket;
#[cfg(test)]
mod tests;

pub use api::Api;
pub use auth::{Auth, HsSecret, JwtAlgorithm, no_key_file};
pub use compression::{Compression, CompressionMode};
pub use heartbeat::Heartbeat;
pub use history::History;
pub use limits::Limits;
pub use rebalance::Rebalance;
pub use redis::Redis;
pub use socket::{MAX_READ_BUFFER_BYTES, Socket};

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
    /// Connections from `trusted_proxies` open with a PROXY protocol header (v1 or v2, told
    /// apart by signature; haproxy `send-proxy`/`send-proxy-v2`), whose source address is then
    /// the peer for everything after: the pending-connection cap, per-IP limits, logs. A
    /// connection from such a peer without a valid header within `limits.header_timeout_ms` is
    /// closed; `X-Forwarded-For` is then read only if that source is itself a trusted proxy.
    /// Other peers are never asked for one, so a client cannot name an address. Default false:
    /// a node behind no proxy, or one that sends `X-Forwarded-For`. Needs `trusted_proxies`.
    pub proxy_protocol: bool,
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
    pub rebalance: Rebalance,
    pub history: History,
    pub socket: Socket,
    pub redis: Redis,
    pub auth: Auth,
    pub api: Api,
    pub compression: Compression,
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
            proxy_protocol: false,
            worker_threads: 0,
            limits: Limits::default(),
            heartbeat: Heartbeat::default(),
            compression: Compression::default(),
            rebalance: Rebalance::default(),
            history: History::default(),
            socket: Socket::default(),
            redis: Redis::default(),
            auth: Auth::default(),
            api: Api::default(),
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

    /// Checks what serde cannot: ranges and relations between fields. No I/O: the key file of
    /// `[auth]` is read by `auth::Verifier::new` when the node starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        self.heartbeat.validate()?;
        self.rebalance.validate()?;
        self.history.validate()?;
        self.socket.validate()?;
        self.auth.validate()?;
        self.api.validate()?;
        self.compression.validate()?;
        if self.broker == BrokerKind::Redis {
            self.redis.validate()?;
        }
        self.validate_between_sections()?;
        self.validate_top_level()
    }

    fn validate_between_sections(&self) -> Result<(), ConfigError> {
        let (l, h) = (&self.limits, &self.history);
        // A resume replays up to a room's whole history while a live message may be queued.
        let needed = h.max_room_bytes + 2 * l.max_message_bytes;
        if l.outbound_queue_bytes < needed {
            return Err(ConfigError::Invalid {
                key: "limits.outbound_queue_bytes",
                reason: format!(
                    "must be at least history.max_room_bytes + 2 x limits.max_message_bytes \
                     ({needed}) so a full resume replay fits"
                ),
            });
        }
        if l.outbound_queue <= h.size {
            return Err(ConfigError::Invalid {
                key: "limits.outbound_queue",
                reason: format!(
                    "must be greater than history.size ({}) so a full resume replay fits",
                    h.size
                ),
            });
        }
        Ok(())
    }

    fn validate_top_level(&self) -> Result<(), ConfigError> {
        if let Err(reason) = crate::net::parse_ranges(&self.trusted_proxies) {
            return Err(ConfigError::Invalid {
                key: "trusted_proxies",
                reason,
            });
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Err(ConfigError::Invalid {
                key: "proxy_protocol",
                reason: "PROXY headers are read only from `trusted_proxies`, which is empty; \
                         list the proxies' addresses"
                    .into(),
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
        if let Some(id) = &self.node_id {
            if !crate::protocol::valid_name(id) {
                return Err(ConfigError::Invalid {
                    key: "node_id",
                    reason: format!("must be {}", crate::protocol::NAME_RULE),
                });
            }
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// Checks `value > 0`.
fn positive(key: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid {
            key,
            reason: "must be greater than 0".into(),
        });
    }
    Ok(())
}
