//! Who may open a socket right now: per-IP open-connection count and connect rate, and per-IP
//! count of TCP connections not yet upgraded (checked at accept). The per-user limit is the
//! broker's, since it holds across the cluster.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::time::Instant;

use axum::http::HeaderMap;

use super::limiter::{TokenBucket, Verdict};
use crate::config::Limits;
use crate::net::{Cidr, client_ip};

/// Per-IP admission state for one node.
pub struct Admission {
    ips: DashMap<IpAddr, IpState>,
    max_open: usize,
    max_pending: usize,
    rate: u32,
    burst: u32,
    /// `trusted_proxies`, parsed.
    proxies: Vec<Cidr>,
}

struct IpState {
    open: usize,
    /// TCP connections accepted and not (yet) upgraded.
    pending: usize,
    connects: TokenBucket,
}

/// Why a connection was refused; the codes go into the 429 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooManyConnections,
    ConnectRateLimited,
}

impl Refused {
    pub fn code(self) -> &'static str {
        match self {
            Self::TooManyConnections => "too_many_connections",
            Self::ConnectRateLimited => "connect_rate_limited",
        }
    }
}

/// Counts one open connection of an IP until dropped.
pub struct IpPermit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// Counts one not yet upgraded TCP connection of an IP until dropped.
pub struct PendingPermit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// Per-IP admission with `limits`, reading client addresses behind `trusted_proxies`
    /// (checked by `Config::validate`; a range that does not parse is left out).
    pub fn new(limits: &Limits, trusted_proxies: &[String]) -> Self {
        let proxies = trusted_proxies
            .iter()
            .filter_map(|range| Cidr::parse(range).ok())
            .collect();
        Self {
            proxies,
            ips: DashMap::new(),
            max_open: limits.max_connections_per_ip,
            max_pending: limits.max_pending_connections_per_ip,
            rate: limits.connect_rate_per_ip,
            burst: limits.connect_burst_per_ip,
        }
    }

    /// Admits one connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpPermit, Refused> {
        let mut state = self.state(ip);
        if state.open >= self.max_open {
            return Err(Refused::TooManyConnections);
        }
        if state.connects.check(Instant::now()) != Verdict::Allow {
            return Err(Refused::ConnectRateLimited);
        }
        state.open += 1;
        Ok(IpPermit {
            admission: self.clone(),
            ip,
        })
    }

    /// The client's address for a request from `peer` (see [`crate::net::client_ip`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(&self.proxies, peer, headers)
    }

    /// Admits one TCP connection from `ip` that has yet to send its request (and perhaps
    /// upgrade), unless the address already holds `limits.max_pending_connections_per_ip`.
    /// A trusted proxy's connections carry many clients and are not counted (`None` only when
    /// refused).
    pub fn admit_pending(self: &Arc<Self>, ip: IpAddr) -> Option<Option<PendingPermit>> {
        if self.proxies.iter().any(|range| range.contains(ip)) {
            return Some(None);
        }
        let mut state = self.state(ip);
        if state.pending >= self.max_pending {
            return None;
        }
        state.pending += 1;
        Some(Some(PendingPermit {
            admission: self.clone(),
            ip,
        }))
    }

    fn state(&self, ip: IpAddr) -> dashmap::mapref::one::RefMut<'_, IpAddr, IpState> {
        self.ips.entry(ip).or_insert_with(|| IpState {
            open: 0,
            pending: 0,
            connects: TokenBucket::new(self.rate, self.burst, u32::MAX),
        })
    }

    /// Forgets IPs with nothing open whose connect budget has refilled, so the table tracks
    /// current clients rather than every address ever seen.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.ips
            .retain(|_, state| state.open > 0 || state.pending > 0 || !state.connects.is_full(now));
        crate::shrink::if_sparse(&self.ips);
    }

    /// IPs tracked (for tests and stats).
    pub fn tracked(&self) -> usize {
        self.ips.len()
    }
}

impl IpPermit {
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        if let Some(mut state) = self.admission.ips.get_mut(&self.ip) {
            state.open = state.open.saturating_sub(1);
        }
    }
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        if let Some(mut state) = self.admission.ips.get_mut(&self.ip) {
            state.pending = state.pending.saturating_sub(1);
        }
    }
}
