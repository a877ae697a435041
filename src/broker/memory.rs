//! The in-memory engine: one node, no dependencies. Publishing takes the room's log lock,
//! assigns the next offset, appends to history and delivers before releasing it, so delivery
//! order is offset order by construction.
//!
//! Logs of rooms nobody is in are freed once their history has expired and the room has been
//! idle for the epoch TTL (see [`MemoryBroker::sweep`]): until then an idle room keeps its epoch
//! and top, so its numbering goes on where it stopped. Durable history rules
//! ([`Retention::durable`]) are for the Redis engine; this one ignores them (the configuration
//! refuses them with `broker = "memory"`).
//!
//! History is bounded three ways: messages per room, bytes per room, and bytes for the whole
//! node. Past the node's budget the rooms published to least recently lose their history
//! first; their next resume answers `recovered: false` (the client is told), where without
//! the budget a crowd cycling through fresh rooms grew the node by gigabytes.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tungstenite::Utf8Bytes;

use super::lifecycle::{Claim, LifecycleOptions, Local, Outbox, Outcome};
use super::{
    Broker, BrokerError, Catchup, Deliver, Page, PageRequest, Presence, PresenceList, Retention,
    new_epoch, unix_ms,
};
use crate::protocol::Resume;
use crate::protocol::{ServerFrame, encode, encode_direct, encode_message_id};

/// History limits for every room, and (memory engine) for the node.
#[derive(Debug, Clone, Copy)]
pub struct HistoryBudget {
    /// Messages per room.
    pub size: usize,
    pub ttl: Duration,
    /// Bytes of frames per room.
    pub max_room_bytes: usize,
    /// Bytes of frames in every room's history together (memory engine only).
    pub max_bytes: usize,
}

impl HistoryBudget {
    /// `size` messages per room kept for `ttl`, with no byte limit.
    pub const fn new(size: usize, ttl: Duration) -> Self {
        Self {
            size,
            ttl,
            max_room_bytes: usize::MAX,
            max_bytes: usize::MAX,
        }
    }
}

pub struct MemoryBroker {
    logs: DashMap<Arc<str>, Arc<Mutex<Log>>>,
    /// Open sessions per user, for the per-user connection limit.
    sessions: DashMap<Arc<str>, usize>,
    presence: DashMap<Arc<str>, Present>,
    deliver: Arc<dyn Deliver>,
    limits: HistoryBudget,
    retention: Retention,
    /// Bytes of frames in every log's history, plus [`LOG_COST`] per log.
    held: AtomicUsize,
    /// Held while one publisher evicts, so others go on publishing instead of queuing to.
    evicting: Mutex<()>,
    /// Lifecycle events for webhooks, when enabled.
    lifecycle: OnceLock<Local>,
}

/// Who is present in a room, and how many presence events it has announced.
#[derive(Default)]
struct Present {
    users: BTreeSet<Arc<str>>,
    seq: u64,
}

struct Log {
    epoch: Arc<str>,
    top: u64,
    entries: VecDeque<Entry>,
    /// Bytes of the frames in `entries`.
    bytes: usize,
    /// Publish keys seen within the key window (the history TTL), oldest first, at most
    /// [`MAX_KEYS`]; their bytes are in `key_bytes` (and in the node's budget).
    keys: VecDeque<KeyEntry>,
    key_bytes: usize,
    /// Local subscriptions; a subscribed log is never freed, or live members would see offsets
    /// restart under a new epoch.
    subscribers: u32,
    /// The last publication or join: the epoch is kept for the epoch TTL after it.
    used: Instant,
    removed: bool,
}

/// What a log costs besides its frames and keys, counted in the node's budget so that rooms
/// kept only for their epoch cannot grow the node past `history.max_bytes`.
const LOG_COST: usize = 160;

struct Entry {
    offset: u64,
    at: Instant,
    frame: Utf8Bytes,
}

/// A publish key and the offset its publication got.
struct KeyEntry {
    key: Box<str>,
    offset: u64,
    at: Instant,
}

impl KeyEntry {
    /// What one key costs, for the byte budgets: the key and its entry.
    fn cost(&self) -> usize {
        self.key.len() + std::mem::size_of::<Self>()
    }
}

/// Publish keys remembered per room; past it the oldest is forgotten (a retry of its
/// publication would then be published again). A client retries within seconds, and 1,024
/// keyed publications a room within the window is far beyond chat.
const MAX_KEYS: usize = 1024;

