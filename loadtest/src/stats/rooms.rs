//! Per-room accounting: where each member stands in its room's offset sequence, the faults each
//! process saw per room history, and the merge that finds what only the whole run can see
//! (acknowledged messages nobody received, members left behind at the end).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::RangeSet;

/// Sequence faults that members of one process saw in one room history. Merged by adding.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomFaults {
    /// Places where a member's offsets jumped, and how many offsets they skipped in total.
    pub gaps: u64,
    pub lost_in_gaps: u64,
    /// The offset just seen, again.
    pub duplicates: u64,
    /// An offset below the last one seen.
    pub out_of_order: u64,
    /// A publisher's `seq` that did not rise within one member's stream: the same message (or an
    /// older one) delivered again under a new offset, which offset checks alone cannot see.
    pub seq_regressions: u64,
    /// Messages a member missed because its resume answered `recovered:false`.
    pub lost_unrecovered: u64,
}

impl RoomFaults {
    pub fn merge(&mut self, o: &RoomFaults) {
        self.gaps += o.gaps;
        self.lost_in_gaps += o.lost_in_gaps;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.seq_regressions += o.seq_regressions;
        self.lost_unrecovered += o.lost_unrecovered;
    }

    /// Faulty deliveries plus missed messages: 0 means this room was clean.
    pub fn weight(&self) -> u64 {
        self.lost_in_gaps
            + self.duplicates
            + self.out_of_order
            + self.seq_regressions
            + self.lost_unrecovered
    }
}

/// What one process saw of one room history, identified by name and epoch: rooms of separate
/// nodes without a shared broker have distinct epochs and are accounted separately.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomReport {
    pub room: String,
    pub epoch: String,
    /// Offsets the server acknowledged to publishers of this process.
    pub acked: RangeSet,
    /// Offsets at least one member of this process received.
    pub observed: RangeSet,
    /// Members still joined when the run closed, and the sum of the last offset each had seen:
    /// enough to count, after merging, what they missed at the tail.
    pub end_members: u64,
    pub end_last_sum: u64,
    /// Members whose resume answered with another epoch (they left this history for good),
    /// and the sum of their last offsets here: the merge counts what they missed as unrecovered.
    pub moved_members: u64,
    pub moved_last_sum: u64,
    pub faults: RoomFaults,
}

/// Where a member stands in its room's offset sequence.
#[derive(Debug, Clone, Copy)]
pub struct MemberCursor {
    pub room: usize,
    /// Last offset seen (the `joined` offset before any message).
    pub last: u64,
}

/// Outcome of checking one delivered offset against a member's cursor.
#[derive(Debug, PartialEq, Eq)]
pub enum Sequence {
    InOrder,
    Gap(u64),
    Duplicate,
    OutOfOrder,
}

impl MemberCursor {
    pub fn advance(&mut self, offset: u64) -> Sequence {
        if offset == self.last + 1 {
            self.last = offset;
            Sequence::InOrder
        } else if offset > self.last + 1 {
            let missed = offset - self.last - 1;
            self.last = offset;
            Sequence::Gap(missed)
        } else if offset == self.last {
            Sequence::Duplicate
        } else {
            Sequence::OutOfOrder
        }
    }
}

/// One room history with something wrong, for the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomProblem {
    pub room: String,
    pub epoch: String,
    pub faults: RoomFaults,
    pub lost_at_tail: u64,
    pub acked_not_observed: u64,
}

impl RoomProblem {
    fn weight(&self) -> u64 {
        self.faults.weight() + self.lost_at_tail + self.acked_not_observed
    }
}

/// Rooms listed individually in a report; the totals always cover all of them.
pub const MAX_PROBLEM_ROOMS: usize = 20;

/// Rooms merged over all workers, with the loss that only the merged view can see.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RoomTotals {
    /// Distinct room histories (name + epoch).
    pub rooms: u64,
    /// Distinct offsets acknowledged by the server.
    pub acked_distinct: u64,
    /// Distinct offsets received by at least one member.
    pub observed_distinct: u64,
    /// Acknowledged offsets no member received.
    pub acked_not_observed: u64,
    /// Messages members still joined at the end had not received (last offset behind the room's).
    pub lost_at_tail: u64,
    /// Messages of a history that members missed after their resume moved them to another
    /// history of the room (part of the unrecovered loss).
    pub lost_moved: u64,
    /// How many room histories had any fault, and the worst of them (at most
    /// `MAX_PROBLEM_ROOMS`, most faults first).
    pub rooms_with_problems: u64,
    pub problem_rooms: Vec<RoomProblem>,
}

