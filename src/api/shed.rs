//! Asking one node to shed sessions (rebalancing by hand, e.g. before scaling in).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::ApiKey;
use super::doc::BatchErrors;
use super::error::ApiError;
use super::extract::ApiJson;
use crate::node::Node;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"fraction": 0.25}))]
pub struct ShedRequest {
    /// The share of the node's sessions to move, from 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub fraction: f64,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"node": "n-1a2b3c4d", "shedding": 300}))]
pub struct ShedResponse {
    /// The answering node's id.
    pub node: String,
    /// Sessions this node will shed from now on, this request's and any still due.
    pub shedding: u64,
}

/// Sheds a share of the answering node's sessions.
///
/// Each session shed gets a `goaway` with a reconnect hint and is closed with 1001, as in a
/// shutdown; clients reconnect through the load balancer and resume without loss. Sessions go
/// one at a time, at most `rebalance.max_shed_per_sec`, so the other nodes see a bounded
/// reconnect rate. 202: accepted; the shedding takes `sessions / max_shed_per_sec` seconds.
#[utoipa::path(
    post,
    path = "/shed",
    tag = "node",
    operation_id = "shed",
    request_body = ShedRequest,
    responses(
        (status = 202, description = "The node will shed that many sessions", body = ShedResponse),
        BatchErrors,
    ),
)]
pub async fn shed(
    _: ApiKey,
    State(node): State<Node>,
    ApiJson(body): ApiJson<ShedRequest>,
) -> Result<(StatusCode, Json<ShedResponse>), ApiError> {
    if !(0.0..=1.0).contains(&body.fraction) {
        return Err(ApiError::BadRequest("fraction must be from 0 to 1".into()));
    }
    let count = node.shed(body.fraction);
    tracing::info!(
        count,
        fraction = body.fraction,
        "server API asked to shed sessions"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(ShedResponse {
            node: node.id().to_owned(),
            shedding: node.shedding(),
        }),
    ))
}
