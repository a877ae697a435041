//! The node: what a session may ask for (join, leave, publish, send, presence) and how that
//! maps onto the hub (local members) and the broker (order, history, other nodes). Also owns
//! the node-wide lifecycle: draining flag and the tracker of session tasks.

mod admission;
mod history;
pub(crate) mod limiter;
pub mod rebalance;
mod rooms;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::value::RawValue;
use tokio_util::task::TaskTracker;
use tungstenite::Utf8Bytes;

use crate::auth::Verifier;
use crate::backend::{Backend, Refusal};
use crate::broker::{Broker, BrokerError, Deliver, Presence, PresenceList};
use crate::config::{Config, ConfigError};
use crate::hub::Hub;
use crate::protocol::{RequestId, Resume, ServerFrame, encode};
use crate::session::{Outbox, QueueLimits, SessionHandle};

pub use admission::{Admission, IpPermit, PendingPermit, Refused};
pub use history::HistoryQuery;
pub use rooms::Memberships;

/// Cheap, cloneable handle to everything a connection needs.
#[derive(Clone)]
pub struct Node(Arc<Inner>);

struct Inner {
    id: String,
    config: Config,
    hub: Hub,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn Presence>,
    verifier: Verifier,
    /// The application's backend, asked before joins and client publishes (`[proxy]`).
    backend: Backend,
    admission: Arc<Admission>,
    draining: AtomicBool,
    tasks: TaskTracker,
    shedding: rebalance::Shedding,
}

/// One session counted against its user's limit; dropping it stops counting.
pub struct SessionClaim {
    presence: Arc<dyn Presence>,
    user: Arc<str>,
    key: String,
}

impl Drop for SessionClaim {
    fn drop(&mut self) {
        let (presence, user, key) = (
            self.presence.clone(),
            self.user.clone(),
            std::mem::take(&mut self.key),
        );
        // Drop cannot wait; the release is one Redis call (or a map update) in the background.
        tokio::spawn(async move { presence.release_session(&user, &key).await });
    }
}

/// A node's counts, for the server API and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStats {
    pub node: String,
    /// Open WebSocket sessions.
    pub sessions: usize,
    /// Rooms with at least one local member.
    pub rooms: usize,
    /// Users with at least one local session.
    pub users: usize,
    pub draining: bool,
    pub broker_available: bool,
}

/// Delivers broker output into the hub. Lives here so the hub never depends on the broker.
pub struct HubDelivery(pub Hub);

impl Deliver for HubDelivery {
    fn publication(&self, room: &str, offset: u64, frame: &Utf8Bytes) {
        self.0.deliver(room, offset, frame);
    }

    fn direct(&self, user: &str, frame: &Utf8Bytes) {
        self.0.deliver_direct(user, frame);
    }

    fn presence(&self, room: &str, frame: &Utf8Bytes) {
        self.0.deliver_presence(room, frame);
    }

    fn reset(&self, room: &str, frame: &Utf8Bytes) {
        self.0.restart(room, frame);
    }

    fn disconnect(&self, user: &str) {
        self.0
            .close_user(user, crate::protocol::CloseCode::Disconnected);
    }
}

/// Why the node could not do what was asked. Each endpoint maps it to its own wire: the
/// WebSocket protocol's `unavailable`, the HTTP API's 503.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The broker (Redis) could not complete the call; it may have been applied (see the
    /// publish keys in docs/protocol.md).
    #[error("{0}")]
    Unavailable(#[from] BrokerError),
    #[error("already joined")]
    AlreadyJoined,
    #[error("a connection may be in at most {max} rooms")]
    TooManyRooms { max: usize },
    #[error("not a member of {0}")]
    NotMember(String),
    /// The application's backend refused, or could not be asked (`[proxy]`).
    #[error("{0}")]
    Refused(#[from] Refusal),
}

/// A new session refused: its user has `limits.max_connections_per_user` open already.
#[derive(Debug, thiserror::Error)]
#[error("this user has too many open connections")]
pub struct TooManySessions;

/// What a join asks for besides the room.
#[derive(Clone, Copy, Default)]
pub struct JoinRequest<'a> {
    /// Resume after this position: the missed messages, or `recovered: false`.
    pub resume: Option<&'a Resume>,
    /// Take part in presence.
    pub presence: bool,
    /// The request's id, echoed in `joined`.
    pub id: Option<&'a RequestId>,
    /// The application's backend chose the room (its `connect` answer): the join proxy is
    /// not asked.
    pub from_backend: bool,
    /// On a plain join, deliver up to this many of the latest messages before live ones.
    pub rewind: u64,
}

impl Node {
    /// `hub` must be the hub the broker delivers into (see [`HubDelivery`]); `presence` is
    /// normally the same engine as `broker`. Fails when the authentication key cannot be
    /// loaded.
    pub fn new(
        id: String,
        config: Config,
        hub: Hub,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn Presence>,
    ) -> Result<Self, ConfigError> {
        let verifier = Verifier::new(&config.auth)?;
        let backend = Backend::new(&config.proxy, config.limits.max_message_bytes)?;
        let admission = Arc::new(Admission::new(&config.limits, &config.trusted_proxies));
        Ok(Self(Arc::new(Inner {
            id,
            config,
            hub,
            broker,
            presence,
            verifier,
            backend,
            admission,
            draining: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            shedding: Default::default(),
        })))
    }

