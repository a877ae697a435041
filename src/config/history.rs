//! `[history]`: what each room keeps for resume, per room and per node; how much of it a client
//! may read at once (`history` requests, `rewind` on join); how long a room's epoch outlives
//! its messages; and the rooms whose history is durable (`[[history.durable]]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct History {
    /// Messages kept per room for resume. Default 100.
    pub size: usize,
    /// How long a message stays in history, in seconds. Default 300: covers a phone switching
    /// networks or a laptop waking up.
    pub ttl_secs: u64,
    /// Bytes of history per room; the oldest messages go first past it. Default 512 KiB: 100
    /// chat lines are ~20 KiB, while 100 messages of 64 KiB would be 6.4 MiB per room. Both
    /// engines keep it (Redis in the room's log).
    pub max_room_bytes: usize,
    /// Bytes of history the whole node keeps (memory engine). Past it, the rooms published to
    /// least recently lose their history first, so their resumes answer `recovered: false`
    /// rather than the node growing. Default 256 MiB.
    pub max_bytes: usize,
    /// Most messages one `history` request answers, and the default `limit`. Default 100: a
    /// screenful of chat; a page's bytes are capped by `max_room_bytes` too.
    pub max_page: usize,
    /// Most messages a `join` with `rewind` delivers before live ones. Default 100. Capped
    /// below `limits.outbound_queue` too, since they are queued at once.
    pub max_rewind: usize,
    /// How long the epoch and latest offset of a room with messages are kept after its last
    /// publication (or join), in seconds. Default 86400 (a day): longer than the history itself (`ttl_secs`),
    /// so an idle room goes on numbering where it stopped instead of starting over at 1 in a
    /// new epoch, and offsets can serve as message ids. Costs ~100 bytes per room (Redis: a
    /// small hash; memory engine: a log header counted in `max_bytes`). Durable rooms keep it
    /// at least as long as their `max_age_s`. At least `ttl_secs`.
    pub epoch_ttl_secs: u64,
    /// Rooms whose history is kept longer, in a Redis Stream per room (Redis broker only;
    /// the first matching rule applies). Empty by default.
    pub durable: Vec<Durable>,
}

/// `[[history.durable]]`: one pattern of rooms with durable history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Durable {
    /// Room names, with `*` matching any run of characters (`chat:*`).
    pub pattern: String,
    /// Messages older than this many seconds are dropped.
    pub max_age_s: u64,
    /// Messages kept per room; the oldest go first past it.
    pub max_count: usize,
}

impl Default for History {
    fn default() -> Self {
        Self {
            size: 100,
            ttl_secs: 300,
            max_room_bytes: 512 * 1024,
            max_bytes: 256 * 1024 * 1024,
            max_page: 100,
            max_rewind: 100,
            epoch_ttl_secs: 86_400,
            durable: Vec::new(),
        }
    }
}

impl History {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("history.ttl_secs", self.ttl_secs)?;
        positive("history.max_room_bytes", self.max_room_bytes as u64)?;
        if self.max_bytes < self.max_room_bytes {
            return Err(ConfigError::Invalid {
                key: "history.max_bytes",
                reason: format!(
                    "must be at least history.max_room_bytes ({})",
                    self.max_room_bytes
                ),
            });
        }
        positive("history.max_page", self.max_page as u64)?;
        if self.epoch_ttl_secs < self.ttl_secs {
            return Err(ConfigError::Invalid {
                key: "history.epoch_ttl_secs",
                reason: format!("must be at least history.ttl_secs ({})", self.ttl_secs),
            });
        }
        self.durable.iter().try_for_each(Durable::validate)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }

    pub fn epoch_ttl(&self) -> Duration {
        Duration::from_secs(self.epoch_ttl_secs)
    }
}

impl Durable {
    fn validate(&self) -> Result<(), ConfigError> {
        let legal = |c: char| c == '*' || crate::protocol::valid_name(&c.to_string());
        if self.pattern.is_empty() || !self.pattern.chars().all(legal) {
            return Err(ConfigError::Invalid {
                key: "history.durable.pattern",
                reason: format!(
                    "{:?}: a room name where `*` may stand for any run of characters",
                    self.pattern
                ),
            });
        }
        positive("history.durable.max_age_s", self.max_age_s)?;
        positive("history.durable.max_count", self.max_count as u64)
    }
}
