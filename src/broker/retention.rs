//! How long a room's history and numbering last beyond the resume buffer: the epoch's own
//! lifetime, and the rooms whose history is durable (Redis Streams). Built by `server.rs` from
//! `[history]`; both engines read it.

use std::time::Duration;

use crate::auth::pattern_matches;

/// A room's numbering and durable history rules.
#[derive(Debug, Clone)]
pub struct Retention {
    /// How long a room's epoch and top outlive its last publication or join.
    pub epoch_ttl: Duration,
    /// Rooms with durable history; the first match applies.
    pub durable: Vec<DurableRule>,
}

/// Durable history for rooms matching `pattern` (`*` = any run of characters).
#[derive(Debug, Clone)]
pub struct DurableRule {
    pub pattern: String,
    pub max_age: Duration,
    pub max_count: usize,
}

impl Default for Retention {
    /// A day for the epoch, no durable rooms (the `[history]` defaults).
    fn default() -> Self {
        Self {
            epoch_ttl: Duration::from_secs(86_400),
            durable: Vec::new(),
        }
    }
}

impl Retention {
    /// The durable rule for `room`, if any.
    pub fn durable(&self, room: &str) -> Option<&DurableRule> {
        self.durable
            .iter()
            .find(|rule| pattern_matches(&rule.pattern, room))
    }

    /// How long `room`'s epoch and top are kept: at least as long as its durable history,
    /// so stored offsets never outlive the epoch that gives them meaning.
    pub fn epoch_ttl(&self, room: &str) -> Duration {
        match self.durable(room) {
            Some(rule) => self.epoch_ttl.max(rule.max_age),
            None => self.epoch_ttl,
        }
    }
}
