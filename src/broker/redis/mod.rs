//! The Redis engine: several nodes share rooms through one Redis, or through a Redis Cluster.
//!
//! - Order: a publish runs one Lua script that takes the room's next offset, stores the frame in
//!   a capped history and PUBLISHes it, so Redis fixes one order per room for the whole cluster.
//!   Each script's keys, arguments and reply are typed in the call next to its Lua
//!   ([`scripts`]); what the channels carry is built and parsed in [`payload`] only.
//! - Delivery: one channel per room and per user, subscribed only while this node hosts a
//!   member (or a session of the user); channels waiting for their SUBSCRIBE share one command
//!   ([`subscriptions`]), sent on the mode's connection(s) through [`links`]. One reader task per subscription connection delivers in arrival
//!   order and fills offset gaps from the history before going on ([`subscriber`]).
//! - Presence: leases per (room, user, node) that each node renews; leases of a node that
//!   stopped renewing are reaped with `presence_leave` ([`presence`]).
//! - Failure: commands time out into [`BrokerError::Unavailable`] (never a false ack); the
//!   subscription reconnects with backoff, resubscribes and backfills. Readiness needs both the
//!   subscription and a write that completes ([`probe`]).
//! - Cluster mode ([`RedisBroker::start_cluster`]): every key of a room and its channel share
//!   one hash slot ([`keys`]), so the same scripts run on the shard owning the room, announcing
//!   with SPUBLISH; commands go through a cluster connection that follows redirections, and
//!   each master gets its own subscription connection and ordered reader ([`shards`]). Both
//!   modes share the sequencing ([`sequence`]).

mod batch;
mod connection;
mod keys;
mod lifecycle;
mod links;
mod payload;
mod presence;
mod probe;
mod scripts;
mod sequence;
mod shards;
mod subscriber;
mod subscriptions;
mod topology;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;

use super::memory::HistoryBudget;
use super::{
    Broker, BrokerError, Catchup, Deliver, Page, PageRequest, Presence, PresenceList, Retention,
    unix_ms,
};
use crate::protocol::{Resume, encode_direct, message_parts, message_parts_id};
use connection::Conn;
use keys::Keys;
use links::Links;
use scripts::{Call, Scripts};

pub use batch::PublishBatch;
use sequence::Position;

/// Everything the engine needs from the configuration.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The single Redis; unused in cluster mode, which takes its seed nodes apart.
    pub url: String,
    pub prefix: String,
    pub node_id: String,
    pub history: HistoryBudget,
    pub presence_lease: Duration,
    pub unsubscribe_delay: Duration,
    pub command_timeout: Duration,
    /// Single mode only; cluster mode runs one script per publication (see [`batch`]).
    pub publish_batch: PublishBatch,
    /// How long a room's epoch outlives its log, and the rooms with durable history.
    pub retention: Retention,
}

pub struct RedisBroker {
    shared: Arc<Shared>,
}

/// State shared by the request path and the engine's background tasks.
struct Shared {
    opts: RedisOptions,
    keys: Keys,
    scripts: Scripts,
    /// `PUBLISH`, or `SPUBLISH` in cluster mode (a room's or user's channel stays on its shard).
    publish: &'static str,
    conn: Conn,
    /// Single mode with batching on: the publish batcher; otherwise one script per publish.
    batcher: Option<batch::Batcher>,
    deliver: Arc<dyn Deliver>,
    subs: Mutex<Subs>,
    /// The subscription connection(s): the single Redis's, or one per cluster master.
    links: Links,
    /// Serializes SUBSCRIBE/UNSUBSCRIBE with the bookkeeping that decides them, so a delayed
    /// UNSUBSCRIBE can never overtake the SUBSCRIBE of a member that just joined. A tokio
    /// mutex because it is held across the round trip on purpose; its holder subscribes every
    /// channel waiting meanwhile in one command ([`subscriptions`]).
    commands: tokio::sync::Mutex<()>,
    connected: AtomicBool,
    /// Whether the last write through the command connection succeeded ([`probe`]); always
    /// true in cluster mode.
    commands_ok: AtomicBool,
    /// Rooms whose live gap read failed and is being retried: one retry task per room, however
    /// many later messages find the same gap while Redis cannot answer.
    refilling: Mutex<HashSet<Arc<str>>>,
    /// Lifecycle events for webhooks, when enabled ([`lifecycle`]).
    lifecycle: OnceLock<lifecycle::Tracker>,
    stop: CancellationToken,
}

