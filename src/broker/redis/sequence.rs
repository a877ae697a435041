//! Sequencing: what a reader does with each message it receives, the same for a single Redis
//! and for every shard of a cluster.
//!
//! Each hosted room has a [`Sequence`] (the next offset due, in which epoch). A publication
//! equal to it is delivered; one below it was delivered already; one above it reveals missing
//! offsets, which are read from the room's history and delivered first. Offsets the history no
//! longer holds are announced as lost (`announce_lost`) before what follows them, and a read
//! that fails is retried in the background with the publication held, so members never see an
//! offset skipped without notice. A new epoch means Redis lost the room: members are told
//! (`announce_new_epoch`) and numbering starts over at 1.
//!
//! The decision and the delivery happen under the room's own lock, so two readers that both
//! carry a room for a moment (cluster mode: the old and the new shard of a slot that moved)
//! can never deliver its offsets out of order or twice. The lock is never held across `.await`.

use std::sync::Arc;

use futures_util::future::join_all;
use parking_lot::Mutex;
use tungstenite::Utf8Bytes;

use super::keys::Channel;
use super::payload;
use super::scripts::Range;
use super::{BrokerError, Shared};
use crate::protocol::{ServerFrame, encode};

/// Rooms backfilled concurrently after a (re)subscription; the connection pipelines them.
const BACKFILL_CHUNK: usize = 256;

/// Delivery position of one hosted room: the next offset due, in which epoch.
#[derive(Default)]
pub(super) struct Sequence {
    pub next: Option<u64>,
    pub epoch: Option<Arc<str>>,
}

/// A room's sequence behind its own lock, held while one of its publications is delivered.
pub(super) type Position = Arc<Mutex<Sequence>>;

impl Shared {
    fn position(&self, room: &str) -> Option<Position> {
        self.subs.lock().rooms.get(room).cloned()
    }
}

/// Handles one message from a subscription connection, in arrival order.
pub(super) async fn handle(shared: &Arc<Shared>, channel: &str, payload: &[u8]) {
    match shared.keys.parse_channel(channel) {
        Some(Channel::Room(room)) => on_room(shared, room, payload).await,
        Some(Channel::User(user)) => match payload::user(payload) {
            Ok(payload::User::Direct(frame)) => {
                shared.deliver.direct(user, &Utf8Bytes::from(frame))
            }
            Ok(payload::User::Disconnect) => shared.deliver.disconnect(user),
            Err(err) => tracing::warn!(user, %err, "user payload dropped"),
        },
        None => {}
    }
}

/// Parses a room payload and delivers it in order.
async fn on_room(shared: &Arc<Shared>, room: &str, payload: &[u8]) {
    let (offset, epoch, frame) = match payload::room(payload) {
        Ok(payload::Room::Message {
            offset,
            epoch,
            frame,
        }) => (offset, epoch, frame),
        Ok(payload::Room::Presence(frame)) => {
            return shared.deliver.presence(room, &Utf8Bytes::from(frame));
        }
        Err(err) => return tracing::warn!(room, %err, "room payload dropped"),
    };
    let Some(position) = shared.position(room) else {
        return;
    };
    let missing_from = {
        let mut seq = position.lock();
        match &seq.epoch {
            Some(known) if **known == *epoch => {}
            known => {
                if known.is_some() {
                    // Redis lost the room: numbering restarted at 1 in a new epoch.
                    seq.next = Some(1);
                    announce_new_epoch(shared, room, epoch);
                }
                seq.epoch = Some(Arc::from(epoch));
            }
        }
        match seq.next {
            Some(next) if offset < next => None,
            Some(next) if offset > next => Some(next),
            _ => {
                seq.next = Some(offset + 1);
                shared
                    .deliver
                    .publication(room, offset, &Utf8Bytes::from(frame));
                None
            }
        }
    };
    let Some(from) = missing_from else { return };
    match range(shared, room, from, offset - 1).await {
        Ok(read) => {
            deliver_read(shared, room, epoch, from, offset - 1, read);
            deliver_in_order(shared, room, offset, Utf8Bytes::from(frame));
        }
        // Hold this publication (it is in the history too) and read from the gap on, again
        // and again, until done: the next live message may never come to try once more.
        Err(err) => {
            let room: Arc<str> = Arc::from(room);
            if shared.refilling.lock().insert(room.clone()) {
                tracing::warn!(%room, from, to = offset - 1, %err, "gap not filled; retrying");
                let shared = shared.clone();
                tokio::spawn(async move {
                    retry_backfill(shared.clone(), vec![room.clone()]).await;
                    shared.refilling.lock().remove(&room);
                });
            }
        }
    }
}

