//! The connect proxy at the upgrade: the application's backend sees who is connecting (the
//! user the node found, the client's address, its token and a few headers) and may set the
//! user, rooms to join and `info` for the `welcome` frame, or refuse. A refusal is answered
//! before upgrading, like every other refusal of this endpoint: 403 with the backend's code
//! (`{"error": "denied", "app_code", "message"}`), or 503 `backend_unavailable` when the
//! backend could not be asked and `proxy.on_failure` is `deny`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::Identity;
use crate::backend::{ConnectRequest, Connected, Refusal};
use crate::http::json_error;
use crate::node::Node;

/// What the client sent that the backend may want: read before `identify` consumes it.
pub struct Presented {
    /// `?user=` (authentication off only).
    pub claimed_user: Option<String>,
    pub token: Option<String>,
}

/// Asks the connect proxy, if one is configured. On `Ok`, `identity` carries the user the
/// backend set, and the answer's rooms and info are returned for the session.
pub async fn ask(
    node: &Node,
    peer: SocketAddr,
    headers: &HeaderMap,
    presented: Presented,
    identity: &mut Identity,
) -> Result<Option<Box<Connected>>, Response> {
    let authenticated = node.verifier().enabled();
    let user = if authenticated {
        Some(&*identity.user)
    } else {
        presented.claimed_user.as_deref()
    };
    let mut forwarded = BTreeMap::new();
    for (name, key) in [
        (header::ORIGIN, "origin"),
        (header::USER_AGENT, "user-agent"),
        (header::COOKIE, "cookie"),
    ] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            forwarded.insert(key, value);
        }
    }
    let request = ConnectRequest {
        user,
        authenticated,
        client: node.admission().client_ip(peer.ip(), headers).to_string(),
        token: presented.token.as_deref(),
        headers: forwarded,
    };
    match node.backend().connect(&request).await {
        Ok(None) => Ok(None),
        Ok(Some(connected)) => {
            if let Some(user) = &connected.user {
                identity.user = Arc::from(user.as_str());
            }
            Ok(Some(Box::new(connected)))
        }
        Err(Refusal::Denied(denial)) => Err((
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "denied",
                "app_code": denial.code,
                "message": denial.message,
            })),
        )
            .into_response()),
        Err(refusal @ Refusal::Unavailable(_)) => Err(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend_unavailable",
            &refusal.to_string(),
        )),
    }
}
