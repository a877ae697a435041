//! Decoding client → server frames.
//!
//! The wire form is a flat object (`type`, `id`, and the fields of that type). serde's
//! internally tagged enums buffer their input, which `RawValue` cannot pass through, so frames
//! are read into the private [`Wire`] struct in one pass and then checked into the typed
//! [`Request`] enum. `data` stays raw JSON end to end: it is never parsed into a tree.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::codes::{ErrorCode, ProtocolError};
use super::data::check_data;
use super::names::{name_rule, valid_name};

/// The `id` a client put on a request, echoed verbatim in the reply. A number or a string.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct RequestId(Box<RawValue>);

impl RequestId {
    fn parse(raw: Box<RawValue>) -> Result<Self, ProtocolError> {
        match raw.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => Ok(Self(raw)),
            _ => Err(ProtocolError::new(
                ErrorCode::BadRequest,
                "id must be a number or a string",
            )),
        }
    }

    pub fn as_json(&self) -> &str {
        self.0.get()
    }
}

/// A request a client may make, already validated.
#[derive(Debug)]
pub enum Request {
    Join {
        room: String,
        /// Present when the client resumes after a reconnect.
        resume: Option<Resume>,
        /// Opt in to `presence_join` / `presence_leave` events for this room.
        presence: bool,
        /// Deliver up to this many of the room's latest messages before live ones (0: none).
        rewind: u64,
    },
    Leave {
        room: String,
    },
    Publish {
        room: String,
        data: Box<RawValue>,
        /// The client's publish key: a retry with the same key gets the first one's offset
        /// instead of publishing again.
        key: Option<String>,
    },
    Send {
        to: String,
        data: Box<RawValue>,
    },
    Presence {
        room: String,
    },
    /// A page of the room's history: offsets above `after` and below `before`.
    History {
        room: String,
        before: Option<u64>,
        after: Option<u64>,
        /// `None`: the server's `history.max_page`.
        limit: Option<u64>,
        order: HistoryOrder,
    },
    /// Replaces the session's token before it expires.
    Refresh {
        token: String,
    },
    Ping,
}

/// Which end of a `history` range a page comes from, and its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryOrder {
    /// The latest messages of the range, latest first (the default).
    NewestFirst,
    /// The earliest messages of the range, earliest first.
    OldestFirst,
}

/// Where a resuming client left off in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The last offset the client saw; replay starts after it.
    pub since: u64,
    /// The epoch the client saw that offset in.
    pub epoch: String,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    id: Option<Box<RawValue>>,
    room: Option<String>,
    to: Option<String>,
    /// `null` is valid data, so presence is tracked apart from the value.
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    since: Option<u64>,
    epoch: Option<String>,
    #[serde(default)]
    presence: bool,
    token: Option<String>,
    key: Option<String>,
    rewind: Option<u64>,
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<u64>,
    order: Option<Cow<'a, str>>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct IdOnly {
    id: Option<Box<RawValue>>,
}

/// A failed decode: the error to send back, with the request id when it could be read.
pub type DecodeError = (Option<RequestId>, ProtocolError);

/// Decodes one text frame into its id and request.
pub fn decode_request(text: &str) -> Result<(Option<RequestId>, Request), DecodeError> {
    let mut wire: Wire<'_> = match serde_json::from_str(text) {
        Ok(wire) => wire,
        Err(err) => return Err((salvage_id(text), classify(text, &err))),
    };
    let id = match wire.id.take().map(RequestId::parse).transpose() {
        Ok(id) => id,
        Err(err) => return Err((None, err)),
    };
    match into_request(wire) {
        Ok(request) => Ok((id, request)),
        Err(err) => Err((id, err)),
    }
}

