//! Accounting: counters, latency histograms, per-room offset sets and per-member sequence
//! checks. Everything here is mergeable, so worker processes ship it as JSON and the coordinator
//! adds it up. No I/O.

mod hist;
mod ranges;
mod rooms;

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

pub use hist::{Hist, Summary};
pub use ranges::RangeSet;
pub use rooms::{
    MAX_PROBLEM_ROOMS, MemberCursor, RoomFaults, RoomProblem, RoomReport, RoomTotals, Sequence,
    merge_rooms,
};

/// Plain event counts; merged by adding.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub connects_ok: u64,
    pub connects_failed: u64,
    pub reconnects_ok: u64,
    pub reconnects_failed: u64,
    /// Connections the server closed or that broke while the run still wanted them.
    pub unexpected_disconnects: u64,
    /// Planned disconnects (churn).
    pub churn_disconnects: u64,
    /// Closes with 1001 (the server is draining for a restart): expected, and followed by a
    /// reconnect and resume like any other disconnect, but not a failure.
    pub server_drains: u64,
    pub joins_ok: u64,
    pub join_failed: u64,
    pub published: u64,
    pub acked: u64,
    /// Requests answered by an `error` frame, per code (see `errors_by_code`).
    pub request_errors: u64,
    /// Requests skipped by the replies (the rate limiter dropped the frame).
    pub unanswered: u64,
    /// Requests in flight when their connection went away (churn or disconnect): outcome unknown.
    pub abandoned: u64,
    pub deliveries: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    /// WebSocket bytes read off the connections: every frame with its header, compressed as
    /// sent (above TLS; the HTTP handshake excluded).
    pub wire_bytes_received: u64,
    /// Connections whose server accepted the permessage-deflate offer (`deflate`).
    pub deflate_connections: u64,
    /// The server's heartbeat pings (WebSocket ping frames), answered with pongs.
    pub pings: u64,
    pub direct_sent: u64,
    pub direct_acked: u64,
    pub direct_received: u64,
    pub resumes_recovered: u64,
    pub resumes_unrecovered: u64,
    /// Deliveries that were a resume's replay of missed messages (their latency includes the
    /// time offline, so they stay out of the latency histogram).
    pub replayed: u64,
    /// Sequence faults over all rooms (the same figures are kept per room).
    pub faults: RoomFaults,
    /// Messages whose `data` was not a loadtest payload (another client in the room?).
    pub foreign_payloads: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub close_codes: BTreeMap<String, u64>,
    /// Failed connection attempts (first connects and reconnects) by cause.
    pub connect_errors: BTreeMap<String, u64>,
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        let pairs: [(&mut u64, u64); 26] = [
            (&mut self.connects_ok, o.connects_ok),
            (&mut self.connects_failed, o.connects_failed),
            (&mut self.reconnects_ok, o.reconnects_ok),
            (&mut self.reconnects_failed, o.reconnects_failed),
            (&mut self.unexpected_disconnects, o.unexpected_disconnects),
            (&mut self.churn_disconnects, o.churn_disconnects),
            (&mut self.server_drains, o.server_drains),
            (&mut self.joins_ok, o.joins_ok),
            (&mut self.join_failed, o.join_failed),
            (&mut self.published, o.published),
            (&mut self.acked, o.acked),
            (&mut self.request_errors, o.request_errors),
            (&mut self.unanswered, o.unanswered),
            (&mut self.abandoned, o.abandoned),
            (&mut self.deliveries, o.deliveries),
            (&mut self.frames_received, o.frames_received),
            (&mut self.bytes_received, o.bytes_received),
            (&mut self.wire_bytes_received, o.wire_bytes_received),
            (&mut self.deflate_connections, o.deflate_connections),
            (&mut self.pings, o.pings),
            (&mut self.direct_sent, o.direct_sent),
            (&mut self.direct_acked, o.direct_acked),
            (&mut self.direct_received, o.direct_received),
            (&mut self.resumes_recovered, o.resumes_recovered),
            (&mut self.resumes_unrecovered, o.resumes_unrecovered),
            (&mut self.replayed, o.replayed),
        ];
        for (mine, theirs) in pairs {
            *mine += theirs;
        }
        self.foreign_payloads += o.foreign_payloads;
        self.faults.merge(&o.faults);
        for (k, v) in &o.errors_by_code {
            *self.errors_by_code.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.close_codes {
            *self.close_codes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.connect_errors {
            *self.connect_errors.entry(k.clone()).or_default() += v;
        }
    }
}

/// One room message as a member received it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub offset: u64,
    /// Publish to receipt; `None` when `data` was not a loadtest payload.
    pub latency_us: Option<u64>,
    /// Part of a resume's replay (offset at or below the `joined` offset).
    pub replayed: bool,
    /// The publisher's `seq` did not rise since this member's previous message from it.
    pub seq_regressed: bool,
}

