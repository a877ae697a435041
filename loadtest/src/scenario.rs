//! Scenarios: what a run does, from a TOML file with command-line overrides on top. Validation
//! names the offending key. No I/O beyond reading the file.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::Credentials;
use crate::pad::PadKind;
use crate::target::{Target, TargetError};

/// One load test. Every field has a default, so a file only names what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Shown in reports. Default: the file name.
    pub name: String,
    /// Simulated users, one connection each. Default 50.
    pub users: u64,
    /// New connections per second over the whole run (all workers together). Default 500.
    pub ramp_per_sec: f64,
    /// Targets, `ws://` or `wss://`, on this machine or any other; users are spread over them
    /// round-robin.
    pub urls: Vec<String>,
    /// Length of the run after the ramp. Default 10 s. Users publish from their join until
    /// ramp + duration, then the run drains.
    pub duration_secs: f64,
    /// Longest wait, after publishing stops, for acks and deliveries in flight. Default 5 s.
    pub drain_secs: f64,
    /// Room layout, filled in order; users beyond the layout join no room (idle or direct only).
    pub rooms: Vec<RoomGroup>,
    /// Messages per second per publishing member. Default 1. Keep under the server's
    /// per-connection inbound rate (50/s by default).
    pub publish_per_sec: f64,
    /// Bytes of padding in each message's `data`. Default 64.
    pub message_bytes: usize,
    /// What the padding is: `"x"` repeated (default), `"words"` (chat text) or `"json"` (an
    /// array of chat-like records, whole records: a little over `message_bytes`). The last two
    /// compress like real traffic, for measuring permessage-deflate.
    pub pad: PadKind,
    /// Direct messages per second per user, to a random user on the same URL. Default 0.
    pub direct_per_sec: f64,
    /// Fraction of users (0–1) that disconnect once mid-run and resume with `since`/`epoch`.
    pub churn: f64,
    /// How long a churned user stays offline. Default 500 ms.
    pub churn_down_ms: u64,
    /// Reconnect to the next URL of `urls` rather than the same one. Default false. A cluster
    /// with a shared broker must recover the resume there; separate nodes cannot (their room
    /// histories differ), which the report shows as unrecovered resumes.
    pub resume_elsewhere: bool,
    /// Worker processes; 0 picks one per 15,000 users. Each process may hold at most 20,000
    /// open files, so 100k users need at least 6.
    pub workers: u32,
    /// Client source addresses 127.0.0.1..=127.0.0.N to spread sockets over (each has ~28k
    /// ephemeral ports). Default 1 (let the kernel choose). Above 1, every target must be on
    /// loopback: 127.0.0.N cannot reach another machine.
    pub source_ips: u32,
    /// Bound on one connection attempt (TCP + handshake). Default 5000 ms.
    pub connect_timeout_ms: u64,
    /// The node's HS256 `auth.secret`. Default none: users connect as `?user=`. When set, every
    /// connection sends a token for its user instead, as a node with authentication requires.
    pub jwt_secret: Option<String>,
    /// Accept any TLS certificate from `wss://` targets. Default false: certificates are
    /// verified against the system's roots (or `SSL_CERT_FILE`). For a self-signed staging
    /// front end on a network you trust only: an interceptor could read and change everything,
    /// tokens included.
    pub insecure: bool,
    /// Offer permessage-deflate (RFC 7692) on every connection. Default false. The report
    /// counts the connections whose server accepted, and wire bytes per delivery either way.
    pub deflate: bool,
}

/// `count` rooms of `size` members; the first `publishers` members of each publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomGroup {
    pub count: u64,
    pub size: u64,
    /// Publishing members per room. Default: all of them.
    #[serde(default)]
    pub publishers: Option<u64>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "unnamed".into(),
            users: 50,
            ramp_per_sec: 500.0,
            urls: vec!["ws://127.0.0.1:8080/ws".into()],
            duration_secs: 10.0,
            drain_secs: 5.0,
            rooms: vec![RoomGroup {
                count: 5,
                size: 10,
                publishers: None,
            }],
            publish_per_sec: 1.0,
            message_bytes: 64,
            pad: PadKind::X,
            direct_per_sec: 0.0,
            churn: 0.0,
            churn_down_ms: 500,
            resume_elsewhere: false,
            workers: 0,
            source_ips: 1,
            connect_timeout_ms: 5000,
            jwt_secret: None,
            insecure: false,
            deflate: false,
        }
    }
}

/// Why a scenario is unusable. Always names the file or key.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {path}: {message}")]
    Parse { path: String, message: String },
    #[error("scenario key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("scenario key `urls`: {0}")]
    Target(#[from] TargetError),
}

