//! Error codes carried in `error` frames and the close codes the server ends a socket with.

use serde::Serialize;

/// Why a request failed. The connection stays open after every one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    BadJson,
    /// `type` names no request this server knows.
    UnknownType,
    /// A field is missing or has the wrong type.
    BadRequest,
    /// A room or user name breaks the naming rule.
    InvalidRoom,
    /// The request needs membership of a room the session has not joined.
    NotMember,
    /// The session is already in `max_rooms_per_connection` rooms.
    TooManyRooms,
    /// The inbound token bucket is empty; the frame was dropped.
    RateLimited,
    /// A binary frame: the protocol speaks JSON text only.
    Unsupported,
    /// A dependency (the broker) could not complete the request; nothing was done.
    Unavailable,
    /// The node is draining and takes no new work.
    ShuttingDown,
    /// The session's token does not allow this room (join or publish).
    Forbidden,
    /// `refresh`: the token is malformed, forged, or signed with the wrong key or algorithm.
    TokenInvalid,
    /// `refresh`: the token has expired.
    TokenExpired,
    /// `refresh`: the token is not valid yet (`nbf`).
    TokenNotYetValid,
    /// `refresh`: the token is longer than `auth.max_token_bytes`.
    TokenTooLarge,
    /// `refresh`: the token names another user.
    TokenWrongUser,
    /// `data` nests deeper than 64 levels or has a number longer than 64 characters.
    DataTooComplex,
    /// The application's backend refused the join or publish (`[proxy]`); its own code is
    /// in the frame's `app_code`, its message in `message`.
    Denied,
    /// The application's backend could not be asked (down, too slow, overloaded, or a bad
    /// answer) and `proxy.on_failure` is `deny`: nothing was done.
    BackendUnavailable,
    /// `history`: no offset lies above `after` and below `before`.
    BadRange,
    /// `history`: the broker knows no such room (never used, or idle past the epoch TTL).
    UnknownRoom,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::UnknownType => "unknown_type",
            Self::BadRequest => "bad_request",
            Self::InvalidRoom => "invalid_room",
            Self::NotMember => "not_member",
            Self::TooManyRooms => "too_many_rooms",
            Self::RateLimited => "rate_limited",
            Self::Unsupported => "unsupported",
            Self::Unavailable => "unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::Forbidden => "forbidden",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::TokenTooLarge => "token_too_large",
            Self::TokenWrongUser => "token_wrong_user",
            Self::DataTooComplex => "data_too_complex",
            Self::Denied => "denied",
            Self::BackendUnavailable => "backend_unavailable",
            Self::BadRange => "bad_range",
            Self::UnknownRoom => "unknown_room",
        }
    }
}

/// A request-level failure: the code the client can branch on and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    /// With [`ErrorCode::Denied`]: the application's backend's own code.
    pub app_code: Option<String>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            app_code: None,
        }
    }
}

/// Why the server closed a socket. The numbers are part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// Normal close (the client asked for it).
    Normal = 1000,
    /// The node is shutting down or draining: reconnect, to this or another node.
    GoingAway = 1001,
    /// The client broke the WebSocket protocol (bad framing, unmasked frames, ...).
    ProtocolViolation = 1002,
    /// A text frame was not valid UTF-8.
    InvalidPayload = 1007,
    /// A message sent in fragments was not finished within `limits.message_timeout_ms`.
    PolicyViolation = 1008,
    /// A frame was larger than `max_message_bytes`.
    TooBig = 1009,
    /// The server failed in a way that is not the client's fault.
    Internal = 1011,
    /// The client read too slowly and its outbound queue filled up.
    SlowConsumer = 4000,
    /// The session's token expired and no `refresh` replaced it.
    TokenExpired = 4001,
    /// The application disconnected the user (server API).
    Disconnected = 4003,
    /// Nothing arrived from the client within the heartbeat timeout.
    HeartbeatTimeout = 4008,
    /// The client kept sending after being told it was rate limited.
    RateLimitAbuse = 4029,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Maps a stored number back to the code; unknown numbers read as `Internal`.
    pub fn from_u16(n: u16) -> Self {
        match n {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1002 => Self::ProtocolViolation,
            1007 => Self::InvalidPayload,
            1008 => Self::PolicyViolation,
            1009 => Self::TooBig,
            4000 => Self::SlowConsumer,
            4001 => Self::TokenExpired,
            4003 => Self::Disconnected,
            4008 => Self::HeartbeatTimeout,
            4029 => Self::RateLimitAbuse,
            _ => Self::Internal,
        }
    }

    /// The short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "bye",
            Self::GoingAway => "server going away, reconnect",
            Self::ProtocolViolation => "protocol violation",
            Self::InvalidPayload => "text frame is not valid UTF-8",
            Self::PolicyViolation => "message not finished in time",
            Self::TooBig => "frame too large",
            Self::Internal => "internal error",
            Self::SlowConsumer => "slow consumer",
            Self::TokenExpired => "token expired",
            Self::Disconnected => "disconnected by the server",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::RateLimitAbuse => "rate limit abuse",
        }
    }
}
