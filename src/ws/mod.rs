//! The WebSocket endpoint: the HTTP upgrade, where every refusal is answered as JSON before
//! upgrading (origin, token, limits), and, in [`connection`], the task that serves one socket.
//! [`echo`] serves the same framing as a plain echo, for the conformance test.

mod close_log;
mod connect_proxy;
mod connection;
pub mod deflate;
pub mod echo;
mod frame;
mod handshake;
mod history;
mod latency;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State, rejection::QueryRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

pub use handshake::{Handshake, NotWebSocket};

use crate::auth::{AuthError, Identity, Permissions};
use crate::http::json_error;
use crate::node::{IpPermit, Node, SessionClaim};
use crate::protocol::valid_name;
use socket::WebSocket;

/// The subprotocol a browser offers next to its token; the server selects it.
pub const SUBPROTOCOL: &str = "roomcast.v1";
/// Prefix of the subprotocol entry that carries a token (`bearer.<jwt>`), for browsers, which
/// cannot set headers on a WebSocket.
const TOKEN_PROTOCOL_PREFIX: &str = "bearer.";

#[derive(Deserialize)]
pub struct ConnectParams {
    /// The user when authentication is off; anonymous when absent.
    user: Option<String>,
    /// A JWT, for clients that cannot set headers.
    token: Option<String>,
}

/// What a connection holds while it lives: its admission under the IP and user limits.
pub struct Permits {
    ip: IpPermit,
    _user: Option<SessionClaim>,
}

impl Permits {
    /// The client's address (what the per-IP limits count).
    pub fn ip(&self) -> std::net::IpAddr {
        self.ip.ip()
    }
}

/// `GET /ws`: upgrades to a session. Refusals, each with a JSON body `{error, message}`:
/// 503 draining, 400/405/426 not a WebSocket handshake, 403 origin, 400 bad query or user,
/// 401 token, 403 `denied` / 503 `backend_unavailable` from the connect proxy, 429
/// connection limits.
pub async fn upgrade(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Result<Query<ConnectParams>, QueryRejection>,
    ws: Result<Handshake, NotWebSocket>,
) -> Response {
    if node.is_draining() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "node is draining",
        );
    }
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if let Some(refusal) = origin_refusal(&node, &headers) {
        return refusal;
    }
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => {
            return json_error(rejection.status(), "bad_query", &rejection.body_text());
        }
    };
    // Only when the backend is asked: the common path copies nothing.
    let presented = node
        .backend()
        .asks_connect()
        .then(|| connect_proxy::Presented {
            claimed_user: params.user.clone(),
            token: params
                .token
                .clone()
                .or_else(|| token_from_headers(&headers)),
        });
    let mut identity = match identify(&node, &headers, params).await {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    let connected = match presented {
        Some(presented) => {
            match connect_proxy::ask(&node, peer, &headers, presented, &mut identity).await {
                Ok(connected) => connected,
                Err(refusal) => return refusal,
            }
        }
        None => None,
    };
    let permits = match admit(&node, peer, &headers, &identity.user).await {
        Ok(permits) => permits,
        Err(refusal) => return refusal,
    };
    let socket = &node.config().socket;
    let (read, write) = (socket.read_buffer_bytes, socket.write_buffer_bytes);
    let max = node.config().limits.max_message_bytes;
    let tasks = node.tasks().clone();
    let agreed = ws.negotiate(&node.config().compression);
    // Dropping the callback unrun (a failed upgrade) drops the permits with it.
    ws.accept(&tasks, move |upgraded| {
        let socket = WebSocket::new(upgraded, read, write, max).with_deflate(agreed);
        connection::serve(socket, node, identity, permits, connected)
    })
}

/// The 403 for a browser page whose `Origin` is not allowed (`auth.allowed_origins`).
fn origin_refusal(node: &Node, headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if node.verifier().origin_allowed(origin) {
        return None;
    }
    metrics::counter!("roomcast_auth_failures_total", "reason" => "origin_forbidden").increment(1);
    Some(json_error(
        StatusCode::FORBIDDEN,
        "origin_forbidden",
        "origin not allowed",
    ))
}

/// The per-IP and per-user permits a new session holds until it ends, or the 429 that refuses it.
async fn admit(
    node: &Node,
    peer: SocketAddr,
    headers: &HeaderMap,
    user: &Arc<str>,
) -> Result<Permits, Response> {
    let client = node.admission().client_ip(peer.ip(), headers);
    let ip_permit = match node.admission().admit(client) {
        Ok(permit) => permit,
        Err(refused) => {
            metrics::counter!("roomcast_rate_limited_total", "kind" => refused.code()).increment(1);
            return Err(json_error(
                StatusCode::TOO_MANY_REQUESTS,
                refused.code(),
                "too many connections from this address",
            ));
        }
    };
    let user_claim = match node.claim_session(user).await {
        Ok(claim) => claim,
        Err(refused) => {
            metrics::counter!("roomcast_rate_limited_total", "kind" => "too_many_sessions")
                .increment(1);
            return Err(json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_sessions",
                &refused.to_string(),
            ));
        }
    };
    Ok(Permits {
        ip: ip_permit,
        _user: user_claim,
    })
}

/// Why `identify` refused a connection.
enum Unidentified {
    InvalidUser,
    UserNotAllowed,
    Token(AuthError),
}

impl IntoResponse for Unidentified {
    fn into_response(self) -> Response {
        match self {
            Self::InvalidUser => json_error(
                StatusCode::BAD_REQUEST,
                "invalid_user",
                &crate::protocol::name_rule("user"),
            ),
            Self::UserNotAllowed => json_error(
                StatusCode::BAD_REQUEST,
                "user_not_allowed",
                "the user comes from the token; ?user= is not accepted",
            ),
            Self::Token(err) => {
                metrics::counter!("roomcast_auth_failures_total", "reason" => err.code())
                    .increment(1);
                let mut response =
                    json_error(StatusCode::UNAUTHORIZED, err.code(), &err.to_string());
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                response
            }
        }
    }
}

/// The connecting user: from a verified token when authentication is on, else from `?user=`.
async fn identify(
    node: &Node,
    headers: &HeaderMap,
    params: ConnectParams,
) -> Result<Identity, Unidentified> {
    let verifier = node.verifier();
    if !verifier.enabled() {
        let user = match params.user {
            Some(user) if valid_name(&user) => user,
            None => format!("anon-{:012x}", rand::random::<u64>() >> 16),
            Some(_) => return Err(Unidentified::InvalidUser),
        };
        return Ok(Identity {
            user: Arc::from(user),
            permissions: Arc::new(Permissions::any()),
            expires_at: None,
        });
    }
    if params.user.is_some() {
        return Err(Unidentified::UserNotAllowed);
    }
    let token = params.token.or_else(|| token_from_headers(headers));
    match token {
        Some(token) => verifier.verify(&token).await.map_err(Unidentified::Token),
        None => Err(Unidentified::Token(AuthError::Missing)),
    }
}

/// `Authorization: Bearer <jwt>`, or a `bearer.<jwt>` entry in `Sec-WebSocket-Protocol`.
fn token_from_headers(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| crate::auth::bearer(v.as_bytes()))
        .and_then(|token| std::str::from_utf8(token).ok());
    if let Some(token) = bearer {
        return Some(token.to_owned());
    }
    crate::net::header_tokens(headers, header::SEC_WEBSOCKET_PROTOCOL)
        .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX))
        .map(str::to_owned)
}
