//! The hub: which local sessions are in which rooms, and fan-out of already encoded frames to
//! them. It knows nothing of brokers or sockets; it only queues bytes on session handles.
//!
//! Each room sits behind its own mutex, taken only for non-blocking work (map updates and
//! `try_send`s), never across an `.await`. Delivery for one room is therefore serialized, which
//! is what keeps every member's view of a room in the same order.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use tungstenite::Utf8Bytes;

use crate::session::{Frame, Held, Sent, SessionHandle, SessionId};

/// Cheap, cloneable handle to the node's membership tables.
#[derive(Clone, Default)]
pub struct Hub(Arc<Inner>);

#[derive(Default)]
struct Inner {
    rooms: DashMap<Arc<str>, Arc<Mutex<Room>>>,
    users: DashMap<Arc<str>, Vec<SessionHandle>>,
    /// Room frames this long or longer carry a slot for their compressed form (compression is
    /// on, `compression.min_bytes`): members share one compression of each. `None`: off. A
    /// shorter frame is never compressed, so it goes without the slot's allocation.
    share_from: Option<usize>,
}

#[derive(Default)]
struct Room {
    members: HashMap<SessionId, Member>,
    /// Live local sessions per user, for presence: a user is present while this is above zero.
    users: HashMap<Arc<str>, u32>,
    /// Set when the room is removed from the map; a holder of a stale `Arc` must look again.
    removed: bool,
}

struct Member {
    session: SessionHandle,
    presence: bool,
    /// `Some` while the join is being completed: live messages wait here so that the replay,
    /// which is sent first, and live delivery neither overlap nor leave a gap.
    pending: Option<Vec<(u64, Frame)>>,
    /// Buffer cap for `pending`, the session's queue size: past it the member is a slow consumer.
    pending_cap: usize,
    /// The highest offset this member has been given (its `joined` offset to begin with).
    /// With the Redis engine a message can reach the hub after the history read that covered
    /// it, so delivery skips anything not above this: no duplicate, never out of order.
    last: u64,
}

