//! The subscription connection and its single ordered reader.
//!
//! One task owns the connection's message stream and handles every message in arrival order,
//! which for one room is offset order. It keeps each hosted room's next expected offset; when
//! a message skips ahead (a dropped subscription, a reconnect) it reads the missing offsets
//! from the room's history before delivering what follows, so members see contiguous offsets.
//! When the connection drops it reconnects with backoff and jitter, resubscribes every wanted
//! channel and backfills every hosted room.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use rand::Rng;

use super::Shared;
use super::keys::Channel;
use crate::protocol::{ServerFrame, encode};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Bounds how long delivery stays down after Redis comes back: one attempt per second at worst.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Rooms backfilled per pipelined round trip after a reconnect.
const BACKFILL_CHUNK: usize = 256;

/// What the reader does with one publication.
enum Step {
    Deliver,
    /// Already delivered (replayed by a backfill, or a duplicate).
    Skip,
    /// Offsets `from..offset` are missing: fetch them first.
    Fill {
        from: u64,
    },
}

pub(super) async fn run(shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let connect = tokio::time::timeout(
            shared.opts.command_timeout,
            shared.client.get_async_pubsub(),
        );
        let pubsub = tokio::select! {
            () = shared.stop.cancelled() => return,
            result = connect => result,
        };
        let (sink, mut stream) = match pubsub {
            Ok(Ok(pubsub)) => pubsub.split(),
            Ok(Err(err)) => {
                tracing::warn!(%err, "redis subscription connection failed");
                if !pause(&shared, &mut backoff).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::warn!("redis subscription connection timed out");
                if !pause(&shared, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        if let Err(err) = resubscribe(&shared, sink).await {
            tracing::warn!(%err, "redis resubscribe failed");
            *shared.sink.lock() = None;
            if !pause(&shared, &mut backoff).await {
                return;
            }
            continue;
        }
        backoff = BACKOFF_MIN;
        shared.connected.store(true, Ordering::Release);
        tracing::info!("redis subscription up");
        backfill(&shared).await;
        loop {
            let msg = tokio::select! {
                () = shared.stop.cancelled() => return,
                msg = stream.next() => msg,
            };
            let Some(msg) = msg else { break };
            handle(&shared, msg.get_channel_name(), msg.get_payload_bytes()).await;
        }
        shared.connected.store(false, Ordering::Release);
        lost(&shared);
        tracing::warn!("redis subscription lost; reconnecting");
    }
}

/// Sleeps the current backoff with ±50 % jitter (so a cluster does not reconnect in lockstep)
/// and doubles it. Returns false when the engine is stopping.
async fn pause(shared: &Shared, backoff: &mut Duration) -> bool {
    let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.5));
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    tokio::select! {
        () = shared.stop.cancelled() => false,
        () = tokio::time::sleep(jittered) => true,
    }
}

/// Forgets what the dropped connection had subscribed; released channels go for good.
fn lost(shared: &Shared) {
    *shared.sink.lock() = None;
    let mut subs = shared.subs.lock();
    subs.channels.retain(|_, sub| {
        sub.subscribed = false;
        sub.refs > 0
    });
    let channels = &subs.channels;
    let keys = &shared.keys;
    let wanted: Vec<Arc<str>> = subs
        .rooms
        .keys()
        .filter(|room| channels.contains_key(&keys.room_channel(room)))
        .cloned()
        .collect();
    subs.rooms.retain(|room, _| wanted.contains(room));
}

/// Installs the new connection and subscribes every channel someone still wants.
async fn resubscribe(
    shared: &Shared,
    mut sink: redis::aio::PubSubSink,
) -> Result<(), super::BrokerError> {
    let _serial = shared.commands.lock().await;
    let wanted: Vec<String> = shared
        .subs
        .lock()
        .channels
        .iter()
        .filter(|(_, sub)| sub.refs > 0)
        .map(|(channel, _)| channel.clone())
        .collect();
    if !wanted.is_empty() {
        shared.call(sink.subscribe(&wanted)).await?;
    }
    let mut subs = shared.subs.lock();
    for channel in &wanted {
        if let Some(sub) = subs.channels.get_mut(channel) {
            sub.subscribed = true;
        }
    }
    *shared.sink.lock() = Some(sink);
    Ok(())
}

/// After a reconnect: delivers, for every hosted room with a known position, what was
/// published while the subscription was down.
async fn backfill(shared: &Shared) {
    let rooms: Vec<(Arc<str>, u64, Arc<str>)> = shared
        .subs
        .lock()
        .rooms
        .iter()
        .filter_map(|(room, seq)| Some((room.clone(), seq.next?, seq.epoch.clone()?)))
        .collect();
    for chunk in rooms.chunks(BACKFILL_CHUNK) {
        let mut pipe = redis::pipe();
        for (room, next, _) in chunk {
            pipe.cmd("HGET").arg(shared.keys.meta(room)).arg("epoch");
            pipe.cmd("ZRANGEBYSCORE")
                .arg(shared.keys.history(room))
                .arg(*next)
                .arg("+inf")
                .arg("WITHSCORES");
        }
        let mut conn = shared.conn();
        type Reply = Vec<(Option<String>, Vec<(String, u64)>)>;
        let replies: Reply = match shared.call(pipe.query_async(&mut conn)).await {
            Ok(replies) => replies,
            Err(err) => {
                // Rooms keep their position; the next live message triggers a gap fill.
                tracing::warn!(%err, "backfill failed");
                return;
            }
        };
        for ((room, _, epoch), (current, frames)) in chunk.iter().zip(replies) {
            match current {
                Some(current) if *current == **epoch => {
                    for (frame, offset) in frames {
                        deliver_in_order(shared, room, offset, frame.into());
                    }
                }
                Some(current) => {
                    // Redis restarted empty and the room was published to since: start over.
                    if let Some(seq) = shared.subs.lock().rooms.get_mut(room) {
                        seq.epoch = Some(Arc::from(current.as_str()));
                        seq.next = Some(1);
                    }
                    announce_restart(shared, room, &current);
                    fill(shared, room, 1, u64::MAX).await;
                }
                // Nothing published in this room since Redis came back: the first live
                // message (a new epoch) restarts the sequence.
                None => {}
            }
        }
    }
}

