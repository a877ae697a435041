//! Judges a campaign from what its users logged, the faults as they happened and the readiness
//! samples. Every acknowledged message is classified per member that the promise covers
//! (docs/protocol.md): delivered, told lost (the member got a `joined` with `recovered:false`
//! or a new epoch after its last delivery), or silently lost. Offsets skipped without notice,
//! duplicates, reorders, false acks, false presence events, presence views that end wrong, and
//! time during which a node said ready while it could not complete Redis commands are counted
//! too. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::client::{Event, UserLog};
use super::faults::{Fault, FaultKind};
use super::ready::{self, Sample};

/// A presence event that contradicts a session that began this long before it is false.
const PRESENCE_SLACK_MS: u64 = 3_000;
/// Most violations listed in the report (all are counted).
const MAX_LISTED: usize = 200;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Verdict {
    /// Publishes acknowledged.
    pub acked: u64,
    /// (member, acknowledged message) pairs the promise covers, and how each ended.
    pub expected: u64,
    pub delivered: u64,
    pub told_lost: u64,
    pub silent_lost: u64,
    /// Offsets a member skipped without notice whose message no one acknowledged.
    pub silent_gaps: u64,
    /// An offset delivered twice to one member within an epoch, or one publish (its key)
    /// ordered at two offsets of an epoch.
    pub duplicates: u64,
    /// An offset below one already delivered, or a publisher's messages out of its order.
    pub reorders: u64,
    /// Two members saw different messages at the same room, epoch and offset.
    pub divergent: u64,
    /// An ack whose offset holds another message.
    pub false_acks: u64,
    /// `presence_leave` for a user connected since well before it, or `presence_join` for one
    /// offline since well before it.
    pub false_presence: u64,
    /// Members whose view (list + events) or last list differs from who is connected at the end.
    pub presence_wrong_at_end: u64,
    /// Seconds a node answered `/readyz` 200 while a fault kept it from completing Redis
    /// commands, after the documented detection time.
    pub false_ready_secs: f64,
    /// Users not joined when the run ended.
    pub not_rejoined: u64,
    /// Publishes still unacknowledged at the end (retried until then; not a violation).
    pub unacked_at_end: u64,
    pub told_lost_by_kind: BTreeMap<String, u64>,
    /// Longest time from a fault's end until the last message sent before that end was
    /// delivered (ms).
    pub worst_recovery_ms: u64,
    pub violations: Vec<Violation>,
    /// Per fault, in order: told-lost pairs attributed to it and its recovery time (ms).
    pub per_fault: Vec<(u64, u64)>,
}

impl Verdict {
    /// The campaign's zeros.
    pub fn passed(&self) -> bool {
        self.silent_lost == 0
            && self.silent_gaps == 0
            && self.duplicates == 0
            && self.reorders == 0
            && self.divergent == 0
            && self.false_acks == 0
            && self.false_presence == 0
            && self.presence_wrong_at_end == 0
            && self.false_ready_secs == 0.0
            && self.not_rejoined == 0
    }

    fn violation(&mut self, at_ms: Option<u64>, what: String) {
        if self.violations.len() < MAX_LISTED {
            self.violations.push(Violation { at_ms, what });
        }
    }
}

/// One broken promise: when it was seen (ms from the start), if it has a moment, and what.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub at_ms: Option<u64>,
    pub what: String,
}

/// A member's stay in one epoch of its room, from a `joined` to the `joined` that ended it.
struct Segment {
    user: usize,
    epoch: String,
    start: u64,
    /// (offset, publisher, seq, time) in arrival order.
    got: Vec<(u64, u64, u64, u64)>,
    /// When a `joined` told the member that what followed its last delivery is lost.
    told_at: Option<u64>,
}

impl Segment {
    fn last(&self) -> u64 {
        self.got
            .iter()
            .map(|g| g.0)
            .max()
            .unwrap_or(self.start)
            .max(self.start)
    }
}

type Pos = (String, String, u64); // room, epoch, offset
type MsgId = (String, u64, u64); // room, publisher, seq

