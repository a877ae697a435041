//! WebSocket framing (RFC 6455 §5) for the server's side of a connection, without I/O: the
//! decoder for what clients send and the headers of what the server sends.
//!
//! The server sends its frames unmasked, so a frame's payload is the same bytes for every
//! recipient: a socket adds only the 2–10 header bytes built here, and the encoded message
//! itself is never copied per connection (see [`super::socket`]).

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::protocol::CloseCode;

const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The first reserved bit: "per-message compressed" once permessage-deflate is agreed.
const RSV1: u8 = 0x40;
/// Control frames carry at most this much (§5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest header a server frame needs: 2 bytes, then a 64-bit length.
const MAX_HEADER: usize = 10;

/// The header of one unmasked, final server frame.
#[derive(Clone, Copy)]
pub struct Header {
    bytes: [u8; MAX_HEADER],
    len: u8,
}

impl Header {
    /// The header of a frame of `opcode` carrying `payload_len` bytes.
    pub fn new(opcode: u8, payload_len: usize) -> Self {
        let mut bytes = [0; MAX_HEADER];
        bytes[0] = 0x80 | opcode;
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    /// The header of a data frame whose payload is compressed (RSV1, RFC 7692 §6): a whole
    /// message in one frame, so the bit is on its first and only frame.
    pub fn compressed(opcode: u8, payload_len: usize) -> Self {
        let mut header = Self::new(opcode, payload_len);
        header.bytes[0] |= RSV1;
        header
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A whole control frame (ping, pong or close) with at most 125 payload bytes; longer payloads
/// are cut, which only a close reason could reach.
pub fn control(opcode: u8, payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut frame = BytesMut::with_capacity(2 + payload.len());
    frame.put_slice(Header::new(opcode, payload.len()).as_bytes());
    frame.put_slice(payload);
    frame.freeze()
}

/// A close frame with `code` and as much of `reason` as fits, cut at a character boundary.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    control(CLOSE, &payload)
}

/// One thing a client sent: a message (its fragments joined), a fragment of a message not yet
/// finished, or a control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    /// A non-final frame of a message, kept by the decoder. Reported so that every frame a
    /// client sends is charged to its rate limit, and a message that never ends can be timed.
    Fragment,
    /// A binary message. Not part of roomcast's protocol (the session answers `unsupported`),
    /// but its bytes are already joined here, so handing them on costs nothing.
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The client's close frame: its code, if it gave one.
    Close(Option<u16>),
}

/// How a client broke the framing rules. Each ends the connection with its close code.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame or message larger than the limit")]
    TooBig,
    #[error("text that is not UTF-8")]
    InvalidUtf8,
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("compressed data that does not inflate")]
    BadCompression,
}

impl FrameError {
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::TooBig => CloseCode::TooBig,
            Self::InvalidUtf8 | Self::BadCompression => CloseCode::InvalidPayload,
            Self::Protocol(_) => CloseCode::ProtocolViolation,
        }
    }
}

/// Reassembles client frames into [`Incoming`] items, enforcing the size limit on a message
/// (one frame, or its fragments together) as soon as a header announces a length, before any
/// of the payload is buffered.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// permessage-deflate was agreed: RSV1 marks a compressed message, inflated here up to
    /// `max_message` (see [`super::deflate::inflate`]).
    inflate: bool,
    /// A fragmented message in progress.
    partial: Option<Partial>,
    /// The UTF-8 check of the text message in progress, for what arrived before its end.
    utf8: Utf8Stream,
    /// Payload bytes of the incomplete text frame at the front of the buffer already checked.
    checked: usize,
}

/// The frames of a message received so far.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
}

