//! Rebalancing: WebSocket sessions live for hours, so a node added behind the load balancer
//! would otherwise get only new connections while the old nodes stay loaded. Every
//! `rebalance.interval_ms` each node records its session count through the presence engine
//! (Redis, with the same lease as presence) and reads everyone's; a node above the cluster mean
//! by more than `rebalance.margin_percent` sheds its excess. Shedding is the shutdown's `goaway`
//! (queued frames written, a jittered reconnect hint, close 1001) applied to one session at a
//! time, at most `rebalance.max_shed_per_sec`, so the other nodes see a bounded reconnect rate
//! and clients resume without loss. An operator can also ask one node to shed a fraction of its
//! sessions (`POST /api/shed`), at the same rate.
//!
//! The automatic target replaces itself at each decision rather than adding up, so sessions
//! still on their way to another node are shed at most once more: the overshoot is bounded by
//! one interval of shedding. Nodes report up to one interval apart, so while clients arrive or
//! leave in numbers (a ramp, a mass reconnect) the counts compare moments that differ: a node
//! sheds only while the cluster's total is steady (within the margin between two decisions),
//! and only what the last two decisions both saw. Only sessions older than one interval are
//! shed, so a client is never moved again while it is still joining its rooms.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Node;
use crate::session::SessionHandle;

/// Sessions still to shed, by why.
#[derive(Default)]
pub(super) struct Shedding {
    /// Above the mean at the last two decisions (replaced at each decision).
    auto: AtomicU64,
    /// The excess seen at the last decision.
    last_excess: AtomicU64,
    /// The cluster's total at the last decision.
    last_total: AtomicU64,
    /// Sessions with a lower id are older than one interval: the ones that may be shed.
    older_than: AtomicU64,
    /// The next session id at the last decision.
    last_born: AtomicU64,
    /// Asked for through the API (added up, taken first).
    requested: AtomicU64,
}

impl Node {
    /// Sheds `fraction` (0 to 1) of this node's sessions at the configured rate, on top of any
    /// automatic shedding. Returns how many sessions that is.
    pub fn shed(&self, fraction: f64) -> u64 {
        let count = (self.stats().sessions as f64 * fraction.clamp(0.0, 1.0)).round() as u64;
        self.0
            .shedding
            .requested
            .fetch_add(count, Ordering::Relaxed);
        count
    }

    /// Sessions this node still means to shed.
    pub fn shedding(&self) -> u64 {
        let s = &self.0.shedding;
        s.auto.load(Ordering::Relaxed) + s.requested.load(Ordering::Relaxed)
    }
}

/// Starts the decision and the shedding tasks; both end with `stop` or the node's drain.
pub fn spawn(node: &Node, stop: CancellationToken) {
    let rebalance = &node.config().rebalance;
    let (decide_every, shed_every) = (rebalance.interval(), rebalance.shed_every());
    tokio::spawn(every(
        decide_every,
        node.clone(),
        stop.clone(),
        |node| async move { decide(&node).await },
    ));
    tokio::spawn(every(shed_every, node.clone(), stop, |node| async move {
        shed_one(&node)
    }));
}

/// Runs `step` every `period` (later if a step overruns) until `stop` or the node drains.
async fn every<F, Fut>(period: Duration, node: Node, stop: CancellationToken, mut step: F)
where
    F: FnMut(Node) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if node.is_draining() {
            return;
        }
        step(node.clone()).await;
    }
}

