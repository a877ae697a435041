//! Cluster mode's subscriptions: one plain RESP3 connection per master (a *link*), each with
//! its own ordered reader, SSUBSCRIBEd to the channels whose slot that master owns.
//!
//! A room's messages are SPUBLISHed on the shard owning its slot and reach only the links to
//! that shard, in the order the shard ran the scripts; each link's reader hands them to the
//! shared sequencing ([`sequence`]) exactly as the single mode's reader does.
//!
//! A supervisor task keeps the links matching the cluster: it reads `CLUSTER SLOTS`, opens a
//! link per master and closes links to nodes that are no longer masters, and (re)subscribes
//! every wanted channel on the link of its slot's current owner, then backfills the rooms it
//! (re)subscribed. It runs every [`REFRESH`], and at once when a link comes up or goes down or
//! a master drops channels of a slot that moved away (an unsolicited `sunsubscribe`: a slot
//! migration, or a failover that demoted it). A dead master's rooms stay unsubscribed until it
//! is back or a replica took over; meanwhile their commands fail as `unavailable`.
//!
//! [`sequence`]: super::sequence

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion,
    PushInfo, PushKind, Value,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::keys::Channel;
use super::subscriber::{BACKOFF_MIN, pause};
use super::subscriptions::SUBSCRIBE_MAX;
use super::topology::{Topology, key_slot};
use super::{BrokerError, Shared, sequence, unavailable};

/// How often the supervisor re-reads the slot map when nothing told it to: the bound on
/// noticing a failover whose old master vanished without a word.
const REFRESH: Duration = Duration::from_secs(1);

/// The cluster's subscription links. Owned by [`super::links::Links`]; driven by [`run`].
pub(super) struct Shards {
    /// The configured seed nodes, asked for the slot map when no link is up.
    seeds: Vec<ConnectionInfo>,
    command_timeout: Duration,
    topology: Mutex<Topology>,
    links: Mutex<HashMap<Arc<str>, Link>>,
    /// Wakes the supervisor: a link went up or down, or a slot moved.
    changed: Notify,
    /// Set once every master had a link: until then the node is not ready.
    linked_once: AtomicBool,
    generation: AtomicU64,
}

/// A wanted channel to subscribe on its slot's owner, and the link it is on now, if any.
struct Move {
    channel: String,
    from: Option<Arc<str>>,
}

struct Link {
    /// Tells a link task that it is still the current one for its address.
    generation: u64,
    /// `None` while connecting.
    conn: Option<MultiplexedConnection>,
    stop: CancellationToken,
}

impl Shards {
    /// Fails only on a malformed seed URL.
    pub(super) fn new(nodes: &[String], command_timeout: Duration) -> Result<Self, BrokerError> {
        let seeds = nodes
            .iter()
            .map(|url| url.as_str().into_connection_info().map_err(unavailable))
            .collect::<Result<Vec<_>, _>>()?;
        if seeds.is_empty() {
            return Err(BrokerError::Unavailable("no cluster seed nodes".into()));
        }
        Ok(Self {
            seeds,
            command_timeout,
            topology: Mutex::default(),
            links: Mutex::default(),
            changed: Notify::new(),
            linked_once: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        })
    }

    fn conn(&self, addr: &str) -> Option<MultiplexedConnection> {
        self.links.lock().get(addr)?.conn.clone()
    }

    /// How to reach `addr` (`host:port`): the first seed's settings (credentials), in RESP3, so
    /// the same connection carries SSUBSCRIBE replies and `smessage` pushes.
    fn connection_info(&self, addr: &str) -> Option<ConnectionInfo> {
        let (host, port) = addr.rsplit_once(':')?;
        let seed = &self.seeds[0];
        let redis = seed
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        Some(
            seed.clone()
                .set_addr(ConnectionAddr::Tcp(host.to_owned(), port.parse().ok()?))
                .set_redis_settings(redis),
        )
    }