/// Command-line values that replace the scenario's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub users: Option<u64>,
    pub ramp_per_sec: Option<f64>,
    pub urls: Vec<String>,
    pub duration_secs: Option<f64>,
    pub drain_secs: Option<f64>,
    pub rooms: Option<u64>,
    pub room_size: Option<u64>,
    pub publish_per_sec: Option<f64>,
    pub message_bytes: Option<usize>,
    pub direct_per_sec: Option<f64>,
    pub churn: Option<f64>,
    pub churn_down_ms: Option<u64>,
    pub resume_elsewhere: Option<bool>,
    pub workers: Option<u32>,
    pub source_ips: Option<u32>,
    pub jwt_secret: Option<String>,
    pub insecure: Option<bool>,
    pub deflate: Option<bool>,
}

/// Most processes a run may spawn; also bounds what a scenario file can make this machine do.
pub const MAX_WORKERS: u32 = 64;
/// Users one worker process holds by default: under the 20,000 open-files cap with headroom.
pub const USERS_PER_WORKER: u64 = 15_000;
/// Hard cap on users per worker, from the open-files cap (20,000) minus headroom.
pub const MAX_USERS_PER_WORKER: u64 = 19_000;
/// How long a token outlives the run's planned end. The node closes a session whose token
/// expires (4001), which would read as a server fault; an hour covers any deadline overrun.
const TOKEN_MARGIN: Duration = Duration::from_secs(3600);

