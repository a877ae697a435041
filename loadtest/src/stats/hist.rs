//! Latency histograms: HDR histograms of microseconds that merge across workers and travel as
//! JSON between processes.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram keeps exactly: 5 minutes in microseconds. Larger values are
/// clamped (and would already mean a broken run).
const HIST_MAX_US: u64 = 300_000_000;

/// An HDR histogram of microseconds that serializes as its recorded buckets `[[value, count]]`,
/// so worker processes can ship it without an extra encoding crate.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        // 3 significant digits: 0.1% error on every percentile.
        Self(Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("static histogram bounds"))
    }
}

impl Hist {
    pub fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros.clamp(1, HIST_MAX_US));
    }

    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    pub fn max(&self) -> u64 {
        if self.0.is_empty() { 0 } else { self.0.max() }
    }

    pub fn summary(&self) -> Summary {
        Summary {
            count: self.0.len(),
            min_us: if self.0.is_empty() { 0 } else { self.0.min() },
            mean_us: if self.0.is_empty() {
                0.0
            } else {
                self.0.mean()
            },
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            p999_us: self.quantile(0.999),
            max_us: self.max(),
        }
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let buckets: Vec<(u64, u64)> = self
            .0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        buckets.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let buckets = Vec::<(u64, u64)>::deserialize(d)?;
        let mut hist = Hist::default();
        for (value, count) in buckets {
            hist.0
                .saturating_record_n(value.clamp(1, HIST_MAX_US), count);
        }
        Ok(hist)
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_round_trips_through_json() {
        let mut h = Hist::default();
        for v in [10, 20, 20, 3000, 1_000_000] {
            h.record(v);
        }
        let back: Hist = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.summary(), h.summary());
    }
}