    /// SSUBSCRIBEs `channels` on the links of their slots' masters, one pipeline per master
    /// (the masters concurrently), and returns for each channel the master it is on now.
    /// Called under `Shared::commands`. A channel that failed is subscribed by the supervisor
    /// once it can.
    pub(super) async fn subscribe(
        &self,
        shared: &Shared,
        channels: &[String],
    ) -> Vec<Result<Arc<str>, BrokerError>> {
        let mut results: Vec<Result<Arc<str>, BrokerError>> = vec![
            Err(BrokerError::Unavailable(
                "redis cluster slot map unknown".into()
            ));
            channels.len()
        ];
        let mut by_owner: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        {
            let topology = self.topology.lock();
            for (i, channel) in channels.iter().enumerate() {
                if let Some(owner) = topology.owner(key_slot(channel)) {
                    by_owner.entry(owner.clone()).or_default().push(i);
                }
            }
        }
        if by_owner.values().map(Vec::len).sum::<usize>() < channels.len() {
            self.changed.notify_one();
        }
        let calls = by_owner.into_iter().map(|(owner, indices)| async move {
            let result = match self.conn(&owner) {
                Some(conn) => {
                    let group: Vec<&str> = indices.iter().map(|&i| channels[i].as_str()).collect();
                    // On failure most likely MOVED: the slot map is stale.
                    ssubscribe(shared, conn, &group)
                        .await
                        .inspect_err(|_| self.changed.notify_one())
                }
                None => Err(BrokerError::Unavailable(format!(
                    "redis shard {owner} unreachable"
                ))),
            };
            (indices, result.map(|()| owner))
        });
        for (indices, result) in join_all(calls).await {
            for i in indices {
                results[i] = result.clone();
            }
        }
        results
    }

    /// Whether the master owning `key`'s slot has a live link (true while the slot map is
    /// unknown). Periodic work skips a shard that is down instead of waiting out its timeouts.
    pub(super) fn reachable(&self, key: &str) -> bool {
        let owner = self.topology.lock().owner(key_slot(key)).cloned();
        owner.is_none_or(|owner| self.conn(&owner).is_some())
    }

    /// SUNSUBSCRIBEs `channel` on the link `on`, if it is still up.
    pub(super) async fn unsubscribe(&self, shared: &Shared, channel: &str, on: &str) {
        if let Some(mut conn) = self.conn(on) {
            let mut cmd = redis::cmd("SUNSUBSCRIBE");
            cmd.arg(channel);
            let _ = shared.call(cmd.query_async::<Value>(&mut conn)).await;
        }
    }

    /// Reads the slot map from a live link, else from a seed or a known master. Takes the first
    /// complete map; failing that, the most complete one (a node may not have heard of every
    /// assignment yet).
    async fn discover(&self) -> Result<Topology, BrokerError> {
        let live: Vec<(Arc<str>, MultiplexedConnection)> = self
            .links
            .lock()
            .iter()
            .filter_map(|(addr, link)| Some((addr.clone(), link.conn.clone()?)))
            .collect();
        let mut best: Option<Topology> = None;
        let mut consider = |topology: Topology| {
            if best
                .as_ref()
                .is_none_or(|b| topology.coverage() > b.coverage())
            {
                best = Some(topology);
            }
        };
        for (addr, mut conn) in live {
            match self.ask(&addr, &mut conn).await {
                Some(topology) if topology.complete() => return Ok(topology),
                Some(topology) => consider(topology),
                None => {}
            }
        }
        let mut others: Vec<ConnectionInfo> = self.seeds.clone();
        let known = self.topology.lock().masters();
        others.extend(known.iter().filter_map(|addr| self.connection_info(addr)));
        for info in others {
            let host = match info.addr() {
                ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
                other => other.to_string(),
            };
            let connect = async {
                let client = redis::Client::open(info).ok()?;
                client.get_multiplexed_async_connection().await.ok()
            };
            let Ok(Some(mut conn)) = tokio::time::timeout(self.command_timeout, connect).await
            else {
                continue;
            };
            match self.ask(&host, &mut conn).await {
                Some(topology) if topology.complete() => return Ok(topology),
                Some(topology) => consider(topology),
                None => {}
            }
        }
        best.ok_or_else(|| {
            BrokerError::Unavailable("no redis cluster node answered CLUSTER SLOTS".into())
        })
    }

