//! `[proxy]`: the application's backend in the loop. HTTP JSON calls the node makes before it
//! lets a connection in (`connect`), a session into a room (`join`) or a message out
//! (`publish`), each signed with `secret`. Not to be confused with `trusted_proxies`, the load
//! balancers in front of the node. The wire is in docs/backend.md.

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Proxy {
    /// HMAC-SHA256 key signing every request (`X-Roomcast-Signature`), at least 32 bytes.
    /// Required once any proxy is configured: an unsigned call would let anyone who can reach
    /// the backend pose as the node. Default none.
    pub secret: Option<String>,
    /// Called at the WebSocket upgrade. Default: no URL, not called.
    pub connect: Connect,
    /// Called when a session joins a room matching an entry (the first match), before the node
    /// subscribes it. Default empty: no join is asked about.
    pub join: Vec<Route>,
    /// Called when a client publishes to a room matching an entry (the first match), before
    /// the message is ordered. Default empty. Publishes through the server API are the
    /// backend's own and are never asked about.
    pub publish: Vec<Route>,
    /// Calls in flight at once, all kinds together, per node. Default 256. A call that finds
    /// them all taken does not wait: it fails at once and `on_failure` decides, so a slow
    /// backend cannot pile up requests (and memory) in the node.
    pub max_concurrency: usize,
    /// How long a join the backend allowed stays allowed for the same user and room without
    /// asking again, milliseconds. Default 0 (off): every join asks. Denials are never cached.
    pub join_cache_ms: u64,
    /// Most (user, room) allows the join cache holds. Default 10,000; when full, expired
    /// entries are dropped and, if none were, new allows are not cached.
    pub join_cache_entries: usize,
    /// Largest answer read from the backend, bytes. Default 1 MiB; a larger one is a failure.
    pub max_response_bytes: usize,
    /// What happens when the backend cannot decide: unreachable, too slow (`timeout_ms`),
    /// answering non-2xx or something that is not a valid answer, or every call slot taken.
    /// `deny` (default, fail closed): the request is refused (`backend_unavailable`);
    /// `allow`: it goes ahead as if no proxy were configured.
    pub on_failure: OnFailure,
}

/// `[proxy.connect]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Connect {
    /// `http://` or `https://` URL the connect request is POSTed to. Default none (off).
    pub url: Option<String>,
    /// Longest the call may take, connect to last byte, milliseconds. Default 1000.
    pub timeout_ms: u64,
}

/// One `[[proxy.join]]` or `[[proxy.publish]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Rooms this entry covers: an exact name or a `*` glob (`team:*`), as in tokens' claims.
    pub room: String,
    /// `http://` or `https://` URL the request is POSTed to.
    pub url: String,
    /// Longest the call may take, milliseconds. Default 1000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    Deny,
    Allow,
}

fn default_timeout_ms() -> u64 {
    1000
}

impl Default for Proxy {
    fn default() -> Self {
        Self {
            secret: None,
            connect: Connect::default(),
            join: Vec::new(),
            publish: Vec::new(),
            max_concurrency: 256,
            join_cache_ms: 0,
            join_cache_entries: 10_000,
            max_response_bytes: 1 << 20,
            on_failure: OnFailure::Deny,
        }
    }
}

impl Default for Connect {
    fn default() -> Self {
        Self {
            url: None,
            timeout_ms: default_timeout_ms(),
        }
    }
}

/// Shortest `proxy.secret`, bytes: an HMAC-SHA256 key shorter than this is guessable.
const MIN_SECRET_BYTES: usize = 32;
/// Longest `timeout_ms`. A call holds its session's task: the client's other requests, and the
/// pongs its heartbeat is judged by, wait behind it; 10 s keeps well inside
/// `heartbeat.timeout_ms` and a person's patience.
const MAX_TIMEOUT_MS: u64 = 10_000;