fn into_request(wire: Wire<'_>) -> Result<Request, ProtocolError> {
    let Wire {
        kind,
        room,
        to,
        data,
        ..
    } = wire;
    let kind = kind.ok_or_else(|| bad("missing \"type\""))?;
    Ok(match kind.as_ref() {
        "join" => Request::Join {
            room: room_name(room)?,
            resume: match (wire.since, wire.epoch) {
                (Some(since), Some(epoch)) => Some(Resume { since, epoch }),
                (None, None) => None,
                _ => return Err(bad("\"since\" and \"epoch\" go together")),
            },
            presence: wire.presence,
            rewind: match wire.rewind {
                Some(_) if wire.since.is_some() => {
                    return Err(bad("\"rewind\" is for a plain join, not a resume"));
                }
                rewind => rewind.unwrap_or(0),
            },
        },
        "history" => history_request(room, wire.before, wire.after, wire.limit, wire.order)?,
        "leave" => Request::Leave {
            room: room_name(room)?,
        },
        "publish" => Request::Publish {
            room: room_name(room)?,
            data: message_data(data, "publish needs \"data\"")?,
            key: match wire.key {
                Some(key) if !valid_name(&key) => {
                    return Err(bad(&name_rule("\"key\"")));
                }
                key => key,
            },
        },
        "send" => {
            let to = to.ok_or_else(|| bad("send needs \"to\""))?;
            if !valid_name(&to) {
                return Err(bad(&name_rule("\"to\"")));
            }
            Request::Send {
                to,
                data: message_data(data, "send needs \"data\"")?,
            }
        }
        "presence" => Request::Presence {
            room: room_name(room)?,
        },
        "refresh" => Request::Refresh {
            token: wire.token.ok_or_else(|| bad("refresh needs \"token\""))?,
        },
        "ping" => Request::Ping,
        other => {
            return Err(ProtocolError::new(
                ErrorCode::UnknownType,
                format!("unknown type {:?}", truncate(other)),
            ));
        }
    })
}

/// A `history` request: a range that can hold an offset, a positive limit, a known order.
fn history_request(
    room: Option<String>,
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<u64>,
    order: Option<Cow<'_, str>>,
) -> Result<Request, ProtocolError> {
    let room = room_name(room)?;
    if before.unwrap_or(u64::MAX) <= after.unwrap_or(0).saturating_add(1) {
        return Err(ProtocolError::new(
            ErrorCode::BadRange,
            "no offset is above \"after\" and below \"before\"",
        ));
    }
    if limit == Some(0) {
        return Err(bad("\"limit\" must be at least 1"));
    }
    let order = match order.as_deref() {
        None | Some("newest_first") => HistoryOrder::NewestFirst,
        Some("oldest_first") => HistoryOrder::OldestFirst,
        Some(_) => return Err(bad("\"order\" is \"newest_first\" or \"oldest_first\"")),
    };
    Ok(Request::History {
        room,
        before,
        after,
        limit,
        order,
    })
}

/// A message's `data`: present, and within the shape rule recipients rely on.
fn message_data(
    data: Option<Box<RawValue>>,
    missing: &'static str,
) -> Result<Box<RawValue>, ProtocolError> {
    let data = data.ok_or_else(|| bad(missing))?;
    check_data(data.get())
        .map_err(|err| ProtocolError::new(ErrorCode::DataTooComplex, err.to_string()))?;
    Ok(data)
}

fn room_name(room: Option<String>) -> Result<String, ProtocolError> {
    let room = room.ok_or_else(|| bad("missing \"room\""))?;
    if valid_name(&room) {
        Ok(room)
    } else {
        Err(ProtocolError::new(
            ErrorCode::InvalidRoom,
            name_rule("room"),
        ))
    }
}

fn bad(message: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadRequest, message)
}

/// Not JSON, or JSON that is not an object, is `bad_json`; an object with a field of the wrong
/// type is `bad_request`.
fn classify(text: &str, err: &serde_json::Error) -> ProtocolError {
    let is_object = text.trim_start().starts_with('{');
    if err.is_data() && is_object {
        ProtocolError::new(ErrorCode::BadRequest, err.to_string())
    } else {
        ProtocolError::new(ErrorCode::BadJson, "frame is not a JSON object")
    }
}

/// Best effort: a request whose body is wrong still gets its id echoed when the id is readable.
fn salvage_id(text: &str) -> Option<RequestId> {
    let id = serde_json::from_str::<IdOnly>(text).ok()?.id?;
    RequestId::parse(id).ok()
}