/// Merges per-worker room reports by (room, epoch) and counts tail loss per room.
pub fn merge_rooms<'a>(reports: impl IntoIterator<Item = &'a RoomReport>) -> RoomTotals {
    let mut merged: HashMap<(&str, &str), (RoomReport, Vec<&RoomReport>)> = HashMap::new();
    for r in reports {
        let (m, parts) = merged
            .entry((r.room.as_str(), r.epoch.as_str()))
            .or_default();
        m.acked.union(&r.acked);
        m.observed.union(&r.observed);
        m.faults.merge(&r.faults);
        parts.push(r);
    }
    let mut totals = RoomTotals::default();
    let mut problems = Vec::new();
    for ((room, epoch), (m, parts)) in merged {
        totals.rooms += 1;
        totals.acked_distinct += m.acked.len();
        totals.observed_distinct += m.observed.len();
        let acked_not_observed = m.acked.count_missing_from(&m.observed);
        totals.acked_not_observed += acked_not_observed;
        // The room's head is the highest offset anyone was told about; each process's members
        // should all have reached it by the end.
        let head = m
            .acked
            .max()
            .unwrap_or(0)
            .max(m.observed.max().unwrap_or(0));
        let behind = |members: u64, sum: u64| (members * head).saturating_sub(sum);
        let lost_at_tail: u64 = parts
            .iter()
            .map(|p| behind(p.end_members, p.end_last_sum))
            .sum();
        let lost_moved: u64 = parts
            .iter()
            .map(|p| behind(p.moved_members, p.moved_last_sum))
            .sum();
        totals.lost_at_tail += lost_at_tail;
        totals.lost_moved += lost_moved;
        let mut faults = m.faults;
        faults.lost_unrecovered += lost_moved;
        let problem = RoomProblem {
            room: room.to_string(),
            epoch: epoch.to_string(),
            faults,
            lost_at_tail,
            acked_not_observed,
        };
        if problem.weight() > 0 {
            problems.push(problem);
        }
    }
    totals.rooms_with_problems = problems.len() as u64;
    problems.sort_by(|a, b| {
        b.weight()
            .cmp(&a.weight())
            .then_with(|| a.room.cmp(&b.room))
    });
    problems.truncate(MAX_PROBLEM_ROOMS);
    totals.problem_rooms = problems;
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_classifies_offsets() {
        let mut c = MemberCursor { room: 0, last: 5 };
        assert_eq!(c.advance(6), Sequence::InOrder);
        assert_eq!(c.advance(9), Sequence::Gap(2));
        assert_eq!(c.advance(9), Sequence::Duplicate);
        assert_eq!(c.advance(7), Sequence::OutOfOrder);
        assert_eq!(c.last, 9);
    }

    #[test]
    fn tail_loss_uses_the_merged_head() {
        let mut a = RoomReport {
            room: "r".into(),
            epoch: "e".into(),
            ..Default::default()
        };
        a.acked.insert_range(1, 10);
        a.observed.insert_range(1, 8);
        a.end_members = 2;
        a.end_last_sum = 16;
        let mut b = RoomReport {
            room: "r".into(),
            epoch: "e".into(),
            ..Default::default()
        };
        b.observed.insert_range(1, 10);
        b.end_members = 1;
        b.end_last_sum = 10;
        let t = merge_rooms([&a, &b]);
        assert_eq!(t.rooms, 1);
        assert_eq!(t.lost_at_tail, 4);
        assert_eq!(t.acked_not_observed, 0);
        assert_eq!(t.rooms_with_problems, 1);
        assert_eq!(t.problem_rooms[0].lost_at_tail, 4);
    }

    #[test]
    fn a_member_moved_to_another_history_misses_the_rest_of_this_one() {
        let mut r = RoomReport {
            room: "r".into(),
            epoch: "old".into(),
            ..Default::default()
        };
        r.acked.insert_range(1, 10);
        r.observed.insert_range(1, 10);
        r.moved_members = 1;
        r.moved_last_sum = 3;
        let t = merge_rooms([&r]);
        assert_eq!((t.lost_moved, t.lost_at_tail), (7, 0));
        assert_eq!(t.problem_rooms[0].faults.lost_unrecovered, 7);
    }

    #[test]
    fn faults_are_kept_per_room_and_clean_rooms_are_not_listed() {
        let mut bad = RoomReport {
            room: "bad".into(),
            epoch: "e".into(),
            ..Default::default()
        };
        bad.acked.insert_range(1, 5);
        bad.observed.insert_range(1, 3);
        bad.faults.duplicates = 2;
        let mut also_bad = bad.clone();
        also_bad.faults = RoomFaults {
            out_of_order: 1,
            ..Default::default()
        };
        let mut clean = RoomReport {
            room: "ok".into(),
            epoch: "e".into(),
            ..Default::default()
        };
        clean.acked.insert_range(1, 5);
        clean.observed.insert_range(1, 5);
        clean.end_members = 3;
        clean.end_last_sum = 15;
        let t = merge_rooms([&bad, &clean, &also_bad]);
        assert_eq!(t.rooms, 2);
        assert_eq!(t.rooms_with_problems, 1);
        let p = &t.problem_rooms[0];
        assert_eq!(
            (p.room.as_str(), p.faults.duplicates, p.faults.out_of_order),
            ("bad", 2, 1)
        );
        assert_eq!(p.acked_not_observed, 2);
    }
}
