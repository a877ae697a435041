//! Lifecycle events for webhooks: what the engine decides (a user's first and last session
//! across the cluster, a room's first and last member, a direct message nobody received) and
//! the outbox they wait in until delivered. The engine decides each transition atomically in
//! its store, so exactly one node observes it; the webhook sender (a module above this
//! layer) takes batches from the [`Outbox`] and settles them. The memory engine decides the
//! same events on its one node ([`Local`]). Event JSON: docs/webhooks.md.

mod local;

use std::time::Duration;

use async_trait::async_trait;

pub use local::Local;

use super::BrokerError;

/// What the engine needs to decide events.
#[derive(Debug, Clone)]
pub struct LifecycleOptions {
    /// A last session (member) followed by a first within this fires nothing.
    pub debounce: Duration,
    /// Kinds sent (`EVENT_KINDS` of the config); the others are decided but dropped.
    pub events: Vec<String>,
    /// Most events waiting (debounced or undelivered) at once.
    pub capacity: usize,
}

impl LifecycleOptions {
    /// The enabled kinds as one string, `,a,b,`, which the scripts search for `,kind,`.
    pub fn events_list(&self) -> String {
        format!(",{},", self.events.join(","))
    }
}

/// One event taken for sending.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    /// Tries so far, this one included.
    pub attempts: u32,
    /// The event's JSON object.
    pub json: String,
}

/// A batch taken from the outbox.
#[derive(Debug, Default)]
pub struct Claim {
    pub events: Vec<Claimed>,
    /// Events waiting after this claim, debounced ones included: the queue depth.
    pub depth: u64,
}

/// What became of one claimed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend took it: forget it.
    Delivered,
    /// Try again after this wait.
    Retry(Duration),
    /// Out of tries: forget it (a dead letter).
    Dead,
}

/// Where decided events wait until a node delivers them. Shared by the whole cluster: any
/// node may take any event.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Takes up to `max` events due now, hiding them from every node for `hold`: if this node
    /// dies before settling them, another sends them again after that (the receiver drops the
    /// repeat by event id). Also moves debounced events whose time came into the outbox.
    async fn claim(&self, max: usize, hold: Duration) -> Result<Claim, BrokerError>;

    /// Settles claimed events.
    async fn settle(&self, outcomes: &[(String, Outcome)]) -> Result<(), BrokerError>;
}

/// The `kind/name` holds of this node, counted: the node reports each first and last (a
/// user's first session here, a room's last member here) from the task that saw it, and two
/// tasks may reach the engine in the other order (a last session closing while a new one
/// opens). Counting makes the order irrelevant: only 0 → 1 and 1 → 0 are transitions.
#[derive(Debug, Default)]
pub struct Holds(std::collections::HashMap<String, i64>);

impl Holds {
    /// Counts a first; true when `holder` became held.
    pub fn arrive(&mut self, holder: &str) -> bool {
        self.step(holder, 1) == (0, 1)
    }

    /// Counts a last; true when `holder` stopped being held.
    pub fn depart(&mut self, holder: &str) -> bool {
        self.step(holder, -1) == (1, 0)
    }

    fn step(&mut self, holder: &str, by: i64) -> (i64, i64) {
        let count = self.0.entry(holder.to_owned()).or_default();
        let before = *count;
        *count += by;
        let after = *count;
        if after == 0 {
            self.0.remove(holder);
        }
        (before, after)
    }

    pub fn contains(&self, holder: &str) -> bool {
        self.0.get(holder).is_some_and(|c| *c > 0)
    }

    /// Every held `kind/name`.
    pub fn held(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(h, _)| h.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Holds;

    #[test]
    fn holds_count_so_reordered_reports_cancel_out() {
        let mut h = Holds::default();
        assert!(h.arrive("u/a"));
        // A new session's first reaches the engine before the old one's last.
        assert!(!h.arrive("u/a"));
        assert!(!h.depart("u/a"));
        assert!(h.contains("u/a"));
        assert!(h.depart("u/a"));
        assert!(!h.contains("u/a"));
        // A last before its first: neither is a transition.
        assert!(!h.depart("r/x"));
        assert!(!h.arrive("r/x"));
        assert!(h.held().is_empty());
    }
}