impl Scenario {
    /// Reads and validates a TOML scenario.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut scenario = Self::from_toml(&text).map_err(|e| match e {
            ScenarioError::Parse { message, .. } => ScenarioError::Parse {
                path: shown,
                message,
            },
            other => other,
        })?;
        if scenario.name == Scenario::default().name {
            if let Some(stem) = path.file_stem() {
                scenario.name = stem.to_string_lossy().into_owned();
            }
        }
        Ok(scenario)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: "<text>".into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Applies command-line overrides, then validates again.
    pub fn apply(&mut self, o: &Overrides) -> Result<(), ScenarioError> {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = o.$field { self.$field = v; } )* };
        }
        set!(
            users,
            ramp_per_sec,
            duration_secs,
            drain_secs,
            publish_per_sec,
            message_bytes,
            direct_per_sec,
            churn,
            churn_down_ms,
            resume_elsewhere,
            workers,
            source_ips,
            insecure,
            deflate
        );
        if !o.urls.is_empty() {
            self.urls = o.urls.clone();
        }
        if let Some(secret) = &o.jwt_secret {
            self.jwt_secret = Some(secret.clone());
        }
        if o.rooms.is_some() || o.room_size.is_some() {
            let first = self.rooms.first().cloned();
            let count = o.rooms.or(first.as_ref().map(|g| g.count)).unwrap_or(1);
            let size = o
                .room_size
                .or(first.as_ref().map(|g| g.size))
                .unwrap_or(self.users);
            self.rooms = vec![RoomGroup {
                count,
                size,
                publishers: None,
            }];
        }
        self.validate()
    }

    /// Checks ranges and targets; each error names its key. The first broken rule, in the
    /// order written below, is the one reported.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        self.validate_load()?;
        self.validate_connections()?;
        self.validate_rooms()?;
        self.validate_worker_share()
    }

    /// Users, rates, durations and message sizes.
    fn validate_load(&self) -> Result<(), ScenarioError> {
        first_broken(&[
            (
                (1..=1_000_000).contains(&self.users),
                "users",
                "must be between 1 and 1000000",
            ),
            (
                self.ramp_per_sec > 0.0 && self.ramp_per_sec <= 100_000.0,
                "ramp_per_sec",
                "must be > 0 and at most 100000",
            ),
            (
                self.duration_secs > 0.0 && self.duration_secs <= 86_400.0,
                "duration_secs",
                "must be > 0 and at most 86400",
            ),
            (
                (0.0..=600.0).contains(&self.drain_secs),
                "drain_secs",
                "must be between 0 and 600",
            ),
            (
                (0.0..=1000.0).contains(&self.publish_per_sec),
                "publish_per_sec",
                "must be between 0 and 1000",
            ),
            (
                (0.0..=1000.0).contains(&self.direct_per_sec),
                "direct_per_sec",
                "must be between 0 and 1000",
            ),
            (
                self.message_bytes <= 1 << 20,
                "message_bytes",
                "must be at most 1048576",
            ),
            (
                (0.0..=1.0).contains(&self.churn),
                "churn",
                "must be a fraction between 0 and 1",
            ),
            (
                self.churn_down_ms <= 600_000,
                "churn_down_ms",
                "must be at most 600000",
            ),
        ])
    }

    /// Worker processes, source addresses, connect timeout, authentication and targets.
    fn validate_connections(&self) -> Result<(), ScenarioError> {
        if self.workers > MAX_WORKERS {
            return Err(invalid("workers", format!("must be at most {MAX_WORKERS}")));
        }
        first_broken(&[
            (
                (1..=254).contains(&self.source_ips),
                "source_ips",
                "must be between 1 and 254",
            ),
            (
                (1..=120_000).contains(&self.connect_timeout_ms),
                "connect_timeout_ms",
                "must be between 1 and 120000",
            ),
            (
                !self.jwt_secret.as_deref().is_some_and(str::is_empty),
                "jwt_secret",
                "must not be empty (leave it out for a node without authentication)",
            ),
            (
                !self.urls.is_empty(),
                "urls",
                "needs at least one ws:// or wss:// URL",
            ),
        ])?;
        for url in &self.urls {
            Target::parse(url)?;
        }
        Ok(())
    }

    fn validate_rooms(&self) -> Result<(), ScenarioError> {
        for g in &self.rooms {
            first_broken(&[
                (
                    g.count > 0 && g.size > 0,
                    "rooms",
                    "`count` and `size` must be at least 1",
                ),
                (
                    g.publishers.is_none_or(|p| p <= g.size),
                    "rooms",
                    "`publishers` cannot exceed `size`",
                ),
            ])?;
        }
        Ok(())
    }

    /// Each worker process must stay under the open-files cap.
    fn validate_worker_share(&self) -> Result<(), ScenarioError> {
        let workers = self.worker_count();
        if self.users.div_ceil(u64::from(workers)) > MAX_USERS_PER_WORKER {
            return Err(invalid(
                "workers",
                format!(
                    "{workers} worker(s) for {} users exceeds {MAX_USERS_PER_WORKER} per process \
                     (open-files cap); raise `workers` or set it to 0",
                    self.users
                ),
            ));
        }
        Ok(())
    }

    /// The parsed targets (validated already).
    pub fn targets(&self) -> Result<Vec<Target>, TargetError> {
        self.urls.iter().map(|u| Target::parse(u)).collect()
    }

    /// Worker processes this run uses.
    pub fn worker_count(&self) -> u32 {
        if self.workers > 0 {
            self.workers
        } else {
            self.users
                .div_ceil(USERS_PER_WORKER)
                .clamp(1, u64::from(MAX_WORKERS)) as u32
        }
    }

    /// Token signing for `jwt_secret`, if set: tokens valid for ramp + duration + drain and a
    /// margin, counted from when each is made, so even a late reconnect's token outlasts the run.
    pub fn credentials(&self) -> Option<Credentials> {
        let run = Duration::from_secs_f64(self.ramp_secs() + self.duration_secs + self.drain_secs);
        self.jwt_secret
            .as_deref()
            .map(|secret| Credentials::hs256(secret, run + TOKEN_MARGIN))
    }

    /// Seconds the ramp takes to connect everyone.
    pub fn ramp_secs(&self) -> f64 {
        self.users as f64 / self.ramp_per_sec
    }

    /// Where user `index` sits in the room layout.
    pub fn placement(&self, index: u64) -> Option<Placement> {
        let mut base = 0;
        for (g, group) in self.rooms.iter().enumerate() {
            let slots = group.count * group.size;
            if index < base + slots {
                let j = index - base;
                // Round-robin over the group's rooms, so a partial ramp fills them evenly; the
                // diagonal shift puts consecutive members of a room on different URLs (users go
                // to URL `index % urls`), so every room spans the nodes instead of one node
                // owning whole rooms when the URL count divides the room count.
                let member = j / group.count;
                let room = (j % group.count + member) % group.count;
                return Some(Placement {
                    group: g,
                    room,
                    publishes: member < group.publishers.unwrap_or(group.size),
                });
            }
            base += slots;
        }
        None
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        key,
        message: message.into(),
    }
}

/// A validation rule: whether it holds, the key it is about, and what the key must be.
type Rule = (bool, &'static str, &'static str);

/// The error for the first rule that does not hold.
fn first_broken(rules: &[Rule]) -> Result<(), ScenarioError> {
    match rules.iter().find(|(holds, _, _)| !holds) {
        Some(&(_, key, message)) => Err(invalid(key, message)),
        None => Ok(()),
    }
}

/// A user's room and role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub group: usize,
    pub room: u64,
    pub publishes: bool,
}

#[cfg(test)]
mod tests;
