//! User endpoints: direct messages and disconnecting every session of a user.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::ApiKey;
use super::doc::{BodyErrors, PathErrors};
use super::error::ApiError;
use super::extract::{ApiJson, UserPath};
use super::message::{MessageRequest, sender};
use crate::node::Node;

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"user": "bob"}))]
pub struct UserResponse {
    pub user: String,
}

/// Sends a direct message to every session of a user.
///
/// Each session of the user, on any node, receives a `direct` frame. 202: the message was
/// accepted, not necessarily delivered; a user with no session gets nothing, and direct
/// messages are not stored.
#[utoipa::path(
    post,
    path = "/users/{user}/send",
    tag = "users",
    operation_id = "send",
    params(UserPath),
    request_body = MessageRequest,
    responses(
        (status = 202, description = "Accepted for every session the user has now", body = UserResponse),
        BodyErrors,
    ),
)]
pub async fn send(
    _: ApiKey,
    State(node): State<Node>,
    UserPath { user }: UserPath,
    ApiJson(body): ApiJson<MessageRequest>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let data = body.data(&node)?;
    let from = sender(body.from.clone())?;

    node.send_direct(&user, &from, data).await?;
    Ok((StatusCode::ACCEPTED, Json(UserResponse { user })))
}

/// Disconnects every session of a user, on every node.
///
/// Each session is closed with WebSocket close code 4003 (`disconnected by the server`). The
/// user may connect again; refusing that is the job of authentication (short-lived tokens).
/// Any request body is ignored.
#[utoipa::path(
    post,
    path = "/users/{user}/disconnect",
    tag = "users",
    operation_id = "disconnect",
    params(UserPath),
    responses(
        (status = 202, description = "Every node was told to close the user's sessions", body = UserResponse),
        PathErrors,
    ),
)]
pub async fn disconnect(
    _: ApiKey,
    State(node): State<Node>,
    UserPath { user }: UserPath,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    node.disconnect_user(&user).await?;
    // An administrative act on someone's sessions: worth a line in the log.
    tracing::info!(user, "server API disconnected the user");
    Ok((StatusCode::ACCEPTED, Json(UserResponse { user })))
}