pub struct Input<'a> {
    pub logs: &'a [UserLog],
    pub faults: &'a [Fault],
    pub samples: &'a [Sample],
    /// The nodes' readiness detection bound: probe period + command timeout (+ slack).
    pub ready_grace_ms: u64,
    /// The nodes' presence lease.
    pub lease_ms: u64,
}

pub fn check(input: &Input) -> Verdict {
    let mut v = Verdict::default();
    let segments: Vec<Segment> = input
        .logs
        .iter()
        .enumerate()
        .flat_map(|(i, l)| segments(i, l))
        .collect();
    let content = positions(input.logs, &segments, &mut v);
    let acks = acked_positions(input.logs, &content, &mut v);
    let mut top: HashMap<(String, String), u64> = HashMap::new();
    for (room, epoch, o) in content.keys().chain(acks.values()) {
        let t = top.entry((room.clone(), epoch.clone())).or_default();
        *t = (*t).max(*o);
    }
    for seg in &segments {
        order(input.logs, seg, &mut v);
    }
    let ledger = Ledger {
        logs: input.logs,
        segments,
        content,
        acks,
        top,
    };
    ledger.gaps(&mut v);
    ledger.classify(&mut v);
    let deliveries = deliveries(input.logs);
    v.per_fault = input
        .faults
        .iter()
        .map(|f| (0, recovery_ms(&deliveries, f)))
        .collect();
    ledger.attribute_told(input.faults, &mut v);
    v.worst_recovery_ms = v.per_fault.iter().map(|f| f.1).max().unwrap_or(0);
    presence(input, &mut v);
    v.false_ready_secs = false_ready_ms(input) as f64 / 1000.0;
    if v.false_ready_secs > 0.0 {
        v.violation(None, format!(
            "nodes answered /readyz 200 for {:.1} s while they could not complete Redis commands",
            v.false_ready_secs
        ));
    }
    v.unacked_at_end = input.logs.iter().map(|l| l.unacked.len() as u64).sum();
    v
}

fn segments(user: usize, log: &UserLog) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut cur: Option<Segment> = None;
    for e in &log.events {
        match e {
            Event::Joined {
                at,
                epoch,
                offset,
                recovered,
                solicited,
                ..
            } => {
                let resumed = *solicited && *recovered == Some(true);
                if resumed && cur.as_ref().is_some_and(|c| c.epoch == *epoch) {
                    continue;
                }
                if let Some(mut c) = cur.take() {
                    c.told_at = Some(*at);
                    out.push(c);
                }
                cur = Some(Segment {
                    user,
                    epoch: epoch.clone(),
                    start: *offset,
                    got: Vec::new(),
                    told_at: None,
                });
            }
            Event::Message {
                at, offset, p, s, ..
            } => {
                if let Some(c) = cur.as_mut() {
                    c.got.push((*offset, *p, *s, *at));
                }
            }
            _ => {}
        }
    }
    out.extend(cur);
    out
}

/// What sits at each position, from the deliveries; members that disagree are divergent.
fn positions(logs: &[UserLog], segments: &[Segment], v: &mut Verdict) -> HashMap<Pos, (u64, u64)> {
    let mut content: HashMap<Pos, (u64, u64)> = HashMap::new();
    let mut flagged = HashSet::new();
    for seg in segments {
        let room = &logs[seg.user].room;
        for &(o, p, s, at) in &seg.got {
            let pos = (room.clone(), seg.epoch.clone(), o);
            let had = *content.entry(pos.clone()).or_insert((p, s));
            if had != (p, s) && flagged.insert(pos) {
                v.divergent += 1;
                v.violation(
                    Some(at),
                    format!(
                        "{room} epoch {} offset {o}: members saw u{}#{} and u{p}#{s}",
                        short(&seg.epoch),
                        had.0,
                        had.1
                    ),
                );
            }
        }
    }
    content
}

