//! `[history]`: what each room keeps for resume, per room and per node.

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
}

impl Default for History {
    fn default() -> Self {
        Self {
            size: 100,
            ttl_secs: 300,
            max_room_bytes: 512 * 1024,
            max_bytes: 256 * 1024 * 1024,
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
        Ok(())
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }
}