/// Reports this node's count and sets the automatic target from everyone's. A failed report
/// stops automatic shedding: without the others' counts there is nothing to compare with.
async fn decide(node: &Node) {
    let config = &node.config().rebalance;
    let shedding = &node.0.shedding;
    // What was born before the last decision is now at least one interval old.
    let born = SessionHandle::next_id();
    let older_than = shedding.last_born.swap(born, Ordering::Relaxed);
    shedding.older_than.store(older_than, Ordering::Relaxed);
    let local = node.stats().sessions as u64;
    let (excess, total) = match node.0.presence.node_loads(local).await {
        Ok(loads) => (
            excess(local, &loads, config.margin_percent),
            loads.iter().sum(),
        ),
        Err(err) => {
            tracing::debug!(%err, "session count not shared; no automatic shedding");
            (0, 0)
        }
    };
    let due = shedding.due(excess, total, config.margin_percent);
    shedding
        .auto
        .store(if config.enabled { due } else { 0 }, Ordering::Relaxed);
    // Sessions that left by themselves need no shedding.
    let _ = shedding
        .requested
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.min(local)));
}

impl Shedding {
    /// The automatic target from this decision's `excess` and cluster `total`: what this
    /// decision and the last one both saw, and nothing while the total moved by more than
    /// `margin_percent` in between.
    fn due(&self, excess: u64, total: u64, margin_percent: u32) -> u64 {
        let last_total = self.last_total.swap(total, Ordering::Relaxed);
        let last = self.last_excess.swap(excess, Ordering::Relaxed);
        let steady = total.abs_diff(last_total) * 100 <= last_total * u64::from(margin_percent);
        if steady { excess.min(last) } else { 0 }
    }
}

/// How many sessions a node holding `local` should shed to come down to the mean of `loads`,
/// if it is more than `margin_percent` above it.
fn excess(local: u64, loads: &[u64], margin_percent: u32) -> u64 {
    if loads.len() < 2 {
        return 0;
    }
    let mean = loads.iter().sum::<u64>() as f64 / loads.len() as f64;
    if local as f64 <= mean * (1.0 + f64::from(margin_percent) / 100.0) {
        return 0;
    }
    (local as f64 - mean).floor() as u64
}

/// Sheds one session if any is due: a requested one first.
fn shed_one(node: &Node) {
    let s = &node.0.shedding;
    let (counter, reason) = if s.requested.load(Ordering::Relaxed) > 0 {
        (&s.requested, "api")
    } else if s.auto.load(Ordering::Relaxed) > 0 {
        (&s.auto, "auto")
    } else {
        return;
    };
    if node.0.hub.drain_one(s.older_than.load(Ordering::Relaxed)) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        metrics::counter!("roomcast_rebalance_shed_total", "reason" => reason).increment(1);
    }
    // Otherwise no session is old enough and not already leaving: the next tick tries again,
    // and the next decision bounds what is due by what the node holds.
}

#[cfg(test)]
mod tests {
    use super::{Shedding, excess};

    #[test]
    fn a_moving_total_or_a_single_reading_sheds_nothing() {
        let shedding = Shedding::default();
        // Clients arriving: the total grew by more than 5 % since the last decision.
        assert_eq!(shedding.due(40, 300, 5), 0);
        assert_eq!(shedding.due(40, 600, 5), 0);
        // Steady, but the last reading saw no excess: only one reading says so.
        assert_eq!(shedding.due(0, 600, 5), 0);
        assert_eq!(shedding.due(100, 600, 5), 0);
        // Two steady readings agree on at least 80.
        assert_eq!(shedding.due(80, 590, 5), 80);
    }

    #[test]
    fn only_a_node_past_the_margin_sheds_down_to_the_mean() {
        // Two nodes of 3,000 and a new one: the mean is 2,000.
        assert_eq!(excess(3_000, &[3_000, 3_000, 0], 5), 1_000);
        assert_eq!(excess(0, &[3_000, 3_000, 0], 5), 0);
        // Within 5 % of the mean (2,000): nothing.
        assert_eq!(excess(2_090, &[2_090, 1_960, 1_950], 5), 0);
        assert_eq!(excess(2_200, &[2_200, 1_900, 1_900], 5), 200);
        // Alone, or no counts: nothing to compare with.
        assert_eq!(excess(500, &[500], 0), 0);
        assert_eq!(excess(500, &[], 0), 0);
    }
}
