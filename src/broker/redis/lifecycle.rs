//! Lifecycle events in the Redis engine (the decisions themselves are the scripts of
//! [`super::scripts`]' `lifecycle`). This node holds `u/user` while it has a session of the
//! user and `r/room` while it has a member of the room (the node's own first/last transitions:
//! `watch_user`, `subscribe` and their reverses); the scripts turn the cluster's first and last
//! holder into events. Holds are leases renewed every `lease / 3`; the leases of a node that
//! died are reaped by the others (under the same outage rule as presence: [`Health`]), which
//! makes its users and rooms go offline as if it had released them, a debounce later.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::presence::Health;
use super::scripts::holder;
use super::{BrokerError, RedisBroker, Shared};
use crate::broker::lifecycle::{Claim, Claimed, Holds, LifecycleOptions, Outbox, Outcome};
use crate::broker::unix_ms;

/// Holders renewed per script call.
const REFRESH_CHUNK: usize = 500;

/// This node's side of lifecycle events.
pub(super) struct Tracker {
    opts: LifecycleOptions,
    events: String,
    /// `u/user` and `r/room` this node holds.
    held: Mutex<Holds>,
}

/// A fresh event id: 128 random bits, so ids never repeat across nodes or restarts.
fn event_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Counts what a script queued and dropped.
fn count((queued, dropped): (u64, u64)) {
    metrics::counter!("roomcast_webhook_events_emitted_total").increment(queued);
    metrics::counter!("roomcast_webhook_events_dropped_total").increment(dropped);
}

impl Tracker {
    pub(super) fn new(opts: LifecycleOptions) -> Self {
        Self {
            events: opts.events_list(),
            opts,
            held: Mutex::default(),
        }
    }
}

impl Shared {
    fn tracker(&self) -> Option<&Tracker> {
        self.lifecycle.get()
    }

    /// This node took its first hold on `kind/name`. The local count changes before the script
    /// is sent, so a renewal built later sees it (and one built earlier is sent earlier).
    pub(super) async fn arrive(&self, kind: char, name: &str) {
        let Some(t) = self.tracker() else { return };
        let holder = holder(kind, name);
        if !t.held.lock().arrive(&holder) {
            return;
        }
        let now = unix_ms();
        let lease = self.opts.presence_lease.as_millis() as u64;
        let call = self.scripts.lifecycle_arrive(
            &holder,
            &self.opts.node_id,
            now + lease,
            now,
            &event_id(),
            &t.events,
            t.opts.capacity,
        );
        match self.run(call).await {
            Ok(counts) => count(counts),
            // The next renewal restores it as a first holder.
            Err(err) => tracing::warn!(holder, %err, "lifecycle hold not recorded"),
        }
    }

    /// This node released its last hold on `kind/name`.
    pub(super) async fn depart(&self, kind: char, name: &str) {
        let Some(t) = self.tracker() else { return };
        let holder = holder(kind, name);
        if !t.held.lock().depart(&holder) {
            return;
        }
        let now = unix_ms();
        let due = now + t.opts.debounce.as_millis() as u64;
        let node = &self.opts.node_id;
        let call =
            self.scripts
                .lifecycle_depart(&holder, node, now, &event_id(), due, t.opts.capacity);
        match self.run(call).await {
            Ok(counts) => count(counts),
            // The lease is not renewed any more: reaped, with the same event, a lease later.
            Err(err) => tracing::warn!(holder, %err, "lifecycle hold left to expire"),
        }
    }

    /// A direct message to `user` reached no session on any node.
    pub(super) async fn undelivered(&self, user: &str, from: &str, data: &str) {
        let Some(t) = self.tracker() else { return };
        let call = self.scripts.lifecycle_undelivered(
            &event_id(),
            unix_ms(),
            user,
            from,
            data,
            &t.events,
            t.opts.capacity,
        );
        match self.run(call).await {
            Ok(counts) => count(counts),
            Err(err) => tracing::warn!(user, %err, "direct_undelivered not recorded"),
        }
    }
}

