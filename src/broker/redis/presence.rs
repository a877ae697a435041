//! Presence leases. Every `lease / 3` this node renews its leases (so they outlive one missed
//! round) and, for every room it hosts, reaps leases that expired: those of a node that crashed
//! or lost Redis. A user whose last lease is reaped gets `presence_leave`, so a crashed node's
//! users vanish within `lease + lease / 3`.
//!
//! An outage of Redis (paused, full, restarting) stops every node's renewals at once, so right
//! after it every lease looks expired, the live nodes' as much as a dead one's. A node that saw
//! its own renewals fail therefore reaps nothing until they have succeeded for a whole lease
//! ([`Health`]): by then every live node has renewed, and only the dead ones' leases are left
//! to reap (up to one lease later than without the outage). A node cut off alone (its own link
//! down past the lease) looks dead to the others and is reaped; it finds its leases gone at its
//! next renewal, restores them and announces `presence_join`, so members' views converge
//! within one renewal period. The same pass keeps hosted rooms' positions alive and renews the
//! leases that count this node's sessions against per-user limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::Semaphore;

use super::{BrokerError, Shared};
use crate::broker::unix_ms;

/// Scripts in flight at once per pass; the multiplexed connection pipelines them.
const CONCURRENCY: usize = 256;

pub(super) async fn run(shared: Arc<Shared>) {
    let period = shared.opts.presence_lease / 3;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A pass lasts as long as its slowest call: up to the command timeout while a cluster shard
    // is down or rejoining. Passes run as tasks of their own, up to two at once, so renewals on
    // the healthy shards keep their pace instead of waiting for it.
    let in_flight = Arc::new(Semaphore::new(2));
    let health = Arc::new(parking_lot::Mutex::new(Health::default()));
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let may_reap = health.lock().may_reap(shared.opts.presence_lease);
            let failures = pass(&shared, may_reap).await;
            health.lock().record(failures.count == 0, period);
            drop(permit);
            if let Some(err) = failures.first {
                tracing::warn!(failed = failures.count, %err, "presence pass incomplete");
            }
        });
    }
}

/// Whether this node's renewals have been going through long enough for it to reap others'.
#[derive(Default)]
pub(super) struct Health {
    last_ok: Option<Instant>,
    ok_since: Option<Instant>,
}

impl Health {
    /// A pass ended, with every call done or not. A success after a failure, or after a gap
    /// longer than two periods (calls that hung without timing out), starts the clock again.
    pub(super) fn record(&mut self, ok: bool, period: Duration) {
        let now = Instant::now();
        if !ok {
            self.last_ok = None;
            self.ok_since = None;
            return;
        }
        if self.last_ok.is_none_or(|t| now - t > 2 * period) {
            self.ok_since = Some(now);
        }
        self.last_ok = Some(now);
    }

    pub(super) fn may_reap(&self, lease: Duration) -> bool {
        self.ok_since.is_some_and(|t| t.elapsed() >= lease)
    }
}

/// The calls that failed in one pass.
#[derive(Default)]
struct Failures {
    count: usize,
    first: Option<BrokerError>,
}

impl Failures {
    /// Records the results of one batch; true when the step should stop. With one Redis a
    /// failure means it is unreachable, and the rest would only wait out their timeouts. A
    /// cluster goes on: one shard being down must not stop the renewals on the others, or
    /// their users would vanish from presence.
    fn note<T>(&mut self, shared: &Shared, results: Vec<Result<T, BrokerError>>) -> bool {
        for err in results.into_iter().filter_map(Result::err) {
            self.count += 1;
            self.first.get_or_insert(err);
        }
        self.count > 0 && !shared.links.is_cluster()
    }

    fn merge(mut self, other: Failures) -> Self {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
        self
    }
}

type Members = Vec<(Arc<str>, Vec<String>)>;

