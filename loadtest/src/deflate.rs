//! The client side of RFC 7692 permessage-deflate, as far as a load tester needs it: the offer
//! it sends, reading the server's answer, and [`Inflater`], which turns the server's frames
//! (compressed messages marked RSV1, possibly fragmented, control frames in between) into the
//! plain frames tungstenite reads (tungstenite 0.29 has no deflate support and refuses RSV1).
//! The tester never compresses what it sends: an uncompressed message is always allowed.
//! No I/O.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};

/// The `Sec-WebSocket-Extensions` offer. `client_no_context_takeover` costs nothing (the
/// tester never compresses) and lets the server answer it; `client_max_window_bits` without a
/// value only says the server may name one. The server decides about its own context.
pub const OFFER: &str = "permessage-deflate; client_no_context_takeover; client_max_window_bits";

/// What the server's answer agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// Every message is compressed on its own: one decompressor per worker thread, reset per
    /// message, serves all connections. Without it the server keeps its context across
    /// messages, and so must this connection (a decompressor of its own).
    pub server_no_context_takeover: bool,
    /// The server's window (`server_max_window_bits=N`): a connection's own decompressor then
    /// needs a window of only 2^N bytes instead of 32 KiB.
    pub server_max_window_bits: Option<u8>,
}

/// Reads the handshake response head (status line and headers) and says whether the server
/// accepted permessage-deflate, and with which context rule.
pub fn agreed(head: &[u8]) -> Option<Agreed> {
    let head = std::str::from_utf8(head).ok()?;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
            continue;
        }
        for extension in value.split(',') {
            let mut params = extension.split(';').map(str::trim);
            if params.next() == Some("permessage-deflate") {
                let mut agreed = Agreed {
                    server_no_context_takeover: false,
                    server_max_window_bits: None,
                };
                for p in params {
                    let (name, value) = p.split_once('=').unwrap_or((p, ""));
                    match name.trim() {
                        "server_no_context_takeover" => agreed.server_no_context_takeover = true,
                        "server_max_window_bits" => {
                            let bits = value.trim().trim_matches('"').parse::<u8>().ok();
                            agreed.server_max_window_bits = bits.filter(|b| (8..=15).contains(b));
                        }
                        _ => {}
                    }
                }
                return Some(agreed);
            }
        }
    }
    None
}

/// Why the server's frames could not be turned into plain ones. The socket reports it as an
/// I/O error, so the connection counts as broken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    #[error("permessage-deflate: a frame of {0} bytes is over the message size limit")]
    FrameTooBig(u64),
    #[error("permessage-deflate: a message inflates past the {0}-byte limit")]
    MessageTooBig(usize),
    #[error("permessage-deflate: RSV1 on a control or continuation frame")]
    MisplacedRsv1,
    #[error("permessage-deflate: a new data frame inside a fragmented message")]
    Interleaved,
    #[error("permessage-deflate: corrupt compressed data")]
    Corrupt,
}

/// The trailer every compressed message had removed (RFC 7692 §7.2.1), put back to inflate.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Buffers above this are given back once emptied, so a burst does not stay in every socket.
const KEEP_CAPACITY: usize = 16 * 1024;

thread_local! {
    /// The decompressor of every no-context connection on this thread (a worker's users all
    /// run on one): reset per message, so sharing it is exact.
    static SHARED: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Server frame bytes in, plain frame bytes out.
pub struct Inflater {
    /// This connection's own decompressor when the server keeps its context.
    context: Option<Box<Decompress>>,
    max_message: usize,
    /// Bytes read and not yet a whole frame.
    input: Vec<u8>,
    /// Compressed payload of the message being assembled, and its opcode.
    message: Vec<u8>,
    opcode: Option<u8>,
    /// Inside an uncompressed fragmented message, whose frames pass through untouched.
    plain_fragments: bool,
    /// Plain frames ready for tungstenite, from `out_pos` on.
    output: Vec<u8>,
    out_pos: usize,
}

/// One parsed frame header.
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    len: usize,
    payload_len: usize,
}

impl Inflater {
    /// `max_message`: the largest message (inflated) or frame accepted, as tungstenite's own.
    pub fn new(agreed: Agreed, max_message: usize) -> Self {
        Self {
            context: (!agreed.server_no_context_takeover).then(|| {
                // zlib inflates raw deflate with windows of 9 to 15 bits; a larger window than
                // the server's is always enough.
                let bits = agreed.server_max_window_bits.unwrap_or(15).clamp(9, 15);
                Box::new(Decompress::new_with_window_bits(false, bits))
            }),
            max_message,
            input: Vec::new(),
            message: Vec::new(),
            opcode: None,
            plain_fragments: false,
            output: Vec::new(),
            out_pos: 0,
        }
    }

