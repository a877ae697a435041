//! Room endpoints: publish (to one room or many), presence, history.

use axum::Json;
use axum::extract::State;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::openapi::{Array, ArrayBuilder};
use utoipa::{IntoParams, ToSchema};

use super::auth::ApiKey;
use super::doc::{BatchErrors, BodyErrors, HistoryErrors, PathErrors};
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiQuery, RoomPath, name_schema, room_name};
use super::message::{checked_data, present, publish_key, sender};
use crate::node::Node;
use crate::protocol::{Resume, valid_name};

/// Most rooms one multi-room publish may name: bounds the work (and Redis round trips) one
/// request can cause.
pub const MAX_ROOMS_PER_PUBLISH: usize = 100;

/// Publishes of one multi-room request in flight at once: overlaps Redis round trips without
/// letting one request occupy the broker's connection alone.
const PUBLISH_CONCURRENCY: usize = 8;

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"room": "lobby", "offset": 58}))]
pub struct PublishResponse {
    pub room: String,
    /// The message's offset in the room, as members see it in the `message` frame.
    pub offset: u64,
}

/// Publishes a message to a room.
///
/// Every member of the room, on every node, receives a `message` frame with the returned
/// offset. The room needs no members: the message is still ordered and kept in history.
#[utoipa::path(
    post,
    path = "/rooms/{room}/publish",
    tag = "rooms",
    operation_id = "publish",
    params(RoomPath),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Published; `offset` is the message's offset in the room", body = PublishResponse),
        BodyErrors,
    ),
)]
pub async fn publish(
    _: ApiKey,
    State(node): State<Node>,
    RoomPath { room }: RoomPath,
    ApiJson(body): ApiJson<PublishRequest>,
) -> Result<Json<PublishResponse>, ApiError> {
    let data = checked_data(&body.data, &node)?;
    let from = sender(body.from.clone())?;
    let key = publish_key(body.key.clone())?;
    let offset = node.publish(&room, &from, data, key.as_deref()).await?;
    Ok(Json(PublishResponse { room, offset }))
}

/// A message for one room.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"data": {"text": "maintenance at 18:00"}, "from": "ops", "key": "deploy-81"}))]
pub struct PublishRequest {
    /// Any JSON value; recipients get it byte for byte as the frame's `data`.
    #[schema(value_type = Value)]
    pub data: Box<RawValue>,
    /// The sender recipients see as `from`, default `"server"`.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = name_schema)]
    pub from: Option<String>,
    /// The caller's publish key: a retry with the same key within `history.ttl_secs` gets the
    /// first publication's offset instead of publishing again.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = name_schema)]
    pub key: Option<String>,
}

/// A message for several rooms.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"rooms": ["lobby", "team:42"], "data": {"text": "deploy done"}}))]
pub struct PublishManyRequest {
    /// The rooms, each named once.
    #[schema(schema_with = rooms_schema)]
    pub rooms: Vec<String>,
    /// Any JSON value; recipients get it byte for byte as the frame's `data`.
    #[schema(value_type = Value)]
    pub data: Box<RawValue>,
    /// The sender recipients see as `from`, default `"server"`.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = name_schema)]
    pub from: Option<String>,
    /// The caller's publish key, applied in each room on its own: a retry with the same key
    /// within `history.ttl_secs` gets each room's first offset instead of publishing again.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = name_schema)]
    pub key: Option<String>,
}

fn rooms_schema() -> Array {
    ArrayBuilder::new()
        .items(name_schema())
        .min_items(Some(1))
        .max_items(Some(MAX_ROOMS_PER_PUBLISH))
        .unique_items(true)
        .description(Some("The rooms, each named once"))
        .build()
}

#[derive(Serialize, ToSchema)]
pub struct PublishManyResponse {
    /// One result per requested room, in request order.
    pub results: Vec<RoomResult>,
}

/// The outcome for one room: its offset, or why it was not published.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum RoomResult {
    Published {
        room: String,
        offset: u64,
    },
    Failed {
        room: String,
        /// `unavailable`: the broker could not order it; it was not published.
        error: ErrorCode,
        message: String,
    },
}

/// Publishes one message to several rooms.
///
/// Each room is published independently (no order between rooms, no all-or-nothing): the
/// answer is 200 once the request is valid and lists, per room, its offset or its error. A
/// request with an invalid room name publishes nothing.
#[utoipa::path(
    post,
    path = "/publish",
    tag = "rooms",
    operation_id = "publish_many",
    request_body = PublishManyRequest,
    responses(
        (status = 200, description = "Per-room results, in request order", body = PublishManyResponse,
            example = json!({"results": [
                {"room": "lobby", "offset": 59},
                {"room": "team:42", "error": "unavailable", "message": "broker unavailable: timed out"}
            ]})),
        BatchErrors,
    ),
)]
pub async fn publish_many(
    _: ApiKey,
    State(node): State<Node>,
    ApiJson(body): ApiJson<PublishManyRequest>,
) -> Result<Json<PublishManyResponse>, ApiError> {
    checked_data(&body.data, &node)?;
    let from = sender(body.from)?;
    let key = publish_key(body.key)?;
    let rooms = check_rooms(body.rooms)?;
    let (node, from, data, key) = (&node, from.as_str(), &*body.data, key.as_deref());
    let results = futures_util::stream::iter(rooms)
        .map(|room| async move {
            match node
                .publish(&room, from, data, key)
                .await
                .map_err(ApiError::from)
            {
                Ok(offset) => RoomResult::Published { room, offset },
                Err(err) => RoomResult::Failed {
                    room,
                    error: err.code(),
                    message: err.to_string(),
                },
            }
        })
        .buffered(PUBLISH_CONCURRENCY)
        .collect()
        .await;
    Ok(Json(PublishManyResponse { results }))
}