/// Where each acknowledged publish sits: where members saw it, else where its ack said.
/// A publish seen at two offsets of one epoch was applied twice; an ack naming an offset
/// that holds another message is false.
fn acked_positions(
    logs: &[UserLog],
    content: &HashMap<Pos, (u64, u64)>,
    v: &mut Verdict,
) -> HashMap<MsgId, Pos> {
    let mut seen: HashMap<MsgId, BTreeSet<(String, u64)>> = HashMap::new();
    for ((room, epoch, o), (p, s)) in content {
        seen.entry((room.clone(), *p, *s))
            .or_default()
            .insert((epoch.clone(), *o));
    }
    for ((room, p, s), at) in &seen {
        let epochs: BTreeSet<&String> = at.iter().map(|(e, _)| e).collect();
        if epochs.len() < at.len() {
            v.duplicates += 1;
            v.violation(
                None,
                format!("{room}: u{p}#{s} ordered twice in one epoch: {at:?}"),
            );
        }
    }
    let mut acks = HashMap::new();
    for log in logs {
        for e in &log.events {
            let Event::Ack {
                at,
                s,
                offset,
                epoch,
                ..
            } = e
            else {
                continue;
            };
            v.acked += 1;
            let id = (log.room.clone(), log.index, *s);
            let places = seen.get(&id);
            let pos = match places.and_then(|set| set.iter().find(|(_, o)| o == offset)) {
                Some((e, o)) => (log.room.clone(), e.clone(), *o),
                None => (log.room.clone(), epoch.clone(), *offset),
            };
            match content.get(&pos) {
                Some(other) if *other != (log.index, *s) => {
                    v.false_acks += 1;
                    v.violation(
                        Some(*at),
                        format!(
                            "{}: ack for u{}#{s} says offset {offset}, which holds u{}#{}",
                            log.room, log.index, other.0, other.1
                        ),
                    );
                }
                _ if places.is_some_and(|p| !p.iter().any(|(_, o)| o == offset)) => {
                    v.false_acks += 1;
                    v.violation(
                        Some(*at),
                        format!(
                            "{}: ack for u{}#{s} says offset {offset}; members saw it at {:?}",
                            log.room, log.index, places
                        ),
                    );
                }
                _ => {}
            }
            acks.insert(id, pos);
        }
    }
    acks
}

/// Offsets must rise: an offset again is a duplicate, a lower one a reorder; each publisher's
/// messages must keep its order (one publish at a time, so its seqs rise).
fn order(logs: &[UserLog], seg: &Segment, v: &mut Verdict) {
    let user = &logs[seg.user].user;
    let mut seen = HashSet::new();
    let mut high = seg.start;
    let mut by_publisher: HashMap<u64, u64> = HashMap::new();
    for &(o, p, s, at) in &seg.got {
        if !seen.insert(o) {
            v.duplicates += 1;
            v.violation(
                Some(at),
                format!(
                    "{user} got offset {o} of epoch {} twice (at {at} ms)",
                    short(&seg.epoch)
                ),
            );
            continue;
        }
        if o < high {
            v.reorders += 1;
            v.violation(Some(at), format!("{user} got offset {o} after {high}"));
        }
        high = high.max(o);
        let last = by_publisher.entry(p).or_default();
        if s <= *last {
            v.reorders += 1;
            v.violation(Some(at), format!("{user} got u{p}#{s} after u{p}#{last}"));
        }
        *last = (*last).max(s);
    }
}

/// Who stayed where, what sits at each position, where each acknowledged message went, and
/// how far each epoch of each room reached.
struct Ledger<'a> {
    logs: &'a [UserLog],
    segments: Vec<Segment>,
    content: HashMap<Pos, (u64, u64)>,
    acks: HashMap<MsgId, Pos>,
    top: HashMap<(String, String), u64>,
}