impl MemoryBroker {
    pub fn new(limits: HistoryBudget, deliver: Arc<dyn Deliver>) -> Self {
        Self {
            logs: DashMap::new(),
            sessions: DashMap::new(),
            presence: DashMap::new(),
            deliver,
            limits,
            retention: Retention::default(),
            held: AtomicUsize::new(0),
            evicting: Mutex::new(()),
            lifecycle: OnceLock::new(),
        }
    }

    /// The engine with `retention`'s epoch TTL instead of the default day.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Turns lifecycle events on (before any session).
    pub fn enable_lifecycle(&self, opts: LifecycleOptions) {
        let _ = self.lifecycle.set(Local::new(opts));
    }

    /// Bytes of frames (and publish keys, and log headers) held across all rooms.
    pub fn history_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Adds a change of one log's bytes to the node's count.
    fn grow(&self, by: isize) {
        if by >= 0 {
            self.held.fetch_add(by.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.held.fetch_sub(by.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Brings the node's history back under 90 % of its budget by dropping the whole history
    /// of the rooms published to least recently (the slack keeps this from running on every
    /// publish once the budget is reached). One evictor at a time; the others skip.
    fn evict(&self) {
        let Some(_only) = self.evicting.try_lock() else {
            return;
        };
        let target = self.limits.max_bytes / 10 * 9;
        let cells: Vec<_> = self
            .logs
            .iter()
            .map(|entry| entry.value().clone())
            .collect();
        let mut newest: Vec<(Instant, Arc<Mutex<Log>>)> = cells
            .into_iter()
            .filter_map(|cell| {
                let at = cell.lock().entries.back()?.at;
                Some((at, cell))
            })
            .collect();
        newest.sort_unstable_by_key(|(at, _)| *at);
        for (_, cell) in newest {
            if self.held.load(Ordering::Relaxed) <= target {
                break;
            }
            let mut log = cell.lock();
            let freed = std::mem::take(&mut log.bytes) + std::mem::take(&mut log.key_bytes);
            log.entries = VecDeque::new();
            log.keys = VecDeque::new();
            self.held.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Runs `f` on the room's log, creating it if needed. Retries if the sweeper removed the log
    /// between lookup and lock.
    fn with_log<T>(&self, room: &str, f: impl FnOnce(&mut Log) -> T) -> T {
        let mut f = Some(f);
        loop {
            let cell = self
                .logs
                .entry(Arc::from(room))
                .or_insert_with(|| {
                    self.held.fetch_add(LOG_COST, Ordering::Relaxed);
                    Arc::new(Mutex::new(Log::new()))
                })
                .clone();
            let mut log = cell.lock();
            if !log.removed {
                let f = f.take().expect("runs once");
                return f(&mut log);
            }
        }
    }

    /// Drops expired history and frees the logs of rooms that are unsubscribed, empty, and
    /// idle for the epoch TTL (at once if never published to, or while the node is over its
    /// budget: then numbering restarts in a new epoch rather than the node growing). Call it periodically;
    /// [`MemoryBroker::sweep_every`] picks a period from the TTL.
    pub fn sweep(&self, now: Instant) {
        let ttl = self.limits.ttl;
        let over = self.held.load(Ordering::Relaxed) > self.limits.max_bytes / 10 * 9;
        self.logs.retain(|_, cell| {
            let mut log = cell.lock();
            self.held.fetch_sub(log.expire(now, ttl), Ordering::Relaxed);
            // A room never published to has no numbering to keep.
            let idle = over
                || log.top == 0
                || now.saturating_duration_since(log.used) >= self.retention.epoch_ttl;
            log.removed =
                idle && log.entries.is_empty() && log.keys.is_empty() && log.subscribers == 0;
            if log.removed {
                self.held.fetch_sub(LOG_COST, Ordering::Relaxed);
            }
            !log.removed
        });
        crate::shrink::if_sparse(&self.logs);
        crate::shrink::if_sparse(&self.sessions);
        crate::shrink::if_sparse(&self.presence);
    }

    /// How often to sweep: often enough that memory tracks the TTL within a few percent.
    pub fn sweep_every(&self) -> Duration {
        (self.limits.ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Rooms whose log is in memory (for tests and stats).
    pub fn log_count(&self) -> usize {
        self.logs.len()
    }
}

impl Log {
    fn new() -> Self {
        Self {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            bytes: 0,
            keys: VecDeque::new(),
            key_bytes: 0,
            subscribers: 0,
            used: Instant::now(),
            removed: false,
        }
    }

    /// Drops expired entries and keys; returns the bytes freed.
    fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let before = self.bytes + self.key_bytes;
        while let Some(front) = self.entries.front() {
            if now.duration_since(front.at) < ttl {
                break;
            }
            self.pop_front();
        }
        while self
            .keys
            .front()
            .is_some_and(|k| now.duration_since(k.at) >= ttl)
        {
            self.pop_key();
        }
        before - self.bytes - self.key_bytes
    }

    /// The offset a publication with `key` got, if it is remembered.
    fn offset_of_key(&self, key: &str) -> Option<u64> {
        self.keys
            .iter()
            .rev()
            .find(|k| &*k.key == key)
            .map(|k| k.offset)
    }

    /// Remembers `key` for the publication at `offset`; returns the change in bytes held.
    fn remember(&mut self, key: &str, offset: u64) -> isize {
        let before = self.key_bytes;
        let entry = KeyEntry {
            key: key.into(),
            offset,
            at: Instant::now(),
        };
        self.key_bytes += entry.cost();
        self.keys.push_back(entry);
        if self.keys.len() > MAX_KEYS {
            self.pop_key();
        }
        self.key_bytes as isize - before as isize
    }

    fn pop_key(&mut self) {
        if let Some(entry) = self.keys.pop_front() {
            self.key_bytes -= entry.cost();
        }
    }

    /// Appends a frame, then drops the oldest while the log is over `limits` (messages or
    /// bytes). Returns the change in bytes held.
    fn push(&mut self, entry: Entry, limits: &HistoryBudget) -> isize {
        let before = self.bytes;
        self.bytes += entry.frame.len();
        self.entries.push_back(entry);
        while self.entries.len() > limits.size || self.bytes > limits.max_room_bytes {
            self.pop_front();
        }
        self.bytes as isize - before as isize
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= entry.frame.len();
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, room: &str, from: &str, data: &RawValue) -> Result<u64, BrokerError> {
        self.publish_once(room, from, data, None, None)
            .await
            .map(|(offset, _)| offset)
    }

    async fn publish_once(
        &self,
        room: &str,
        from: &str,
        data: &RawValue,
        key: Option<&str>,
        id: Option<&str>,
    ) -> Result<(u64, bool), BrokerError> {
        let limits = self.limits;
        let published = self.with_log(room, |log| {
            if let Some(offset) = key.and_then(|key| {
                let freed = log.expire(Instant::now(), limits.ttl);
                self.held.fetch_sub(freed, Ordering::Relaxed);
                log.offset_of_key(key)
            }) {
                return (offset, true);
            }
            log.top += 1;
            log.used = Instant::now();
            if let Some(key) = key {
                self.grow(log.remember(key, log.top));
            }
            let frame = encode_message_id(room, log.top, from, data, id, unix_ms());
            if limits.size > 0 {
                let entry = Entry {
                    offset: log.top,
                    at: Instant::now(),
                    frame: frame.clone(),
                };
                self.grow(log.push(entry, &limits));
            }
            self.deliver.publication(room, log.top, &frame);
            (log.top, false)
        });
        // Outside the room's lock: eviction locks other rooms' logs.
        if self.held.load(Ordering::Relaxed) > limits.max_bytes {
            self.evict();
        }
        Ok(published)
    }

    async fn history(&self, room: &str, resume: Option<&Resume>) -> Result<Catchup, BrokerError> {
        let ttl = self.limits.ttl;
        Ok(self.with_log(room, |log| {
            log.used = Instant::now();
            let freed = log.expire(log.used, ttl);
            self.held.fetch_sub(freed, Ordering::Relaxed);
            let mut history = Catchup {
                epoch: log.epoch.clone(),
                top: log.top,
                recovered: false,
                replay: Vec::new(),
            };
            let Some(resume) = resume else { return history };
            // Everything after `since` must still be held: either nothing is missing, or the
            // oldest entry kept is exactly the one after `since`.
            let oldest = log.entries.front().map_or(log.top + 1, |e| e.offset);
            history.recovered = *resume.epoch == *log.epoch
                && resume.since <= log.top
                && resume.since + 1 >= oldest.min(log.top + 1);
            if history.recovered {
                history.replay = log
                    .entries
                    .iter()
                    .filter(|e| e.offset > resume.since)
                    .map(|e| e.frame.clone())
                    .collect();
            }
            history
        }))
    }

    /// The log's frames are consecutive offsets (each publication is pushed, only the oldest
    /// are dropped), so the page is a slice of them.
    async fn page(&self, room: &str, request: &PageRequest) -> Result<Option<Page>, BrokerError> {
        let Some(cell) = self.logs.get(room).map(|cell| cell.value().clone()) else {
            return Ok(None);
        };
        let mut log = cell.lock();
        if log.removed {
            return Ok(None);
        }
        let freed = log.expire(Instant::now(), self.limits.ttl);
        self.held.fetch_sub(freed, Ordering::Relaxed);
        let (frames, more) = request.take(log.entries.iter().map(|e| (e.offset, &e.frame)));
        Ok(Some(Page {
            epoch: log.epoch.clone(),
            top: log.top,
            frames,
            more,
        }))
    }

    async fn subscribe(&self, room: &str) -> Result<(), BrokerError> {
        if let Some(l) = self.lifecycle.get() {
            l.arrive('r', room);
        }
        self.with_log(room, |log| log.subscribers += 1);
        Ok(())
    }

    async fn unsubscribe(&self, room: &str) {
        if let Some(l) = self.lifecycle.get() {
            l.depart('r', room);
        }
        self.with_log(room, |log| {
            log.subscribers = log.subscribers.saturating_sub(1)
        });
    }

    async fn send_direct(&self, to: &str, from: &str, data: &RawValue) -> Result<(), BrokerError> {
        if let Some(l) = self.lifecycle.get().filter(|l| !l.holds_user(to)) {
            l.undelivered(to, from, data);
        }
        self.deliver
            .direct(to, &encode_direct(from, data, unix_ms()));
        Ok(())
    }

    async fn watch_user(&self, user: &str) -> Result<(), BrokerError> {
        if let Some(l) = self.lifecycle.get() {
            l.arrive('u', user);
        }
        Ok(())
    }

    async fn unwatch_user(&self, user: &str) {
        if let Some(l) = self.lifecycle.get() {
            l.depart('u', user);
        }
    }

    async fn disconnect_user(&self, user: &str) -> Result<(), BrokerError> {
        self.deliver.disconnect(user);
        Ok(())
    }
}

#[async_trait]
impl Outbox for MemoryBroker {
    async fn claim(&self, max: usize, hold: Duration) -> Result<Claim, BrokerError> {
        Ok(self
            .lifecycle
            .get()
            .map(|l| l.claim(max, hold))
            .unwrap_or_default())
    }

    async fn settle(&self, outcomes: &[(String, Outcome)]) -> Result<(), BrokerError> {
        if let Some(l) = self.lifecycle.get() {
            l.settle(outcomes);
        }
        Ok(())
    }
}

#[async_trait]
impl Presence for MemoryBroker {
    async fn claim_session(
        &self,
        user: &str,
        _key: &str,
        limit: usize,
    ) -> Result<bool, BrokerError> {
        let mut open = self.sessions.entry(Arc::from(user)).or_default();
        if *open >= limit {
            return Ok(false);
        }
        *open += 1;
        Ok(true)
    }

    async fn release_session(&self, user: &str, _key: &str) {
        if let Some(mut open) = self.sessions.get_mut(user) {
            *open = open.saturating_sub(1);
        }
        self.sessions.remove_if(user, |_, open| *open == 0);
    }

    async fn add(&self, room: &str, user: &str) -> Result<(), BrokerError> {
        let mut present = self.presence.entry(Arc::from(room)).or_default();
        if present.users.insert(Arc::from(user)) {
            // Numbered and announced under the entry lock, so events stay in `seq` order.
            present.seq += 1;
            let seq = present.seq;
            let frame = encode(&ServerFrame::PresenceJoin { room, seq, user });
            self.deliver.presence(room, &frame);
        }
        Ok(())
    }

    async fn remove(&self, room: &str, user: &str) {
        let removed = self.presence.get_mut(room).is_some_and(|mut present| {
            let removed = present.users.remove(user);
            if removed {
                present.seq += 1;
                let seq = present.seq;
                let frame = encode(&ServerFrame::PresenceLeave { room, seq, user });
                self.deliver.presence(room, &frame);
            }
            removed
        });
        // A room nobody is present in is forgotten, its numbering too: no member holds a
        // `seq` of it, since every member is present.
        if removed {
            self.presence
                .remove_if(room, |_, present| present.users.is_empty());
        }
    }

    async fn list(&self, room: &str) -> Result<PresenceList, BrokerError> {
        Ok(self
            .presence
            .get(room)
            .map(|present| PresenceList {
                users: present.users.iter().map(|u| u.to_string()).collect(),
                seq: present.seq,
            })
            .unwrap_or_default())
    }

    /// One node: nothing to compare with.
    async fn node_loads(&self, sessions: u64) -> Result<Vec<u64>, BrokerError> {
        Ok(vec![sessions])
    }
}