    /// Takes bytes read off the socket and turns every whole frame among them into output.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), InflateError> {
        self.input.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(h) = parse_header(&self.input[at..], self.max_message)? {
            let frame = at..at + h.len + h.payload_len;
            if frame.end > self.input.len() {
                break;
            }
            let payload = frame.start + h.len..frame.end;
            let input = std::mem::take(&mut self.input);
            let result = self.frame(&h, &input[frame.clone()], &input[payload]);
            self.input = input;
            result?;
            at = frame.end;
        }
        self.input.drain(..at);
        shrink(&mut self.input);
        Ok(())
    }

    /// Plain bytes ready to read.
    pub fn pending(&self) -> &[u8] {
        &self.output[self.out_pos..]
    }

    /// Marks `n` bytes of [`pending`](Self::pending) as read.
    pub fn consume(&mut self, n: usize) {
        self.out_pos += n;
        if self.out_pos == self.output.len() {
            self.output.clear();
            self.out_pos = 0;
            shrink(&mut self.output);
        }
    }

    fn frame(&mut self, h: &Header, raw: &[u8], payload: &[u8]) -> Result<(), InflateError> {
        let compressing = self.opcode.is_some();
        match h.opcode {
            // Control frames may come between fragments; they are never compressed.
            8.. if h.rsv1 => Err(InflateError::MisplacedRsv1),
            0 if h.rsv1 => Err(InflateError::MisplacedRsv1),
            1 | 2 if compressing || self.plain_fragments => Err(InflateError::Interleaved),
            1 | 2 if h.rsv1 => {
                self.opcode = Some(h.opcode);
                self.append(payload, h.fin)
            }
            0 if compressing => self.append(payload, h.fin),
            _ => {
                if matches!(h.opcode, 0..=2) {
                    self.plain_fragments = !h.fin;
                }
                // Anything else tungstenite judges for itself.
                self.output.extend_from_slice(raw);
                Ok(())
            }
        }
    }

    fn append(&mut self, payload: &[u8], fin: bool) -> Result<(), InflateError> {
        if self.message.len() + payload.len() > self.max_message {
            return Err(InflateError::FrameTooBig(
                (self.message.len() + payload.len()) as u64,
            ));
        }
        self.message.extend_from_slice(payload);
        if !fin {
            return Ok(());
        }
        self.message.extend_from_slice(&TAIL);
        let opcode = self.opcode.take().unwrap_or(1);
        let mut plain = Vec::with_capacity((self.message.len() * 4).min(self.max_message) + 64);
        let max = self.max_message;
        let result = match self.context.as_deref_mut() {
            Some(d) => inflate(d, &self.message, max, &mut plain),
            None => SHARED.with_borrow_mut(|d| {
                d.reset(false);
                inflate(d, &self.message, max, &mut plain)
            }),
        };
        self.message.clear();
        shrink(&mut self.message);
        result?;
        write_header(&mut self.output, opcode, plain.len());
        self.output.extend_from_slice(&plain);
        Ok(())
    }
}

/// Inflates `data` (a message with its trailer) into `out`, never past `max` bytes.
fn inflate(
    d: &mut Decompress,
    data: &[u8],
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), InflateError> {
    let mut pos = 0;
    loop {
        if out.len() == out.capacity() {
            if out.len() >= max {
                return Err(InflateError::MessageTooBig(max));
            }
            out.reserve(out.len().clamp(256, max - out.len()));
        }
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(&data[pos..], out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        pos += (d.total_in() - in_before) as usize;
        let progressed = d.total_in() != in_before || d.total_out() != out_before;
        let room_left = out.len() < out.capacity();
        if (pos == data.len() && room_left) || status == Status::StreamEnd {
            return Ok(());
        }
        if !progressed && room_left {
            return Err(InflateError::Corrupt);
        }
    }
}

/// The header at the start of `bytes`, if all of it is there.
fn parse_header(bytes: &[u8], max: usize) -> Result<Option<Header>, InflateError> {
    let [b0, b1, rest @ ..] = bytes else {
        return Ok(None);
    };
    let (extra, len7) = match b1 & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    if rest.len() < extra {
        return Ok(None);
    }
    let payload_len = len7.unwrap_or_else(|| {
        rest[..extra]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    });
    if payload_len > max as u64 {
        return Err(InflateError::FrameTooBig(payload_len));
    }
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        len: 2 + extra + mask,
        payload_len: payload_len as usize,
    }))
}

