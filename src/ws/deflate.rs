//! permessage-deflate (RFC 7692): what the handshake agrees to, and the compression and
//! inflation of messages, without I/O.
//!
//! The server always asks `client_no_context_takeover`, which RFC 7692 §7.1.1.2 lets it ask of
//! any client: every client message then inflates on its own, through a decompressor pooled per
//! thread, and no socket keeps inflate state. What the server sends depends on the mode agreed:
//! - shared (`server_no_context_takeover`): each message compressed on its own, so a room frame
//!   is compressed once per node and the same bytes serve every member (see
//!   [`crate::session::Frame`]); compressors are pooled per thread, no socket keeps one.
//! - context: a socket's messages go through one compressor with a small window
//!   ([`context::ContextEncoder`], which holds only that window), made when the socket sends and
//!   dropped after `compression.idle_ms` without sending. A fresh compressor never refers to
//!   earlier messages, so the client's decompressor, which keeps its window, stays valid across
//!   the drop.
//!
//! Browser and library behaviour this relies on is in docs/protocol.md (compression).

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use thiserror::Error;
use tokio::time::Instant;

use crate::config::{Compression, CompressionMode};
use context::ContextEncoder;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";
/// What a flushed deflate block ends with; RFC 7692 §7.2.1 drops it from the wire and the
/// receiver puts it back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The window every shared compression uses, and every inflation.
const MAX_WINDOW_BITS: u8 = 15;
/// Output grows by at most this much per inflate step, so a bomb is stopped within one step of
/// the limit.
const INFLATE_STEP: usize = 16 * 1024;

/// One `permessage-deflate` offer from a client, its parameters checked (§7.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// The largest window the client lets the server compress with, if it limits it.
    pub server_max_window_bits: Option<u8>,
    /// The client would honour a `client_max_window_bits` in the answer (and its value, if it
    /// gave one).
    pub client_max_window_bits: Option<Option<u8>>,
}

/// What the server agreed to for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// `Some(bits)`: context takeover, compressing with a window of `bits`; `None`: every
    /// message compressed on its own.
    pub context_bits: Option<u8>,
    /// The largest window the client lets the server use (15 when it set no limit). A shared
    /// compression (window 15) may go to such a client only if the message is no longer than
    /// that window: no back-reference in it can then reach further.
    pub server_window_bits: u8,
    /// Whether the answer states `server_max_window_bits`.
    announce_window: bool,
    /// Settings from `[compression]`.
    pub level: u32,
    pub min_bytes: usize,
    /// Context mode: a compressor idle this long is dropped.
    pub idle: std::time::Duration,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the answer.
    pub fn response(&self) -> String {
        let mut answer = String::from(EXTENSION);
        if self.context_bits.is_none() {
            answer.push_str("; server_no_context_takeover");
        }
        answer.push_str("; client_no_context_takeover");
        if self.announce_window {
            let bits = self.context_bits.unwrap_or(self.server_window_bits);
            answer.push_str(&format!("; server_max_window_bits={bits}"));
        }
        answer
    }
}

/// Picks the first acceptable `permessage-deflate` offer from the `Sec-WebSocket-Extensions`
/// header values (in the client's order of preference), or none: compression off, no such
/// offer, or none valid. A bad offer is declined, never a reason to fail the handshake
/// (RFC 7692 §5: the server declines what it cannot accept).
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    config: &Compression,
) -> Option<Agreed> {
    if !config.enabled {
        return None;
    }
    let offer = headers
        .into_iter()
        .flat_map(split_unquoted(','))
        .find_map(|element| parse_offer(element).ok().flatten())?;
    let server_window_bits = offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
    // zlib cannot compress with a window of 8 bits: such a client gets messages compressed on
    // their own, and only those short enough for its window (see `Agreed::server_window_bits`).
    let context = config.mode == CompressionMode::Context
        && !offer.server_no_context_takeover
        && server_window_bits >= 9;
    let context_bits = context.then(|| config.window_bits.min(server_window_bits));
    Some(Agreed {
        context_bits,
        server_window_bits,
        announce_window: context || offer.server_max_window_bits.is_some(),
        level: config.level,
        min_bytes: config.min_bytes,
        idle: config.idle(),
    })
}

/// Why an offer was declined.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BadOffer {
    #[error("malformed extension syntax")]
    Syntax,
    #[error("unknown parameter")]
    Unknown,
    #[error("parameter given twice")]
    Duplicate,
    #[error("invalid parameter value")]
    Value,
}