impl Ledger<'_> {
    fn room(&self, seg: &Segment) -> &str {
        &self.logs[seg.user].room
    }

    /// The highest offset a segment answers for: its last delivery if it was told to stop
    /// there, else the highest its epoch reached.
    fn covered_to(&self, seg: &Segment) -> u64 {
        if seg.told_at.is_some() {
            return seg.last();
        }
        let key = (self.room(seg).to_string(), seg.epoch.clone());
        self.top.get(&key).copied().unwrap_or(seg.start)
    }

    /// Offsets skipped without notice whose message nobody acknowledged (acked ones are
    /// judged by `classify`).
    fn gaps(&self, v: &mut Verdict) {
        let acked: HashSet<&Pos> = self.acks.values().collect();
        for seg in &self.segments {
            let room = self.room(seg);
            let got: HashSet<u64> = seg.got.iter().map(|g| g.0).collect();
            for o in seg.start + 1..=self.covered_to(seg) {
                let pos = (room.to_string(), seg.epoch.clone(), o);
                if got.contains(&o) || acked.contains(&pos) {
                    continue;
                }
                v.silent_gaps += 1;
                let what = self
                    .content
                    .get(&pos)
                    .map_or("a message no one received".to_string(), |(p, s)| {
                        format!("u{p}#{s}")
                    });
                let at = seg.got.iter().find(|g| g.0 > o).map(|g| g.3);
                v.violation(
                    at,
                    format!(
                        "{} skipped offset {o} of {room} epoch {} ({what}) without notice",
                        self.logs[seg.user].user,
                        short(&seg.epoch)
                    ),
                );
            }
        }
    }

    /// Every acknowledged message against every member whose stay in its epoch began before
    /// it.
    fn classify(&self, v: &mut Verdict) {
        for ((room, p, s), (_, epoch, o)) in &self.acks {
            let covering = self
                .segments
                .iter()
                .filter(|g| self.room(g) == room && g.epoch == *epoch && g.start < *o);
            for seg in covering {
                v.expected += 1;
                if seg.got.iter().any(|g| g.0 == *o) {
                    v.delivered += 1;
                } else if seg.told_at.is_some() && *o > self.covered_to(seg) {
                    v.told_lost += 1;
                } else {
                    v.silent_lost += 1;
                    v.violation(
                        seg.got.last().map(|g| g.3),
                        format!(
                            "{} never got u{p}#{s} ({room} epoch {} offset {o}) and was not told",
                            self.logs[seg.user].user,
                            short(epoch)
                        ),
                    );
                }
            }
        }
    }

    /// Told-lost pairs per fault (the last one begun before the notice) and per fault kind.
    fn attribute_told(&self, faults: &[Fault], v: &mut Verdict) {
        for seg in &self.segments {
            let Some(told) = seg.told_at else { continue };
            let (room, from) = (self.room(seg), self.covered_to(seg));
            let lost = self
                .acks
                .values()
                .filter(|(r, e, o)| r == room && *e == seg.epoch && *o > from)
                .count() as u64;
            if lost == 0 {
                continue;
            }
            let fault = faults.iter().rposition(|f| f.start_ms <= told);
            let kind = fault.map_or("no_fault".to_string(), |i| format!("{:?}", faults[i].kind));
            *v.told_lost_by_kind.entry(kind).or_default() += lost;
            if let Some(i) = fault {
                v.per_fault[i].0 += lost;
            }
        }
    }
}

/// From the fault's end until the last message first sent before it was delivered.
fn recovery_ms(deliveries: &[(u64, u64)], fault: &Fault) -> u64 {
    deliveries
        .iter()
        .filter(|(first, at)| *first < fault.end_ms && *at >= fault.end_ms)
        .map(|(_, at)| at - fault.end_ms)
        .max()
        .unwrap_or(0)
}

/// Every delivery of an acknowledged message: (its first send, its arrival), in ms. Built once
/// for all faults.
fn deliveries(logs: &[UserLog]) -> Vec<(u64, u64)> {
    let mut sent: HashMap<(&str, u64, u64), u64> = HashMap::new();
    for log in logs {
        for e in &log.events {
            if let Event::Ack { s, first_sent, .. } = e {
                sent.insert((&log.room, log.index, *s), *first_sent);
            }
        }
    }
    let mut out = Vec::new();
    for log in logs {
        for e in &log.events {
            if let Event::Message { at, p, s, .. } = e {
                if let Some(first) = sent.get(&(log.room.as_str(), *p, *s)) {
                    out.push((*first, *at));
                }
            }
        }
    }
    out
}

