//! Offset sets as disjoint ranges: what a room's publishers had acknowledged and what its
//! members received, compact enough to ship from every worker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A set of offsets stored as disjoint inclusive ranges; offsets of a room are nearly always
/// one contiguous run, so this stays a handful of entries whatever the message count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet(BTreeMap<u64, u64>);

impl RangeSet {
    pub fn insert(&mut self, v: u64) {
        if let Some((&start, &end)) = self.0.range(..=v).next_back() {
            if v <= end {
                return;
            }
            if v == end + 1 {
                let mut new_end = v;
                if let Some(next_end) = self.0.remove(&(v + 1)) {
                    new_end = next_end;
                }
                self.0.insert(start, new_end);
                return;
            }
        }
        let end = self.0.remove(&(v + 1)).unwrap_or(v);
        self.0.insert(v, end);
    }

    pub fn insert_range(&mut self, start: u64, end: u64) {
        // Ranges arriving here are few (merges of worker reports), so per-range work is fine.
        let mut lo = start;
        let mut hi = end;
        let overlapping: Vec<u64> = self
            .0
            .range(..=end.saturating_add(1))
            .filter(|&(_, &e)| e.saturating_add(1) >= start)
            .map(|(&s, _)| s)
            .collect();
        for s in overlapping {
            let e = self.0.remove(&s).unwrap_or(s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.0.insert(lo, hi);
    }

    pub fn union(&mut self, other: &RangeSet) {
        for (&s, &e) in &other.0 {
            self.insert_range(s, e);
        }
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn max(&self) -> Option<u64> {
        self.0.iter().next_back().map(|(_, &e)| e)
    }

    /// How many members of `self` are not in `other`.
    pub fn count_missing_from(&self, other: &RangeSet) -> u64 {
        let mut missing = 0;
        for (&s, &e) in &self.0 {
            let mut covered = 0;
            for (&os, &oe) in other.0.range(..=e) {
                if oe < s {
                    continue;
                }
                covered += oe.min(e) - os.max(s) + 1;
            }
            missing += (e - s + 1) - covered;
        }
        missing
    }
}

impl Serialize for RangeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ranges: Vec<(u64, u64)> = self.0.iter().map(|(&a, &b)| (a, b)).collect();
        ranges.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RangeSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut set = RangeSet::default();
        for (a, b) in Vec::<(u64, u64)>::deserialize(d)? {
            if a <= b {
                set.insert_range(a, b);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_set_merges_neighbours() {
        let mut s = RangeSet::default();
        for v in [3, 1, 2, 7, 5, 6, 2] {
            s.insert(v);
        }
        assert_eq!(s.len(), 6);
        s.insert(4);
        assert_eq!(s.0.len(), 1);
        let mut t = RangeSet::default();
        t.insert_range(1, 2);
        t.insert_range(9, 10);
        assert_eq!(t.count_missing_from(&s), 2);
        t.union(&s);
        assert_eq!(t.len(), 9);
        assert_eq!(t.max(), Some(10));
    }
}
