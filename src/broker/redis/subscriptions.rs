//! Which channels this node holds, and the SUBSCRIBE/UNSUBSCRIBE commands that follow them.
//!
//! A channel is subscribed while someone holds a reference on it (a room with a local member, a
//! user with a local session). Taking a reference on a channel Redis already confirmed costs
//! no command and no wait. The first references wait for a SUBSCRIBE, and those are sent as a
//! group commit: each caller puts its channel on `Subs::waiting` and then waits for
//! `Shared::commands`; whoever holds `commands` sends every waiting channel in one SUBSCRIBE (at
//! most [`SUBSCRIBE_MAX`] per command) and hands each waiter the outcome, so the callers behind
//! it find theirs done. A node thus admits a whole round trip's worth of new users per round
//! trip instead of one.
//!
//! Ordering: SUBSCRIBE and UNSUBSCRIBE are sent only under `commands`, and the decision to
//! unsubscribe (no reference left) is taken under it too, so a delayed UNSUBSCRIBE can never
//! overtake the SUBSCRIBE of a member that just joined: a waiting channel holds a reference,
//! and a channel whose UNSUBSCRIBE is under way was removed first, so its next reference
//! starts it over and waits behind that UNSUBSCRIBE.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{BrokerError, Shared};

/// Channels per SUBSCRIBE: a bound on one command's size (and on Redis's time in it) when
/// thousands of sessions arrive at once or a reconnect resubscribes a whole node.
pub(super) const SUBSCRIBE_MAX: usize = 1_000;

/// Marks every channel subscribed through `link` (every channel, for `None`: the single mode's
/// one connection) as not subscribed after that link was lost; released channels go for good,
/// with their rooms.
pub(super) fn detach(shared: &Shared, link: Option<&str>) {
    let mut subs = shared.subs.lock();
    let super::Subs {
        channels, rooms, ..
    } = &mut *subs;
    channels.retain(|_, sub| {
        if link.is_none_or(|l| sub.on.as_deref() == Some(l)) {
            sub.on = None;
        }
        sub.refs > 0 || sub.on.is_some()
    });
    rooms.retain(|room, _| channels.contains_key(&shared.keys.room_channel(room)));
}

/// A channel waiting for its SUBSCRIBE, and where its caller finds how it went.
pub(super) struct Waiter {
    channel: String,
    outcome: Arc<OnceLock<Result<(), BrokerError>>>,
}

/// Hands every waiter in `waiters` the outcome of the command that covered its channel.
pub(super) fn settle(waiters: Vec<Waiter>, outcome: &Result<(), BrokerError>) {
    for waiter in waiters {
        let _ = waiter.outcome.set(outcome.clone());
    }
}

impl Shared {
    /// Takes a reference on `channel`, subscribing when it is the first. On `Err` the reference
    /// is still held (the channel is subscribed on reconnect); release it as usual.
    ///
    /// Not cancel safe: a caller dropped while waiting keeps its reference.
    pub(super) async fn acquire(
        &self,
        channel: String,
        room: Option<&str>,
    ) -> Result<(), BrokerError> {
        let outcome = Arc::new(OnceLock::new());
        {
            // One lock for both, so a delayed release never sees the reference without the room.
            let mut subs = self.subs.lock();
            let sub = subs.channels.entry(channel.clone()).or_default();
            sub.refs += 1;
            let subscribed = sub.on.is_some();
            if let Some(room) = room {
                subs.rooms.entry(Arc::from(room)).or_default();
            }
            if subscribed {
                return Ok(());
            }
            subs.waiting.push(Waiter {
                channel: channel.clone(),
                outcome: outcome.clone(),
            });
        }
        let _serial = self.commands.lock().await;
        if self.subscribed(&channel) {
            return Ok(());
        }
        if let Some(done) = outcome.get() {
            return done.clone();
        }
        let mut batch = std::mem::take(&mut self.subs.lock().waiting);
        // Normally ours is among them; not if an earlier holder took it and was cancelled.
        if !batch.iter().any(|w| Arc::ptr_eq(&w.outcome, &outcome)) {
            batch.push(Waiter {
                channel,
                outcome: outcome.clone(),
            });
        }
        self.subscribe_batch(batch).await;
        outcome.get().cloned().unwrap_or(Ok(()))
    }

    fn subscribed(&self, channel: &str) -> bool {
        self.subs
            .lock()
            .channels
            .get(channel)
            .is_some_and(|s| s.on.is_some())
    }

    /// Subscribes the channels of `batch` that are still wanted and not subscribed, marks them
    /// subscribed, and settles every waiter. Called under `commands`.
    async fn subscribe_batch(&self, batch: Vec<Waiter>) {
        let channels: Vec<String> = {
            let subs = self.subs.lock();
            let mut seen = HashSet::new();
            batch
                .iter()
                .map(|w| &w.channel)
                .filter(|c| {
                    subs.channels
                        .get(*c)
                        .is_some_and(|s| s.refs > 0 && s.on.is_none())
                })
                .filter(|c| seen.insert(c.as_str()))
                .cloned()
                .collect()
        };
        if channels.is_empty() {
            return settle(batch, &Ok(()));
        }
        metrics::histogram!("roomcast_redis_subscribe_batch_size").record(channels.len() as f64);
        let results = self.links.subscribe(self, &channels).await;
        let mut outcomes: HashMap<&str, Result<(), BrokerError>> = HashMap::new();
        {
            let mut subs = self.subs.lock();
            for (channel, result) in channels.iter().zip(results) {
                let outcome = match result {
                    Ok(on) => {
                        if let Some(sub) = subs.channels.get_mut(channel) {
                            sub.on = Some(on);
                        }
                        Ok(())
                    }
                    Err(err) => Err(err),
                };
                outcomes.insert(channel, outcome);
            }
        }
        for waiter in batch {
            // A waiter not sent (already subscribed meanwhile) has nothing to wait for.
            let outcome = outcomes.get(waiter.channel.as_str()).cloned();
            let _ = waiter.outcome.set(outcome.unwrap_or(Ok(())));
        }
    }

    /// Drops a reference on `channel`; the last one unsubscribes after `delay`, unless someone
    /// took a new reference meanwhile.
    pub(super) async fn release(
        self: &Arc<Self>,
        channel: String,
        room: Option<Arc<str>>,
        delay: Duration,
    ) {
        {
            let mut subs = self.subs.lock();
            let Some(sub) = subs.channels.get_mut(&channel) else {
                return;
            };
            sub.refs = sub.refs.saturating_sub(1);
            if sub.refs > 0 {
                return;
            }
        }
        let shared = self.clone();
        let unsubscribe = async move {
            tokio::select! {
                () = shared.stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            let _serial = shared.commands.lock().await;
            let on = {
                let mut subs = shared.subs.lock();
                match subs.channels.get(&channel) {
                    Some(sub) if sub.refs == 0 => {
                        let on = sub.on.clone();
                        subs.channels.remove(&channel);
                        if let Some(room) = &room {
                            subs.rooms.remove(room);
                        }
                        on
                    }
                    _ => return,
                }
            };
            let Some(on) = on else { return };
            shared.links.unsubscribe(&shared, &channel, &on).await;
        };
        tokio::spawn(unsubscribe);
    }
}