#[derive(Default)]
struct Subs {
    /// Channel name → who wants it and whether Redis confirmed it.
    channels: HashMap<String, Sub>,
    /// Hosted rooms → where their delivery stands.
    rooms: HashMap<Arc<str>, Position>,
    /// Rooms → users this node holds a presence lease for.
    present: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Users → keys of their sessions on this node, leased in Redis for the per-user limit.
    sessions: HashMap<Arc<str>, HashSet<String>>,
    /// Channels whose first references wait for the next SUBSCRIBE ([`subscriptions`]).
    waiting: Vec<subscriptions::Waiter>,
}

#[derive(Default)]
struct Sub {
    refs: u32,
    /// The link on which Redis confirmed the subscription ([`links`]). `None`: not
    /// subscribed (yet).
    on: Option<Arc<str>>,
}

impl RedisBroker {
    /// Starts the engine on one Redis at `opts.url`. Connections are made in the background,
    /// so a node starts (and reports not ready) while Redis is down. Fails only on a malformed
    /// URL.
    pub fn start(
        opts: RedisOptions,
        deliver: Arc<dyn Deliver>,
        stop: CancellationToken,
    ) -> Result<Self, BrokerError> {
        let client = redis::Client::open(opts.url.as_str()).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.command_timeout))
            .set_response_timeout(Some(opts.command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        let shared = Arc::new(Shared::new(
            opts,
            Conn::Single(conn),
            Links::single(),
            deliver,
            stop,
        ));
        tokio::spawn(subscriber::run(shared.clone(), client));
        tokio::spawn(presence::run(shared.clone()));
        tokio::spawn(probe::run(shared.clone()));
        Ok(Self { shared })
    }

    /// Starts the engine on the Redis Cluster reached through `nodes` (seed URLs; the rest of
    /// the cluster is discovered from them). `opts.url` is not used. Like [`Self::start`], it
    /// connects in the background and fails only on a malformed URL.
    pub fn start_cluster(
        nodes: &[String],
        opts: RedisOptions,
        deliver: Arc<dyn Deliver>,
        stop: CancellationToken,
    ) -> Result<Self, BrokerError> {
        let client = ClusterClientBuilder::new(nodes.to_vec())
            // Enough to follow a MOVED or ASK while a slot moves or a replica takes over; a
            // dead shard's commands still end within the command timeout.
            .retries(2)
            .build()
            .map_err(unavailable)?;
        let config = ClusterConfig::new()
            .set_connection_timeout(opts.command_timeout)
            .set_response_timeout(opts.command_timeout);
        let conn = client.get_pending_async_connection_with_config(config);
        let shards = shards::Shards::new(nodes, opts.command_timeout)?;
        let shared = Arc::new(Shared::new(
            opts,
            Conn::Cluster(conn),
            Links::Cluster(shards),
            deliver,
            stop,
        ));
        tokio::spawn(shards::run(shared.clone()));
        tokio::spawn(presence::run(shared.clone()));
        // No probe: one key lives on one shard, and readiness in cluster mode means "some
        // master reachable", not "the probe key's master" (docs/architecture.md).
        shared.commands_ok.store(true, Ordering::Release);
        Ok(Self { shared })
    }
}

fn unavailable(err: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(err.to_string())
}

fn timed_out() -> BrokerError {
    BrokerError::Unavailable("redis timed out".into())
}