/// When each user was joined, and on which node: from a join's answer to the end of that
/// connection.
fn sessions(logs: &[UserLog]) -> HashMap<&str, Vec<(u64, u64, usize)>> {
    let mut out: HashMap<&str, Vec<(u64, u64, usize)>> = HashMap::new();
    for log in logs {
        let mut from = None;
        for e in &log.events {
            match e {
                Event::Joined {
                    at,
                    node,
                    solicited: true,
                    ..
                } => from = from.or(Some((*at, *node))),
                Event::Down { at, .. } => {
                    if let Some((f, node)) = from.take() {
                        out.entry(&log.user).or_default().push((f, *at, node));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The user's last connection was joined when the run ended it.
fn joined_at_end(log: &UserLog) -> bool {
    let Some(Event::Down { why, .. }) = log.events.last() else {
        return false;
    };
    why == "run over"
        && log
            .events
            .iter()
            .rev()
            .skip(1)
            .take_while(|e| !matches!(e, Event::Down { .. }))
            .any(|e| {
                matches!(
                    e,
                    Event::Joined {
                        solicited: true,
                        ..
                    }
                )
            })
}

/// A node whose own link to Redis was down for a lease looks dead to the others, which reap
/// its users' leases: a `presence_leave` for its users at `at` is then expected (and their
/// `presence_join` when the link returns), not false.
fn cut_off(input: &Input, node: usize, at: u64) -> bool {
    let target = format!("n{node}");
    input.faults.iter().any(|f| {
        matches!(f.kind, FaultKind::LinkStall | FaultKind::LinkCut)
            && f.target == target
            && f.end_ms - f.start_ms + PRESENCE_SLACK_MS >= input.lease_ms
            && (f.start_ms..=f.end_ms + 2 * input.lease_ms).contains(&at)
    })
}

fn presence(input: &Input, v: &mut Verdict) {
    false_presence_events(input, v);
    presence_at_end(input.logs, v);
}

/// Presence events that contradict the sessions the users really had.
fn false_presence_events(input: &Input, v: &mut Verdict) {
    let logs = input.logs;
    let sessions = sessions(logs);
    for log in logs {
        for e in &log.events {
            let Event::PresenceEvent {
                at,
                join,
                user,
                seq,
            } = e
            else {
                continue;
            };
            let theirs = sessions
                .get(user.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            // A join may arrive just before the joiner reads its own `joined`, and just after
            // it left; a leave is false only for a session well under way that goes on well
            // after it (a drained node announces its users' leaves as it closes them).
            let false_event = if *join {
                let (from, to) = (at.saturating_sub(PRESENCE_SLACK_MS), at + PRESENCE_SLACK_MS);
                !theirs.iter().any(|(a, b, _)| *a <= to && *b >= from)
            } else {
                theirs.iter().any(|(a, b, node)| {
                    *a + PRESENCE_SLACK_MS <= *at
                        && *b >= *at + PRESENCE_SLACK_MS
                        && !cut_off(input, *node, *at)
                })
            };
            if false_event {
                v.false_presence += 1;
                let what = if *join {
                    "presence_join"
                } else {
                    "presence_leave"
                };
                v.violation(
                    Some(*at),
                    format!(
                        "{} got {what} {user} (seq {seq}); {user}'s sessions: {theirs:?}",
                        log.user
                    ),
                );
            }
        }
    }
}

/// Every member's view and last list against who is connected at the end.
fn presence_at_end(logs: &[UserLog], v: &mut Verdict) {
    let mut truth: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for log in logs {
        if joined_at_end(log) {
            truth.entry(&log.room).or_default().insert(&log.user);
        } else {
            v.not_rejoined += 1;
            v.violation(
                None,
                format!("{} was not joined when the run ended", log.user),
            );
        }
    }
    for log in logs.iter().filter(|l| joined_at_end(l)) {
        let want = truth.get(log.room.as_str()).cloned().unwrap_or_default();
        let (view, last) = final_view(log);
        for (name, got) in [("view (list + events)", view), ("last presence list", last)] {
            let got: BTreeSet<&str> = got.iter().map(String::as_str).collect();
            if got != want {
                v.presence_wrong_at_end += 1;
                v.violation(
                    None,
                    format!(
                        "{}'s {name} at the end is {got:?}, connected are {want:?}",
                        log.user
                    ),
                );
            }
        }
    }
}

/// What clients/js would show at the end (the list of the last epoch, then the events above
/// its seq in seq order, up to the last list) and the last list asked for.
fn final_view(log: &UserLog) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut list: Option<(u64, BTreeSet<String>)> = None;
    let mut events: Vec<(u64, bool, String)> = Vec::new();
    let mut last = BTreeSet::new();
    for e in &log.events {
        match e {
            Event::Joined { .. } => {
                list = None;
                events.clear();
            }
            // The last list is asked for while everyone is still connected; what comes after
            // it is the run ending (users closing), not the state to judge.
            Event::PresenceList {
                users, last: true, ..
            } => {
                last = users.iter().cloned().collect();
                break;
            }
            Event::PresenceList { seq, users, .. } => {
                list = Some((*seq, users.iter().cloned().collect()))
            }
            Event::PresenceEvent {
                join, user, seq, ..
            } => events.push((*seq, *join, user.clone())),
            _ => {}
        }
    }
    let (from, mut view) = list.unwrap_or_default();
    events.sort_by_key(|e| e.0);
    for (seq, join, user) in events {
        if seq <= from {
            continue;
        }
        if join {
            view.insert(user);
        } else {
            view.remove(&user);
        }
    }
    (view, last)
}

fn false_ready_ms(input: &Input) -> u64 {
    let mut total = 0;
    for f in input.faults {
        let from = f.start_ms + input.ready_grace_ms;
        for node in &f.unready {
            total += input
                .samples
                .iter()
                .filter(|s| {
                    s.node == *node && s.at >= from && s.at <= f.end_ms && s.ready == Some(true)
                })
                .count() as u64
                * ready::EVERY.as_millis() as u64;
        }
    }
    total
}

fn short(epoch: &str) -> &str {
    &epoch[..epoch.len().min(8)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(at: u64, epoch: &str, offset: u64, solicited: bool) -> Event {
        let recovered = if solicited { None } else { Some(false) };
        Event::Joined {
            at,
            node: 0,
            epoch: epoch.into(),
            offset,
            recovered,
            solicited,
        }
    }

    fn msg(at: u64, epoch: &str, offset: u64, p: u64, s: u64) -> Event {
        Event::Message {
            at,
            epoch: epoch.into(),
            offset,
            p,
            s,
        }
    }

    fn ack(at: u64, s: u64, offset: u64) -> Event {
        Event::Ack {
            at,
            s,
            offset,
            epoch: "e1".into(),
            first_sent: at - 5,
            attempts: 1,
        }
    }

    fn end(at: u64) -> Event {
        Event::Down {
            at,
            why: "run over".into(),
        }
    }

    /// A user's log, with the presence lists of two users who stay all along: one after its
    /// last `joined`, one asked for at the end.
    fn user(index: u64, mut events: Vec<Event>) -> UserLog {
        let list = |last| Event::PresenceList {
            at: 0,
            seq: 0,
            users: vec!["u0".into(), "u1".into()],
            last,
        };
        let after_join = events
            .iter()
            .rposition(|e| matches!(e, Event::Joined { .. }))
            .unwrap_or(0)
            + 1;
        events.insert(after_join, list(false));
        events.insert(events.len() - 1, list(true));
        UserLog {
            user: format!("u{index}"),
            index,
            room: "room0".into(),
            events,
            unacked: Vec::new(),
        }
    }

    fn judge(logs: &[UserLog]) -> Verdict {
        check(&Input {
            logs,
            faults: &[],
            samples: &[],
            ready_grace_ms: 0,
            lease_ms: 3_000,
        })
    }

    /// u0 publishes two messages, both acked; u0 gets both.
    fn publisher() -> UserLog {
        user(
            0,
            vec![
                joined(0, "e1", 0, true),
                msg(10, "e1", 1, 0, 1),
                ack(11, 1, 1),
                msg(20, "e1", 2, 0, 2),
                ack(21, 2, 2),
                end(100),
            ],
        )
    }

    #[test]
    fn a_clean_run_passes() {
        let member = user(
            1,
            vec![
                joined(0, "e1", 0, true),
                msg(10, "e1", 1, 0, 1),
                msg(20, "e1", 2, 0, 2),
                end(100),
            ],
        );
        let v = judge(&[publisher(), member]);
        assert!(v.passed(), "{v:?}");
        assert_eq!((v.acked, v.expected, v.delivered), (2, 4, 4));
    }

    #[test]
    fn a_message_skipped_without_notice_is_silent_loss() {
        let member = user(
            1,
            vec![joined(0, "e1", 0, true), msg(10, "e1", 1, 0, 1), end(100)],
        );
        let v = judge(&[publisher(), member]);
        assert_eq!(v.silent_lost, 1);
        assert!(!v.passed());
    }

    #[test]
    fn a_new_epoch_after_the_last_delivery_tells_the_loss() {
        let member = user(
            1,
            vec![
                joined(0, "e1", 0, true),
                msg(10, "e1", 1, 0, 1),
                joined(30, "e2", 0, false),
                end(100),
            ],
        );
        let v = judge(&[publisher(), member]);
        assert_eq!((v.told_lost, v.silent_lost), (1, 0));
        assert!(v.passed(), "{v:?}");
    }

    #[test]
    fn duplicates_reorders_and_false_acks_are_counted() {
        let member = user(
            1,
            vec![
                joined(0, "e1", 0, true),
                msg(10, "e1", 2, 0, 2),
                msg(20, "e1", 1, 0, 1),
                msg(30, "e1", 1, 0, 1),
                end(100),
            ],
        );
        let mut lying = publisher();
        lying.events[4] = ack(21, 2, 1); // says offset 1, which holds u0#1
        let v = judge(&[lying, member]);
        assert_eq!(v.duplicates, 1, "{v:?}");
        assert!(v.reorders >= 1, "{v:?}");
        assert!(v.false_acks >= 1, "{v:?}");
    }

    #[test]
    fn a_leave_for_a_connected_user_is_false_presence() {
        let leave = Event::PresenceEvent {
            at: 5_000,
            join: false,
            user: "u0".into(),
            seq: 3,
        };
        let member = user(1, vec![joined(0, "e1", 0, true), leave, end(9_000)]);
        let v = judge(&[user(0, vec![joined(0, "e1", 0, true), end(9_000)]), member]);
        assert_eq!(v.false_presence, 1, "{v:?}");
        // The leave applied over the list leaves u1's view without u0, who is connected.
        assert_eq!(v.presence_wrong_at_end, 1, "{v:?}");
    }

    #[test]
    fn ready_answers_during_a_redis_fault_count_after_the_grace() {
        let fault = Fault {
            kind: FaultKind::RedisPause,
            target: "redis0".into(),
            start_ms: 1_000,
            end_ms: 5_000,
            unready: vec![0],
        };
        let sample = |at, ready| Sample {
            node: 0,
            at,
            ready: Some(ready),
        };
        // Ready until 3.4 s (inside the 2 s grace until 3 s, then two samples too many), and
        // node 1's answers do not count: the fault does not concern it.
        let samples = [
            sample(2_000, true),
            sample(3_200, true),
            sample(3_400, true),
            sample(3_600, false),
        ];
        let mut other = samples[1];
        other.node = 1;
        let all = [&samples[..], &[other]].concat();
        let input = Input {
            logs: &[],
            faults: &[fault],
            samples: &all,
            ready_grace_ms: 2_000,
            lease_ms: 3_000,
        };
        assert_eq!(false_ready_ms(&input), 2 * ready::EVERY.as_millis() as u64);
    }

    #[test]
    fn leaves_after_the_last_list_are_the_run_ending_not_the_view() {
        // u1's own log ends with u0's leave, read as everyone closed after the last list.
        let leave = Event::PresenceEvent {
            at: 9_000,
            join: false,
            user: "u0".into(),
            seq: 3,
        };
        let mut member = user(1, vec![joined(0, "e1", 0, true), end(9_001)]);
        let at_end = member.events.len() - 1;
        member.events.insert(at_end, leave);
        let v = judge(&[user(0, vec![joined(0, "e1", 0, true), end(9_000)]), member]);
        assert_eq!(v.presence_wrong_at_end, 0, "{v:?}");
    }
}
