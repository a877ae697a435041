//! What the engine's channels carry, built and parsed here only: the scripts build room
//! payloads inside Redis with the Lua functions of [`LUA`], the engine builds user payloads
//! with [`direct`] and [`DISCONNECT`], and the readers parse both with [`room`] and [`user`].
//!
//! - Room channel: `m <offset> <epoch>\n<message frame>` (a publication) or
//!   `p\n<presence frame>` (a presence event).
//! - User channel: `d\n<direct frame>`, or `k\n` to close the user's sessions.

/// Defines `message_payload(offset, epoch, frame)` and `presence_payload(frame)` for the
/// scripts, which announce in the same step as the change they make; the one place outside
/// Rust where a payload is written.
pub const LUA: &str = r#"
local function message_payload(offset, epoch, frame)
  return 'm ' .. offset .. ' ' .. epoch .. '\n' .. frame
end
local function presence_payload(frame)
  return 'p\n' .. frame
end
"#;

/// The user payload that closes every session of the user, on every node.
pub const DISCONNECT: &str = "k\n";

/// The user payload carrying one direct message frame.
pub fn direct(frame: &str) -> String {
    format!("d\n{frame}")
}

/// A room channel's payload.
#[derive(Debug, PartialEq, Eq)]
pub enum Room<'a> {
    Message {
        offset: u64,
        epoch: &'a str,
        frame: &'a str,
    },
    Presence(&'a str),
}

/// A user channel's payload.
#[derive(Debug, PartialEq, Eq)]
pub enum User<'a> {
    Direct(&'a str),
    Disconnect,
}

/// Why a payload was dropped (for the log line that reports it).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("no header line")]
    NoHeader,
    #[error("unknown header {0:?}")]
    Header(String),
}

pub fn room(payload: &[u8]) -> Result<Room<'_>, Malformed> {
    let (header, frame) = split(payload)?;
    if header == "p" {
        return Ok(Room::Presence(frame));
    }
    let mut parts = header.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("m"), Some(offset), Some(epoch), None) => match offset.parse() {
            Ok(offset) => Ok(Room::Message {
                offset,
                epoch,
                frame,
            }),
            Err(_) => Err(Malformed::Header(header.to_owned())),
        },
        _ => Err(Malformed::Header(header.to_owned())),
    }
}

pub fn user(payload: &[u8]) -> Result<User<'_>, Malformed> {
    match split(payload)? {
        ("d", frame) => Ok(User::Direct(frame)),
        ("k", _) => Ok(User::Disconnect),
        (header, _) => Err(Malformed::Header(header.to_owned())),
    }
}

fn split(payload: &[u8]) -> Result<(&str, &str), Malformed> {
    let text = std::str::from_utf8(payload).map_err(|_| Malformed::NotUtf8)?;
    text.split_once('\n').ok_or(Malformed::NoHeader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_payloads_round_trip() {
        let frame = r#"{"type":"direct","from":"a","data":"x\ny"}"#;
        assert_eq!(user(direct(frame).as_bytes()), Ok(User::Direct(frame)));
        assert_eq!(user(DISCONNECT.as_bytes()), Ok(User::Disconnect));
    }

    #[test]
    fn room_payloads_parse_as_the_lua_builds_them() {
        // What `message_payload(7, 'e1', frame)` and `presence_payload(frame)` return.
        assert_eq!(
            room(b"m 7 e1\n{\"n\":\"a\nb\"}"),
            Ok(Room::Message {
                offset: 7,
                epoch: "e1",
                frame: "{\"n\":\"a\nb\"}"
            })
        );
        assert_eq!(room(b"p\n{}"), Ok(Room::Presence("{}")));
    }

    #[test]
    fn malformed_payloads_are_told_apart() {
        assert_eq!(room(b"\xff\n"), Err(Malformed::NotUtf8));
        assert_eq!(room(b"m 1 e"), Err(Malformed::NoHeader));
        assert!(matches!(room(b"m x e\n{}"), Err(Malformed::Header(_))));
        assert!(matches!(
            room(b"m 1 e extra\n{}"),
            Err(Malformed::Header(_))
        ));
        assert!(matches!(user(b"z\n{}"), Err(Malformed::Header(_))));
    }
}