/// Runs one Redis call under `timeout`; its error, or running out of time, is `unavailable`.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(unavailable(err)),
        Err(_) => Err(timed_out()),
    }
}

impl Shared {
    fn new(
        opts: RedisOptions,
        conn: Conn,
        links: Links,
        deliver: Arc<dyn Deliver>,
        stop: CancellationToken,
    ) -> Self {
        let cluster = links.is_cluster();
        let keys = Keys::new(&opts.prefix, cluster);
        let scripts = Scripts::new(keys.clone(), opts.history, opts.retention.clone(), cluster);
        // Cluster mode: a script's keys must share one slot, and publications to different
        // rooms rarely do, so batching there would mostly send batches of one.
        let batcher = (!cluster && opts.publish_batch.max > 1).then(|| {
            let context = batch::Context {
                conn: conn.clone(),
                scripts: scripts.clone(),
                timeout: opts.command_timeout,
                batch: opts.publish_batch,
            };
            batch::Batcher::start(context, stop.clone())
        });
        Self {
            keys,
            scripts,
            publish: if cluster { "SPUBLISH" } else { "PUBLISH" },
            opts,
            conn,
            batcher,
            deliver,
            subs: Mutex::default(),
            links,
            commands: tokio::sync::Mutex::new(()),
            connected: AtomicBool::new(false),
            commands_ok: AtomicBool::new(false),
            refilling: Mutex::new(HashSet::new()),
            lifecycle: OnceLock::new(),
            stop,
        }
    }

    /// Runs one Redis call under the command timeout.
    async fn call<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BrokerError> {
        within(self.opts.command_timeout, call).await
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Runs one script call under the command timeout.
    async fn run<T: redis::FromRedisValue>(&self, call: Call<T>) -> Result<T, BrokerError> {
        let mut conn = self.conn();
        self.call(call.run(&mut conn)).await
    }
}

impl Shared {
    /// Records what a history read of `room` saw (`top` in `epoch`) as the room's position if
    /// it has none yet. Returns the next offset due when the position, in the same epoch, is
    /// already past `top`: another join's newer read, or live messages, moved it on while this
    /// read was under way, and the offsets in between will not come live again.
    fn settle_position(&self, room: &str, epoch: &Arc<str>, top: u64) -> Option<u64> {
        let position = self.subs.lock().rooms.get(room).cloned()?;
        let mut seq = position.lock();
        match seq.next {
            None => {
                seq.next = Some(top + 1);
                seq.epoch = Some(epoch.clone());
                None
            }
            Some(next) if next > top + 1 && seq.epoch.as_ref() == Some(epoch) => Some(next),
            Some(_) => None,
        }
    }

    /// Moves a join's `catchup` up to the live stream, which continues at `next`: a plain join
    /// starts there; a recovered resume also gets the frames in between from the history, or
    /// is told it is not recovered if the history no longer holds them all.
    async fn catch_up_to(&self, room: &str, catchup: &mut Catchup, next: u64) {
        let (from, to) = (catchup.top + 1, next - 1);
        catchup.top = to;
        if !catchup.recovered {
            return;
        }
        let read = self.run(self.scripts.range(room, from, to)).await;
        match read {
            Ok((Some(epoch), first, frames, _))
                if *epoch == *catchup.epoch
                    && first == from
                    && frames.len() as u64 == to - from + 1 =>
            {
                catchup
                    .replay
                    .extend(frames.into_iter().map(Utf8Bytes::from));
            }
            _ => {
                catchup.recovered = false;
                catchup.replay.clear();
            }
        }
    }
}

impl RedisBroker {
    /// One unkeyed publication of the frame `prefix` offset `suffix`: batched when batching is
    /// on.
    async fn publish_parts(
        &self,
        room: &str,
        prefix: String,
        suffix: String,
    ) -> Result<u64, BrokerError> {
        let s = &self.shared;
        // The batch script writes no durable stream: durable rooms publish one by one.
        if let Some(batcher) = s
            .batcher
            .as_ref()
            .filter(|_| s.opts.retention.durable(room).is_none())
        {
            return batcher.publish(room, prefix, suffix).await;
        }
        let offset = s
            .run(s.scripts.publish(room, &prefix, &suffix, None))
            .await?;
        Ok(offset.unsigned_abs())
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, room: &str, from: &str, data: &RawValue) -> Result<u64, BrokerError> {
        let (prefix, suffix) = message_parts(room, from, data, unix_ms());
        self.publish_parts(room, prefix, suffix).await
    }