    pub fn verifier(&self) -> &Verifier {
        &self.0.verifier
    }

    /// The application's backend (`[proxy]`); the WebSocket endpoint asks its connect proxy.
    pub fn backend(&self) -> &Backend {
        &self.0.backend
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.0.admission
    }

    /// Counts a new session of `user` against `limits.max_connections_per_user` across the
    /// cluster. `Err` when the user is at the limit. While the broker is unreachable the limit
    /// is not enforced (fail open, `Ok(None)`): refusing everyone would turn a Redis outage
    /// into an outage.
    pub async fn claim_session(
        &self,
        user: &Arc<str>,
    ) -> Result<Option<SessionClaim>, TooManySessions> {
        let key = format!("{}-{:016x}", self.0.id, rand::random::<u64>());
        let limit = self.0.config.limits.max_connections_per_user;
        match self.0.presence.claim_session(user, &key, limit).await {
            Ok(true) => Ok(Some(SessionClaim {
                presence: self.0.presence.clone(),
                user: user.clone(),
                key,
            })),
            Ok(false) => Err(TooManySessions),
            Err(err) => {
                tracing::warn!(%err, "per-user connection limit not enforced");
                Ok(None)
            }
        }
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    /// True once shutdown began: readiness fails and new sockets are refused.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Acquire)
    }

    /// Tracks every session task so shutdown can wait for them (axum does not).
    pub fn tasks(&self) -> &TaskTracker {
        &self.0.tasks
    }

    /// Starts shutdown: fail readiness, refuse upgrades, tell sessions to flush and close with
    /// 1001. A session registering meanwhile either is in the hub already and closed here, or
    /// sees `is_draining` once registered (`open_session`).
    pub fn begin_shutdown(&self) {
        self.0.draining.store(true, Ordering::Release);
        self.0.tasks.close();
        self.0.hub.drain_all();
    }

    /// Whether the broker can order messages right now.
    pub fn broker_available(&self) -> bool {
        self.0.broker.available()
    }

    /// A new session of `user`, not yet registered: its handle and queue, the queue bounded
    /// by `limits.outbound_queue` frames and `limits.outbound_queue_bytes`.
    pub fn new_session(&self, user: Arc<str>) -> (SessionHandle, Outbox) {
        let limits = &self.0.config.limits;
        let bounds = QueueLimits {
            frames: limits.outbound_queue,
            bytes: limits.outbound_queue_bytes,
        };
        SessionHandle::new(user, bounds)
    }

    /// Registers a session made by [`Self::new_session`], so that direct messages and a
    /// shutdown reach it.
    pub async fn open_session(&self, handle: &SessionHandle) {
        let first = self.0.hub.add_user_session(handle);
        if self.is_draining() {
            handle.drain();
        }
        if first {
            if let Err(err) = self.0.broker.watch_user(handle.user()).await {
                // Kept wanted: the broker subscribes it again when it reconnects.
                tracing::warn!(%err, "direct messages to this user are delayed");
            }
        }
    }

    /// Removes a session from its rooms and the user table. Call exactly once, at its end.
    pub async fn close_session(&self, session: &SessionHandle, rooms: &mut Memberships) {
        for room in rooms.take() {
            self.remove_member(session, &room).await;
        }
        if self.0.hub.remove_user_session(session) {
            self.0.broker.unwatch_user(session.user()).await;
        }
    }

    /// Joins `room`, queuing `joined` (and on resume the missed messages) on the session.
    /// Refused for a room the session is in, or past `limits.max_rooms_per_connection`, or by
    /// the application's backend (the join proxy, asked after those checks and before the
    /// broker); on `Err` the session is not a member.
    pub async fn join(
        &self,
        session: &SessionHandle,
        rooms: &mut Memberships,
        room: &str,
        request: JoinRequest<'_>,
    ) -> Result<(), NodeError> {
        rooms.claim(room, self.0.config.limits.max_rooms_per_connection)?;
        if !request.from_backend {
            if let Err(refusal) = self.0.backend.join(session.user(), room).await {
                rooms.release(room);
                return Err(refusal.into());
            }
        }
        let joined = self.add_member(session, room, request).await;
        if joined.is_err() {
            rooms.release(room);
        }
        joined
    }

