//! The client side of docs/protocol.md: the requests a simulated user sends and a borrowed view
//! of the frames it reads, plus the loadtest payload carried in `data`. No I/O.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;

/// The `type` of a server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Welcome,
    Joined,
    Left,
    Ack,
    Message,
    Direct,
    Presence,
    PresenceJoin,
    PresenceLeave,
    Pong,
    Error,
    #[serde(other)]
    Other,
}

/// One server frame, borrowed from the received text. A flat struct of options rather than a
/// tagged enum on purpose: serde buffers an internally tagged object before picking the variant,
/// which would double the parsing cost on the tester's hottest path (every delivery).
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Loadtest only sends numeric ids. A `message` frame's `id` is the application's
    /// backend's (publish proxy, a string): read as none.
    #[serde(default, deserialize_with = "request_id")]
    pub id: Option<u64>,
    #[serde(borrow)]
    pub room: Option<Cow<'a, str>>,
    pub offset: Option<u64>,
    #[serde(borrow)]
    pub epoch: Option<Cow<'a, str>>,
    pub recovered: Option<bool>,
    #[serde(borrow)]
    pub code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

/// A numeric `id`, or none for any other JSON (a backend's string message id), without
/// buffering: one visitor call on the hot path.
fn request_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Id;
    impl serde::de::Visitor<'_> for Id {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a request id")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Id)
}

impl<'a> Frame<'a> {
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// What every loadtest message carries in `data`: publisher index, its per-publisher sequence
/// number and the send time in unix microseconds (shared by all worker processes on the machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Payload {
    pub p: u64,
    pub s: u64,
    pub t: u64,
}

impl Payload {
    pub fn parse(data: &RawValue) -> Option<Self> {
        serde_json::from_str(data.get()).ok()
    }

    fn write_to(&self, out: &mut String, pad: PadText) {
        let (open, close) = if pad.items { ('[', ']') } else { ('"', '"') };
        let _ = write!(
            out,
            r#"{{"p":{},"s":{},"t":{},"pad":{open}{}{close}}}"#,
            self.p, self.s, self.t, pad.text
        );
    }
}

/// One message's padding (see `pad`): the contents of a JSON string, which must need no
/// escaping, or (`items`) the comma-separated values of a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PadText<'a> {
    pub text: &'a str,
    pub items: bool,
}

impl<'a> PadText<'a> {
    pub fn string(text: &'a str) -> Self {
        Self { text, items: false }
    }
}

/// Unix time in microseconds: the clock every worker process on the machine shares.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `join`, or a resume when `since` is given. Room names and epochs never need JSON escaping
/// (the protocol restricts them to `[A-Za-z0-9_.:@-]`; epochs are hex).
pub fn join(room: &str, id: u64, since: Option<(u64, &str)>) -> String {
    match since {
        Some((since, epoch)) => format!(
            r#"{{"type":"join","room":"{room}","id":{id},"since":{since},"epoch":"{epoch}"}}"#
        ),
        None => format!(r#"{{"type":"join","room":"{room}","id":{id}}}"#),
    }
}

pub fn publish(room: &str, id: u64, payload: Payload, pad: PadText) -> String {
    let mut out = String::with_capacity(96 + room.len() + pad.text.len());
    let _ = write!(
        out,
        r#"{{"type":"publish","room":"{room}","id":{id},"data":"#
    );
    payload.write_to(&mut out, pad);
    out.push('}');
    out
}

pub fn send(to: &str, id: u64, payload: Payload, pad: PadText) -> String {
    let mut out = String::with_capacity(96 + to.len() + pad.text.len());
    let _ = write!(out, r#"{{"type":"send","to":"{to}","id":{id},"data":"#);
    payload.write_to(&mut out, pad);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips() {
        let text = publish(
            "r1",
            7,
            Payload {
                p: 3,
                s: 9,
                t: 12345,
            },
            PadText::string("xx"),
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "publish");
        assert_eq!(v["data"]["pad"], "xx");
        let frame = r#"{"type":"message","room":"r1","offset":5,"from":"a","data":{"p":3,"s":9,"t":12345,"pad":"xx"},"ts":1}"#;
        let f = Frame::parse(frame).unwrap();
        assert_eq!(f.kind, Kind::Message);
        assert_eq!(f.offset, Some(5));
        assert_eq!(
            Payload::parse(f.data.unwrap()),
            Some(Payload {
                p: 3,
                s: 9,
                t: 12345
            })
        );
    }

    #[test]
    fn a_backend_message_id_is_not_a_request_id() {
        let frame =
            r#"{"type":"message","room":"r1","offset":5,"from":"a","data":1,"id":"m-1","ts":1}"#;
        let f = Frame::parse(frame).unwrap();
        assert_eq!((f.kind, f.id, f.offset), (Kind::Message, None, Some(5)));
        let ack = Frame::parse(r#"{"type":"ack","id":7,"room":"r1","offset":5}"#).unwrap();
        assert_eq!(ack.id, Some(7));
        assert_eq!(Frame::parse(r#"{"type":"ack"}"#).unwrap().id, None);
    }

    #[test]
    fn unknown_types_parse_as_other() {
        let f = Frame::parse(r#"{"type":"surprise","x":1}"#).unwrap();
        assert_eq!(f.kind, Kind::Other);
        let j: serde_json::Value = serde_json::from_str(&join("r", 1, Some((4, "ab")))).unwrap();
        assert_eq!(j["since"], 4);
    }
}