    /// Keyed publishes skip the batcher: a batch's offsets are one room's first and the ones
    /// after it, which a repeat (publishing nothing) would break. The backend's `id` is in the
    /// frame's parts, so it takes either path unchanged.
    async fn publish_once(
        &self,
        room: &str,
        from: &str,
        data: &RawValue,
        key: Option<&str>,
        id: Option<&str>,
    ) -> Result<(u64, bool), BrokerError> {
        let (prefix, suffix) = message_parts_id(room, from, data, id, unix_ms());
        let Some(key) = key else {
            return self
                .publish_parts(room, prefix, suffix)
                .await
                .map(|offset| (offset, false));
        };
        let s = &self.shared;
        let call = s.scripts.publish(room, &prefix, &suffix, Some(key));
        let offset = s.run(call).await?;
        Ok((offset.unsigned_abs(), offset < 0))
    }

    async fn history(&self, room: &str, resume: Option<&Resume>) -> Result<Catchup, BrokerError> {
        let s = &self.shared;
        let (epoch, top, recovered, frames) = s.run(s.scripts.history(room, resume)).await?;
        let epoch: Arc<str> = Arc::from(epoch);
        let mut catchup = Catchup {
            epoch,
            top,
            recovered: resume.is_some() && recovered == 1,
            replay: frames.into_iter().map(Utf8Bytes::from).collect(),
        };
        if let Some(next) = s.settle_position(room, &catchup.epoch, top) {
            s.catch_up_to(room, &mut catchup, next).await;
        }
        Ok(catchup)
    }

    async fn page(&self, room: &str, request: &PageRequest) -> Result<Option<Page>, BrokerError> {
        let s = &self.shared;
        let (epoch, top, frames, more) = s.run(s.scripts.page(room, request)).await?;
        Ok(epoch.map(|epoch| Page {
            epoch: Arc::from(epoch),
            top,
            frames: frames.into_iter().map(Utf8Bytes::from).collect(),
            more: more == 1,
        }))
    }

    async fn subscribe(&self, room: &str) -> Result<(), BrokerError> {
        let s = &self.shared;
        s.arrive('r', room).await;
        s.acquire(s.keys.room_channel(room), Some(room)).await
    }

    async fn unsubscribe(&self, room: &str) {
        let s = &self.shared;
        s.depart('r', room).await;
        s.release(
            s.keys.room_channel(room),
            Some(Arc::from(room)),
            s.opts.unsubscribe_delay,
        )
        .await;
    }

    async fn send_direct(&self, to: &str, from: &str, data: &RawValue) -> Result<(), BrokerError> {
        let s = &self.shared;
        let frame = encode_direct(from, data, unix_ms());
        let payload = payload::direct(frame.as_str());
        let mut conn = s.conn();
        let mut cmd = redis::cmd(s.publish);
        cmd.arg(s.keys.user_channel(to)).arg(payload);
        let receivers = s.call(cmd.query_async::<u64>(&mut conn)).await?;
        if receivers == 0 {
            // No node subscribes the user's channel: no session anywhere.
            s.undelivered(to, from, data.get()).await;
        }
        Ok(())
    }

    async fn disconnect_user(&self, user: &str) -> Result<(), BrokerError> {
        let s = &self.shared;
        let mut conn = s.conn();
        let mut cmd = redis::cmd(s.publish);
        cmd.arg(s.keys.user_channel(user)).arg(payload::DISCONNECT);
        s.call(cmd.query_async::<u64>(&mut conn)).await.map(drop)
    }