/// What removing a member changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// The session was a member.
    pub was_member: bool,
    /// It was the user's last live session in the room: presence should drop the user.
    pub user_gone: bool,
    /// The room has no local members left.
    pub room_empty: bool,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub whose room frames of `min_bytes` or more carry a slot for their compressed form,
    /// computed once per frame by the first member's socket that needs it
    /// (`compression.enabled`, `compression.min_bytes`).
    pub fn sharing_compressed(min_bytes: usize) -> Self {
        Self(Arc::new(Inner {
            share_from: Some(min_bytes),
            ..Inner::default()
        }))
    }

    /// Adds `session` to `room` as a pending member. Returns true when the room had no local
    /// members before, so the caller must subscribe to it.
    pub fn add_pending(
        &self,
        room: &str,
        session: &SessionHandle,
        presence: bool,
        cap: usize,
    ) -> bool {
        loop {
            let mut created = false;
            let cell = self
                .0
                .rooms
                .entry(Arc::from(room))
                .or_insert_with(|| {
                    created = true;
                    Arc::default()
                })
                .clone();
            let mut guard = cell.lock();
            if guard.removed {
                continue;
            }
            let first = guard.members.is_empty();
            guard.members.insert(
                session.id(),
                Member {
                    session: session.clone(),
                    presence,
                    pending: Some(Vec::new()),
                    pending_cap: cap,
                    last: 0,
                },
            );
            return first || created;
        }
    }

    /// Completes a join: queues `joined`, then `replay`, then whatever arrived while pending with
    /// an offset above `top` (the room's offset `joined` announced), and makes the member live.
    /// Returns true when this makes the user present in the room for the first time.
    pub fn activate(
        &self,
        room: &str,
        session: SessionId,
        joined: Utf8Bytes,
        replay: Vec<Utf8Bytes>,
        top: u64,
    ) -> bool {
        let Some(cell) = self.room(room) else {
            return false;
        };
        let mut guard = cell.lock();
        let Some(member) = guard.members.get_mut(&session) else {
            return false;
        };
        let buffered = member.pending.take().unwrap_or_default();
        let handle = member.session.clone();
        handle.send(joined);
        for frame in replay {
            handle.send(frame);
        }
        member.last = top;
        for (offset, frame) in buffered {
            if offset > member.last {
                member.last = offset;
                handle.send_frame(frame);
            }
        }
        let count = guard.users.entry(handle.user().clone()).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Removes a member (pending or live). Frees the room when it was the last one.
    pub fn remove(&self, room: &str, session: &SessionHandle) -> Removed {
        let Some(cell) = self.room(room) else {
            return Removed::default();
        };
        let mut out = Removed::default();
        {
            let mut guard = cell.lock();
            let Some(member) = guard.members.remove(&session.id()) else {
                return out;
            };
            out.was_member = true;
            if member.pending.is_none() {
                if let Some(count) = guard.users.get_mut(session.user()) {
                    *count -= 1;
                    if *count == 0 {
                        guard.users.remove(session.user());
                        out.user_gone = true;
                    }
                }
            }
            out.room_empty = guard.members.is_empty();
        }
        if out.room_empty {
            // Re-check under the map's entry lock: someone may have joined since.
            self.0.rooms.remove_if(room, |_, cell| {
                let mut guard = cell.lock();
                guard.removed = guard.members.is_empty();
                guard.removed
            });
        }
        out
    }

    /// Queues a room message for every member, or buffers it for members still joining.
    pub fn deliver(&self, room: &str, offset: u64, frame: &Utf8Bytes) {
        let Some(cell) = self.room(room) else { return };
        let frame = if self.0.share_from.is_some_and(|min| frame.len() >= min) {
            Frame::shared(frame.clone())
        } else {
            Frame::Text(frame.clone())
        };
        let mut guard = cell.lock();
        metrics::counter!("roomcast_deliveries_total").increment(guard.members.len() as u64);
        for member in guard.members.values_mut() {
            match &mut member.pending {
                None if offset > member.last => {
                    member.last = offset;
                    member.session.send_frame(frame.clone());
                }
                // Already given to this member (covered by its join's replay).
                None => {}
                Some(buffer) if buffer.len() < member.pending_cap => {
                    buffer.push((offset, frame.clone()));
                }
                Some(_) => member
                    .session
                    .close(crate::protocol::CloseCode::SlowConsumer),
            }
        }
    }

    /// The room's numbering restarted (its history was lost): queues `frame`, the notice, for
    /// every live member and starts their offsets over. Members still joining learn the same
    /// from the `joined` reply they are about to get.
    pub fn restart(&self, room: &str, frame: &Utf8Bytes) {
        let Some(cell) = self.room(room) else { return };
        let mut guard = cell.lock();
        for member in guard.members.values_mut() {
            if member.pending.is_none() {
                member.last = 0;
                member.session.send(frame.clone());
            }
        }
    }

    /// Queues a presence event for the live members that asked for them.
    pub fn deliver_presence(&self, room: &str, frame: &Utf8Bytes) {
        let Some(cell) = self.room(room) else { return };
        let guard = cell.lock();
        for member in guard.members.values() {
            if member.presence && member.pending.is_none() {
                member.session.send(frame.clone());
            }
        }
    }

    /// Registers a session for direct messages. Returns true for the user's first local session.
    pub fn add_user_session(&self, session: &SessionHandle) -> bool {
        let mut sessions = self.0.users.entry(session.user().clone()).or_default();
        sessions.push(session.clone());
        sessions.len() == 1
    }

    /// Unregisters a session. Returns true when it was the user's last local session.
    pub fn remove_user_session(&self, session: &SessionHandle) -> bool {
        let mut last = false;
        self.0.users.remove_if_mut(session.user(), |_, sessions| {
            sessions.retain(|s| s.id() != session.id());
            last = sessions.is_empty();
            last
        });
        last
    }

    /// Queues a direct message for every local session of `user`.
    pub fn deliver_direct(&self, user: &str, frame: &Utf8Bytes) {
        if let Some(sessions) = self.0.users.get(user) {
            for session in sessions.iter() {
                if session.send_direct(frame.clone()) == Sent::Dropped {
                    metrics::counter!("roomcast_direct_dropped_total").increment(1);
                }
            }
        }
    }

    /// Closes every local session of `user` with `code`.
    pub fn close_user(&self, user: &str, code: crate::protocol::CloseCode) {
        if let Some(sessions) = self.0.users.get(user) {
            for session in sessions.iter() {
                session.close(code);
            }
        }
    }

    /// Asks one local session older than `before` (by id) and not already leaving to flush
    /// and close, as [`Self::drain_all`] does (rebalancing). Returns false when there is none.
    pub fn drain_one(&self, before: SessionId) -> bool {
        for sessions in self.0.users.iter() {
            let mut eligible = sessions.iter().filter(|s| s.id() < before);
            if let Some(session) = eligible.find(|s| !s.is_draining()) {
                session.drain();
                return true;
            }
        }
        false
    }

    /// Asks every local session to flush and close (shutdown).
    pub fn drain_all(&self) {
        for sessions in self.0.users.iter() {
            for session in sessions.iter() {
                session.drain();
            }
        }
    }

    /// What every local session holds, queued or being written (for metrics).
    pub fn held(&self) -> Held {
        let mut total = Held::default();
        for sessions in self.0.users.iter() {
            for held in sessions.value().iter().map(SessionHandle::held) {
                total.frames += held.frames;
                total.bytes += held.bytes;
            }
        }
        total
    }

    /// Shrinks the room and user tables once most of their entries are gone (after a crowd
    /// left); called by the node's periodic housekeeping.
    pub fn shrink(&self) {
        crate::shrink::if_sparse(&self.0.rooms);
        crate::shrink::if_sparse(&self.0.users);
    }

    /// Number of rooms with at least one local member.
    pub fn room_count(&self) -> usize {
        self.0.rooms.len()
    }

    /// Number of users with at least one local session.
    pub fn user_count(&self) -> usize {
        self.0.users.len()
    }

    fn room(&self, room: &str) -> Option<Arc<Mutex<Room>>> {
        // Clone the Arc and drop the shard guard at once so other rooms in the shard never wait
        // on this room's fan-out.
        self.0.rooms.get(room).map(|cell| cell.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CloseCode;
    use crate::session::{Outbox, QueueLimits};

    fn session(user: &str, cap: usize) -> (SessionHandle, Outbox) {
        let limits = QueueLimits {
            frames: cap,
            bytes: usize::MAX,
        };
        SessionHandle::new(user.into(), limits)
    }

    fn drain(outbox: &mut Outbox) -> Vec<String> {
        let frames = outbox
            .take()
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect();
        outbox.written();
        frames
    }

    #[test]
    fn pending_member_gets_joined_then_replay_then_newer_buffered() {
        let hub = Hub::new();
        let (s, mut rx) = session("a", 16);
        assert!(hub.add_pending("r", &s, false, 16));
        for offset in 1..=4 {
            hub.deliver("r", offset, &format!("m{offset}").into());
        }
        // The broker reported top = 2 and replayed 1..=2; 3 and 4 come from the buffer.
        let first = hub.activate(
            "r",
            s.id(),
            "joined".into(),
            vec!["m1".into(), "m2".into()],
            2,
        );
        assert!(first);
        hub.deliver("r", 5, &"m5".into());
        assert_eq!(drain(&mut rx), ["joined", "m1", "m2", "m3", "m4", "m5"]);
    }

    #[test]
    fn a_late_message_already_covered_by_the_join_is_not_delivered_twice() {
        let hub = Hub::new();
        let (s, mut rx) = session("a", 16);
        hub.add_pending("r", &s, false, 16);
        // History said top = 5 and replayed 4..=5; the broker's copy of 5 arrives afterwards.
        hub.activate(
            "r",
            s.id(),
            "joined".into(),
            vec!["m4".into(), "m5".into()],
            5,
        );
        hub.deliver("r", 5, &"m5 again".into());
        hub.deliver("r", 6, &"m6".into());
        hub.deliver("r", 6, &"m6 again".into());
        assert_eq!(drain(&mut rx), ["joined", "m4", "m5", "m6"]);
        // After a restart notice numbering begins again at 1.
        hub.restart("r", &"restart".into());
        hub.deliver("r", 1, &"n1".into());
        assert_eq!(drain(&mut rx), ["restart", "n1"]);
    }

    #[test]
    fn last_member_leaving_frees_the_room_and_reports_presence() {
        let hub = Hub::new();
        let (a1, _r1) = session("alice", 4);
        let (a2, _r2) = session("alice", 4);
        hub.add_pending("r", &a1, false, 4);
        assert!(hub.activate("r", a1.id(), "j".into(), vec![], 0));
        assert!(!hub.add_pending("r", &a2, false, 4));
        assert!(
            !hub.activate("r", a2.id(), "j".into(), vec![], 0),
            "alice already present"
        );
        let out = hub.remove("r", &a1);
        assert_eq!(
            out,
            Removed {
                was_member: true,
                user_gone: false,
                room_empty: false
            }
        );
        let out = hub.remove("r", &a2);
        assert_eq!(
            out,
            Removed {
                was_member: true,
                user_gone: true,
                room_empty: true
            }
        );
        assert_eq!(hub.room_count(), 0);
        assert_eq!(hub.remove("r", &a2), Removed::default());
    }

    #[test]
    fn a_full_queue_closes_only_that_member() {
        let hub = Hub::new();
        let (slow, _keep) = session("slow", 2);
        let (fast, mut fast_rx) = session("fast", 64);
        for s in [&slow, &fast] {
            hub.add_pending("r", s, false, 64);
            hub.activate("r", s.id(), "j".into(), vec![], 0);
        }
        for offset in 1..=10 {
            hub.deliver("r", offset, &"m".into());
        }
        assert_eq!(slow.close_code(), Some(CloseCode::SlowConsumer));
        assert_eq!(fast.close_code(), None);
        assert_eq!(drain(&mut fast_rx).len(), 11);
    }

    #[test]
    fn direct_messages_reach_every_session_of_the_user() {
        let hub = Hub::new();
        let (b1, mut r1) = session("bob", 4);
        let (b2, mut r2) = session("bob", 4);
        assert!(hub.add_user_session(&b1));
        assert!(!hub.add_user_session(&b2));
        hub.deliver_direct("bob", &"hi".into());
        assert_eq!(drain(&mut r1), ["hi"]);
        assert_eq!(drain(&mut r2), ["hi"]);
        assert!(!hub.remove_user_session(&b1));
        assert!(hub.remove_user_session(&b2));
        assert_eq!(hub.user_count(), 0);
    }
}
