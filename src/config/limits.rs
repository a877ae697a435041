//! `[limits]`: what one client or one address may take from a node.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest inbound frame in bytes; larger ones close the socket with 1009. Default 64 KiB:
    /// chat payloads are small and a cap bounds what one client can make the node buffer.
    pub max_message_bytes: usize,
    /// Rooms one connection may be in at once. Default 100.
    pub max_rooms_per_connection: usize,
    /// Frames queued for one client before it is closed as a slow consumer (4000). Default 1024:
    /// absorbs bursts without letting one stalled reader hold unbounded memory.
    pub outbound_queue: usize,
    /// Bytes one client may hold (queued frames plus the write in progress) before it is closed
    /// as a slow consumer (4000). Default 1 MiB: a frame count alone let a stalled reader pin
    /// 1,024 unique 64 KiB direct messages, 64 MiB; shared room frames count in full too, since
    /// a stalled reader keeps them alive after everyone else has let go.
    pub outbound_queue_bytes: usize,
    /// A socket write that makes no progress this long closes the session with 4000. Default
    /// 10 s: a client whose TCP window stayed shut that long is gone or hostile, and its task
    /// keeps serving pings, reads and timers meanwhile.
    pub write_timeout_ms: u64,
    /// A message sent in fragments must be complete within this long, or the socket is closed
    /// with 1008. Default 10 s: a trickle of fragments would otherwise keep a half message
    /// buffered and the connection alive forever.
    pub message_timeout_ms: u64,
    /// Sustained inbound frames per second per connection (token bucket refill): messages, pings
    /// and pongs alike; a close is never limited. Default 50.
    pub inbound_rate_per_sec: u32,
    /// Inbound burst allowance (token bucket size). Default 100.
    pub inbound_burst: u32,
    /// Consecutive rate-limited frames after which the socket is closed with 4029. Default 100:
    /// a client that ignores `rate_limited` replies is misbehaving, not bursting.
    pub rate_limit_close_after: u32,
    /// Open connections from one IP address (429 `too_many_connections` beyond). Default 1000:
    /// room for a NAT full of users, not for one host exhausting the node.
    pub max_connections_per_ip: usize,
    /// New connections per second from one IP address, sustained (429 `connect_rate_limited`
    /// beyond). Default 50, with a burst of `connect_burst_per_ip`.
    pub connect_rate_per_ip: u32,
    /// Connection burst allowed from one IP address. Default 100.
    pub connect_burst_per_ip: u32,
    /// Open connections of one user across the whole cluster (429 `too_many_sessions`
    /// beyond). Default 20: several tabs and devices, not a bot farm.
    pub max_connections_per_user: usize,
    /// TCP connections from one IP that have not (yet) upgraded to a WebSocket: HTTP requests
    /// being read, API calls, idle keep-alives. Beyond it a new connection is answered 429 and
    /// closed at once. Default 128: a slowloris crowd from one address cannot hold the node's
    /// file descriptors, and a backend's keep-alive pool fits.
    pub max_pending_connections_per_ip: usize,
    /// How long a client may take to send a request's head (line and headers); the connection
    /// is closed after it. Default 10 s (hyper's own default of 30 s is off without a timer).
    pub header_timeout_ms: u64,
    /// Direct messages (`send`) per second per connection, sustained; past it `send` answers
    /// `rate_limited`. Default 10, with a burst of `direct_burst`: a chat user types far
    /// slower, and one connection cannot flood another user off.
    pub direct_rate_per_sec: u32,
    /// Direct-message burst per connection. Default 20.
    pub direct_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_rooms_per_connection: 100,
            outbound_queue: 1024,
            outbound_queue_bytes: 1024 * 1024,
            write_timeout_ms: 10_000,
            message_timeout_ms: 10_000,
            inbound_rate_per_sec: 50,
            inbound_burst: 100,
            rate_limit_close_after: 100,
            max_connections_per_ip: 1000,
            connect_rate_per_ip: 50,
            connect_burst_per_ip: 100,
            max_connections_per_user: 20,
            max_pending_connections_per_ip: 128,
            header_timeout_ms: 10_000,
            direct_rate_per_sec: 10,
            direct_burst: 20,
        }
    }
}

impl Limits {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("limits.max_message_bytes", self.max_message_bytes as u64)?;
        positive(
            "limits.max_rooms_per_connection",
            self.max_rooms_per_connection as u64,
        )?;
        positive("limits.outbound_queue", self.outbound_queue as u64)?;
        positive(
            "limits.inbound_rate_per_sec",
            self.inbound_rate_per_sec.into(),
        )?;
        positive("limits.inbound_burst", self.inbound_burst.into())?;
        positive(
            "limits.rate_limit_close_after",
            self.rate_limit_close_after.into(),
        )?;
        positive(
            "limits.max_connections_per_ip",
            self.max_connections_per_ip as u64,
        )?;
        positive(
            "limits.connect_rate_per_ip",
            self.connect_rate_per_ip.into(),
        )?;
        positive(
            "limits.connect_burst_per_ip",
            self.connect_burst_per_ip.into(),
        )?;
        positive(
            "limits.max_connections_per_user",
            self.max_connections_per_user as u64,
        )?;
        positive("limits.write_timeout_ms", self.write_timeout_ms)?;
        positive("limits.message_timeout_ms", self.message_timeout_ms)?;
        positive(
            "limits.max_pending_connections_per_ip",
            self.max_pending_connections_per_ip as u64,
        )?;
        positive("limits.header_timeout_ms", self.header_timeout_ms)?;
        positive(
            "limits.direct_rate_per_sec",
            self.direct_rate_per_sec.into(),
        )?;
        positive("limits.direct_burst", self.direct_burst.into())
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
}
