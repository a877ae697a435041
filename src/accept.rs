//! The accept loop: takes TCP connections, refuses an address that already holds too many
//! connections not yet upgraded, and serves HTTP/1 on the rest with a deadline on each request
//! head. Owns nothing but the listener; the router and the per-IP counts come from the node.
//!
//! Why not `axum::serve`: it gives hyper no timer, so hyper's header-read timeout is off and a
//! connection that never finishes (or never starts) its request holds a file descriptor forever;
//! and it accepts every connection, so one address could hold them all before any per-IP limit
//! (checked at the upgrade) saw it.

use std::io;
use std::net::SocketAddr;
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

use crate::node::Node;

/// The answer to a connection over its address's limit: written without waiting, then closed.
const REFUSED: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
content-length: 91\r\nconnection: close\r\n\r\n\
{\"error\":\"too_many_pending_connections\",\"message\":\"too many connections from this address\"}";

/// Accepts on `listener` until `stop` is cancelled, then lets every connection finish the
/// request it is serving (upgraded sockets are the node's, not this loop's) and returns.
pub async fn serve(listener: TcpListener, router: Router, node: &Node, stop: CancellationToken) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(node.config().limits.header_timeout());
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
        let Some(permit) = node.admission().admit_pending(peer.ip()) else {
            metrics::counter!("roomcast_rate_limited_total", "kind" => "too_many_pending_connections")
                .increment(1);
            refuse(&tcp);
            continue;
        };
        // No Nagle: a lone small frame (an ack, a chat message) must leave at once, not wait up
        // to 40 ms for the client's delayed ACK. Batching is the writer's job.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set");
        }
        let service = hyper::service::service_fn(with_peer(router.clone(), peer));
        let conn = http.serve_connection(TokioIo::new(tcp), service);
        let stop = stop.clone();
        connections.spawn(async move {
            // Counts against the address until the request ends or the socket is upgraded
            // (the connection future resolves once it has handed the socket over).
            let _permit = permit;
            let conn = conn.with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%err, %peer, "HTTP connection ended");
            }
        });
    }
    connections.close();
    connections.wait().await;
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
