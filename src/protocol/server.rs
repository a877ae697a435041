//! Encoding server → client frames. Room messages are encoded once per publish by
//! [`encode_message`]; every recipient then gets a clone of the same bytes.

use serde::Serialize;
use serde_json::value::RawValue;
use tungstenite::Utf8Bytes;

use super::client::RequestId;
use super::codes::ErrorCode;

/// Every frame the server sends, as the JSON object's `type` tag.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        session: &'a str,
        user: &'a str,
        node: &'a str,
        heartbeat_ms: u64,
        max_message_bytes: usize,
        /// What the application's backend attached to the session (`connect` proxy).
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a RawValue>,
    },
    Joined {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        room: &'a str,
        epoch: &'a str,
        offset: u64,
        /// Only on a resume: whether every missed message follows.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    Left {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        room: &'a str,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    Message {
        room: &'a str,
        offset: u64,
        from: &'a str,
        data: &'a RawValue,
        /// The application's backend's id for the message (`publish` proxy), if it gave one.
        /// Before `ts`, which stays last ([`message_ts`]).
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        ts: u64,
    },
    Direct {
        from: &'a str,
        data: &'a RawValue,
        ts: u64,
    },
    /// The members, as of the room's presence event `seq` (events up to it are reflected).
    Presence {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        room: &'a str,
        seq: u64,
        users: &'a [&'a str],
    },
    /// `seq` numbers the room's presence events (1, 2, …), so a client can order them with a
    /// `presence` reply. `user` stays the last field ([`presence_parts`]).
    PresenceJoin {
        room: &'a str,
        seq: u64,
        user: &'a str,
    },
    PresenceLeave {
        room: &'a str,
        seq: u64,
        user: &'a str,
    },
    /// A page of a room's history: `message` frames as they were delivered, in the order
    /// asked for; `more` when the history holds more of the range beyond them.
    History {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        room: &'a str,
        epoch: &'a str,
        top: u64,
        messages: &'a [&'a RawValue],
        more: bool,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    /// The node is shutting down: reconnect (to any node) after this many milliseconds, then
    /// resume. Close 1001 follows.
    Goaway { reconnect_after_ms: u64 },
    /// A `refresh` was accepted: the session now lasts until `expires_at` (unix seconds).
    Refreshed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        expires_at: u64,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        code: ErrorCode,
        message: &'a str,
        /// The application's backend's code, with `code: denied`.
        #[serde(skip_serializing_if = "Option::is_none")]
        app_code: Option<&'a str>,
    },
}

/// Serializes a frame into bytes ready for a WebSocket text message.
pub fn encode(frame: &ServerFrame<'_>) -> Utf8Bytes {
    encode_sized(frame, 128)
}

/// Encodes into a buffer of `capacity` bytes. Message frames are kept in room history for
/// minutes, and the buffer's spare capacity with them: sized from the parts, a 300-byte frame
/// holds about 300 bytes rather than the 512 that doubling from 128 would leave.
fn encode_sized(frame: &ServerFrame<'_>, capacity: usize) -> Utf8Bytes {
    let mut text = Vec::with_capacity(capacity);
    // Serializing borrowed strings, integers and already-valid raw JSON cannot fail.
    serde_json::to_writer(&mut text, frame).expect("server frames always serialize");
    Utf8Bytes::try_from(text).expect("serde_json writes UTF-8")
}

/// Bytes a `message` or `direct` frame adds around its strings and data: field names, quotes,
/// and the offset and timestamp digits.
const ENVELOPE: usize = 96;

/// The `message` frame of one room publication.
pub fn encode_message(room: &str, offset: u64, from: &str, data: &RawValue, ts: u64) -> Utf8Bytes {
    encode_message_id(room, offset, from, data, None, ts)
}

/// [`encode_message`] with the backend's message `id`, if any.
pub fn encode_message_id(
    room: &str,
    offset: u64,
    from: &str,
    data: &RawValue,
    id: Option<&str>,
    ts: u64,
) -> Utf8Bytes {
    let capacity = ENVELOPE + room.len() + from.len() + data.get().len() + id.map_or(0, str::len);
    let frame = ServerFrame::Message {
        room,
        offset,
        from,
        data,
        id,
        ts,
    };
    encode_sized(&frame, capacity)
}

/// The `ts` of a `message` frame, read from its last bytes without parsing it: `ts` is the
/// frame's last field (fixed by `ServerFrame::Message`), so the frame ends `"ts":DIGITS}`.
/// `None` for any other frame. For sampling delivery latency on the write path, where a JSON
/// parse per frame would cost more than the write.
pub fn message_ts(frame: &str) -> Option<u64> {
    const HEAD: &str = r#"{"type":"message","#;
    const TS: &str = r#","ts":"#;
    let body = frame.strip_prefix(HEAD)?.strip_suffix('}')?;
    let rest = body.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = &body[rest.len()..];
    if !rest.ends_with(TS) {
        return None;
    }
    digits.parse().ok()
}

/// A `message` frame cut around its offset, for a broker that assigns the offset elsewhere
/// (the Redis engine's publish script): `prefix + offset + suffix` is exactly what
/// [`encode_message`] produces, so every engine hands clients the same bytes.
pub fn message_parts(room: &str, from: &str, data: &RawValue, ts: u64) -> (String, String) {
    message_parts_id(room, from, data, None, ts)
}