/// Tells the room's members that its history was lost and numbering restarts: an unsolicited
/// `joined` with the new epoch and offset 0 (see docs/protocol.md).
fn announce_restart(shared: &Shared, room: &str, epoch: &str) {
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
    let due = {
        let mut subs = shared.subs.lock();
        let Some(seq) = subs.rooms.get_mut(room) else {
            return;
        };
        match seq.next {
            Some(next) if offset < next => false,
            _ => {
                seq.next = Some(offset + 1);
                true
            }
        }
    };
    if due {
        shared.deliver.publication(room, offset, &frame);
    }
}

async fn handle(shared: &Shared, channel: &str, payload: &[u8]) {
    match shared.keys.parse_channel(channel) {
        Some(Channel::Room(room)) => on_room(shared, room, payload).await,
        Some(Channel::User(user)) => match std::str::from_utf8(payload) {
            Ok(payload) => match payload.split_once('\n') {
                Some(("d", frame)) => shared.deliver.direct(user, &Utf8Bytes::from(frame)),
                Some(("k", _)) => shared.deliver.disconnect(user),
                _ => tracing::warn!(user, "malformed user payload dropped"),
            },
            Err(_) => tracing::warn!(user, "non-UTF-8 user payload dropped"),
        },
        None => {}
    }
}

/// Parses a room payload (see `scripts.rs`) and delivers it in order.
async fn on_room(shared: &Shared, room: &str, payload: &[u8]) {
    let Ok(payload) = std::str::from_utf8(payload) else {
        tracing::warn!(room, "non-UTF-8 room payload dropped");
        return;
    };
    let Some((header, frame)) = payload.split_once('\n') else {
        tracing::warn!(room, "malformed room payload dropped");
        return;
    };
    if header == "p" {
        shared.deliver.presence(room, &Utf8Bytes::from(frame));
        return;
    }
    let mut parts = header.split(' ');
    let (Some("m"), Some(offset), Some(epoch)) = (parts.next(), parts.next(), parts.next()) else {
        tracing::warn!(room, header, "unknown room payload dropped");
        return;
    };
    let Ok(offset) = offset.parse::<u64>() else {
        tracing::warn!(room, header, "bad offset dropped");
        return;
    };
    let (restarted, step) = {
        let mut subs = shared.subs.lock();
        let Some(seq) = subs.rooms.get_mut(room) else {
            return;
        };
        let restarted = match &seq.epoch {
            Some(known) if **known == *epoch => false,
            Some(_) => {
                // Redis lost the room: numbering restarted at 1 in a new epoch.
                seq.next = Some(1);
                true
            }
            None => false,
        };
        seq.epoch = Some(Arc::from(epoch));
        let step = match seq.next {
            None => {
                seq.next = Some(offset + 1);
                Step::Deliver
            }
            Some(next) if offset < next => Step::Skip,
            Some(next) if offset == next => {
                seq.next = Some(next + 1);
                Step::Deliver
            }
            Some(next) => Step::Fill { from: next },
        };
        (restarted, step)
    };
    if restarted {
        announce_restart(shared, room, epoch);
    }
    match step {
        Step::Skip => {}
        Step::Deliver => shared
            .deliver
            .publication(room, offset, &Utf8Bytes::from(frame)),
        Step::Fill { from } => {
            fill(shared, room, from, offset - 1).await;
            deliver_in_order(shared, room, offset, Utf8Bytes::from(frame));
        }
    }
}

/// Reads offsets `from..=to` of `room` from its history and delivers them in order. What the
/// history no longer holds is skipped: those offsets are lost to this node's members.
async fn fill(shared: &Shared, room: &str, from: u64, to: u64) {
    let mut conn = shared.conn();
    let mut cmd = redis::cmd("ZRANGEBYSCORE");
    cmd.arg(shared.keys.history(room))
        .arg(from)
        .arg(to)
        .arg("WITHSCORES");
    match shared
        .call(cmd.query_async::<Vec<(String, u64)>>(&mut conn))
        .await
    {
        Ok(frames) => {
            if frames.len() as u64 != to - from + 1 {
                tracing::warn!(
                    room,
                    from,
                    to,
                    found = frames.len(),
                    "gap only partly filled"
                );
            }
            for (frame, offset) in frames {
                deliver_in_order(shared, room, offset, frame.into());
            }
        }
        Err(err) => tracing::warn!(room, from, to, %err, "gap not filled"),
    }
}
