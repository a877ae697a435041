//! Plain HTTP endpoints: liveness, readiness, and JSON bodies for every refusal.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::node::Node;

/// A 4xx/5xx response with a JSON body `{"error": code, "message": message}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: 200 when taking new sockets; 503 while draining or while the broker cannot
/// order messages (Redis unreachable), so a balancer sends new clients elsewhere.
pub async fn readyz(State(node): State<Node>) -> Response {
    let status = if node.is_draining() {
        "draining"
    } else if !node.broker_available() {
        "broker_unavailable"
    } else {
        return Json(json!({ "status": "ready", "node": node.id() })).into_response();
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": status, "node": node.id() })),
    )
        .into_response()
}

/// Any unknown path.
pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