/// Tells the room's members that its history was lost and numbering restarts: an unsolicited
/// `joined` with the new epoch and offset 0 (see docs/protocol.md).
fn announce_new_epoch(shared: &Shared, room: &str, epoch: &str) {
    tracing::warn!(
        room,
        epoch,
        "room history lost in Redis; numbering restarts"
    );
    let frame = encode(&ServerFrame::Joined {
        id: None,
        room,
        epoch,
        offset: 0,
        recovered: Some(false),
    });
    shared.deliver.reset(room, &frame);
}

/// Delivers one publication if it is the next one due (used for filled and backfilled ones).
fn deliver_in_order(shared: &Shared, room: &str, offset: u64, frame: Utf8Bytes) {
    let Some(position) = shared.position(room) else {
        return;
    };
    let mut seq = position.lock();
    if seq.next.is_some_and(|next| offset < next) {
        return;
    }
    seq.next = Some(offset + 1);
    shared.deliver.publication(room, offset, &frame);
}

/// Reads offsets `from..=to` (`to` clamped to the room's top) of `room` from its history.
async fn range(shared: &Shared, room: &str, from: u64, to: u64) -> Result<Range, BrokerError> {
    shared.run(shared.scripts.range(room, from, to)).await
}

/// Delivers `frames`, the first of which has offset `first`, in order.
fn deliver_range(shared: &Shared, room: &str, first: u64, frames: Vec<String>) {
    for (offset, frame) in (first..).zip(frames) {
        deliver_in_order(shared, room, offset, frame.into());
    }
}

/// Delivers a history read of offsets `from..=to` that the room's position in `epoch` asked
/// for. What the history no longer holds from `from` on (trimmed by size, age or bytes, or
/// gone with an epoch) cannot be delivered: members are told before what follows it.
fn deliver_read(shared: &Shared, room: &str, epoch: &str, from: u64, to: u64, read: Range) {
    let (current, first, frames, top) = read;
    let frames = if current.as_deref() == Some(epoch) {
        frames
    } else {
        Vec::new()
    };
    let lost_to = if frames.is_empty() {
        to.min(top)
    } else {
        first - 1
    };
    if lost_to >= from {
        tracing::warn!(
            room,
            from,
            to = lost_to,
            "offsets no longer in history; announced lost"
        );
        announce_lost(shared, room, epoch, lost_to);
    }
    deliver_range(shared, room, first, frames);
}

/// Tells `room`'s members that offsets up to `last` of `epoch` are lost to them: an unsolicited
/// `joined` with the same epoch, `offset` = `last` and `recovered:false` (docs/protocol.md),
/// then delivery goes on from `last + 1`. Nothing when the position is past `last` already.
fn announce_lost(shared: &Shared, room: &str, epoch: &str, last: u64) {
    let Some(position) = shared.position(room) else {
        return;
    };
    let mut seq = position.lock();
    if seq.epoch.as_deref() != Some(epoch) || seq.next.is_some_and(|next| next > last) {
        return;
    }
    seq.next = Some(last + 1);
    let frame = encode(&ServerFrame::Joined {
        id: None,
        room,
        epoch,
        offset: last,
        recovered: Some(false),
    });
    shared.deliver.reset(room, &frame);
}

/// Reads the whole history of `room`'s new `epoch` and delivers it (after a restart).
async fn fill_new_epoch(shared: &Shared, room: &str, epoch: &str, to: u64) {
    match range(shared, room, 1, to).await {
        Ok(read) => deliver_read(shared, room, epoch, 1, to, read),
        Err(err) => tracing::warn!(room, %err, "history of the new epoch not read"),
    }
}