/// A final, unmasked server frame header for `len` payload bytes.
fn write_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

fn shrink(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// What a server sends: raw deflate, sync-flushed, trailer removed.
    fn compress(c: &mut Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
        assert_eq!(&out[out.len() - 4..], &TAIL);
        out.truncate(out.len() - 4);
        out
    }

    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, opcode, payload.len());
        out[0] = (out[0] & 0x7f) | if fin { 0x80 } else { 0 } | if rsv1 { 0x40 } else { 0 };
        out.extend_from_slice(payload);
        out
    }

    fn plain(opcode: u8, payload: &[u8]) -> Vec<u8> {
        frame(true, false, opcode, payload)
    }

    const NO_CONTEXT: Agreed = Agreed {
        server_no_context_takeover: true,
        server_max_window_bits: None,
    };

    #[test]
    fn reads_the_servers_answer() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n";
        assert_eq!(agreed(head), Some(NO_CONTEXT));
        let head = b"HTTP/1.1 101 OK\r\nsec-websocket-extensions: permessage-deflate;server_max_window_bits=10\r\n\r\n";
        assert_eq!(
            agreed(head),
            Some(Agreed {
                server_no_context_takeover: false,
                server_max_window_bits: Some(10),
            })
        );
        assert_eq!(
            agreed(b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n"),
            None
        );
        assert_eq!(
            agreed(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\r\n"),
            None
        );
    }

    #[test]
    fn inflates_compressed_messages_and_passes_the_rest() {
        let mut c = Compress::new(Compression::default(), false);
        let text = br#"{"type":"message","room":"r","data":{"pad":"xxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
        let z = compress(&mut c, text);
        c.reset();
        let mut wire = frame(true, true, 1, &z);
        wire.extend(plain(9, b"ping"));
        wire.extend(plain(1, b"plain"));
        let mut inf = Inflater::new(NO_CONTEXT, 1 << 20);
        // Byte by byte: frames split across reads are reassembled.
        for b in &wire {
            inf.feed(std::slice::from_ref(b)).unwrap();
        }
        let mut want = plain(1, text);
        want.extend(plain(9, b"ping"));
        want.extend(plain(1, b"plain"));
        assert_eq!(inf.pending(), &want[..]);
        inf.consume(want.len());
        assert!(inf.pending().is_empty());
    }

    #[test]
    fn fragments_with_a_control_frame_between_and_context_kept() {
        // The server's small window, as in `context` mode; the inflater's matches it.
        let mut c = Compress::new_with_window_bits(Compression::default(), false, 10);
        let line = br#"{"type":"message","room":"chat","data":{"text":"hello there, everyone"}}"#;
        let first = compress(&mut c, line);
        // The server keeps its context: the second message refers to the first.
        let second = compress(&mut c, line);
        assert!(second.len() < first.len());
        let mut inf = Inflater::new(
            Agreed {
                server_no_context_takeover: false,
                server_max_window_bits: Some(10),
            },
            1 << 20,
        );
        let (a, b) = first.split_at(first.len() / 2);
        let mut wire = frame(false, true, 1, a);
        wire.extend(plain(10, b""));
        wire.extend(frame(true, false, 0, b));
        wire.extend(frame(true, true, 1, &second));
        inf.feed(&wire).unwrap();
        let mut want = plain(10, b"");
        want.extend(plain(1, line));
        want.extend(plain(1, line));
        assert_eq!(inf.pending(), &want[..]);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut c = Compress::new(Compression::best(), false);
        let z = compress(&mut c, &vec![b'a'; 100_000]);
        let mut inf = Inflater::new(NO_CONTEXT, 10_000);
        assert_eq!(
            inf.feed(&frame(true, true, 1, &z)),
            Err(InflateError::MessageTooBig(10_000))
        );
        let mut inf = Inflater::new(NO_CONTEXT, 10_000);
        assert_eq!(
            inf.feed(&frame(true, true, 9, b"")),
            Err(InflateError::MisplacedRsv1)
        );
        assert_eq!(
            Inflater::new(NO_CONTEXT, 100).feed(&frame(true, true, 1, &[0xff; 20])),
            Err(InflateError::Corrupt)
        );
    }
}
