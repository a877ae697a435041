//! The node's own counts.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::ApiKey;
use super::doc::AuthErrors;
use crate::node::{Node, NodeStats};

/// What the answering node holds (not the cluster: ask each node).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"node": "n-1a2b3c4d", "sessions": 1200, "rooms": 85, "users": 1100,
                          "draining": false, "broker_available": true}))]
pub struct StatsResponse {
    /// The node's id, as in `welcome` frames.
    pub node: String,
    /// Open WebSocket sessions.
    pub sessions: usize,
    /// Rooms with at least one local member.
    pub rooms: usize,
    /// Users with at least one local session.
    pub users: usize,
    /// True once shutdown began. The API keeps answering until the node stops listening.
    pub draining: bool,
    /// False while the broker (Redis) is unreachable.
    pub broker_available: bool,
}

impl From<NodeStats> for StatsResponse {
    fn from(s: NodeStats) -> Self {
        Self {
            node: s.node,
            sessions: s.sessions,
            rooms: s.rooms,
            users: s.users,
            draining: s.draining,
            broker_available: s.broker_available,
        }
    }
}

/// Counts of the answering node.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "node",
    operation_id = "stats",
    responses(
        (status = 200, description = "The node's counts", body = StatsResponse),
        AuthErrors,
    ),
)]
pub async fn stats(_: ApiKey, State(node): State<Node>) -> Json<StatsResponse> {
    Json(node.stats().into())
}