/// Keeps error messages short when a client sends a huge `type`.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode_request(text).unwrap_err().1.code
    }

    #[test]
    fn decodes_every_request() {
        let (id, req) =
            decode_request(r#"{"type":"join","room":"lobby","id":1,"presence":true}"#).unwrap();
        assert_eq!(id.unwrap().as_json(), "1");
        assert!(
            matches!(req, Request::Join { ref room, resume: None, presence: true, rewind: 0 } if room == "lobby")
        );

        let (_, req) =
            decode_request(r#"{"type":"join","room":"r","since":41,"epoch":"e1"}"#).unwrap();
        let Request::Join {
            resume: Some(resume),
            ..
        } = req
        else {
            panic!("{req:?}")
        };
        assert_eq!(
            resume,
            Resume {
                since: 41,
                epoch: "e1".into()
            }
        );

        let (id, req) =
            decode_request(r#"{"type":"publish","room":"r","data":{"a":[1, 2]},"id":"x"}"#)
                .unwrap();
        assert_eq!(id.unwrap().as_json(), r#""x""#);
        let Request::Publish { data, .. } = req else {
            panic!()
        };
        assert_eq!(
            data.get(),
            r#"{"a":[1, 2]}"#,
            "data passes through byte for byte"
        );

        assert!(matches!(
            decode_request(r#"{"type":"send","to":"bob","data":null}"#)
                .unwrap()
                .1,
            Request::Send { .. }
        ));
        assert!(matches!(
            decode_request(r#"{"type":"ping"}"#).unwrap().1,
            Request::Ping
        ));
        assert!(matches!(
            decode_request(r#"{"type":"leave","room":"r"}"#).unwrap().1,
            Request::Leave { .. }
        ));
        assert!(matches!(
            decode_request(r#"{"type":"presence","room":"r"}"#)
                .unwrap()
                .1,
            Request::Presence { .. }
        ));
    }

    #[test]
    fn classifies_bad_frames() {
        assert_eq!(code("not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code("42"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"join""#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"fly"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"room":"r"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"join","room":7}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"join","room":"a b"}"#),
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            code(r#"{"type":"join","room":"r","since":3}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"publish","room":"r"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"send","to":"","data":1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"ping","id":{"x":1}}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn decodes_history_and_rewind() {
        let (_, req) = decode_request(r#"{"type":"join","room":"r","rewind":20}"#).unwrap();
        assert!(matches!(req, Request::Join { rewind: 20, .. }));
        let (_, req) = decode_request(
            r#"{"type":"history","room":"r","before":90,"after":10,"limit":5,"order":"oldest_first"}"#,
        )
        .unwrap();
        assert!(matches!(
            req,
            Request::History {
                before: Some(90),
                after: Some(10),
                limit: Some(5),
                order: HistoryOrder::OldestFirst,
                ..
            }
        ));
        let (_, req) = decode_request(r#"{"type":"history","room":"r"}"#).unwrap();
        assert!(matches!(
            req,
            Request::History {
                before: None,
                after: None,
                limit: None,
                order: HistoryOrder::NewestFirst,
                ..
            }
        ));
        let cases = [
            (
                r#"{"type":"history","room":"r","before":5,"after":5}"#,
                ErrorCode::BadRange,
            ),
            (
                r#"{"type":"history","room":"r","before":6,"after":5}"#,
                ErrorCode::BadRange,
            ),
            (
                r#"{"type":"history","room":"r","before":1}"#,
                ErrorCode::BadRange,
            ),
            (
                r#"{"type":"history","room":"r","limit":0}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"history","room":"r","order":"up"}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"history","room":"r","before":-1}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"type":"history"}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"join","room":"r","since":1,"epoch":"e","rewind":3}"#,
                ErrorCode::BadRequest,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(code(text), want, "{text}");
        }
    }

    #[test]
    fn echoes_the_id_of_a_malformed_request() {
        let (id, err) = decode_request(r#"{"type":"join","room":7,"id":9}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert_eq!(id.unwrap().as_json(), "9");
    }
}