async fn pass(shared: &Shared, may_reap: bool) -> Failures {
    let lease = shared.opts.presence_lease.as_millis() as u64;
    let now = unix_ms();
    let (mut renew, mut hosted, mut sessions) = {
        let subs = shared.subs.lock();
        let renew: Members = subs
            .present
            .iter()
            .map(|(room, users)| {
                let members = users
                    .iter()
                    .map(|user| format!("{user}/{}", shared.opts.node_id))
                    .collect();
                (room.clone(), members)
            })
            .collect();
        let hosted: Vec<Arc<str>> = subs.rooms.keys().cloned().collect();
        let sessions: Members = subs
            .sessions
            .iter()
            .map(|(user, keys)| (user.clone(), keys.iter().cloned().collect()))
            .collect();
        (renew, hosted, sessions)
    };
    let mut failures = Failures::default();
    // In a cluster, calls to a shard that is down would only wait out the command timeout:
    // skip them.
    if let Some(shards) = shared.links.shards() {
        let before = renew.len() + hosted.len() + sessions.len();
        renew.retain(|(room, _)| shards.reachable(&shared.keys.leases(room)));
        hosted.retain(|room| shards.reachable(&shared.keys.leases(room)));
        sessions.retain(|(user, _)| shards.reachable(&shared.keys.sessions(user)));
        failures.count = before - renew.len() - hosted.len() - sessions.len();
        if failures.count > 0 {
            failures.first = Some(BrokerError::Unavailable("redis shard unreachable".into()));
        }
    }
    // Renewing before reaping, so this node never reaps a lease of its own that is only late.
    let leases = async {
        let renewed = renew_leases(shared, &renew, now, lease).await;
        if !may_reap || renewed.count > 0 {
            return renewed;
        }
        renewed.merge(reap(shared, &hosted, now).await)
    };
    let (sessions, leases) = tokio::join!(renew_sessions(shared, &sessions, now, lease), leases);
    failures.merge(sessions).merge(leases)
}

/// Session leases for the per-user limit: one pipeline per user (its one key, so a cluster
/// serves it from one shard), `CONCURRENCY` users at a time.
async fn renew_sessions(shared: &Shared, sessions: &Members, now: u64, lease: u64) -> Failures {
    let mut failures = Failures::default();
    for chunk in sessions.chunks(CONCURRENCY) {
        let calls = chunk.iter().map(|(user, keys)| {
            let key = shared.keys.sessions(user);
            let mut pipe = redis::pipe();
            for session in keys {
                pipe.cmd("ZADD")
                    .arg(&key)
                    .arg(now + lease)
                    .arg(session)
                    .ignore();
            }
            pipe.cmd("PEXPIRE").arg(&key).arg(lease * 2).ignore();
            let mut conn = shared.conn();
            async move { shared.call(pipe.query_async::<()>(&mut conn)).await }
        });
        if failures.note(shared, join_all(calls).await) {
            break;
        }
    }
    failures
}

/// This node's presence leases, one script per room.
async fn renew_leases(shared: &Shared, renew: &Members, now: u64, lease: u64) -> Failures {
    let mut failures = Failures::default();
    for chunk in renew.chunks(CONCURRENCY) {
        let calls = chunk.iter().map(|(room, members)| async move {
            // The script restores (and announces) a lease that is gone, so it must not renew a
            // user who left since the pass began: checked here, in the poll that sends it
            // (`presence_remove` forgets the user before it sends its ZREM on the same
            // connection, which keeps order).
            let members = still_present(shared, room, members);
            if members.is_empty() {
                return Ok(0);
            }
            let call = shared.scripts.presence_refresh(room, &members, now, lease);
            shared.run(call).await
        });
        if failures.note(shared, join_all(calls).await) {
            break;
        }
    }
    failures
}

/// The `user/node` lease members of `room` whose user this node still holds present.
fn still_present<'a>(shared: &Shared, room: &str, members: &'a [String]) -> Vec<&'a String> {
    let subs = shared.subs.lock();
    let Some(users) = subs.present.get(room) else {
        return Vec::new();
    };
    members
        .iter()
        .filter(|member| {
            let user = member
                .split_once('/')
                .map_or(member.as_str(), |(user, _)| user);
            users.contains(user)
        })
        .collect()
}

/// Expired leases in every hosted room, announced as `presence_leave`; also keeps the rooms'
/// positions alive.
async fn reap(shared: &Shared, hosted: &[Arc<str>], now: u64) -> Failures {
    let mut failures = Failures::default();
    for chunk in hosted.chunks(CONCURRENCY) {
        let calls = chunk
            .iter()
            .map(|room| shared.run(shared.scripts.presence_reap(room, now)));
        if failures.note(shared, join_all(calls).await) {
            break;
        }
    }
    failures
}