/// Figures for one second of the run (series for the plot and the progress line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecondStats {
    pub deliveries: u64,
    pub bytes: u64,
    pub acks: u64,
    pub latency: Hist,
    /// CPU seconds the tester used in this second (summed over workers: 1.0 = one core).
    pub cpu_secs: f64,
}

impl SecondStats {
    pub fn merge(&mut self, o: &SecondStats) {
        self.deliveries += o.deliveries;
        self.bytes += o.bytes;
        self.acks += o.acks;
        self.latency.merge(&o.latency);
        self.cpu_secs += o.cpu_secs;
    }
}

/// Everything one worker measures. Lives in a `RefCell` on the worker's single thread.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub counters: Counters,
    pub connect_time: Hist,
    pub latency: Hist,
    pub ack_latency: Hist,
    pub direct_latency: Hist,
    pub rooms: Vec<RoomReport>,
    room_index: HashMap<(Rc<str>, Rc<str>), usize>,
    pub second: SecondStats,
    pub error_samples: Vec<String>,
    /// Requests sent and not yet answered, over all users: the drain waits for zero.
    pub pending: u64,
    /// Users between a disconnect and the end of their reconnect: the drain waits for them too,
    /// so a resume that lands after publishing stopped is still checked.
    pub away: u64,
    pub connected: u64,
    /// When the last frame arrived (unix µs): the drain waits for quiet.
    pub last_frame_us: u64,
}

/// Distinct error texts kept for the report.
const MAX_ERROR_SAMPLES: usize = 10;

impl WorkerStats {
    /// The index of room `(name, epoch)`, created on first use.
    pub fn room(&mut self, name: &Rc<str>, epoch: &str) -> usize {
        let key = (name.clone(), Rc::from(epoch));
        if let Some(&i) = self.room_index.get(&key) {
            return i;
        }
        let i = self.rooms.len();
        self.rooms.push(RoomReport {
            room: name.to_string(),
            epoch: epoch.to_string(),
            ..Default::default()
        });
        self.room_index.insert(key, i);
        i
    }

    /// A room message delivered to the member at `cursor`.
    pub fn delivered(&mut self, cursor: &mut MemberCursor, d: Delivery) {
        self.counters.deliveries += 1;
        self.second.deliveries += 1;
        if d.replayed {
            self.counters.replayed += 1;
        } else if let Some(us) = d.latency_us {
            self.latency.record(us);
            self.second.latency.record(us);
        }
        let room = &mut self.rooms[cursor.room];
        room.observed.insert(d.offset);
        let mut fault = RoomFaults::default();
        match cursor.advance(d.offset) {
            Sequence::InOrder => {}
            Sequence::Gap(n) => {
                fault.gaps = 1;
                fault.lost_in_gaps = n;
            }
            Sequence::Duplicate => fault.duplicates = 1,
            Sequence::OutOfOrder => fault.out_of_order = 1,
        }
        fault.seq_regressions = u64::from(d.seq_regressed);
        if fault != RoomFaults::default() {
            room.faults.merge(&fault);
            self.counters.faults.merge(&fault);
        }
    }

    /// A resume that could not replay: the member skipped from `cursor.last` to `offset`.
    pub fn unrecovered(&mut self, cursor: &mut MemberCursor, offset: u64) {
        let missed = offset.saturating_sub(cursor.last);
        self.counters.resumes_unrecovered += 1;
        self.counters.faults.lost_unrecovered += missed;
        self.rooms[cursor.room].faults.lost_unrecovered += missed;
        cursor.last = cursor.last.max(offset);
    }

    /// The run closed with this member joined: remember how far it got.
    pub fn member_end(&mut self, cursor: &MemberCursor) {
        let r = &mut self.rooms[cursor.room];
        r.end_members += 1;
        r.end_last_sum += cursor.last;
    }

    /// The member's resume landed in another history of the room: remember how far it got in
    /// this one, so the merge can count what it missed here as unrecovered.
    pub fn member_moved(&mut self, cursor: &MemberCursor) {
        let r = &mut self.rooms[cursor.room];
        r.moved_members += 1;
        r.moved_last_sum += cursor.last;
    }

    pub fn error_sample(&mut self, text: String) {
        if self.error_samples.len() < MAX_ERROR_SAMPLES && !self.error_samples.contains(&text) {
            self.error_samples.push(text);
        }
    }

    pub fn count_error_code(&mut self, code: &str) {
        *self
            .counters
            .errors_by_code
            .entry(code.to_string())
            .or_default() += 1;
    }

    pub fn count_close(&mut self, code: &str) {
        *self
            .counters
            .close_codes
            .entry(code.to_string())
            .or_default() += 1;
    }

    pub fn take_second(&mut self) -> SecondStats {
        std::mem::take(&mut self.second)
    }
}
