//! The server API's errors: one typed enum whose variants each carry their HTTP status and
//! their documented `error` code. Every error body is `{"error": code, "message": text}`.

use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::json_error;
use crate::node::NodeError;

/// The `error` field of an error body: what a caller branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No `Authorization: Bearer <key>` header, or a key that is not configured (401).
    Unauthorized,
    /// The body is not a JSON object (400).
    BadJson,
    /// The body is JSON but a field is missing, unknown or of the wrong type (400).
    BadRequest,
    /// The query string cannot be read, or `since` and `epoch` do not go together (400).
    BadQuery,
    /// A room name breaks the naming rule (400).
    InvalidRoom,
    /// A user name (path or `from`) breaks the naming rule (400).
    InvalidUser,
    /// The body is larger than `api.max_body_bytes` (413).
    PayloadTooLarge,
    /// `data` is larger than `limits.max_message_bytes`, what clients are told they may
    /// receive (413).
    MessageTooLarge,
    /// `data` nests deeper than 64 levels or has a number longer than 64 characters (400).
    DataTooComplex,
    /// The body did not arrive within `api.body_timeout_ms` (408).
    RequestTimeout,
    /// The body is not declared `application/json` (415).
    UnsupportedMediaType,
    /// No API endpoint at this path (404).
    NotFound,
    /// The path exists but not for this method; `Allow` lists the methods (405).
    MethodNotAllowed,
    /// The broker (Redis) could not complete the request; nothing was done (503).
    Unavailable,
    /// Stored data could not be read back; not caused by the request (500).
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::BadJson => "bad_json",
            Self::BadRequest => "bad_request",
            Self::BadQuery => "bad_query",
            Self::InvalidRoom => "invalid_room",
            Self::InvalidUser => "invalid_user",
            Self::PayloadTooLarge => "payload_too_large",
            Self::MessageTooLarge => "message_too_large",
            Self::DataTooComplex => "data_too_complex",
            Self::RequestTimeout => "request_timeout",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

/// The body of every 4xx and 5xx answer of the API.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid_room", "message": "room must be 1-128 characters of [A-Za-z0-9_.:@-]"}))]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// For humans; branch on `error`.
    pub message: String,
}

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or unknown API key (send Authorization: Bearer <key>)")]
    Unauthorized,
    #[error("body is not a JSON object: {0}")]
    BadJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    BadQuery(String),
    #[error("{field} must be {rule}", rule = crate::protocol::NAME_RULE)]
    InvalidRoom { field: &'static str },
    #[error("{field} must be {rule}", rule = crate::protocol::NAME_RULE)]
    InvalidUser { field: &'static str },
    #[error("body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("data is larger than {limit} bytes (limits.max_message_bytes)")]
    MessageTooLarge { limit: usize },
    #[error(transparent)]
    DataTooComplex(#[from] crate::protocol::DataError),
    #[error("the body did not arrive within {0} ms")]
    RequestTimeout(u64),
    #[error("body must be application/json")]
    UnsupportedMediaType,
    #[error("no such API endpoint")]
    NotFound,
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::BadJson(_) => ErrorCode::BadJson,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::BadQuery(_) => ErrorCode::BadQuery,
            Self::InvalidRoom { .. } => ErrorCode::InvalidRoom,
            Self::InvalidUser { .. } => ErrorCode::InvalidUser,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            Self::DataTooComplex(_) => ErrorCode::DataTooComplex,
            Self::RequestTimeout(_) => ErrorCode::RequestTimeout,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.code() {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::BadJson
            | ErrorCode::BadRequest
            | ErrorCode::BadQuery
            | ErrorCode::InvalidRoom
            | ErrorCode::InvalidUser
            | ErrorCode::DataTooComplex => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge | ErrorCode::MessageTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            // Never the caller's fault, so the operator should hear of it.
            tracing::warn!(code = self.code().as_str(), "server API: {self}");
        }
        let mut response = json_error(self.status(), self.code().as_str(), &self.to_string());
        let headers = response.headers_mut();
        match self {
            // RFC 6750: a 401 names the scheme the client should use.
            Self::Unauthorized => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // Redis reconnects within about a second (docs/architecture.md).
            Self::Unavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<NodeError> for ApiError {
    fn from(err: NodeError) -> Self {
        match err {
            NodeError::Unavailable(err) => Self::Unavailable(err.to_string()),
            // The API joins no rooms; a membership refusal is the caller's mistake.
            NodeError::AlreadyJoined | NodeError::TooManyRooms { .. } | NodeError::NotMember(_) => {
                Self::BadRequest(err.to_string())
            }
            // The API is the backend's own and asks no proxy; kept total for the compiler.
            NodeError::Refused(_) => Self::Unavailable(err.to_string()),
        }
    }
}