/// One element of the extension list: `Ok(None)` if it is another extension.
pub fn parse_offer(element: &str) -> Result<Option<Offer>, BadOffer> {
    let mut parts = split_unquoted(';')(element);
    let name = parts.next().unwrap_or_default();
    if !is_token(name) {
        return Err(BadOffer::Syntax);
    }
    if !name.eq_ignore_ascii_case(EXTENSION) {
        return Ok(None);
    }
    let mut offer = Offer::default();
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key.trim(), Some(unquote(value.trim())?)),
            None => (param, None),
        };
        if !is_token(key) {
            return Err(BadOffer::Syntax);
        }
        match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => {
                flag(&mut offer.server_no_context_takeover, value.as_deref())?;
            }
            "client_no_context_takeover" => {
                flag(&mut offer.client_no_context_takeover, value.as_deref())?;
            }
            "server_max_window_bits" => {
                let bits = window_bits(value.as_deref().ok_or(BadOffer::Value)?)?;
                set_once(&mut offer.server_max_window_bits, bits)?;
            }
            "client_max_window_bits" => {
                let bits = value.as_deref().map(window_bits).transpose()?;
                set_once(&mut offer.client_max_window_bits, bits)?;
            }
            _ => return Err(BadOffer::Unknown),
        }
    }
    Ok(Some(offer))
}

fn flag(seen: &mut bool, value: Option<&str>) -> Result<(), BadOffer> {
    if value.is_some() {
        return Err(BadOffer::Value);
    }
    if std::mem::replace(seen, true) {
        return Err(BadOffer::Duplicate);
    }
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), BadOffer> {
    if slot.replace(value).is_some() {
        return Err(BadOffer::Duplicate);
    }
    Ok(())
}

/// §7.1.2.1: a decimal integer 8 to 15, without leading zeros.
fn window_bits(value: &str) -> Result<u8, BadOffer> {
    let bits: u8 = match value.as_bytes() {
        [b'8'..=b'9'] | [b'1', b'0'..=b'5'] => value.parse().map_err(|_| BadOffer::Value)?,
        _ => return Err(BadOffer::Value),
    };
    Ok(bits)
}

/// A `token` of RFC 7230 §3.2.6.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// A token, or a quoted-string's content with its escapes resolved.
fn unquote(value: &str) -> Result<String, BadOffer> {
    let Some(inner) = value.strip_prefix('"') else {
        return if is_token(value) {
            Ok(value.to_owned())
        } else {
            Err(BadOffer::Syntax)
        };
    };
    let inner = inner.strip_suffix('"').ok_or(BadOffer::Syntax)?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or(BadOffer::Syntax)?),
            '"' => return Err(BadOffer::Syntax),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Splits on `sep` outside quoted strings, trimming each part and skipping empty ones (a list
/// may have empty elements, RFC 7230 §7).
fn split_unquoted(sep: char) -> impl Fn(&str) -> std::vec::IntoIter<&str> {
    move |s: &str| {
        let mut parts = Vec::new();
        let (mut start, mut quoted, mut escaped) = (0, false, false);
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c == sep && !quoted => {
                    parts.push(s[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(s[start..].trim());
        parts.retain(|p| !p.is_empty());
        parts.into_iter()
    }
}

thread_local! {
    /// This thread's compressor for messages compressed on their own, with its level.
    static SHARED: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    /// This thread's decompressor for client messages.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `text` compressed on its own (no context, window 15) at `level`, the tail dropped; `None`
/// if that is not shorter. Uses this thread's pooled compressor.
pub fn compress_alone(text: &[u8], level: u32) -> Option<Bytes> {
    let out = SHARED.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compress = match &mut *cell {
            Some((at, compress)) if *at == level => {
                compress.reset();
                compress
            }
            slot => {
                let fresh = Compress::new_with_window_bits(
                    flate2::Compression::new(level),
                    false,
                    MAX_WINDOW_BITS,
                );
                &mut slot.insert((level, fresh)).1
            }
        };
        compress_flush(compress, text)
    })?;
    (out.len() < text.len()).then(|| Bytes::from(out))
}

/// Compresses `text` as one message through `compress`, which keeps its window for the next
/// (context takeover); the tail dropped. `None` only if zlib failed.
pub fn compress_flush(compress: &mut Compress, text: &[u8]) -> Option<Vec<u8>> {
    // Deflate grows incompressible input by 5 bytes per stored block, plus the flush's.
    let mut out = Vec::with_capacity(text.len() + text.len() / 1024 * 5 + 16);
    let start = compress.total_in();
    loop {
        let done = usize::try_from(compress.total_in() - start).ok()?;
        if out.capacity() - out.len() < 64 {
            out.reserve(1024);
        }
        match compress.compress_vec(&text[done..], &mut out, FlushCompress::Sync) {
            Ok(Status::Ok | Status::BufError) => {}
            Ok(Status::StreamEnd) | Err(_) => return None,
        }
        let done = usize::try_from(compress.total_in() - start).ok()?;
        // A sync flush has ended when all input is in and it left room unused.
        if done == text.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    Some(out)
}

/// Why a client's compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InflateError {
    #[error("inflated message larger than the limit")]
    TooBig,
    #[error("invalid compressed data")]
    Corrupt,
}

/// Inflates one client message compressed on its own, stopping as soon as the output passes
/// `max` bytes: a message of a few KiB that inflates to gigabytes costs at most `max` plus one
/// step of memory. Uses this thread's pooled decompressor.
pub fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let inflater = cell.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        inflater.reset(false);
        let mut out = Vec::new();
        let result = inflate_into(inflater, data, max, &mut out)
            .and_then(|()| inflate_into(inflater, &TAIL, max, &mut out));
        if result.is_err() {
            // A failed stream leaves the decompressor in an error state: start clean next time.
            *cell = None;
        }
        result.map(|()| out)
    })
}