impl Proxy {
    /// Whether any proxy is configured.
    pub fn enabled(&self) -> bool {
        self.connect.url.is_some() || !self.join.is_empty() || !self.publish.is_empty()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("proxy.max_concurrency", self.max_concurrency as u64)?;
        positive("proxy.join_cache_entries", self.join_cache_entries as u64)?;
        positive("proxy.max_response_bytes", self.max_response_bytes as u64)?;
        if let Some(url) = &self.connect.url {
            check_url("proxy.connect.url", url)?;
            check_timeout("proxy.connect.timeout_ms", self.connect.timeout_ms)?;
        }
        for (routes, kind) in [(&self.join, "join"), (&self.publish, "publish")] {
            for route in routes {
                route.validate(kind)?;
            }
        }
        match &self.secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => Err(ConfigError::Invalid {
                key: "proxy.secret",
                reason: format!("must be at least {MIN_SECRET_BYTES} bytes"),
            }),
            None if self.enabled() => Err(ConfigError::Invalid {
                key: "proxy.secret",
                reason: "required when a proxy is configured: every request is signed with it"
                    .into(),
            }),
            _ => Ok(()),
        }
    }
}

impl Route {
    fn validate(&self, kind: &str) -> Result<(), ConfigError> {
        let (room, url, timeout) = match kind {
            "join" => ("proxy.join.room", "proxy.join.url", "proxy.join.timeout_ms"),
            _ => (
                "proxy.publish.room",
                "proxy.publish.url",
                "proxy.publish.timeout_ms",
            ),
        };
        if self.room.is_empty() {
            return Err(ConfigError::Invalid {
                key: room,
                reason: "must be a room name or a `*` pattern".into(),
            });
        }
        check_url(url, &self.url)?;
        check_timeout(timeout, self.timeout_ms)
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        Ok(_) => Err(ConfigError::Invalid {
            key,
            reason: format!("{url:?} is not an http:// or https:// URL"),
        }),
        Err(err) => Err(ConfigError::Invalid {
            key,
            reason: format!("{url:?}: {err}"),
        }),
    }
}

fn check_timeout(key: &'static str, ms: u64) -> Result<(), ConfigError> {
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(ConfigError::Invalid {
            key,
            reason: format!("must be between 1 and {MAX_TIMEOUT_MS}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(room: &str, url: &str) -> Route {
        Route {
            room: room.into(),
            url: url.into(),
            timeout_ms: 500,
        }
    }

    fn key_of(proxy: &Proxy) -> &'static str {
        match proxy.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let proxy = Proxy::default();
        assert!(!proxy.enabled());
        proxy.validate().unwrap();
    }

    #[test]
    fn refusals_name_their_key() {
        let secret = Some("s".repeat(32));
        let mut p = Proxy {
            join: vec![route("team:*", "http://127.0.0.1:9/join")],
            ..Proxy::default()
        };
        assert_eq!(key_of(&p), "proxy.secret");
        p.secret = Some("short".into());
        assert_eq!(key_of(&p), "proxy.secret");
        p.secret = secret.clone();
        p.validate().unwrap();
        p.join[0].url = "ftp://x/".into();
        assert_eq!(key_of(&p), "proxy.join.url");
        p.join[0].url = "http://x/".into();
        p.join[0].timeout_ms = 0;
        assert_eq!(key_of(&p), "proxy.join.timeout_ms");
        p.join[0].timeout_ms = 10;
        p.join[0].room = String::new();
        assert_eq!(key_of(&p), "proxy.join.room");
        let mut p = Proxy {
            secret,
            publish: vec![route("*", "not a url")],
            ..Proxy::default()
        };
        assert_eq!(key_of(&p), "proxy.publish.url");
        p.publish.clear();
        p.connect.url = Some("http://127.0.0.1:9/connect".into());
        p.connect.timeout_ms = 10_001;
        assert_eq!(key_of(&p), "proxy.connect.timeout_ms");
        p.connect.timeout_ms = 100;
        p.max_concurrency = 0;
        assert_eq!(key_of(&p), "proxy.max_concurrency");
    }
}
