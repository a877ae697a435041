//! Presence leases. Every `lease / 3` this node renews its leases (so they outlive one missed
//! round) and, for every room it hosts, reaps leases that expired: those of a node that crashed
//! or lost Redis. A user whose last lease is reaped gets `presence_leave`, so a crashed node's
//! users vanish within `lease + lease / 3`. The same pass keeps hosted rooms' positions alive
//! and renews the leases that count this node's sessions against per-user limits.

use std::sync::Arc;

use futures_util::future::join_all;

use super::Shared;
use super::scripts;
use crate::broker::unix_ms;
use crate::protocol::presence_leave_parts;

/// Scripts in flight at once per pass; the multiplexed connection pipelines them.
const CONCURRENCY: usize = 256;

pub(super) async fn run(shared: Arc<Shared>) {
    let period = shared.opts.presence_lease / 3;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = pass(&shared).await {
            tracing::warn!(%err, "presence pass failed");
        }
    }
}

async fn pass(shared: &Shared) -> Result<(), super::BrokerError> {
    let lease = shared.opts.presence_lease.as_millis() as u64;
    let now = unix_ms();
    let (renew, hosted, sessions) = {
        let subs = shared.subs.lock();
        let renew: Vec<(Arc<str>, Vec<String>)> = subs
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
        let sessions: Vec<(Arc<str>, Vec<String>)> = subs
            .sessions
            .iter()
            .map(|(user, keys)| (user.clone(), keys.iter().cloned().collect()))
            .collect();
        (renew, hosted, sessions)
    };
    // Session leases for the per-user limit: one pipeline of ZADD per user.
    for chunk in sessions.chunks(CONCURRENCY) {
        let mut pipe = redis::pipe();
        for (user, keys) in chunk {
            let key = shared.keys.sessions(user);
            for session in keys {
                pipe.cmd("ZADD")
                    .arg(&key)
                    .arg(now + lease)
                    .arg(session)
                    .ignore();
            }
            pipe.cmd("PEXPIRE").arg(&key).arg(lease * 2).ignore();
        }
        let mut conn = shared.conn();
        shared.call(pipe.query_async::<()>(&mut conn)).await?;
    }
    for chunk in renew.chunks(CONCURRENCY) {
        let calls = chunk.iter().map(|(room, members)| {
            let mut conn = shared.conn();
            let mut invocation = scripts::PRESENCE_REFRESH.prepare_invoke();
            invocation
                .key(shared.keys.leases(room))
                .key(shared.keys.lease_index(room))
                .arg(now + lease)
                .arg(lease * 2)
                .arg(members);
            async move { shared.call(invocation.invoke_async::<u64>(&mut conn)).await }
        });
        for result in join_all(calls).await {
            result?;
        }
    }
    let ttl = shared.opts.history.ttl.as_millis() as u64;
    for chunk in hosted.chunks(CONCURRENCY) {
        let calls = chunk.iter().map(|room| {
            let mut conn = shared.conn();
            let (prefix, suffix) = presence_leave_parts(room);
            let mut invocation = scripts::PRESENCE_REAP.prepare_invoke();
            invocation
                .key(shared.keys.leases(room))
                .key(shared.keys.lease_index(room))
                .key(shared.keys.meta(room))
                .arg(now)
                .arg(shared.keys.room_channel(room))
                .arg(prefix)
                .arg(suffix)
                .arg(ttl);
            async move { shared.call(invocation.invoke_async::<u64>(&mut conn)).await }
        });
        for result in join_all(calls).await {
            result?;
        }
    }
    Ok(())
}