fn inflate_into(
    inflater: &mut Decompress,
    input: &[u8],
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), InflateError> {
    let start = inflater.total_in();
    let consumed = |inflater: &Decompress| (inflater.total_in() - start) as usize;
    loop {
        if out.len() == out.capacity() {
            // Room for at most one byte past the limit: seeing it is what proves the excess.
            let room = INFLATE_STEP.min((max + 1).saturating_sub(out.len()));
            if room == 0 {
                return Err(InflateError::TooBig);
            }
            out.reserve_exact(room);
        }
        let (done, len) = (consumed(inflater), out.len());
        let status = inflater
            .decompress_vec(&input[done..], out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        if out.len() > max {
            return Err(InflateError::TooBig);
        }
        let progress = consumed(inflater) > done || out.len() > len;
        match status {
            // The client ended its stream with a final block: what follows is ignored.
            Status::StreamEnd => return Ok(()),
            // All input taken and room left over: everything it holds is out.
            _ if consumed(inflater) == input.len() && out.len() < out.capacity() => {
                return Ok(());
            }
            _ if !progress && out.len() < out.capacity() => return Err(InflateError::Corrupt),
            _ => {}
        }
    }
}

/// A socket's compression of what it sends, once negotiated: nothing held in shared mode; in
/// context mode, the compressor while the socket is busy.
#[derive(Debug)]
pub struct Deflater {
    agreed: Agreed,
    /// Context mode: the compressor and when it last compressed.
    context: Option<(ContextEncoder, Instant)>,
}

impl Deflater {
    pub fn new(agreed: Agreed) -> Self {
        Self {
            agreed,
            context: None,
        }
    }

    pub fn agreed(&self) -> &Agreed {
        &self.agreed
    }

    /// Whether `len` bytes are worth compressing.
    pub fn wants(&self, len: usize) -> bool {
        len >= self.agreed.min_bytes && len > 0
    }

    /// Whether a compression on its own (window 15) may be sent to this client as it is.
    pub fn may_use_alone(&self, len: usize) -> bool {
        let bits = self.agreed.server_window_bits;
        self.agreed.context_bits.is_none() && (bits == MAX_WINDOW_BITS || len <= 1 << bits)
    }

    /// Context mode: `text` through this socket's compressor (created if it was dropped).
    /// Always compressed: the compressor has taken the text into its window, so the client must
    /// see it compressed too. `None` only outside context mode.
    pub fn compress_in_context(&mut self, text: &[u8], now: Instant) -> Option<Bytes> {
        let bits = self.agreed.context_bits?;
        let level = self.agreed.level;
        let (encoder, last) = self.context.get_or_insert_with(|| {
            metrics::counter!("roomcast_deflate_compressors_total").increment(1);
            (ContextEncoder::new(bits, level), now)
        });
        *last = now;
        Some(Bytes::from(encoder.compress(text)))
    }

    /// When the context compressor goes idle (`compression.idle_ms`), if there is one.
    pub fn idle_at(&self) -> Option<Instant> {
        self.context
            .as_ref()
            .map(|(_, last)| *last + self.agreed.idle)
    }

    /// Drops the context compressor if it is idle by `now`.
    pub fn drop_if_idle(&mut self, now: Instant) {
        if self.idle_at().is_some_and(|at| at <= now) {
            self.context = None;
        }
    }

    /// Whether the socket holds a compressor now.
    pub fn holds_compressor(&self) -> bool {
        self.context.is_some()
    }
}

mod context;
#[cfg(test)]
mod tests;
