//! Lifecycle events of a single node (the memory engine): the same decisions as the Redis
//! scripts, taken under one lock. The node's first and last holds are the cluster's, so no
//! leases; events live in memory, so a crash loses those not yet delivered (documented in
//! docs/webhooks.md).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;

use super::{Claim, Claimed, Holds, LifecycleOptions, Outcome};
use crate::broker::unix_ms;

/// A last hold whose debounce runs until `due`.
struct Pending {
    due: u64,
    id: String,
    json: String,
}

/// An event in the outbox.
struct Entry {
    id: String,
    json: String,
    visible: u64,
    attempts: u32,
}

#[derive(Default)]
struct State {
    held: Holds,
    pending: HashMap<String, Pending>,
    /// By `seq`, so events go out in the order they were decided.
    outbox: BTreeMap<u64, Entry>,
    by_id: HashMap<String, u64>,
    seq: u64,
}

/// The memory engine's lifecycle events.
pub struct Local {
    opts: LifecycleOptions,
    state: Mutex<State>,
}

fn event_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn count(queued: u64, dropped: u64) {
    metrics::counter!("roomcast_webhook_events_emitted_total").increment(queued);
    metrics::counter!("roomcast_webhook_events_dropped_total").increment(dropped);
}

/// The kind of `holder`'s first and last events and the field naming it.
fn kinds(holder: &str) -> (&'static str, &'static str, &'static str, &str) {
    match holder.split_once('/') {
        Some(("u", name)) => ("user_online", "user_offline", "user", name),
        Some((_, name)) => ("room_occupied", "room_vacated", "room", name),
        None => ("room_occupied", "room_vacated", "room", holder),
    }
}

impl State {
    fn full(&self, capacity: usize) -> bool {
        self.outbox.len() + self.pending.len() >= capacity
    }

    fn event(&mut self, id: &str, kind: &str, field: &str, name: &str, now: u64) -> String {
        self.seq += 1;
        let mut event = json!({"id": id, "type": kind, "ts": now, "seq": self.seq});
        event[field] = json!(name);
        event.to_string()
    }

    fn enqueue(&mut self, id: String, json: String, now: u64) {
        let seq = self.seq;
        self.by_id.insert(id.clone(), seq);
        let entry = Entry {
            id,
            json,
            visible: now,
            attempts: 0,
        };
        self.outbox.insert(seq, entry);
    }

    /// Moves pending events due at `now` into the outbox; returns how many.
    fn promote(&mut self, now: u64, opts: &LifecycleOptions) -> u64 {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(h, _)| h.clone())
            .collect();
        let mut moved = 0;
        for holder in due {
            let p = self.pending.remove(&holder).expect("listed above");
            if opts.events.iter().any(|e| e == kinds(&holder).1) {
                let seq: u64 = serde_json::from_str::<serde_json::Value>(&p.json)
                    .ok()
                    .and_then(|v| v["seq"].as_u64())
                    .unwrap_or(self.seq);
                self.by_id.insert(p.id.clone(), seq);
                let entry = Entry {
                    id: p.id,
                    json: p.json,
                    visible: now,
                    attempts: 0,
                };
                self.outbox.insert(seq, entry);
                moved += 1;
            }
        }
        moved
    }
}

impl Local {
    pub fn new(opts: LifecycleOptions) -> Self {
        Self {
            opts,
            state: Mutex::default(),
        }
    }

    fn enabled(&self, kind: &str) -> bool {
        self.opts.events.iter().any(|e| e == kind)
    }

    /// The node's first session of a user (`u`) or member of a room (`r`).
    pub fn arrive(&self, kind: char, name: &str) {
        let holder = format!("{kind}/{name}");
        let now = unix_ms();
        let mut s = self.state.lock();
        if !s.held.arrive(&holder) {
            return;
        }
        let mut moved = 0;
        if let Some(p) = s.pending.get(&holder) {
            if p.due > now {
                s.pending.remove(&holder);
                return;
            }
            moved = s.promote(now, &self.opts);
        }
        let (online, _, field, name) = kinds(&holder);
        if !self.enabled(online) {
            return count(moved, 0);
        }
        if s.full(self.opts.capacity) {
            return count(moved, 1);
        }
        let id = event_id();
        let json = s.event(&id, online, field, name, now);
        s.enqueue(id, json, now);
        count(moved + 1, 0);
    }

    /// The node's last session of a user or member of a room went.
    pub fn depart(&self, kind: char, name: &str) {
        let holder = format!("{kind}/{name}");
        let now = unix_ms();
        let mut s = self.state.lock();
        if !s.held.depart(&holder) {
            return;
        }
        if s.full(self.opts.capacity) {
            return count(0, 1);
        }
        let (_, offline, field, name) = kinds(&holder);
        let id = event_id();
        let json = s.event(&id, offline, field, name, now);
        let due = now + self.opts.debounce.as_millis() as u64;
        s.pending.insert(holder, Pending { due, id, json });
    }

    /// Whether `user` has a session on this node.
    pub fn holds_user(&self, user: &str) -> bool {
        self.state.lock().held.contains(&format!("u/{user}"))
    }

    /// A direct message to `user` reached no session.
    pub fn undelivered(&self, user: &str, from: &str, data: &serde_json::value::RawValue) {
        if !self.enabled("direct_undelivered") {
            return;
        }
        let now = unix_ms();
        let mut s = self.state.lock();
        if s.full(self.opts.capacity) {
            return count(0, 1);
        }
        let id = event_id();
        s.seq += 1;
        let event = json!({
            "id": id, "type": "direct_undelivered", "user": user, "from": from,
            "data": data, "ts": now, "seq": s.seq,
        });
        s.enqueue(id, event.to_string(), now);
        count(1, 0);
    }

    /// [`super::Outbox::claim`] in memory.
    pub fn claim(&self, max: usize, hold: Duration) -> Claim {
        let now = unix_ms();
        let mut s = self.state.lock();
        let moved = s.promote(now, &self.opts);
        count(moved, 0);
        let hold_until = now + hold.as_millis() as u64;
        let events = s
            .outbox
            .values_mut()
            .filter(|e| e.visible <= now)
            .take(max)
            .map(|e| {
                e.visible = hold_until;
                e.attempts += 1;
                Claimed {
                    id: e.id.clone(),
                    attempts: e.attempts,
                    json: e.json.clone(),
                }
            })
            .collect();
        let depth = (s.outbox.len() + s.pending.len()) as u64;
        Claim { events, depth }
    }

    /// [`super::Outbox::settle`] in memory.
    pub fn settle(&self, outcomes: &[(String, Outcome)]) {
        let now = unix_ms();
        let mut s = self.state.lock();
        for (id, outcome) in outcomes {
            let Some(&seq) = s.by_id.get(id) else {
                continue;
            };
            match outcome {
                Outcome::Retry(wait) => {
                    if let Some(e) = s.outbox.get_mut(&seq) {
                        e.visible = now + wait.as_millis() as u64;
                    }
                }
                Outcome::Delivered | Outcome::Dead => {
                    s.outbox.remove(&seq);
                    s.by_id.remove(id);
                }
            }
        }
    }
}
