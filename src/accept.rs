//! The accept loop: takes TCP connections, refuses an address that already holds too many
//! connections not yet upgraded, and serves HTTP/1 on the rest with a deadline on each request
//! head. Owns nothing but the listener; the router and the per-IP counts come from the node.
//! With `proxy_protocol`, a trusted proxy's connection first gives its PROXY header
//! ([`proxied`]), and the client it names is the peer from then on.
//!
//! Why not `axum::serve`: it gives hyper no timer, so hyper's header-read timeout is off and a
//! connection that never finishes (or never starts) its request holds a file descriptor forever;
//! and it accepts every connection, so one address could hold them all before any per-IP limit
//! (checked at the upgrade) saw it.

mod proxied;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::node::{Admission, Node, PendingPermit};

/// The answer to a connection over its address's limit: written without waiting, then closed.
const REFUSED: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
content-length: 91\r\nconnection: close\r\n\r\n\
{\"error\":\"too_many_pending_connections\",\"message\":\"too many connections from this address\"}";

/// What every connection task needs, shared through one `Arc` rather than cloned per connection.
struct Serving {
    http: http1::Builder,
    router: Router,
    stop: CancellationToken,
    /// `limits.header_timeout_ms`, which hyper applies to each request head.
    header_timeout: Duration,
}

/// Accepts on `listener` until `stop` is cancelled, then lets every connection finish the
/// request it is serving (upgraded sockets are the node's, not this loop's) and returns.
pub async fn serve(listener: TcpListener, router: Router, node: &Node, stop: CancellationToken) {
    let header_timeout = node.config().limits.header_timeout();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let serving = Arc::new(Serving {
        http,
        router,
        stop: stop.clone(),
        header_timeout,
    });
    let proxies = proxied::Proxies::new(node.config());
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    on_accept_error(err).await;
                    continue;
                }
            },
        };
        if proxies.sends_header(peer.ip()) {
            // Read in the connection's own task: a slow proxy must not hold up accepting.
            let task = proxied::serve(tcp, peer, serving.clone(), node.admission().clone());
            connections.spawn(task);
        } else if let Some(permit) = admit(node.admission(), &tcp, peer) {
            connections.spawn(serving.clone().connection(tcp, peer, permit));
        }
    }
    connections.close();
    connections.wait().await;
}

/// Charges a connection from `client` against its address's pending cap; `None` (after a
/// 429) when the address is at it.
fn admit(
    admission: &Arc<Admission>,
    tcp: &TcpStream,
    client: SocketAddr,
) -> Option<Option<PendingPermit>> {
    let permit = admission.admit_pending(client.ip());
    if permit.is_none() {
        metrics::counter!("roomcast_rate_limited_total", "kind" => "too_many_pending_connections")
            .increment(1);
        refuse(tcp);
    }
    permit
}

impl Serving {
    /// Serves HTTP/1 on `tcp`, whose requests carry `client` as their peer address, until the
    /// connection ends, is upgraded, or (after its request) the loop stops.
    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        client: SocketAddr,
        permit: Option<PendingPermit>,
    ) {
        // Counts against the address until the request ends or the socket is upgraded
        // (the connection future resolves once it has handed the socket over).
        let _permit = permit;
        // No Nagle: a lone small frame (an ack, a chat message) must leave at once, not wait up
        // to 40 ms for the client's delayed ACK. Batching is the writer's job.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set");
        }
        let service = hyper::service::service_fn(with_peer(self.router.clone(), client));
        let conn = self
            .http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = self.stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(err) = result {
            tracing::debug!(%err, peer = %client, "HTTP connection ended");
        }
    }
}

/// The router as a hyper service for one connection, each request carrying the peer address
/// (for `ConnectInfo`, which the per-IP limits read).
fn with_peer(
    router: Router,
    peer: SocketAddr,
) -> impl Fn(hyper::Request<Incoming>) -> tower::util::Oneshot<Router, hyper::Request<Incoming>> + Clone
{
    move |mut request| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    }
}

/// Answers 429 if the socket takes it at once, then closes it.
fn refuse(tcp: &TcpStream) {
    let _ = tcp.try_write(REFUSED);
}

/// Connection errors concern one client; anything else (out of file descriptors) is worth a
/// warning and a short pause, so the loop does not spin while nothing can be accepted. Short,
/// so that descriptors freed by the header timeout are used again quickly.
async fn on_accept_error(err: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%err, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_declares_its_body_length() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too_many_pending_connections");
    }
}