    async fn ask(&self, addr: &str, conn: &mut MultiplexedConnection) -> Option<Topology> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let reply = tokio::time::timeout(self.command_timeout, cmd.query_async::<Value>(conn))
            .await
            .ok()?
            .ok()?;
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        Topology::parse(&reply, host)
    }

    /// Installs a new slot map: a link for every master, none for anyone else.
    fn install(&self, shared: &Arc<Shared>, topology: Topology) {
        let masters = topology.masters();
        if *self.topology.lock() != topology {
            tracing::info!(masters = ?masters, "redis cluster slot map");
        }
        *self.topology.lock() = topology;
        let mut gone = Vec::new();
        {
            let mut links = self.links.lock();
            links.retain(|addr, link| {
                let keep = masters.contains(addr);
                if !keep {
                    link.stop.cancel();
                    gone.push(addr.clone());
                }
                keep
            });
            for addr in masters {
                if links.contains_key(&addr) {
                    continue;
                }
                let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                let stop = shared.stop.child_token();
                links.insert(
                    addr.clone(),
                    Link {
                        generation,
                        conn: None,
                        stop: stop.clone(),
                    },
                );
                tokio::spawn(link(shared.clone(), addr, generation, stop));
            }
        }
        for addr in gone {
            super::subscriptions::detach(shared, Some(&addr));
        }
    }

    /// Subscribes every wanted channel that is not subscribed on its slot's current owner, and
    /// backfills the rooms that were. Channels whose owner's link is down wait for it.
    async fn reroute(&self, shared: &Arc<Shared>) {
        let mut rehomed = Vec::new();
        {
            let _serial = shared.commands.lock().await;
            for (owner, moves) in self.plan(shared) {
                if let Some(conn) = self.conn(&owner) {
                    self.move_to(shared, &owner, conn, &moves, &mut rehomed)
                        .await;
                }
            }
        }
        if !rehomed.is_empty() {
            tracing::info!(rooms = rehomed.len(), "rooms resubscribed; backfilling");
            sequence::backfill(shared, &rehomed).await;
        }
    }

    /// The wanted channels not subscribed on their slot's owner, by owner.
    fn plan(&self, shared: &Shared) -> HashMap<Arc<str>, Vec<Move>> {
        let topology = self.topology.lock();
        let subs = shared.subs.lock();
        let mut plan: HashMap<Arc<str>, Vec<Move>> = HashMap::new();
        for (channel, sub) in &subs.channels {
            let owner = topology.owner(key_slot(channel));
            if let Some(owner) =
                owner.filter(|owner| sub.refs > 0 && sub.on.as_ref() != Some(owner))
            {
                plan.entry(owner.clone()).or_default().push(Move {
                    channel: channel.clone(),
                    from: sub.on.clone(),
                });
            }
        }
        plan
    }

    /// SSUBSCRIBEs `moves` on `owner`'s link, drops them from where they were, and adds their
    /// rooms to `rehomed`. Stops at the first failure; the next pass retries.
    async fn move_to(
        &self,
        shared: &Shared,
        owner: &Arc<str>,
        conn: MultiplexedConnection,
        moves: &[Move],
        rehomed: &mut Vec<Arc<str>>,
    ) {
        for chunk in moves.chunks(SUBSCRIBE_MAX) {
            let channels: Vec<&str> = chunk.iter().map(|m| m.channel.as_str()).collect();
            if let Err(err) = ssubscribe(shared, conn.clone(), &channels).await {
                tracing::warn!(shard = %owner, %err, "resubscribe failed");
                return;
            }
            {
                let mut subs = shared.subs.lock();
                for m in chunk {
                    if let Some(sub) = subs.channels.get_mut(&m.channel) {
                        sub.on = Some(owner.clone());
                    }
                    if let Some(Channel::Room(room)) = shared.keys.parse_channel(&m.channel) {
                        rehomed.push(Arc::from(room));
                    }
                }
            }
            for m in chunk {
                if let Some(from) = m.from.as_ref().filter(|from| *from != owner) {
                    self.unsubscribe(shared, &m.channel, from).await;
                }
            }
        }
    }

    /// Ready once every master has had a link, and while at least one is up: a shard that is
    /// down for every node is reported per request (`unavailable` for its rooms), not by
    /// taking every node out of the balancer.
    fn update_ready(&self, shared: &Shared) {
        let links = self.links.lock();
        let up = links.values().filter(|l| l.conn.is_some()).count();
        if up > 0 && up == links.len() {
            self.linked_once.store(true, Ordering::Release);
        }
        let ready = up > 0 && self.linked_once.load(Ordering::Acquire);
        shared.connected.store(ready, Ordering::Release);
    }
}

/// SSUBSCRIBEs `channels` (all owned by the master behind `conn`), one pipeline of at most
/// [`SUBSCRIBE_MAX`] commands at a time: SSUBSCRIBE takes several channels only when they share
/// a slot, and rooms rarely do. Stops at the first failure.
async fn ssubscribe(
    shared: &Shared,
    mut conn: MultiplexedConnection,
    channels: &[&str],
) -> Result<(), BrokerError> {
    for chunk in channels.chunks(SUBSCRIBE_MAX) {
        let mut pipe = redis::pipe();
        for channel in chunk {
            pipe.cmd("SSUBSCRIBE").arg(*channel);
        }
        shared
            .call(pipe.query_async::<Vec<Value>>(&mut conn))
            .await?;
    }
    Ok(())
}