/// After a (re)subscription: delivers, for each of `rooms` with a known position, what was
/// published while it was not subscribed, or tells its members that Redis lost the room.
/// Rooms whose reads fail are retried in the background with backoff until done or no longer
/// hosted: nothing waits for a next live message to heal them, which may never come.
pub(super) async fn backfill(shared: &Arc<Shared>, rooms: &[Arc<str>]) {
    let failed = backfill_once(shared, rooms).await;
    if !failed.is_empty() {
        tracing::warn!(rooms = failed.len(), "backfill incomplete; retrying");
        tokio::spawn(retry_backfill(shared.clone(), failed));
    }
}

async fn retry_backfill(shared: Arc<Shared>, mut rooms: Vec<Arc<str>>) {
    let mut backoff = super::subscriber::BACKOFF_MIN;
    while !rooms.is_empty() {
        if !super::subscriber::pause(&shared, &mut backoff).await {
            return;
        }
        rooms = backfill_once(&shared, &rooms).await;
    }
    tracing::info!("backfill completed");
}

/// One backfill pass; returns the hosted rooms it could not complete. Each room is one `RANGE`
/// script call (its keys share a slot, which a cluster requires), run `BACKFILL_CHUNK` at a
/// time.
async fn backfill_once(shared: &Shared, rooms: &[Arc<str>]) -> Vec<Arc<str>> {
    let known: Vec<(Arc<str>, u64, Arc<str>)> = {
        let subs = shared.subs.lock();
        rooms
            .iter()
            .filter_map(|room| {
                let seq = subs.rooms.get(room)?.lock();
                Some((room.clone(), seq.next?, seq.epoch.clone()?))
            })
            .collect()
    };
    let mut failed = Vec::new();
    for chunk in known.chunks(BACKFILL_CHUNK) {
        let reads = chunk
            .iter()
            .map(|(room, next, _)| range(shared, room, *next, u64::MAX));
        let replies = join_all(reads).await;
        for ((room, next, epoch), reply) in chunk.iter().zip(replies) {
            let done = match reply {
                Ok(read) if read.0.as_deref() == Some(&**epoch) => {
                    deliver_read(shared, room, epoch, *next, u64::MAX, read);
                    Ok(())
                }
                // Redis restarted empty and the room was published to since: start over.
                Ok((Some(current), _, _, _)) => {
                    if adopt_new_epoch(shared, room, &current) {
                        fill_new_epoch(shared, room, &current, u64::MAX).await;
                    }
                    Ok(())
                }
                // Redis restarted empty and nothing was published here since. Members must hear
                // now, not at a next message that may never come: the room's new epoch is made
                // (or read, if another node or a publish made it first) and announced.
                Ok((None, _, _, _)) => match shared.run(shared.scripts.history(room, None)).await {
                    Ok((current, top, _, _)) => {
                        // A publish may have come between the two reads: deliver it too.
                        if adopt_new_epoch(shared, room, &current) && top > 0 {
                            fill_new_epoch(shared, room, &current, top).await;
                        }
                        Ok(())
                    }
                    Err(err) => Err(err),
                },
                Err(err) => Err(err),
            };
            if let Err(err) = done {
                tracing::warn!(%room, %err, "backfill failed");
                failed.push(room.clone());
            }
        }
    }
    failed
}

/// Moves `room` to epoch `current` from offset 1 and tells its members, unless its position is
/// already in that epoch (a live message or another pass got there first). Returns whether it
/// moved.
fn adopt_new_epoch(shared: &Shared, room: &str, current: &str) -> bool {
    let Some(position) = shared.position(room) else {
        return false;
    };
    let mut seq = position.lock();
    if seq.epoch.as_deref() == Some(current) {
        return false;
    }
    seq.epoch = Some(Arc::from(current));
    seq.next = Some(1);
    announce_new_epoch(shared, room, current);
    true
}
