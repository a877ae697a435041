//! What a user reads: the `joined` reply (fresh join or resume) and every later frame, checked
//! against the member's offset cursor and its publishers' sequence numbers.

use std::collections::HashMap;
use std::rc::Rc;

use super::Shared;
use super::{Pending, ReqKind, User};
use crate::stats::{Delivery, MemberCursor, WorkerStats};
use crate::wire::now_us;
use crate::wire::{Frame, Kind, Payload};

impl User {
    pub(super) fn joined(
        &mut self,
        shared: &Shared,
        room: &Rc<str>,
        epoch: &str,
        offset: u64,
        recovered: Option<bool>,
    ) {
        let mut st = shared.stats.borrow_mut();
        st.counters.joins_ok += 1;
        let same_epoch = self.epoch.as_deref() == Some(epoch);
        match (self.cursor.as_mut(), recovered) {
            // Replay follows and continues the cursor where it stopped.
            (Some(_), Some(true)) if same_epoch => {
                st.counters.resumes_recovered += 1;
                self.replay_until = Some(offset);
            }
            (Some(cursor), _) if same_epoch => {
                st.unrecovered(cursor, offset);
                self.replay_until = None;
            }
            (old, _) => {
                if let Some(old) = old {
                    // Another history (the node restarted, or a node without a shared broker):
                    // what the old one carried after our last offset is lost to this member.
                    st.counters.resumes_unrecovered += 1;
                    let old = *old;
                    st.member_moved(&old);
                }
                self.replay_until = None;
                let idx = st.room(room, epoch);
                self.cursor = Some(MemberCursor {
                    room: idx,
                    last: offset,
                });
                self.epoch = Some(Rc::from(epoch));
            }
        }
    }

    pub(super) fn on_frame(&mut self, shared: &Shared, text: &str) {
        let now = now_us();
        let mut st = shared.stats.borrow_mut();
        st.counters.frames_received += 1;
        st.counters.bytes_received += text.len() as u64;
        st.second.bytes += text.len() as u64;
        st.last_frame_us = now;
        let frame = match Frame::parse(text) {
            Ok(f) => f,
            Err(e) => {
                st.error_sample(format!("unreadable frame: {e}"));
                return;
            }
        };
        match frame.kind {
            Kind::Message => self.on_message(&mut st, &frame, now),
            Kind::Direct => on_direct(&mut st, &frame, now),
            Kind::Ack | Kind::Error | Kind::Pong | Kind::Left | Kind::Presence | Kind::Joined => {
                self.on_reply(&mut st, &frame, now)
            }
            Kind::Welcome | Kind::PresenceJoin | Kind::PresenceLeave | Kind::Other => {}
        }
    }

    /// A room `message`, checked against this member's cursor and its publisher's seq.
    fn on_message(&mut self, st: &mut WorkerStats, frame: &Frame, now: u64) {
        let payload = frame.data.and_then(Payload::parse);
        if payload.is_none() {
            st.counters.foreign_payloads += 1;
        }
        match (self.cursor.as_mut(), frame.offset) {
            (Some(cursor), Some(offset)) if frame.room.as_deref() == self.room.as_deref() => {
                // Only a new offset can regress a publisher's seq; a repeated offset is
                // already counted as a duplicate or out of order.
                let seq_regressed = offset > cursor.last
                    && payload.is_some_and(|p| seq_regressed(&mut self.last_seq, p));
                let delivery = Delivery {
                    offset,
                    latency_us: payload.map(|p| now.saturating_sub(p.t)),
                    replayed: self.replay_until.is_some_and(|end| offset <= end),
                    seq_regressed,
                };
                st.delivered(cursor, delivery);
            }
            _ => st.error_sample(format!("message for a room not joined: {:?}", frame.room)),
        }
    }

    /// A frame that may answer one of our requests: any reply carrying a pending id settles
    /// that request, but only an `ack` counts it as acknowledged. An `error`'s code is tallied
    /// even without an id.
    fn on_reply(&mut self, st: &mut WorkerStats, frame: &Frame, now: u64) {
        if frame.kind == Kind::Error {
            st.counters.request_errors += u64::from(frame.id.is_some());
            let code = frame.code.as_deref().unwrap_or("unknown");
            st.count_error_code(code);
        }
        let Some(id) = frame.id else { return };
        let Some(request) = self.take_pending(st, id) else {
            return;
        };
        if frame.kind == Kind::Ack {
            self.on_ack(st, request, frame.offset, now);
        }
    }

    /// Removes and returns the pending request `id`, if it is still waiting.
    fn take_pending(&mut self, st: &mut WorkerStats, id: u64) -> Option<Pending> {
        // Replies come in request order: anything older never got one.
        while self.pending.front().is_some_and(|p| p.id < id) {
            self.pending.pop_front();
            st.pending -= 1;
            st.counters.unanswered += 1;
        }
        if self.pending.front().is_none_or(|p| p.id != id) {
            return None;
        }
        st.pending -= 1;
        self.pending.pop_front()
    }

    /// An acknowledged publish also marks its offset as acked in the room's history: the set
    /// every member's deliveries are checked against for loss.
    fn on_ack(&self, st: &mut WorkerStats, request: Pending, offset: Option<u64>, now: u64) {
        match request.kind {
            ReqKind::Publish => {
                st.counters.acked += 1;
                st.second.acks += 1;
                st.ack_latency.record(now.saturating_sub(request.sent_us));
                if let (Some(cursor), Some(offset)) = (self.cursor, offset) {
                    st.rooms[cursor.room].acked.insert(offset);
                }
            }
            ReqKind::Direct => st.counters.direct_acked += 1,
        }
    }
}

/// A direct message from another user: counted, and timed when it carries our payload.
fn on_direct(st: &mut WorkerStats, frame: &Frame, now: u64) {
    st.counters.direct_received += 1;
    if let Some(p) = frame.data.and_then(Payload::parse) {
        st.direct_latency.record(now.saturating_sub(p.t));
    }
}

/// Records publisher `p.p`'s `seq` and says whether it failed to rise. Seqs rise by one per
/// request of that user (publishes and direct messages share the counter), so a gap is normal
/// (a direct message, a dropped frame) but a repeat or a fall means content came twice.
fn seq_regressed(last_seq: &mut HashMap<u64, u64>, p: Payload) -> bool {
    let last = last_seq.entry(p.p).or_insert(0);
    if p.s <= *last {
        return true;
    }
    *last = p.s;
    false
}
