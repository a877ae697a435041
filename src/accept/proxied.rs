//! Connections from trusted proxies that speak the PROXY protocol (`proxy_protocol = true`):
//! the header is read first, in the connection's own task and within the request-head
//! deadline, byte-exact so that the request after it stays in the socket for hyper; then the
//! client it names is charged against the pending cap and is the peer of every request.
//! Other peers never get here, so what they send is HTTP, a `PROXY` line included.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::Serving;
use crate::config::Config;
use crate::net::proxy_header::{self, Header, Progress, ProxyHeaderError};
use crate::net::{Cidr, parse_ranges};
use crate::node::Admission;

/// The peers whose connections must open with a PROXY header: `trusted_proxies` when
/// `proxy_protocol` is on, else none.
pub(super) struct Proxies(Vec<Cidr>);

impl Proxies {
    pub(super) fn new(config: &Config) -> Self {
        if !config.proxy_protocol {
            return Self(Vec::new());
        }
        // Checked by `Config::validate`.
        Self(parse_ranges(&config.trusted_proxies).unwrap_or_default())
    }

    pub(super) fn sends_header(&self, peer: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(peer))
    }
}

/// Why a trusted proxy's connection was closed before its request; the reason is the
/// `roomcast_proxy_header_errors_total` label.
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    #[error("no complete PROXY header within the header timeout")]
    Timeout,
    #[error("connection ended inside the PROXY header: {0}")]
    Closed(#[from] std::io::Error),
    #[error(transparent)]
    Invalid(#[from] ProxyHeaderError),
}

impl HeaderError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Closed(_) => "closed",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// Reads the header of `proxy`'s connection, then serves it as the client's. A connection
/// without a valid header is closed: the proxy is configured to send one, so anything else is
/// a misconfiguration or not the proxy, and guessing would let a request name its own address.
/// Cancel safety: on stop, a connection still in its header is dropped (no request yet).
pub(super) async fn serve(
    mut tcp: TcpStream,
    proxy: SocketAddr,
    serving: Arc<Serving>,
    admission: Arc<Admission>,
) {
    // The request head's deadline: the header is part of getting one.
    let deadline = serving.header_timeout;
    let header = tokio::select! {
        () = serving.stop.cancelled() => return,
        header = tokio::time::timeout(deadline, read_header(&mut tcp)) => {
            header.unwrap_or(Err(HeaderError::Timeout))
        }
    };
    let client = match header {
        Ok(Header::Client(client)) => client,
        Ok(Header::Local) => proxy,
        Err(err) => {
            metrics::counter!("roomcast_proxy_header_errors_total", "reason" => err.reason())
                .increment(1);
            tracing::debug!(%err, %proxy, "connection from a trusted proxy closed");
            return;
        }
    };
    if let Some(permit) = super::admit(&admission, &tcp, client) {
        serving.connection(tcp, client, permit).await;
    }
}

/// Reads exactly the header's bytes: each read asks for what the header certainly still has.
async fn read_header(tcp: &mut TcpStream) -> Result<Header, HeaderError> {
    let mut buf = [0u8; proxy_header::MAX_LEN];
    let mut have = 0;
    loop {
        match proxy_header::parse(&buf[..have])? {
            Progress::Done { header, .. } => return Ok(header),
            Progress::Need(more) => {
                tcp.read_exact(&mut buf[have..have + more]).await?;
                have += more;
            }
        }
    }
}
