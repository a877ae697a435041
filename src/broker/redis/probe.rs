//! Whether this node can complete Redis commands right now, for readiness. The subscription
//! connection being up is not enough: a paused Redis keeps its sockets open, and a Redis at
//! `maxmemory` with `noeviction` answers reads and refuses every write, so every publish failed
//! with `unavailable` while `/readyz` still answered 200. Every [`EVERY`] a small write (a `SET`
//! with a TTL, refused like a publish when Redis is full) goes through the command connection
//! under the command timeout, and readiness follows its last outcome: it turns 503 within
//! `EVERY` + `redis.command_timeout_ms` of Redis stalling or filling up, and 200 again within
//! `EVERY` of it recovering. Single Redis only (see `RedisBroker::start_cluster`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use crate::broker::unix_ms;

/// How often the probe writes.
pub(super) const EVERY: Duration = Duration::from_secs(1);

pub(super) async fn run(shared: Arc<Shared>) {
    let key = shared.keys.probe(&shared.opts.node_id);
    let ttl_ms = (10 * EVERY).as_millis() as u64;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut conn = shared.conn();
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(unix_ms()).arg("PX").arg(ttl_ms);
        let result = shared.call(set.query_async::<()>(&mut conn)).await;
        let ok = result.is_ok();
        if shared.commands_ok.swap(ok, Ordering::AcqRel) != ok {
            match result {
                Ok(()) => tracing::info!("redis completes commands again"),
                Err(err) => tracing::warn!(%err, "redis cannot complete commands; not ready"),
            }
        }
    }
}