/// A parsed client frame header.
struct FrameHead {
    fin: bool,
    /// The first frame of a compressed message.
    compressed: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes, then `payload_len` payload bytes.
    header_len: usize,
    payload_len: usize,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            inflate: false,
            partial: None,
            utf8: Utf8Stream::default(),
            checked: 0,
        }
    }

    /// Accepts compressed messages from now on (permessage-deflate was agreed).
    pub fn inflate(&mut self) {
        self.inflate = true;
    }

    /// Takes the next complete frame from the front of `buf`, removing the bytes it used.
    /// `Ok(None)`: `buf` holds no complete frame yet (nothing is removed). A fragment of a
    /// longer message is kept and reported as [`Incoming::Fragment`].
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Incoming>, FrameError> {
        let Some(head) = self.parse_head(buf)? else {
            return Ok(None);
        };
        let end = head.header_len + head.payload_len;
        let text = self.carries_text(&head);
        if buf.len() < end {
            if text {
                // Fail fast (RFC 6455 §8.1): a bad byte closes the connection when it arrives,
                // not once the rest of a frame of up to `max_message` bytes has.
                let arrived = &buf[head.header_len + self.checked..];
                self.utf8.feed(arrived, head.mask, self.checked)?;
                self.checked += arrived.len();
            }
            return Ok(None);
        }
        let mut payload: Vec<u8> = buf[head.header_len..end].to_vec();
        buf.drain(..end);
        unmask(&mut payload, head.mask);
        let checked = std::mem::take(&mut self.checked);
        // A whole message in one frame is checked once, as it becomes a `String`; the parts of
        // one that goes on are checked as they come.
        if text && (!head.fin || self.partial.is_some() || checked > 0) {
            self.utf8.feed(&payload[checked..], [0; 4], 0)?;
        }
        self.take(&head, payload).map(Some)
    }

    /// Whether a frame carries text as sent: an uncompressed text frame, or the continuation of
    /// one. A compressed message is checked once inflated, when it is whole.
    fn carries_text(&self, head: &FrameHead) -> bool {
        match head.opcode {
            TEXT => !head.compressed,
            CONTINUATION => matches!(&self.partial, Some(p) if p.text && !p.compressed),
            _ => false,
        }
    }

    /// Parses and checks the header at the front of `buf`; `None` while it is incomplete.
    fn parse_head(&self, buf: &[u8]) -> Result<Option<FrameHead>, FrameError> {
        let [first, second, ..] = *buf else {
            return Ok(None);
        };
        // Only RSV1 has a meaning, and only once permessage-deflate is agreed.
        let compressed = first & RSV1 != 0;
        if first & 0x30 != 0 || (compressed && !self.inflate) {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        if second & 0x80 == 0 {
            return Err(FrameError::Protocol("client frames must be masked"));
        }
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
        let (len_bytes, short) = match second & 0x7F {
            126 => (2, 0),
            127 => (8, 0),
            n => (0, usize::from(n)),
        };
        let header_len = 2 + len_bytes + 4;
        if buf.len() < header_len {
            return Ok(None);
        }
        let payload_len = match len_bytes {
            0 => short,
            2 => usize::from(u16::from_be_bytes([buf[2], buf[3]])),
            _ => {
                let long = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if long >> 63 != 0 {
                    return Err(FrameError::Protocol("length with the top bit set"));
                }
                usize::try_from(long).unwrap_or(usize::MAX)
            }
        };
        let mask = buf[header_len - 4..header_len].try_into().expect("4 bytes");
        self.check(fin, opcode, payload_len)?;
        if compressed && !matches!(opcode, TEXT | BINARY) {
            return Err(FrameError::Protocol(
                "RSV1 on a control or continuation frame",
            ));
        }
        Ok(Some(FrameHead {
            fin,
            compressed,
            opcode,
            mask,
            header_len,
            payload_len,
        }))
    }

    /// The rules that a header alone can break.
    fn check(&self, fin: bool, opcode: u8, payload_len: usize) -> Result<(), FrameError> {
        match opcode {
            CLOSE | PING | PONG => {
                if !fin {
                    return Err(FrameError::Protocol("fragmented control frame"));
                }
                if payload_len > MAX_CONTROL_PAYLOAD {
                    return Err(FrameError::Protocol("control frame over 125 bytes"));
                }
                Ok(())
            }
            TEXT | BINARY | CONTINUATION => {
                match (opcode, &self.partial) {
                    (CONTINUATION, None) => {
                        return Err(FrameError::Protocol("continuation outside a message"));
                    }
                    (TEXT | BINARY, Some(_)) => {
                        return Err(FrameError::Protocol("new message inside a fragmented one"));
                    }
                    _ => {}
                }
                let so_far = self.partial.as_ref().map_or(0, |p| p.data.len());
                if so_far.saturating_add(payload_len) > self.max_message {
                    return Err(FrameError::TooBig);
                }
                Ok(())
            }
            _ => Err(FrameError::Protocol("unknown opcode")),
        }
    }

    /// One frame's payload: the item it completes, or a fragment kept for later.
    fn take(&mut self, head: &FrameHead, payload: Vec<u8>) -> Result<Incoming, FrameError> {
        let mut message = match head.opcode {
            PING => return Ok(Incoming::Ping(payload)),
            PONG => return Ok(Incoming::Pong),
            CLOSE => return close_code(&payload).map(Incoming::Close),
            CONTINUATION => {
                let mut partial = self.partial.take().expect("checked in `check`");
                partial.data.extend_from_slice(&payload);
                partial
            }
            opcode => Partial {
                text: opcode == TEXT,
                compressed: head.compressed,
                data: payload,
            },
        };
        if !head.fin {
            self.partial = Some(message);
            return Ok(Incoming::Fragment);
        }
        self.utf8 = Utf8Stream::default();
        if message.compressed {
            message.data = super::deflate::inflate(&message.data, self.max_message).map_err(
                |err| match err {
                    super::deflate::InflateError::TooBig => FrameError::TooBig,
                    super::deflate::InflateError::Corrupt => FrameError::BadCompression,
                },
            )?;
        }
        let Partial { text, data, .. } = message;
        if !text {
            return Ok(Incoming::Binary(data));
        }
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| FrameError::InvalidUtf8)
    }
}