    /// The hub and broker side of [`Self::join`]; on `Err`, rolled back.
    async fn add_member(
        &self,
        session: &SessionHandle,
        room: &str,
        JoinRequest {
            resume,
            presence,
            id,
            rewind,
            ..
        }: JoinRequest<'_>,
    ) -> Result<(), NodeError> {
        let cap = self.0.config.limits.outbound_queue;
        let first = self.0.hub.add_pending(room, session, presence, cap);
        let result = async {
            if first {
                self.0.broker.subscribe(room).await?;
            }
            let mut history = self.0.broker.history(room, resume).await?;
            if resume.is_none() {
                history.replay = self.rewind(room, &history, rewind).await?;
            }
            Ok::<_, NodeError>(history)
        }
        .await;
        let history = match result {
            Ok(history) => history,
            Err(err) => {
                self.remove_member(session, room).await;
                return Err(err);
            }
        };
        if resume.is_some() {
            let recovered = if history.recovered { "true" } else { "false" };
            metrics::counter!("roomcast_resumes_total", "recovered" => recovered).increment(1);
        }
        let joined = encode(&ServerFrame::Joined {
            id,
            room,
            epoch: &history.epoch,
            offset: history.top,
            recovered: resume.map(|_| history.recovered),
        });
        let user_first =
            self.0
                .hub
                .activate(room, session.id(), joined, history.replay, history.top);
        if user_first {
            // The join itself succeeded and was answered; presence is best effort on top.
            if let Err(err) = self.0.presence.add(room, session.user()).await {
                tracing::warn!(room, %err, "presence not recorded");
            }
        }
        Ok(())
    }

    /// Leaves `room`; refused when the session is not in it.
    pub async fn leave(
        &self,
        session: &SessionHandle,
        rooms: &mut Memberships,
        room: &str,
    ) -> Result<(), NodeError> {
        if !rooms.release(room) {
            return Err(NodeError::NotMember(room.to_owned()));
        }
        self.remove_member(session, room).await;
        Ok(())
    }

    /// The hub and broker side of leaving.
    async fn remove_member(&self, session: &SessionHandle, room: &str) {
        let removed = self.0.hub.remove(room, session);
        if removed.user_gone {
            self.0.presence.remove(room, session.user()).await;
        }
        if removed.room_empty {
            self.0.broker.unsubscribe(room).await;
        }
    }

    /// Publishes to `room`; returns the message's offset. With a publish `key` already used in
    /// the room within the key window, publishes nothing and returns the first one's offset.
    pub async fn publish(
        &self,
        room: &str,
        from: &str,
        data: &RawValue,
        key: Option<&str>,
    ) -> Result<u64, NodeError> {
        self.publish_with_id(room, from, data, key, None).await
    }

    /// A client's publish: the application's backend (the publish proxy) may refuse it, replace
    /// its `data` or give it an `id`, before [`Self::publish`] orders it. A refusal publishes
    /// nothing.
    pub async fn publish_from_client(
        &self,
        room: &str,
        from: &str,
        data: &RawValue,
        key: Option<&str>,
    ) -> Result<u64, NodeError> {
        let published = self.0.backend.publish(from, room, data, key).await?;
        let data = published.data.as_deref().unwrap_or(data);
        self.publish_with_id(room, from, data, key, published.id.as_deref())
            .await
    }

    async fn publish_with_id(
        &self,
        room: &str,
        from: &str,
        data: &RawValue,
        key: Option<&str>,
        id: Option<&str>,
    ) -> Result<u64, NodeError> {
        let started = std::time::Instant::now();
        let result = match (key, id) {
            (None, None) => self
                .0
                .broker
                .publish(room, from, data)
                .await
                .map(|o| (o, false)),
            (key, id) => self.0.broker.publish_once(room, from, data, key, id).await,
        };
        metrics::histogram!("roomcast_broker_publish_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok((offset, repeat)) => {
                let counter = if repeat {
                    "roomcast_publish_repeats_total"
                } else {
                    "roomcast_messages_published_total"
                };
                metrics::counter!(counter).increment(1);
                Ok(offset)
            }
            Err(err) => {
                metrics::counter!("roomcast_publish_errors_total").increment(1);
                Err(err.into())
            }
        }
    }

    /// Sends a direct message to every session of `to`.
    pub async fn send_direct(
        &self,
        to: &str,
        from: &str,
        data: &RawValue,
    ) -> Result<(), NodeError> {
        self.0.broker.send_direct(to, from, data).await?;
        metrics::counter!("roomcast_direct_messages_total").increment(1);
        Ok(())
    }

    /// The users present in `room`, sorted, and the `seq` of the presence event they reflect.
    pub async fn presence(&self, room: &str) -> Result<PresenceList, NodeError> {
        Ok(self.0.presence.list(room).await?)
    }

    /// The room's position and, with `resume`, the messages after it (as encoded frames).
    pub async fn history(
        &self,
        room: &str,
        resume: Option<&Resume>,
    ) -> Result<crate::broker::Catchup, NodeError> {
        Ok(self.0.broker.history(room, resume).await?)
    }

    /// Closes every session of `user` on every node with 4003.
    pub async fn disconnect_user(&self, user: &str) -> Result<(), NodeError> {
        Ok(self.0.broker.disconnect_user(user).await?)
    }

    /// What this node holds right now.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            node: self.0.id.clone(),
            sessions: self.0.tasks.len(),
            rooms: self.0.hub.room_count(),
            users: self.0.hub.user_count(),
            draining: self.is_draining(),
            broker_available: self.broker_available(),
        }
    }
}
