//! The application's backend in the loop (`[proxy]`): the `connect`, `join` and `publish`
//! proxies. Each asks the backend over HTTP (signed, [`sign`]), with a timeout and at most
//! `proxy.max_concurrency` calls in flight, and turns its answer into a decision; when the
//! backend cannot decide, `proxy.on_failure` does. The wire is in docs/backend.md.
//!
//! Uses `config`, `protocol`'s name and data rules and `auth`'s room patterns; the node calls
//! it (joins, client publishes) and so does the WebSocket endpoint (connect), each mapping its
//! refusals to its own wire.

mod cache;
mod call;
pub mod sign;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::auth::pattern_matches;
use crate::config::{ConfigError, OnFailure, Proxy, ProxyRoute};
use cache::JoinCache;
use call::{Answer, Failure};

pub use call::Denial;

/// Longest message id a backend may give, bytes: it is carried in every member's frame.
pub const MAX_MESSAGE_ID_BYTES: usize = 256;

/// Why the backend's answer stops a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The backend said no, with its code and message.
    #[error("{}", .0.message)]
    Denied(Denial),
    /// The backend could not decide and `proxy.on_failure` is `deny`.
    #[error("the application's backend could not be asked: {0}")]
    Unavailable(String),
}

/// What a `connect` answer changes about a new session. Every field is optional.
#[derive(Debug, Default, Deserialize)]
pub struct Connected {
    /// The session's user instead of the one the node found (must follow the name rule).
    pub user: Option<String>,
    /// Rooms the session joins at once, without the join proxy or the token's claims.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Any JSON, given back to the client in its `welcome` frame.
    pub info: Option<Box<RawValue>>,
}

/// What a `publish` answer changes about the message.
#[derive(Debug, Default, Deserialize)]
pub struct Published {
    /// Published instead of the client's `data`.
    pub data: Option<Box<RawValue>>,
    /// The backend's id for the message, carried in the `message` frame.
    pub id: Option<String>,
}

#[derive(Deserialize)]
struct Empty {}

/// What the node knows of a connecting client, sent to the `connect` proxy.
#[derive(Debug, Serialize)]
pub struct ConnectRequest<'a> {
    /// The user from a verified token, or `?user=` when authentication is off; none when
    /// anonymous.
    pub user: Option<&'a str>,
    /// Whether `user` comes from a verified token.
    pub authenticated: bool,
    /// The client's address (after `trusted_proxies`).
    pub client: String,
    /// The token the client sent, if any (verified or not: with authentication off the
    /// backend may check its own).
    pub token: Option<&'a str>,
    /// `Origin`, `User-Agent` and `Cookie` as the client sent them.
    pub headers: std::collections::BTreeMap<&'static str, &'a str>,
}

#[derive(Serialize)]
struct JoinBody<'a> {
    user: &'a str,
    room: &'a str,
}

#[derive(Serialize)]
struct PublishBody<'a> {
    user: &'a str,
    room: &'a str,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

/// Cheap, cloneable handle on the proxies of one node.
#[derive(Clone)]
pub struct Backend(Arc<Inner>);

struct Inner {
    config: Proxy,
    client: reqwest::Client,
    slots: Semaphore,
    joins: JoinCache,
    /// `limits.max_message_bytes`: a replacement `data` longer than a client may send is refused.
    max_data_bytes: usize,
}

impl Backend {
    /// Builds the HTTP client (no I/O).
    pub fn new(config: &Proxy, max_data_bytes: usize) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("roomcast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Invalid {
                key: "proxy",
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        let ttl = Duration::from_millis(config.join_cache_ms);
        Ok(Self(Arc::new(Inner {
            client,
            slots: Semaphore::new(config.max_concurrency),
            joins: JoinCache::new(ttl, config.join_cache_entries),
            config: config.clone(),
            max_data_bytes,
        })))
    }

