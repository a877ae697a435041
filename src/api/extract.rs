//! Reading requests: JSON bodies under `api.max_body_bytes`, path names checked against the
//! naming rule, query strings. Every rejection is an [`ApiError`] (a JSON body), never axum's
//! plain-text default.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use utoipa::openapi::{Object, ObjectBuilder, Type};

use super::error::ApiError;
use crate::node::Node;
use crate::protocol::{MAX_NAME_LEN, valid_name};

/// The naming rule of docs/protocol.md as a JSON Schema pattern, for the OpenAPI document.
/// Parameter attributes spell it out (they take only literals); a test checks they agree.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_.:@-]{1,128}$";

/// The schema of a room or user name in a request body.
pub fn name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .description(Some("1-128 characters of `[A-Za-z0-9_.:@-]`"))
        .build()
}

/// A JSON request body: `Content-Type: application/json` (or `application/*+json`), at most
/// `api.max_body_bytes`, a JSON object that deserializes into `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<Node> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, node: &Node) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let api = &node.config().api;
        let read = read_body(req, api.max_body_bytes);
        // A body trickled in a byte at a time must not hold the connection forever.
        let bytes = tokio::time::timeout(api.body_timeout(), read)
            .await
            .map_err(|_| ApiError::RequestTimeout(api.body_timeout_ms))??;
        parse(&bytes).map(ApiJson)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads the whole body, refusing it as soon as it passes `limit`: a declared length over the
/// limit is refused unread, a chunked body once it has grown past it.
async fn read_body(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut stream = Body::into_data_stream(req.into_body());
    let mut bytes = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| ApiError::BadRequest(format!("reading body: {err}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Not JSON, or JSON that is not an object, is `bad_json` (as on the WebSocket); an object with
/// a missing, unknown or mistyped field is `bad_request`. Non-objects are refused up front
/// because serde would read an array into a struct by position.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return Err(ApiError::BadJson("expected an object".into()));
    }
    serde_json::from_slice(bytes).map_err(|err| {
        if err.is_data() {
            ApiError::BadRequest(err.to_string())
        } else {
            ApiError::BadJson(err.to_string())
        }
    })
}

/// `{room}` in a path, checked against the naming rule.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RoomPath {
    /// The room: 1-128 characters of `[A-Za-z0-9_.:@-]`.
    #[param(
        pattern = "^[A-Za-z0-9_.:@-]{1,128}$",
        min_length = 1,
        max_length = 128,
        example = "lobby"
    )]
    pub room: String,
}

/// `{user}` in a path, checked against the naming rule.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The user: 1-128 characters of `[A-Za-z0-9_.:@-]`.
    #[param(
        pattern = "^[A-Za-z0-9_.:@-]{1,128}$",
        min_length = 1,
        max_length = 128,
        example = "bob"
    )]
    pub user: String,
}

impl FromRequestParts<Node> for RoomPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Node) -> Result<Self, ApiError> {
        let Path(path) = Path::<RoomPath>::from_request_parts(parts, node)
            .await
            .map_err(|err| ApiError::BadRequest(err.body_text()))?;
        room_name("room", path.room).map(|room| RoomPath { room })
    }
}

impl FromRequestParts<Node> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Node) -> Result<Self, ApiError> {
        let Path(path) = Path::<UserPath>::from_request_parts(parts, node)
            .await
            .map_err(|err| ApiError::BadRequest(err.body_text()))?;
        user_name("user", path.user).map(|user| UserPath { user })
    }
}

/// A query string deserialized into `T`; unreadable ones are `bad_query`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Node> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Node) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, node)
            .await
            .map(|Query(query)| ApiQuery(query))
            .map_err(|err| ApiError::BadQuery(err.body_text()))
    }
}

pub fn room_name(field: &'static str, name: String) -> Result<String, ApiError> {
    if valid_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::InvalidRoom { field })
    }
}

pub fn user_name(field: &'static str, name: String) -> Result<String, ApiError> {
    if valid_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::InvalidUser { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/jsonx", false),
            ("multipart/form-data", false),
        ] {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), ok, "{value}");
        }
    }

    #[test]
    fn parse_errors_are_classified() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Body {
            a: u32,
        }
        assert_eq!(parse::<Body>(br#"{"a":1}"#).unwrap().a, 1);
        for (input, code) in [
            (&b"not json"[..], "bad_json"),
            (b"[1]", "bad_json"),
            (b"", "bad_json"),
            (br#"{"a":1"#, "bad_json"),
            (br#"{"a":1} x"#, "bad_json"),
            (br#"{"a":"x"}"#, "bad_request"),
            (br#"{}"#, "bad_request"),
            (br#"{"a":1,"b":2}"#, "bad_request"),
        ] {
            let err = parse::<Body>(input).unwrap_err();
            assert_eq!(
                err.code().as_str(),
                code,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