/// Renews this node's holds and reaps dead nodes' every `lease / 3`, like [`super::presence`].
pub(super) async fn run(shared: Arc<Shared>) {
    let period = shared.opts.presence_lease / 3;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = Health::default();
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let may_reap = health.may_reap(shared.opts.presence_lease);
        let ok = pass(&shared, may_reap).await;
        health.record(ok, period);
    }
}

/// One renewal (and, when allowed, reaping) pass; false if a call failed.
async fn pass(shared: &Shared, may_reap: bool) -> bool {
    let Some(t) = shared.tracker() else {
        return true;
    };
    let snapshot = t.held.lock().held();
    let lease = shared.opts.presence_lease.as_millis() as u64;
    for chunk in snapshot.chunks(REFRESH_CHUNK) {
        // Checked again right before sending: a hold released since the snapshot must not be
        // restored (its release was sent first, on the same connection).
        let still: Vec<&String> = {
            let held = t.held.lock();
            chunk.iter().filter(|h| held.contains(h)).collect()
        };
        let now = unix_ms();
        let call = shared.scripts.lifecycle_refresh(
            &shared.opts.node_id,
            now + lease,
            now,
            &event_id(),
            &t.events,
            t.opts.capacity,
            &still,
        );
        match shared.run(call).await {
            Ok(counts) => count(counts),
            Err(err) => {
                tracing::warn!(%err, "lifecycle renewal failed");
                return false;
            }
        }
    }
    if !may_reap {
        return true;
    }
    let now = unix_ms();
    let due = now + t.opts.debounce.as_millis() as u64;
    let call = shared
        .scripts
        .lifecycle_reap(now, &event_id(), due, t.opts.capacity);
    match shared.run(call).await {
        Ok(counts) => {
            count(counts);
            true
        }
        Err(err) => {
            tracing::warn!(%err, "lifecycle reaping failed");
            false
        }
    }
}

impl RedisBroker {
    /// Turns lifecycle events on: from now on this node records its holds and takes part in
    /// renewing and reaping. Call once, right after starting the engine, before any session.
    pub fn enable_lifecycle(&self, opts: LifecycleOptions) {
        let s = &self.shared;
        if s.lifecycle.set(Tracker::new(opts)).is_ok() {
            tokio::spawn(run(s.clone()));
        }
    }
}

#[async_trait]
impl Outbox for RedisBroker {
    async fn claim(&self, max: usize, hold: Duration) -> Result<Claim, BrokerError> {
        let s = &self.shared;
        let Some(t) = s.tracker() else {
            return Ok(Claim::default());
        };
        let now = unix_ms();
        let hold_until = now + hold.as_millis() as u64;
        let call = s.scripts.lifecycle_claim(now, hold_until, max, &t.events);
        let (moved, depth, flat) = s.run(call).await?;
        metrics::counter!("roomcast_webhook_events_emitted_total").increment(moved);
        let events = flat
            .chunks_exact(3)
            .map(|e| Claimed {
                id: e[0].clone(),
                attempts: e[1].parse().unwrap_or(1),
                json: e[2].clone(),
            })
            .collect();
        Ok(Claim { events, depth })
    }

    async fn settle(&self, outcomes: &[(String, Outcome)]) -> Result<(), BrokerError> {
        let s = &self.shared;
        let now = unix_ms();
        let settled: Vec<(String, char, u64)> = outcomes
            .iter()
            .map(|(id, outcome)| match outcome {
                Outcome::Retry(wait) => (id.clone(), 'r', now + wait.as_millis() as u64),
                Outcome::Delivered | Outcome::Dead => (id.clone(), 'd', 0),
            })
            .collect();
        s.run(s.scripts.lifecycle_settle(&settled)).await.map(drop)
    }
}