/// Checks UTF-8 in pieces: what a piece ends with that may still become a character is carried
/// over to the next piece, so the check of a message never looks at a byte twice.
#[derive(Debug, Default)]
struct Utf8Stream {
    /// The start of a character cut at the end of the last piece (at most 3 bytes).
    carry: [u8; 3],
    carried: u8,
}

impl Utf8Stream {
    /// Checks the next bytes of the message, `masked` with `mask` from position `offset` of their
    /// frame's payload (a zero mask for bytes already unmasked). Unmasks on the stack, through
    /// a small buffer, since the bytes stay in the read buffer until their frame is complete.
    fn feed(&mut self, masked: &[u8], mask: [u8; 4], offset: usize) -> Result<(), FrameError> {
        const PIECE: usize = 512;
        let mut buf = [0u8; 3 + PIECE];
        for (n, piece) in masked.chunks(PIECE).enumerate() {
            let carried = usize::from(self.carried);
            buf[..carried].copy_from_slice(&self.carry[..carried]);
            let start = offset + n * PIECE;
            for (i, (out, byte)) in buf[carried..].iter_mut().zip(piece).enumerate() {
                *out = byte ^ mask[(start + i) & 3];
            }
            let bytes = &buf[..carried + piece.len()];
            self.carried = 0;
            if let Err(err) = std::str::from_utf8(bytes) {
                // `error_len` is `None` only for a character cut by the end: at most 3 bytes.
                if err.error_len().is_some() {
                    return Err(FrameError::InvalidUtf8);
                }
                let tail = &bytes[err.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carried = tail.len() as u8;
            }
        }
        Ok(())
    }
}

/// The code of a client's close frame (§5.5.1, §7.4): none, or a code a peer may send, then an
/// optional UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(FrameError::Protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    // 1004-1006 and 1015 are never sent; 1016-2999 are reserved for the RFC's future use.
    let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !allowed {
        return Err(FrameError::Protocol("close code a peer may not send"));
    }
    std::str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?;
    Ok(Some(code))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame as a browser would send it: masked.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Header::new(first & 0x0F, payload.len()).as_bytes().to_vec();
        frame[0] = first;
        frame[1] |= 0x80;
        frame.extend_from_slice(&MASK);
        let mut masked = payload.to_vec();
        unmask(&mut masked, MASK);
        frame.extend_from_slice(&masked);
        frame
    }

    fn decode_all(decoder: &mut Decoder, mut buf: Vec<u8>) -> Result<Vec<Incoming>, FrameError> {
        let mut items = Vec::new();
        while let Some(item) = decoder.decode(&mut buf)? {
            items.push(item);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(items)
    }

    #[test]
    fn any_split_of_a_stream_decodes_the_same_and_junk_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // A stream of fragmented texts, pings and pongs, with lengths across all three forms.
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for i in 0..200 {
            let text = "é".repeat(rng.random_range(0..40_000)) + &i.to_string();
            let (a, b) = text.as_bytes().split_at(text.len() / 2);
            stream.extend(client_frame(0x01, a));
            expected.push(Incoming::Fragment);
            if i % 3 == 0 {
                stream.extend(client_frame(0x89, &[i as u8; 3]));
                expected.push(Incoming::Ping(vec![i as u8; 3]));
            }
            stream.extend(client_frame(0x80, b));
            expected.push(Incoming::Text(text));
            stream.extend(client_frame(0x8A, b""));
            expected.push(Incoming::Pong);
        }
        let mut decoder = Decoder::new(1 << 20);
        let (mut buf, mut items, mut at) = (Vec::new(), Vec::new(), 0);
        while at < stream.len() {
            let n = rng.random_range(1..5_000).min(stream.len() - at);
            buf.extend_from_slice(&stream[at..at + n]);
            at += n;
            while let Some(item) = decoder.decode(&mut buf).unwrap() {
                items.push(item);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(items, expected);
        // Random bytes: items, an error or a wait for more, never a panic.
        for _ in 0..2_000 {
            let mut junk: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            let mut decoder = Decoder::new(1024);
            while let Ok(Some(_)) = decoder.decode(&mut junk) {}
        }
    }

    /// Raw deflate as a client sends it: flushed, the 4-byte tail removed.
    fn deflated(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.flush().unwrap();
        let mut out = encoder.get_ref().clone();
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn compressed_messages_inflate_only_once_negotiated() {
        let text = "hello ".repeat(50);
        let wire = deflated(text.as_bytes());
        // RSV1 without the extension: a protocol error (1002).
        let mut buf = client_frame(0xC1, &wire);
        let err = Decoder::new(1000).decode(&mut buf).unwrap_err();
        assert_eq!(err, FrameError::Protocol("reserved bits set"));
        assert_eq!(err.close_code(), CloseCode::ProtocolViolation);
        // Negotiated: whole, in fragments (RSV1 on the first only), and plain beside it.
        let mut decoder = Decoder::new(1000);
        decoder.inflate();
        let (a, b) = wire.split_at(wire.len() / 2);
        let mut buf = client_frame(0xC1, &wire);
        buf.extend(client_frame(0x41, a));
        buf.extend(client_frame(0x80, b));
        buf.extend(client_frame(0x81, b"plain"));
        let items = decode_all(&mut decoder, buf).unwrap();
        assert_eq!(
            items,
            [
                Incoming::Text(text.clone()),
                Incoming::Fragment,
                Incoming::Text(text.clone()),
                Incoming::Text("plain".into()),
            ]
        );
        // RSV1 on a continuation or a control frame, RSV2 always.
        for (first, rest) in [(0x41, 0xC0), (0x81, 0xC9)] {
            let mut buf = client_frame(first, b"x");
            buf.extend(client_frame(rest, b""));
            let mut decoder = Decoder::new(1000);
            decoder.inflate();
            let got = decode_all(&mut decoder, buf);
            assert_eq!(
                got,
                Err(FrameError::Protocol(
                    "RSV1 on a control or continuation frame"
                ))
            );
        }
        let mut decoder = Decoder::new(1000);
        decoder.inflate();
        let got = decoder.decode(&mut client_frame(0xA1, b"x"));
        assert_eq!(got, Err(FrameError::Protocol("reserved bits set")));
        // Past the limit once inflated: 1009; not deflate at all: 1007.
        let mut decoder = Decoder::new(text.len() - 1);
        decoder.inflate();
        let got = decoder.decode(&mut client_frame(0xC1, &wire));
        assert_eq!(got, Err(FrameError::TooBig));
        let mut decoder = Decoder::new(1000);
        decoder.inflate();
        let got = decoder.decode(&mut client_frame(0xC1, &[0xff; 8]));
        assert_eq!(got, Err(FrameError::BadCompression));
        assert_eq!(
            FrameError::BadCompression.close_code(),
            CloseCode::InvalidPayload
        );
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        assert_eq!(Header::new(TEXT, 0).as_bytes(), [0x81, 0]);
        assert_eq!(Header::new(TEXT, 125).as_bytes(), [0x81, 125]);
        assert_eq!(Header::new(TEXT, 126).as_bytes(), [0x81, 126, 0, 126]);
        assert_eq!(Header::new(PING, 65535).as_bytes(), [0x89, 126, 255, 255]);
        assert_eq!(
            Header::new(TEXT, 65536).as_bytes(),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn close_frames_cut_long_reasons_at_a_character_boundary() {
        assert_eq!(&close(1000, "")[..], [0x88, 2, 0x03, 0xE8]);
        let long = "é".repeat(100);
        let frame = close(4000, &long);
        assert_eq!(
            frame.len(),
            2 + 2 + 122,
            "122 bytes of reason: 61 whole characters"
        );
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn a_frame_split_across_reads_decodes_once_complete() {
        let mut decoder = Decoder::new(1 << 20);
        let text = "x".repeat(300);
        let frame = client_frame(0x81, text.as_bytes());
        let mut buf = Vec::new();
        for chunk in frame.chunks(7) {
            assert_eq!(decoder.decode(&mut buf), Ok(None));
            buf.extend_from_slice(chunk);
        }
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Incoming::Text(text))));
        assert!(buf.is_empty());
    }

    #[test]
    fn fragments_join_and_control_frames_may_come_between_them() {
        let mut decoder = Decoder::new(1 << 20);
        let mut buf = client_frame(0x01, b"hel");
        buf.extend(client_frame(0x89, b"hb"));
        buf.extend(client_frame(0x00, b"lo "));
        buf.extend(client_frame(0x80, "wörld".as_bytes()));
        buf.extend(client_frame(0x82, &[0, 1, 2]));
        buf.extend(client_frame(0x8A, b""));
        buf.extend(client_frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e']));
        let items = decode_all(&mut decoder, buf).unwrap();
        assert_eq!(
            items,
            [
                Incoming::Fragment,
                Incoming::Ping(b"hb".to_vec()),
                Incoming::Fragment,
                Incoming::Text("hello wörld".into()),
                Incoming::Binary(vec![0, 1, 2]),
                Incoming::Pong,
                Incoming::Close(Some(1000)),
            ]
        );
    }

    #[test]
    fn invalid_utf8_fails_fast_within_a_frame_and_across_fragments() {
        // Autobahn 6.4.1: a bad fragment fails before the message's last fragment is sent.
        let mut decoder = Decoder::new(1 << 20);
        let mut buf = client_frame(0x01, "κόσμε".as_bytes());
        buf.extend(client_frame(0x00, &[0xF4, 0x90, 0x80, 0x80]));
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Incoming::Fragment)));
        assert_eq!(decoder.decode(&mut buf), Err(FrameError::InvalidUtf8));
        // Autobahn 6.4.3: the bad byte fails while the rest of its frame is still to come, and
        // `F4 90` fails at once, without waiting for the character it cannot begin.
        let mut payload = "κόσμε".as_bytes().to_vec();
        payload.extend([0xF4, 0x90, 0x80, 0x80]);
        payload.extend(b"edited");
        let frame = client_frame(0x81, &payload);
        let bad_at = frame.len() - payload.len() + "κόσμε".len() + 2;
        let mut decoder = Decoder::new(1 << 20);
        let mut buf = frame[..bad_at - 1].to_vec();
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.push(frame[bad_at - 1]);
        assert_eq!(decoder.decode(&mut buf), Err(FrameError::InvalidUtf8));
        // A character cut between fragments, and between reads, is whole again.
        let mut decoder = Decoder::new(1 << 20);
        let mut stream = client_frame(0x01, &[b'a', 0xE2, 0x82]);
        stream.extend(client_frame(0x80, &[0xAC, b'b']));
        let (mut buf, mut items) = (Vec::new(), Vec::new());
        for byte in stream {
            buf.push(byte);
            while let Some(item) = decoder.decode(&mut buf).unwrap() {
                items.push(item);
            }
        }
        assert_eq!(items, [Incoming::Fragment, Incoming::Text("a€b".into())]);
        // A message may not end inside a character.
        let mut buf = client_frame(0x01, b"a");
        buf.extend(client_frame(0x80, &[0xE2, 0x82]));
        let got = decode_all(&mut Decoder::new(1 << 20), buf);
        assert_eq!(got, Err(FrameError::InvalidUtf8));
        // A compressed message's frames are deflate data, not text: it is checked once inflated,
        // even when it arrives in pieces.
        let text = "κόσμε ".repeat(40);
        let wire = deflated(text.as_bytes());
        assert!(std::str::from_utf8(&wire).is_err());
        let mut decoder = Decoder::new(1 << 20);
        decoder.inflate();
        let (a, b) = wire.split_at(wire.len() / 2);
        let mut stream = client_frame(0x41, a);
        stream.extend(client_frame(0x80, b));
        let (mut buf, mut items) = (Vec::new(), Vec::new());
        for byte in stream {
            buf.push(byte);
            while let Some(item) = decoder.decode(&mut buf).unwrap() {
                items.push(item);
            }
        }
        assert_eq!(items, [Incoming::Fragment, Incoming::Text(text)]);
    }

    #[test]
    fn oversized_frames_are_refused_from_their_header_alone() {
        let mut decoder = Decoder::new(100);
        // Only the header of a 101-byte frame: refused before its payload arrives.
        let mut buf = client_frame(0x81, &[b'a'; 101])[..6].to_vec();
        assert_eq!(decoder.decode(&mut buf), Err(FrameError::TooBig));
        // Two fragments under the limit that together pass it.
        let mut decoder = Decoder::new(150);
        let mut buf = client_frame(0x01, &[b'a'; 100]);
        buf.extend(client_frame(0x80, &[b'a'; 51]));
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Incoming::Fragment)));
        assert_eq!(decoder.decode(&mut buf), Err(FrameError::TooBig));
        // A 64-bit length beyond any buffer.
        let mut buf = vec![
            0x81, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4,
        ];
        assert_eq!(Decoder::new(100).decode(&mut buf), Err(FrameError::TooBig));
    }

    #[test]
    fn framing_violations_name_their_close_code() {
        let cases: [(Vec<u8>, FrameError); 10] = [
            (
                vec![0x81, 0x00],
                FrameError::Protocol("client frames must be masked"),
            ),
            (
                client_frame(0xC1, b"x"),
                FrameError::Protocol("reserved bits set"),
            ),
            (
                client_frame(0x83, b"x"),
                FrameError::Protocol("unknown opcode"),
            ),
            (
                client_frame(0x80, b"x"),
                FrameError::Protocol("continuation outside a message"),
            ),
            (
                client_frame(0x09, b""),
                FrameError::Protocol("fragmented control frame"),
            ),
            (
                client_frame(0x89, &[0; 126]),
                FrameError::Protocol("control frame over 125 bytes"),
            ),
            (
                client_frame(0x88, &[3]),
                FrameError::Protocol("close payload of one byte"),
            ),
            (
                client_frame(0x88, &[0x03, 0xED]),
                FrameError::Protocol("close code a peer may not send"),
            ),
            (
                client_frame(0x88, &[0x03, 0xE8, 0xFF]),
                FrameError::InvalidUtf8,
            ),
            (client_frame(0x81, &[0xC3, 0x28]), FrameError::InvalidUtf8),
        ];
        for (mut buf, expected) in cases {
            let got = Decoder::new(1000).decode(&mut buf);
            assert_eq!(got, Err(expected));
        }
        let mut buf = client_frame(0x01, b"a");
        buf.extend(client_frame(0x81, b"b"));
        assert_eq!(
            decode_all(&mut Decoder::new(1000), buf),
            Err(FrameError::Protocol("new message inside a fragmented one"))
        );
        assert_eq!(FrameError::TooBig.close_code(), CloseCode::TooBig);
        assert_eq!(
            FrameError::InvalidUtf8.close_code(),
            CloseCode::InvalidPayload
        );
        assert_eq!(
            FrameError::Protocol("x").close_code(),
            CloseCode::ProtocolViolation
        );
    }
}
