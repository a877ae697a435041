//! The broker: where a room's order, history and presence live, and how messages reach every
//! node that hosts members. The node talks to it through the narrow [`Broker`] trait and
//! receives deliveries through [`Deliver`]; only `server.rs` picks the engine.
//!
//! Engines: [`memory`] (single node, the default) and [`redis`] (several nodes sharing one
//! Redis). Every engine must pass the contract suite in `tests/broker_contract.rs`.

pub mod lifecycle;
pub mod memory;
pub mod paging;
pub mod redis;
pub mod retention;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::value::RawValue;
use tungstenite::Utf8Bytes;

use crate::protocol::Resume;
pub use paging::{Order, Page, PageRequest};
pub use retention::{DurableRule, Retention};

/// Wall-clock milliseconds since the Unix epoch, the `ts` of messages.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fresh history epoch: random, so a lost and recreated history never reuses one.
pub(crate) fn new_epoch() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

/// Why the broker could not do what was asked. Nothing was done in either case.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The backing store is unreachable; the caller answers `unavailable`.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// What a joining member needs: the room's current position, and what a resuming client
/// missed. (Not the `[history]` config section, nor the memory engine's [`memory::HistoryBudget`].)
#[derive(Debug, Clone)]
pub struct Catchup {
    /// Changes whenever the room's history is lost; offsets from another epoch mean nothing.
    pub epoch: Arc<str>,
    /// The offset of the room's latest message (0 before the first).
    pub top: u64,
    /// For a resume: whether `replay` holds every message after `since`.
    pub recovered: bool,
    /// For a recovered resume: encoded `message` frames with offsets `since+1..=top`, in order.
    pub replay: Vec<Utf8Bytes>,
}

/// A room's members as of one of its presence events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceList {
    /// Sorted.
    pub users: Vec<String>,
    /// The `seq` of the last presence event the list reflects (0 before any): events with a
    /// higher `seq` happened after it.
    pub seq: u64,
}

/// Receives what the broker delivers to this node. Implemented over the hub by the node.
/// Calls for one room arrive in offset order and must not block.
pub trait Deliver: Send + Sync + 'static {
    fn publication(&self, room: &str, offset: u64, frame: &Utf8Bytes);
    fn direct(&self, user: &str, frame: &Utf8Bytes);
    fn presence(&self, room: &str, frame: &Utf8Bytes);
    /// The room's history was lost and its numbering restarted; `frame` tells live members.
    fn reset(&self, room: &str, frame: &Utf8Bytes);
    /// Close every local session of `user` (the application disconnected it).
    fn disconnect(&self, user: &str);
}

/// Who is where, kept apart from delivery (as centrifuge keeps its `PresenceManager` apart
/// from its `Broker`): users present per room, and sessions per user for the cluster-wide
/// limit. Every engine implements both traits; the node holds each as its own handle.
/// Methods are cancel safe.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Counts a new session `key` of `user` against `limit` sessions across every node.
    /// Returns false (and counts nothing) when the user already has `limit`.
    async fn claim_session(&self, user: &str, key: &str, limit: usize)
    -> Result<bool, BrokerError>;

    /// Stops counting session `key` of `user`.
    async fn release_session(&self, user: &str, key: &str);

    /// Marks `user` present in `room`; announces `presence_join` if it was not.
    async fn add(&self, room: &str, user: &str) -> Result<(), BrokerError>;

    /// Marks `user` gone from `room`; announces `presence_leave` if it was present.
    async fn remove(&self, room: &str, user: &str);

    /// The users present in `room`, sorted, with the `seq` of the last presence event they
    /// reflect.
    async fn list(&self, room: &str) -> Result<PresenceList, BrokerError>;

    /// Records that this node holds `sessions` sessions (until one lease from now) and
    /// returns the counts of every node whose record is live, this one's included, in no
    /// particular order: what rebalancing compares.
    async fn node_loads(&self, sessions: u64) -> Result<Vec<u64>, BrokerError>;
}

/// Ordering, history and cross-node delivery, what every engine provides. Methods are cancel
/// safe unless they say otherwise.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Orders a message in `room`, stores it in history and delivers it to every node hosting
    /// the room. Returns its offset. An `Err` means it was not published.
    async fn publish(&self, room: &str, from: &str, data: &RawValue) -> Result<u64, BrokerError>;

    /// [`Self::publish`] with the client's publish key: when the room ordered a publication
    /// with `key` within the key window (`history.ttl`) in its current epoch, nothing is
    /// published and that publication's offset is returned, with `true`. Lets a client retry a
    /// publish whose answer it never got without publishing twice. `id` (the application's
    /// backend's id for the message, from the publish proxy) goes into the `message` frame
    /// every member and the history get.
    async fn publish_once(
        &self,
        room: &str,
        from: &str,
        data: &RawValue,
        key: Option<&str>,
        id: Option<&str>,
    ) -> Result<(u64, bool), BrokerError>;

    /// The room's position, and with `resume` the messages after `resume.since` when the
    /// history still reaches back that far in the same epoch.
    async fn history(&self, room: &str, resume: Option<&Resume>) -> Result<Catchup, BrokerError>;

    /// One page of `room`'s history (the durable history for rooms that have one), or `None`
    /// when the broker knows no such room (never published to or joined, or forgotten after
    /// `history.epoch_ttl_secs`). Reads only: it creates nothing.
    async fn page(&self, room: &str, request: &PageRequest) -> Result<Option<Page>, BrokerError>;

    /// Starts delivering `room` to this node. Called when the room gets its first local member.
    async fn subscribe(&self, room: &str) -> Result<(), BrokerError>;

    /// Stops delivering `room` to this node. Called when its last local member leaves.
    async fn unsubscribe(&self, room: &str);

    /// Delivers a `direct` frame to every session of `to`, on whichever node it is.
    async fn send_direct(&self, to: &str, from: &str, data: &RawValue) -> Result<(), BrokerError>;

    /// Closes every session of `user`, on whichever node it is.
    async fn disconnect_user(&self, user: &str) -> Result<(), BrokerError>;

    /// `user` has its first session on this node: start receiving its direct messages here.
    async fn watch_user(&self, _user: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    /// `user`'s last session on this node ended.
    async fn unwatch_user(&self, _user: &str) {}

    /// Whether the engine can take publishes right now (false while its backing store is
    /// unreachable). Readiness reports it.
    fn available(&self) -> bool {
        true
    }
}