/// [`message_parts`] with the backend's message `id`, if any. The id comes after the offset,
/// so the cut below still finds the offset first.
pub fn message_parts_id(
    room: &str,
    from: &str,
    data: &RawValue,
    id: Option<&str>,
    ts: u64,
) -> (String, String) {
    let frame = encode_message_id(room, 0, from, data, id, ts);
    let text = frame.as_str();
    // Field order is fixed by `ServerFrame::Message`; `room` precedes the first `,"offset":0`.
    let cut = text
        .find(",\"offset\":0,")
        .expect("message frames carry an offset");
    let offset_start = cut + ",\"offset\":".len();
    (
        text[..offset_start].to_owned(),
        text[offset_start + 1..].to_owned(),
    )
}

/// A presence event frame for `room` (`presence_join` when `join`) in three pieces, for a broker
/// that numbers and names it where it decides it (the Redis engine's scripts): the frame is
/// `before` + seq + `between` + the JSON-encoded user + `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceParts {
    pub before: String,
    pub between: String,
    pub after: String,
}

pub fn presence_parts(room: &str, join: bool) -> PresenceParts {
    let frame = if join {
        encode(&ServerFrame::PresenceJoin {
            room,
            seq: 0,
            user: "",
        })
    } else {
        encode(&ServerFrame::PresenceLeave {
            room,
            seq: 0,
            user: "",
        })
    };
    // `seq` and `user` are the last fields: the frame ends with `0,"user":""}`.
    let text = frame.as_str();
    let tail = r#"0,"user":""}"#;
    PresenceParts {
        before: text[..text.len() - tail.len()].to_owned(),
        between: r#","user":"#.to_owned(),
        after: "}".to_owned(),
    }
}

/// The `direct` frame of a message to a user.
pub fn encode_direct(from: &str, data: &RawValue, ts: u64) -> Utf8Bytes {
    let capacity = ENVELOPE + from.len() + data.get().len();
    encode_sized(&ServerFrame::Direct { from, data, ts }, capacity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_request;

    #[test]
    fn message_parts_rebuild_the_frame_for_any_offset() {
        let data = RawValue::from_string(r#"{"offset":0,"t":",\"offset\":0,"}"#.into()).unwrap();
        let (prefix, suffix) = message_parts("r:0", "u", &data, 99);
        let (id_prefix, id_suffix) =
            message_parts_id("r:0", "u", &data, Some(",\"offset\":0,"), 99);
        for offset in [1, 10, 12345] {
            let whole = encode_message_id("r:0", offset, "u", &data, Some(",\"offset\":0,"), 99);
            assert_eq!(format!("{id_prefix}{offset}{id_suffix}"), whole.as_str());
            assert_eq!(message_ts(whole.as_str()), Some(99));
        }
        for offset in [1, 57, u64::MAX] {
            let whole = encode_message("r:0", offset, "u", &data, 99);
            assert_eq!(format!("{prefix}{offset}{suffix}"), whole.as_str());
        }
    }

    #[test]
    fn message_ts_reads_the_last_field_of_message_frames_only() {
        // Data that looks like a timestamp must not fool it.
        let data = RawValue::from_string(r#"{"x":",\"ts\":5}é"}"#.into()).unwrap();
        for ts in [0, 1_700_000_000_123, u64::MAX] {
            let frame = encode_message("r", 3, "u", &data, ts);
            assert_eq!(message_ts(frame.as_str()), Some(ts));
        }
        let direct = encode_direct("u", &data, 42);
        assert_eq!(message_ts(direct.as_str()), None);
        assert_eq!(message_ts(r#"{"type":"message","ts":"x"}"#), None);
        assert_eq!(message_ts(""), None);
    }

    #[test]
    fn presence_parts_wrap_a_seq_and_an_encoded_user() {
        for join in [true, false] {
            let p = presence_parts("lobby", join);
            let (seq, user) = (42, "bob");
            let whole = if join {
                encode(&ServerFrame::PresenceJoin {
                    room: "lobby",
                    seq,
                    user,
                })
            } else {
                encode(&ServerFrame::PresenceLeave {
                    room: "lobby",
                    seq,
                    user,
                })
            };
            let built = format!("{}{seq}{}\"{user}\"{}", p.before, p.between, p.after);
            assert_eq!(built, whole.as_str());
        }
    }

    #[test]
    fn message_frame_passes_data_through() {
        let data = RawValue::from_string(r#"{"text":"hi","n":[1,2]}"#.into()).unwrap();
        let bytes = encode_message("lobby", 58, "alice", &data, 1_700_000_000_000);
        assert_eq!(
            bytes.as_str(),
            r#"{"type":"message","room":"lobby","offset":58,"from":"alice","data":{"text":"hi","n":[1,2]},"ts":1700000000000}"#
        );
    }

    #[test]
    fn replies_echo_the_request_id() {
        let (id, _) = decode_request(r#"{"type":"ping","id":"abc"}"#).unwrap();
        let pong = encode(&ServerFrame::Pong { id: id.as_ref() });
        assert_eq!(pong.as_str(), r#"{"type":"pong","id":"abc"}"#);
        let err = encode(&ServerFrame::Error {
            id: None,
            code: ErrorCode::NotMember,
            message: "join first",
            app_code: None,
        });
        assert_eq!(
            err.as_str(),
            r#"{"type":"error","code":"not_member","message":"join first"}"#
        );
    }
}