fn check_rooms(rooms: Vec<String>) -> Result<Vec<String>, ApiError> {
    if rooms.is_empty() || rooms.len() > MAX_ROOMS_PER_PUBLISH {
        return Err(ApiError::BadRequest(format!(
            "rooms must name 1 to {MAX_ROOMS_PER_PUBLISH} rooms"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(rooms.len());
    let mut checked = Vec::with_capacity(rooms.len());
    for room in rooms {
        let room = room_name("rooms[]", room)?;
        if !seen.insert(room.clone()) {
            return Err(ApiError::BadRequest(format!("room {room} is named twice")));
        }
        checked.push(room);
    }
    Ok(checked)
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"room": "lobby", "users": ["alice", "bob"]}))]
pub struct PresenceResponse {
    pub room: String,
    /// The users with a session in the room on any node, sorted, each once.
    pub users: Vec<String>,
}

/// Lists the users present in a room.
#[utoipa::path(
    get,
    path = "/rooms/{room}/presence",
    tag = "rooms",
    operation_id = "presence",
    params(RoomPath),
    responses(
        (status = 200, description = "The users present", body = PresenceResponse),
        PathErrors,
    ),
)]
pub async fn presence(
    _: ApiKey,
    State(node): State<Node>,
    RoomPath { room }: RoomPath,
) -> Result<Json<PresenceResponse>, ApiError> {
    let users = node.presence(&room).await?.users;
    Ok(Json(PresenceResponse { room, users }))
}

/// Where to read a room's history from. Give both or neither.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The last offset already seen; messages after it are returned. Needs `epoch` (400
    /// `bad_query` without it).
    #[param(minimum = 0, example = 41)]
    pub since: Option<u64>,
    /// The epoch `since` belongs to (from an earlier answer or a `joined` frame). Needs
    /// `since` (400 `bad_query` without it).
    #[param(
        pattern = "^[A-Za-z0-9_.:@-]{1,128}$",
        min_length = 1,
        max_length = 128,
        example = "9f2c1a0b3d4e5f60"
    )]
    pub epoch: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "room": "lobby", "epoch": "9f2c1a0b3d4e5f60", "top": 58, "recovered": true,
    "messages": [{"type": "message", "room": "lobby", "offset": 58, "from": "alice",
                  "data": {"text": "hi"}, "ts": 1764057600000u64}]
}))]
pub struct HistoryResponse {
    pub room: String,
    /// Names the room's history; offsets from another epoch mean nothing here.
    pub epoch: String,
    /// The offset of the room's latest message (0 before the first).
    pub top: u64,
    /// Only with `since`: whether `messages` holds every message after `since`. False when
    /// the history no longer reaches back, the epoch differs, or `since` is ahead of `top`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// With `since` and `recovered`: the messages `since+1..=top`, in order, exactly as members
    /// received them. Empty otherwise.
    #[schema(value_type = Vec<MessageFrame>)]
    pub messages: Vec<Box<RawValue>>,
}

/// A `message` frame as members receive it (docs/protocol.md).
#[derive(ToSchema)]
#[allow(dead_code)] // documents the frames `HistoryResponse::messages` passes through
pub struct MessageFrame {
    /// Always `"message"`.
    #[schema(example = "message")]
    r#type: String,
    room: String,
    offset: u64,
    from: String,
    #[schema(value_type = Value)]
    data: (),
    /// Server time of the publish, unix milliseconds.
    ts: u64,
}

/// Reads a room's position and, with `since` and `epoch`, the messages after `since`.
///
/// Without `since`, answers the room's current `epoch` and `top` (creating the room's history
/// if it had none), so a backend can start following it.
#[utoipa::path(
    get,
    path = "/rooms/{room}/history",
    tag = "rooms",
    operation_id = "history",
    params(RoomPath, HistoryQuery),
    responses(
        (status = 200, description = "The room's position, and the messages after `since`", body = HistoryResponse),
        HistoryErrors,
    ),
)]
pub async fn history(
    _: ApiKey,
    State(node): State<Node>,
    RoomPath { room }: RoomPath,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let resume = resume(query)?;
    let history = node.history(&room, resume.as_ref()).await?;
    let messages = history
        .replay
        .iter()
        .map(|frame| RawValue::from_string(frame.as_str().to_owned()))
        .collect::<Result<_, _>>()
        .map_err(|err| ApiError::Internal(format!("a stored message is not JSON: {err}")))?;
    Ok(Json(HistoryResponse {
        room,
        epoch: history.epoch.to_string(),
        top: history.top,
        recovered: resume.map(|_| history.recovered),
        messages,
    }))
}

fn resume(query: HistoryQuery) -> Result<Option<Resume>, ApiError> {
    match (query.since, query.epoch) {
        (None, None) => Ok(None),
        (Some(since), Some(epoch)) => {
            // Offsets are stored as signed 64-bit integers by the Redis engine.
            if since > i64::MAX as u64 {
                return Err(ApiError::BadQuery(format!(
                    "since must be at most {}",
                    i64::MAX
                )));
            }
            if !valid_name(&epoch) {
                return Err(ApiError::BadQuery(crate::protocol::name_rule("epoch")));
            }
            Ok(Some(Resume { since, epoch }))
        }
        _ => Err(ApiError::BadQuery("since and epoch go together".into())),
    }
}
