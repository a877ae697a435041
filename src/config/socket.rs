//! `[socket]`: how a connection reads and writes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

/// The largest `read_buffer_bytes`: a read goes through a buffer of this size on the stack
/// (`ws::socket`), so a larger setting could not be honoured.
pub const MAX_READ_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Socket {
    /// Most bytes taken from the socket in one read. Default 1 KiB, at most 64 KiB. The read
    /// goes through a buffer on the stack; a socket keeps only a partial frame between reads,
    /// so an idle connection holds no read buffer at all. Larger frames still arrive, in more
    /// reads.
    pub read_buffer_bytes: usize,
    /// Most bytes the writer hands to one socket write (a vectored write of the queued frames'
    /// shared bytes, so nothing is copied or kept per socket, whatever this is). Default
    /// 16 KiB: with `write_delay_ms`, a delayed batch goes out in one write, where 4 KiB split
    /// it and cost a fifth more CPU (docs/BENCHMARKS.md).
    pub write_buffer_bytes: usize,
    /// How long the writer waits after the first queued frame before writing, to gather the
    /// frames that follow into the same `send()`. Default 0: write at once. A few milliseconds
    /// trade that much latency for fewer system calls when members receive many messages a
    /// second (a busy broadcast room); see docs/BENCHMARKS.md. Reads and pings go on during
    /// the wait; a close is acted on when it ends. At most 1000.
    pub write_delay_ms: u64,
}

impl Default for Socket {
    fn default() -> Self {
        Self {
            read_buffer_bytes: 1024,
            write_buffer_bytes: 16 * 1024,
            write_delay_ms: 0,
        }
    }
}

impl Socket {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("socket.read_buffer_bytes", self.read_buffer_bytes as u64)?;
        if self.read_buffer_bytes > MAX_READ_BUFFER_BYTES {
            return Err(ConfigError::Invalid {
                key: "socket.read_buffer_bytes",
                reason: format!("must be at most {MAX_READ_BUFFER_BYTES}"),
            });
        }
        positive("socket.write_buffer_bytes", self.write_buffer_bytes as u64)?;
        if self.write_delay_ms > 1000 {
            return Err(ConfigError::Invalid {
                key: "socket.write_delay_ms",
                reason: "must be at most 1000 (a longer wait is a stalled socket)".into(),
            });
        }
        Ok(())
    }

    pub fn write_delay(&self) -> Duration {
        Duration::from_millis(self.write_delay_ms)
    }
}
