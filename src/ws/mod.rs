//! The WebSocket endpoint: the HTTP upgrade (refusals answered as JSON before upgrading) and,
//! in [`connection`], the task that serves one socket.

mod connection;
mod limiter;

use std::sync::Arc;

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::http::json_error;
use crate::node::Node;
use crate::protocol::valid_name;

#[derive(Deserialize)]
pub struct ConnectParams {
    /// Who the client is, until authentication exists. Anonymous when absent.
    user: Option<String>,
}

/// `GET /ws`: upgrades to a session. Refuses with 503 while draining, 400 for a bad `user`,
/// and 400/405/426 (JSON bodies) for requests that are not WebSocket handshakes.
pub async fn upgrade(
    State(node): State<Node>,
    params: Result<Query<ConnectParams>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if node.is_draining() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "node is draining",
        );
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return json_error(rejection.status(), "not_websocket", &rejection.body_text());
        }
    };
    let user = match params {
        Ok(Query(ConnectParams { user: Some(user) })) if valid_name(&user) => user,
        Ok(Query(ConnectParams { user: None })) => {
            format!("anon-{:012x}", rand::random::<u64>() >> 16)
        }
        Ok(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_user",
                "user must be 1-128 characters of [A-Za-z0-9_.:@-]",
            );
        }
        Err(rejection) => {
            return json_error(rejection.status(), "bad_query", &rejection.body_text());
        }
    };
    let config = node.config();
    let max = config.limits.max_message_bytes;
    let tasks = node.tasks().clone();
    ws.read_buffer_size(config.socket.read_buffer_bytes)
        .write_buffer_size(config.socket.write_buffer_bytes)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            tasks.track_future(connection::serve(socket, node, Arc::from(user)))
        })
        .into_response()
}