    /// Whether a connect proxy is configured.
    pub fn asks_connect(&self) -> bool {
        self.0.config.connect.url.is_some()
    }

    /// Asks the connect proxy. `Ok(None)`: no proxy, or it failed and `on_failure` is `allow`.
    pub async fn connect(
        &self,
        request: &ConnectRequest<'_>,
    ) -> Result<Option<Connected>, Refusal> {
        let connect = &self.0.config.connect;
        let Some(url) = &connect.url else {
            return Ok(None);
        };
        let body = serde_json::to_vec(request).expect("the connect request serializes");
        let timeout = Duration::from_millis(connect.timeout_ms);
        match self
            .ask("connect", url, body, timeout, check_connected)
            .await
        {
            Ok(connected) => connected.map(Some),
            Err(failure) => self.failed("connect", &failure),
        }
    }

    /// Asks the join proxy whose pattern `room` matches first; `Ok` when there is none, the
    /// backend allowed (or allowed within `join_cache_ms`), or it failed under `allow`.
    pub async fn join(&self, user: &str, room: &str) -> Result<(), Refusal> {
        let Some(route) = route(&self.0.config.join, room) else {
            return Ok(());
        };
        if self.0.joins.allowed(user, room, Instant::now()) {
            metrics::counter!("roomcast_proxy_cache_hits_total").increment(1);
            return Ok(());
        }
        let body = serde_json::to_vec(&JoinBody { user, room }).expect("serializes");
        let timeout = Duration::from_millis(route.timeout_ms);
        match self
            .ask::<Empty>("join", &route.url, body, timeout, |_| Ok(()))
            .await
        {
            Ok(Ok(_)) => {
                self.0.joins.remember(user, room, Instant::now());
                Ok(())
            }
            Ok(Err(denied)) => Err(denied),
            Err(failure) => self.failed::<()>("join", &failure).map(drop),
        }
    }

    /// Asks the publish proxy whose pattern `room` matches first. `Ok(default)`: publish the
    /// client's data as it is.
    pub async fn publish(
        &self,
        user: &str,
        room: &str,
        data: &RawValue,
        key: Option<&str>,
    ) -> Result<Published, Refusal> {
        let Some(route) = route(&self.0.config.publish, room) else {
            return Ok(Published::default());
        };
        let body = PublishBody {
            user,
            room,
            data,
            key,
        };
        let body = serde_json::to_vec(&body).expect("serializes");
        let timeout = Duration::from_millis(route.timeout_ms);
        let max = self.0.max_data_bytes;
        let check = |published: &Published| check_published(published, max);
        match self.ask("publish", &route.url, body, timeout, check).await {
            Ok(Ok(published)) => Ok(published),
            Ok(Err(denied)) => Err(denied),
            Err(failure) => self
                .failed::<()>("publish", &failure)
                .map(|_| Published::default()),
        }
    }

    /// One call within a slot: the backend's result (which `check` accepts) or refusal, or
    /// why there is neither.
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
        url: &str,
        body: Vec<u8>,
        timeout: Duration,
        check: impl FnOnce(&T) -> Result<(), Failure>,
    ) -> Result<Result<T, Refusal>, Failure> {
        // No queue: a full house is a failure now, not a wait of unknown length.
        let _slot = self
            .0
            .slots
            .try_acquire()
            .map_err(|_| Failure::Overloaded)?;
        let started = Instant::now();
        let secret = self.0.config.secret.as_deref().unwrap_or_default();
        let max = self.0.config.max_response_bytes;
        let answer = call::post::<T>(
            &self.0.client,
            url,
            kind,
            secret.as_bytes(),
            body,
            timeout,
            max,
        )
        .await;
        metrics::histogram!("roomcast_proxy_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        match answer? {
            Answer::Result(result) => {
                check(&result)?;
                metrics::counter!("roomcast_proxy_calls_total", "kind" => kind, "outcome" => "allow")
                    .increment(1);
                Ok(Ok(result))
            }
            Answer::Denied(denial) => {
                metrics::counter!("roomcast_proxy_calls_total", "kind" => kind, "outcome" => "deny")
                    .increment(1);
                Ok(Err(Refusal::Denied(denial)))
            }
        }
    }

    /// The policy's answer to a failed call: `Ok(None)` under `allow`, else `Unavailable`.
    fn failed<T>(&self, kind: &'static str, failure: &Failure) -> Result<Option<T>, Refusal> {
        metrics::counter!("roomcast_proxy_calls_total", "kind" => kind, "outcome" => failure.label())
            .increment(1);
        tracing::warn!(kind, %failure, policy = ?self.0.config.on_failure, "proxy call failed");
        match self.0.config.on_failure {
            OnFailure::Allow => Ok(None),
            OnFailure::Deny => Err(Refusal::Unavailable(failure.to_string())),
        }
    }
}

