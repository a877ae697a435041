//! What every message body shares (room publish, multi-room publish, direct send): any JSON
//! `data`, passed through byte for byte and checked once, and an optional `from`.

use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{name_schema, user_name};
use crate::node::Node;

/// What members see as `from` when the request names no sender.
pub const DEFAULT_FROM: &str = "server";

/// A message to publish or send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"data": {"text": "maintenance at 18:00"}, "from": "ops"}))]
pub struct MessageRequest {
    /// Any JSON value; recipients get it byte for byte as the frame's `data`.
    #[schema(value_type = Value)]
    pub data: Box<RawValue>,
    /// The sender recipients see as `from`, default `"server"`. It names no session: the
    /// API may speak as any user.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = name_schema)]
    pub from: Option<String>,
}

/// An optional field that, when present, must be a string: `null` is refused rather than read
/// as absent, as the document says.
pub fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

impl MessageRequest {
    /// `data`, if members may receive it: no larger than `limits.max_message_bytes` (what
    /// their `welcome` promised; a client may not send more either) and within the shape rule
    /// of [`crate::protocol::check_data`].
    pub fn data(&self, node: &Node) -> Result<&RawValue, ApiError> {
        checked_data(&self.data, node)
    }
}

/// See [`MessageRequest::data`]; for bodies that carry `data` next to other fields.
pub fn checked_data<'a>(data: &'a RawValue, node: &Node) -> Result<&'a RawValue, ApiError> {
    let limit = node.config().limits.max_message_bytes;
    if data.get().len() > limit {
        return Err(ApiError::MessageTooLarge { limit });
    }
    crate::protocol::check_data(data.get())?;
    Ok(data)
}

/// A publish key, checked against the naming rule.
pub fn publish_key(key: Option<String>) -> Result<Option<String>, ApiError> {
    match key {
        Some(key) if !crate::protocol::valid_name(&key) => {
            Err(ApiError::BadRequest(crate::protocol::name_rule("key")))
        }
        key => Ok(key),
    }
}

/// The sender of a message: `from`, checked against the naming rule, or [`DEFAULT_FROM`].
pub fn sender(from: Option<String>) -> Result<String, ApiError> {
    match from {
        Some(from) => user_name("from", from),
        None => Ok(DEFAULT_FROM.to_owned()),
    }
}