/// The supervisor: keeps the links and subscriptions matching the cluster until `stop`.
pub(super) async fn run(shared: Arc<Shared>) {
    let Some(shards) = shared.links.shards() else {
        return;
    };
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match shards.discover().await {
            Ok(topology) => shards.install(&shared, topology),
            Err(err) => tracing::warn!(%err, "redis cluster slot map not refreshed"),
        }
        shards.reroute(&shared).await;
        shards.update_ready(&shared);
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = shards.changed.notified() => {}
            _ = tick.tick() => {}
        }
    }
}

/// One master's subscription connection and its ordered reader, reconnecting with backoff
/// until `stop` (the master left the slot map, or the engine stops).
async fn link(shared: Arc<Shared>, addr: Arc<str>, generation: u64, stop: CancellationToken) {
    let Some(shards) = shared.links.shards() else {
        return;
    };
    let Some(info) = shards.connection_info(&addr) else {
        tracing::warn!(shard = %addr, "unusable shard address");
        return;
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        // The connection's driver hands pushes to this sender in arrival order; this task is
        // their single reader. Unbounded: what waits here is what Redis already sent, and the
        // reader awaits at most one command per message (a gap's history read, bounded by
        // `redis.command_timeout_ms`; a failed read is retried in the background, not here),
        // so it holds at most the shard's publish rate × the command timeout. Redis bounds
        // what it buffers for a subscriber beyond that (client-output-buffer-limit pubsub).
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PushInfo>();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(shards.command_timeout))
            .set_response_timeout(Some(shards.command_timeout))
            .set_push_sender(tx);
        let connect = async {
            let client = redis::Client::open(info.clone())?;
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        };
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            result = connect => result,
        };
        match connected {
            Ok(conn) => {
                let current = match shards.links.lock().get_mut(&addr) {
                    Some(link) if link.generation == generation => {
                        link.conn = Some(conn);
                        true
                    }
                    _ => false,
                };
                if !current {
                    return;
                }
                tracing::info!(shard = %addr, "redis shard subscription up");
                backoff = BACKOFF_MIN;
                shards.changed.notify_one();
                read(&shared, &addr, &mut rx, &stop).await;
                if stop.is_cancelled() {
                    return;
                }
                tracing::warn!(shard = %addr, "redis shard subscription lost; reconnecting");
                match shards.links.lock().get_mut(&addr) {
                    Some(link) if link.generation == generation => link.conn = None,
                    _ => return,
                }
                super::subscriptions::detach(&shared, Some(&addr));
                shards.update_ready(&shared);
                shards.changed.notify_one();
            }
            Err(err) => tracing::warn!(shard = %addr, %err, "redis shard connection failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            more = pause(&shared, &mut backoff) => if !more { return },
        }
    }
}

/// Handles one link's pushes in arrival order until its connection ends.
async fn read(
    shared: &Arc<Shared>,
    addr: &Arc<str>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
    stop: &CancellationToken,
) {
    loop {
        let push = tokio::select! {
            () = stop.cancelled() => return,
            push = rx.recv() => push,
        };
        let Some(PushInfo { kind, data }) = push else {
            return;
        };
        match (kind, data.as_slice()) {
            (PushKind::SMessage, [Value::BulkString(channel), Value::BulkString(payload)]) => {
                match std::str::from_utf8(channel) {
                    Ok(channel) => sequence::handle(shared, channel, payload).await,
                    Err(_) => tracing::warn!("non-UTF-8 channel name dropped"),
                }
            }
            (PushKind::SUnsubscribe, [Value::BulkString(channel), ..]) => {
                dropped(shared, addr, &String::from_utf8_lossy(channel));
            }
            (PushKind::Disconnection, _) => return,
            _ => {}
        }
    }
}

/// The master at `addr` no longer carries `channel`. Either this node asked (the channel is
/// released, or already subscribed elsewhere) or the slot moved away: then the channel is
/// still wanted and marked on `addr`, so the supervisor moves it to the new owner.
fn dropped(shared: &Shared, addr: &str, channel: &str) {
    let moved = {
        let mut subs = shared.subs.lock();
        match subs.channels.get_mut(channel) {
            Some(sub) if sub.refs > 0 && sub.on.as_deref() == Some(addr) => {
                sub.on = None;
                true
            }
            _ => false,
        }
    };
    if moved {
        tracing::info!(shard = %addr, channel, "channel's slot moved away");
        if let Some(shards) = shared.links.shards() {
            shards.changed.notify_one();
        }
    }
}