/// A connect answer's user and rooms follow the name rule.
fn check_connected(connected: &Connected) -> Result<(), Failure> {
    let valid = crate::protocol::valid_name;
    if connected.user.as_deref().is_some_and(|u| !valid(u)) {
        return Err(Failure::BadAnswer(
            "result.user breaks the name rule".into(),
        ));
    }
    if connected.rooms.iter().any(|r| !valid(r)) {
        return Err(Failure::BadAnswer(
            "result.rooms holds a name that breaks the name rule".into(),
        ));
    }
    Ok(())
}

/// The first entry whose pattern matches `room`.
fn route<'a>(routes: &'a [ProxyRoute], room: &str) -> Option<&'a ProxyRoute> {
    routes.iter().find(|r| pattern_matches(&r.room, room))
}

/// A replacement `data` meets the rules a client's does (shape, and no longer than a whole
/// client frame may be), and an id is short and not empty.
fn check_published(published: &Published, max_data_bytes: usize) -> Result<(), Failure> {
    if let Some(data) = &published.data {
        if data.get().len() > max_data_bytes {
            return Err(Failure::BadAnswer(format!(
                "result.data is longer than limits.max_message_bytes ({max_data_bytes})"
            )));
        }
        crate::protocol::check_data(data.get()).map_err(|e| Failure::BadAnswer(e.to_string()))?;
    }
    if let Some(id) = &published.id {
        if id.is_empty() || id.len() > MAX_MESSAGE_ID_BYTES {
            return Err(Failure::BadAnswer(format!(
                "result.id must be 1 to {MAX_MESSAGE_ID_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(data: Option<&str>, id: Option<&str>) -> Published {
        Published {
            data: data.map(|d| RawValue::from_string(d.into()).unwrap()),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn replacements_follow_the_client_rules() {
        assert!(check_published(&published(Some("[1]"), Some("m-1")), 10).is_ok());
        assert!(check_published(&published(Some("[1,2,3,4,5]"), None), 10).is_err());
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(check_published(&published(Some(&deep), None), 1 << 20).is_err());
        assert!(check_published(&published(None, Some("")), 10).is_err());
        let long = "i".repeat(MAX_MESSAGE_ID_BYTES + 1);
        assert!(check_published(&published(None, Some(&long)), 10).is_err());
        let longest = "i".repeat(MAX_MESSAGE_ID_BYTES);
        assert!(check_published(&published(None, Some(&longest)), 10).is_ok());
    }

    #[test]
    fn the_first_matching_entry_is_asked() {
        let entry = |room: &str, url: &str| ProxyRoute {
            room: room.into(),
            url: url.into(),
            timeout_ms: 1,
        };
        let routes = [entry("team:*", "a"), entry("*", "b")];
        assert_eq!(route(&routes, "team:x").unwrap().url, "a");
        assert_eq!(route(&routes, "lobby").unwrap().url, "b");
        assert!(route(&routes[..1], "lobby").is_none());
    }
}