    async fn watch_user(&self, user: &str) -> Result<(), BrokerError> {
        let s = &self.shared;
        s.arrive('u', user).await;
        s.acquire(s.keys.user_channel(user), None).await
    }

    async fn unwatch_user(&self, user: &str) {
        let s = &self.shared;
        s.depart('u', user).await;
        s.release(s.keys.user_channel(user), None, Duration::ZERO)
            .await;
    }

    /// Subscribed, and able to complete a write: both, or publishes fail.
    fn available(&self) -> bool {
        let s = &self.shared;
        s.connected.load(Ordering::Acquire) && s.commands_ok.load(Ordering::Acquire)
    }
}

#[async_trait]
impl Presence for RedisBroker {
    async fn claim_session(
        &self,
        user: &str,
        key: &str,
        limit: usize,
    ) -> Result<bool, BrokerError> {
        let s = &self.shared;
        let lease = s.opts.presence_lease.as_millis() as u64;
        let now = unix_ms();
        let claimed = s
            .run(s.scripts.claim_session(user, key, now, lease, limit))
            .await?;
        if claimed {
            let mut subs = s.subs.lock();
            subs.sessions
                .entry(Arc::from(user))
                .or_default()
                .insert(key.to_owned());
        }
        Ok(claimed)
    }

    async fn release_session(&self, user: &str, key: &str) {
        let s = &self.shared;
        {
            let mut subs = s.subs.lock();
            if let Some(keys) = subs.sessions.get_mut(user) {
                keys.remove(key);
                if keys.is_empty() {
                    subs.sessions.remove(user);
                }
            }
        }
        let mut conn = s.conn();
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(s.keys.sessions(user)).arg(key);
        if let Err(err) = s.call(cmd.query_async::<u64>(&mut conn)).await {
            // The lease runs out by itself.
            tracing::warn!(user, %err, "session lease left to expire");
        }
    }

    async fn add(&self, room: &str, user: &str) -> Result<(), BrokerError> {
        let s = &self.shared;
        let room: Arc<str> = Arc::from(room);
        s.subs
            .lock()
            .present
            .entry(room.clone())
            .or_default()
            .insert(Arc::from(user));
        let lease = s.opts.presence_lease.as_millis() as u64;
        let call = s
            .scripts
            .presence_add(&room, user, &s.opts.node_id, unix_ms(), lease);
        s.run(call).await.map(drop)
    }

    async fn remove(&self, room: &str, user: &str) {
        let s = &self.shared;
        {
            let mut subs = s.subs.lock();
            if let Some(users) = subs.present.get_mut(room) {
                users.remove(user);
                if users.is_empty() {
                    subs.present.remove(room);
                }
            }
        }
        let call = s.scripts.presence_remove(room, user, &s.opts.node_id);
        if let Err(err) = s.run(call).await {
            // The lease expires by itself and is reaped with the same announcement.
            tracing::warn!(room, user, %err, "presence lease left to expire");
        }
    }

    async fn list(&self, room: &str) -> Result<PresenceList, BrokerError> {
        let s = &self.shared;
        let (seq, leases) = s.run(s.scripts.presence_list(room, unix_ms())).await?;
        let mut users: Vec<String> = leases
            .into_iter()
            .filter_map(|lease| lease.split_once('/').map(|(user, _)| user.to_owned()))
            .collect();
        users.sort_unstable();
        users.dedup();
        Ok(PresenceList { users, seq })
    }

    async fn node_loads(&self, sessions: u64) -> Result<Vec<u64>, BrokerError> {
        let s = &self.shared;
        let lease = s.opts.presence_lease.as_millis() as u64;
        let call = s
            .scripts
            .node_loads(&s.opts.node_id, sessions, unix_ms(), lease);
        s.run(call).await
    }
}
