//! One upgraded connection's bytes: client frames in through the [`Decoder`], server frames
//! out with vectored writes straight from the encoded messages.
//!
//! Why not tungstenite's stream: it copies every outgoing frame into a write buffer per socket,
//! and that buffer keeps the largest size it ever reached. Under load those buffers were the
//! largest part of the node's memory (48 of 125 MB at saturation, docs/BENCHMARKS.md; the copy
//! itself was cheap, no CPU change was measurable). Here a queued frame is a reference to the
//! bytes every recipient shares plus a header of at most 10 bytes, and one `writev` sends a
//! batch. An idle socket holds no buffer at all: reads go through a buffer on the stack and
//! only a partial frame is kept.
//!
//! With permessage-deflate agreed ([`WebSocket::with_deflate`]), text frames are compressed as
//! they are queued: a room frame's compression is made by the first socket that needs it and
//! shared with the others ([`Frame`]); client messages are inflated by the decoder.
//!
//! A write never blocks the socket's task: [`WebSocket::next`] goes on with a pending write while
//! it waits for the client's next frame, and the socket notes since when a pending write has
//! made no progress, so the task can close a client whose window stays shut.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tungstenite::Utf8Bytes;

use super::deflate::{Agreed, Deflater, compress_alone};
use super::frame::{self, Decoder, FrameError, Header, Incoming};
use crate::protocol::CloseCode;
use crate::session::Frame;

/// Most bytes read in one system call (`socket.read_buffer_bytes` at most); the buffer lives on
/// the stack during the read only.
use crate::config::MAX_READ_BUFFER_BYTES as MAX_READ_CHUNK;
/// Most frames handed to one `writev`: two slices each, well under the kernel's 1,024.
const MAX_FRAMES_PER_WRITE: usize = 64;

/// Why reading ended.
#[derive(Debug, Error)]
pub enum RecvError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What [`WebSocket::next`] saw.
#[derive(Debug)]
pub enum Event {
    /// A message or control frame from the client, a read error, or `None` at end of stream.
    Received(Option<Result<Incoming, RecvError>>),
    /// Everything queued has been written.
    Flushed,
}

/// A frame waiting to be written.
enum Out {
    /// A text message: its header is built when it is written.
    Text(Utf8Bytes),
    /// A binary message (only the conformance echo sends these, see [`super::echo`]).
    Binary(Bytes),
    /// A text message compressed (permessage-deflate), possibly shared with other sockets.
    Compressed(Bytes),
    /// A binary message compressed (the conformance echo).
    CompressedBinary(Bytes),
    /// A control frame, header included.
    Control(Bytes),
}

impl Out {
    fn header(&self) -> Option<Header> {
        match self {
            Self::Text(text) => Some(Header::new(frame::TEXT, text.len())),
            Self::Binary(data) => Some(Header::new(frame::BINARY, data.len())),
            Self::Compressed(bytes) => Some(Header::compressed(frame::TEXT, bytes.len())),
            Self::CompressedBinary(bytes) => Some(Header::compressed(frame::BINARY, bytes.len())),
            Self::Control(_) => None,
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Binary(bytes)
            | Self::Compressed(bytes)
            | Self::CompressedBinary(bytes)
            | Self::Control(bytes) => bytes,
        }
    }

    fn wire_len(&self) -> usize {
        self.header().map_or(0, |h| h.as_bytes().len()) + self.body().len()
    }
}

/// The server's end of one WebSocket connection. Reading and writing are separate calls on
/// the same value, so the socket's task can wait for either under one `select!`; both are
/// cancel safe, since all progress is kept here. `Io` is the upgraded connection, or in unit
/// tests a pipe.
pub struct WebSocket<Io = TokioIo<Upgraded>> {
    io: Io,
    decoder: Decoder,
    /// Bytes read but not yet decoded (a partial frame); unallocated between frames.
    unread: Vec<u8>,
    read_chunk: usize,
    /// Frames to write, oldest first; the first may be partly written.
    pending: VecDeque<Out>,
    /// Bytes of the first pending frame already written.
    written: usize,
    write_chunk: usize,
    /// Since when the pending write has been waiting on a full socket with no byte written.
    stalled_at: Option<Instant>,
    /// permessage-deflate, when agreed; boxed so a socket without it pays one pointer.
    deflate: Option<Box<Deflater>>,
}

impl WebSocket {
    /// `read_chunk`: most bytes per read (at most [`MAX_READ_CHUNK`]); `write_chunk`: most
    /// bytes per write, at least one whole frame; `max_message`: the size limit of a message, whole or in fragments.
    pub fn new(io: Upgraded, read_chunk: usize, write_chunk: usize, max_message: usize) -> Self {
        Self::over(TokioIo::new(io), read_chunk, write_chunk, max_message)
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> WebSocket<Io> {
    fn over(io: Io, read_chunk: usize, write_chunk: usize, max_message: usize) -> Self {
        Self {
            io,
            decoder: Decoder::new(max_message),
            unread: Vec::new(),
            read_chunk: read_chunk.clamp(1, MAX_READ_CHUNK),
            pending: VecDeque::new(),
            written: 0,
            write_chunk,
            stalled_at: None,
            deflate: None,
        }
    }

    /// Turns on permessage-deflate as the handshake agreed: compressed client messages are
    /// inflated, and text sent from now on is compressed per `agreed`.
    pub fn with_deflate(mut self, agreed: Option<Agreed>) -> Self {
        if let Some(agreed) = agreed {
            self.decoder.inflate();
            self.deflate = Some(Box::new(Deflater::new(agreed)));
        }
        self
    }

    /// Context mode: when this socket's compressor will have been idle for
    /// `compression.idle_ms`, if it holds one (the connection's timer wakes then to drop it).
    pub fn compressor_idle_at(&self) -> Option<Instant> {
        self.deflate.as_deref().and_then(Deflater::idle_at)
    }

    /// Context mode: drops the compressor if it is idle by `now`; the next message starts a
    /// fresh one.
    pub fn drop_idle_compressor(&mut self, now: Instant) {
        if let Some(deflater) = self.deflate.as_deref_mut() {
            deflater.drop_if_idle(now);
        }
    }

    /// Whether this socket holds a compressor now (context mode, busy).
    pub fn holds_compressor(&self) -> bool {
        self.deflate
            .as_deref()
            .is_some_and(Deflater::holds_compressor)
    }

    /// The next message or control frame; `None` once the client closed the TCP connection.
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Result<Incoming, RecvError>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Goes on writing what is queued while waiting for the client's next frame: returns
    /// [`Event::Flushed`] once the queue is written, or what arrived. A write error is returned
    /// as a read error would be: the connection is gone either way. Cancel safe.
    pub async fn next(&mut self) -> Event {
        poll_fn(|cx| {
            if !self.pending.is_empty() {
                match self.poll_flush(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Event::Flushed),
                    Poll::Ready(Err(err)) => {
                        return Poll::Ready(Event::Received(Some(Err(err.into()))));
                    }
                    Poll::Pending => {}
                }
            }
            self.poll_recv(cx).map(Event::Received)
        })
        .await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, RecvError>>> {
        loop {
            match self.decoder.decode(&mut self.unread) {
                Ok(Some(item)) => {
                    if self.unread.is_empty() {
                        self.unread = Vec::new();
                    }
                    return Poll::Ready(Some(Ok(item)));
                }
                Ok(None) => {}
                Err(err) => return Poll::Ready(Some(Err(err.into()))),
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(None),
                Ok(_) => {}
                Err(err) => return Poll::Ready(Some(Err(err.into()))),
            }
        }
    }

    /// Reads once into a stack buffer and keeps what came; the count, 0 at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut chunk = [MaybeUninit::<u8>::uninit(); MAX_READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk[..self.read_chunk]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        self.unread.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    }

    /// Queues text frames to write, after anything queued before; compressed if compression
    /// was agreed and they are long enough (a shared frame's compression is computed once for
    /// every socket).
    pub fn queue_text(&mut self, frames: impl IntoIterator<Item = impl Into<Frame>>) {
        let Some(deflater) = self.deflate.as_deref_mut() else {
            let texts = frames.into_iter().map(|f| Out::Text(f.into().into_text()));
            self.pending.extend(texts);
            return;
        };
        // Counted once per batch, not per frame: a metric update per delivery would cost more
        // than the rest of queueing it.
        let mut saved = 0;
        for frame in frames {
            let frame = frame.into();
            let len = frame.len();
            let out = compress(deflater, frame);
            if let Out::Compressed(bytes) = &out {
                saved += len.saturating_sub(bytes.len());
            }
            self.pending.push_back(out);
        }
        if saved > 0 {
            metrics::counter!("roomcast_deflate_bytes_saved_total").increment(saved as u64);
        }
    }

    /// Queues a binary message, after anything queued before, compressed under the same rules
    /// as text when compression was agreed. Only the conformance echo sends binary.
    pub fn queue_binary(&mut self, data: Bytes) {
        let out = match self.deflate.as_deref_mut() {
            Some(deflater) if deflater.wants(data.len()) => {
                let compressed = if deflater.agreed().context_bits.is_some() {
                    deflater.compress_in_context(&data, Instant::now())
                } else if deflater.may_use_alone(data.len()) {
                    compress_alone(&data, deflater.agreed().level)
                } else {
                    None
                };
                compressed.map_or(Out::Binary(data), Out::CompressedBinary)
            }
            _ => Out::Binary(data),
        };
        self.pending.push_back(out);
    }

    /// Queues a whole control frame (see [`frame::control`], [`frame::close`]).
    pub fn queue_control(&mut self, frame: Bytes) {
        self.pending.push_back(Out::Control(frame));
    }

    /// Drops the queued frames that no byte of has been written yet: the connection is about
    /// to close without them. A partly written frame stays, so the stream remains well formed.
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.written > 0);
        self.pending.truncate(keep);
    }

    /// Writes everything queued. Cancel safe: what was written stays written, and the next
    /// call goes on from there.
    pub async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Writes what the socket takes now, without waiting: `Ok(true)` when everything queued is
    /// written, `Ok(false)` when the rest must wait for [`Self::next`] or [`Self::flush`] (which
    /// register the task's waker; this call registers none).
    pub fn flush_now(&mut self) -> io::Result<bool> {
        match self.poll_flush(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result.map(|()| true),
            Poll::Pending => Ok(false),
        }
    }

    /// The server's side of a close it starts (RFC 6455 §7.1.2): sends a close frame with
    /// `code`, then waits for the client's, so that the TCP close that follows is clean. Frames
    /// not yet started are dropped, since the client is not going to read them. Bound it with a
    /// timeout: a client may never answer.
    pub async fn close(&mut self, code: CloseCode, reason: &str) {
        self.discard_unstarted();
        self.queue_control(frame::close(code.code(), reason));
        if self.flush().await.is_err() {
            return;
        }
        while let Some(Ok(item)) = self.recv().await {
            if matches!(item, Incoming::Close(_)) {
                return;
            }
        }
    }

    /// Answers the client's close frame (§5.5.1): echoes its code, or none if it gave none, and
    /// writes the answer out; the caller then drops the connection, which is the server's to
    /// close first (§7.1.1). Bound it with a timeout.
    pub async fn answer_close(&mut self, code: Option<u16>) -> io::Result<()> {
        let reply = code.map_or_else(
            || frame::control(frame::CLOSE, &[]),
            |code| frame::close(code, ""),
        );
        self.discard_unstarted();
        self.queue_control(reply);
        self.flush().await
    }

    /// Whether frames are waiting to be written.
    pub fn writing(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Since when a pending write has made no progress, if it is stuck.
    pub fn stalled_since(&self) -> Option<Instant> {
        self.stalled_at.filter(|_| self.writing())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let Poll::Ready(n) = self.poll_write_some(cx)? else {
                // The clock is read only when a write has to wait, not on every write.
                self.stalled_at.get_or_insert_with(Instant::now);
                return Poll::Pending;
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.stalled_at = None;
            self.advance(n);
        }
        // A burst may have grown the queue; an idle socket should not keep it.
        if self.pending.capacity() > MAX_FRAMES_PER_WRITE {
            self.pending = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// One `writev` of up to [`MAX_FRAMES_PER_WRITE`] frames and about `write_chunk` bytes.
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut headers = [None; MAX_FRAMES_PER_WRITE];
        for (slot, out) in headers.iter_mut().zip(&self.pending) {
            *slot = out.header();
        }
        let mut slices = [IoSlice::new(&[]); 2 * MAX_FRAMES_PER_WRITE];
        let (mut count, mut bytes, mut skip) = (0, 0, self.written);
        for (out, header) in self.pending.iter().zip(&headers) {
            if bytes >= self.write_chunk {
                break;
            }
            let head = header.as_ref().map_or(&[][..], Header::as_bytes);
            // `skip` is what of the first frame is already written; later frames start whole.
            for part in [head, out.body()] {
                let from = skip.min(part.len());
                skip -= from;
                let part = &part[from..];
                if !part.is_empty() {
                    slices[count] = IoSlice::new(part);
                    count += 1;
                    bytes += part.len();
                }
            }
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count])
    }

    /// Counts `n` more bytes as written, dropping the frames that are now complete.
    fn advance(&mut self, n: usize) {
        let mut done = self.written + n;
        while let Some(out) = self.pending.front() {
            let len = out.wire_len();
            if done < len {
                break;
            }
            done -= len;
            self.pending.pop_front();
        }
        self.written = done;
    }
}

/// `frame` as it goes to a socket that agreed to compression.
fn compress(deflater: &mut Deflater, frame: Frame) -> Out {
    let len = frame.len();
    if !deflater.wants(len) {
        return Out::Text(frame.into_text());
    }
    let compressed = if deflater.agreed().context_bits.is_some() {
        let out = deflater.compress_in_context(frame.as_str().as_bytes(), Instant::now());
        metrics::counter!("roomcast_deflate_frames_total", "mode" => "context").increment(1);
        out
    } else if deflater.may_use_alone(len) {
        let level = deflater.agreed().level;
        frame.compressed(|text| {
            metrics::counter!("roomcast_deflate_frames_total", "mode" => "shared").increment(1);
            compress_alone(text, level)
        })
    } else {
        None
    };
    match compressed {
        Some(bytes) => Out::Compressed(bytes),
        None => Out::Text(frame.into_text()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    /// Splits what a server wrote into (opcode, payload) frames.
    fn server_frames(mut wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while let [first, second, rest @ ..] = wire {
            assert_eq!(second & 0x80, 0, "server frames are not masked");
            let (len, rest) = match second & 0x7F {
                126 => (
                    usize::from(u16::from_be_bytes([rest[0], rest[1]])),
                    &rest[2..],
                ),
                127 => (
                    usize::try_from(u64::from_be_bytes(rest[..8].try_into().unwrap())).unwrap(),
                    &rest[8..],
                ),
                n => (usize::from(n), rest),
            };
            assert_eq!(first & 0xF0, 0x80, "final, no reserved bits");
            frames.push((first & 0x0F, rest[..len].to_vec()));
            wire = &rest[len..];
        }
        frames
    }

    #[test]
    fn a_shared_frame_is_compressed_once_for_every_socket_that_agreed() {
        use crate::config::{Compression, CompressionMode};
        let agreed = |mode| {
            let config = Compression {
                mode,
                ..Compression::default()
            };
            super::super::deflate::negotiate(["permessage-deflate"], &config)
        };
        let sockets = || {
            let (server, _client) = duplex(64);
            WebSocket::over(server, 1024, 1024, 1 << 20)
        };
        let mut a = sockets().with_deflate(agreed(CompressionMode::Shared));
        let mut b = sockets().with_deflate(agreed(CompressionMode::Shared));
        let mut context = sockets().with_deflate(agreed(CompressionMode::Context));
        let mut plain = sockets();
        let frame = Frame::shared(Utf8Bytes::from("lorem ipsum ".repeat(100)));
        for socket in [&mut a, &mut b, &mut context, &mut plain] {
            socket.queue_text([frame.clone()]);
        }
        let body = |socket: &WebSocket<_>| match &socket.pending[0] {
            Out::Compressed(bytes) => Some(bytes.as_ptr()),
            _ => None,
        };
        let shared = body(&a).expect("compressed");
        assert_eq!(body(&b), Some(shared), "the same bytes, compressed once");
        let own = body(&context).expect("compressed in the socket's context");
        assert_ne!(own, shared);
        assert_eq!(body(&plain), None);
        assert!(matches!(&plain.pending[0], Out::Text(_)));
        // Short frames stay uncompressed.
        a.queue_text([Utf8Bytes::from_static("short")]);
        assert!(matches!(&a.pending[1], Out::Text(_)));
        // A client that limits the server's window to 2^9 bytes gets the shared compression
        // (made with a 32 KiB window) only for messages no longer than 512 bytes.
        let config = Compression::default();
        let limited = super::super::deflate::negotiate(
            ["permessage-deflate; server_max_window_bits=9"],
            &config,
        );
        let mut small = sockets().with_deflate(limited);
        small.queue_text([
            Frame::shared(Utf8Bytes::from("x".repeat(512))),
            Frame::shared(Utf8Bytes::from("x".repeat(513))),
        ]);
        assert!(matches!(&small.pending[0], Out::Compressed(_)));
        assert!(matches!(&small.pending[1], Out::Text(_)));
    }

    #[tokio::test]
    async fn binary_messages_are_compressed_under_the_rules_for_text() {
        use crate::config::{Compression, CompressionMode};
        let config = Compression {
            mode: CompressionMode::Context,
            min_bytes: 0,
            ..Compression::default()
        };
        let agreed = super::super::deflate::negotiate(["permessage-deflate"], &config);
        let (server, mut client) = duplex(1 << 16);
        let mut socket = WebSocket::over(server, 1024, 1 << 20, 1 << 20).with_deflate(agreed);
        let data = Bytes::from(vec![7u8; 1000]);
        socket.queue_binary(data.clone());
        socket.flush().await.unwrap();
        drop(socket);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        assert_eq!(wire[0], 0x80 | 0x40 | frame::BINARY, "final, RSV1, binary");
        assert_eq!(usize::from(wire[1]), wire.len() - 2);
        let inflated = super::super::deflate::inflate(&wire[2..], 1 << 20).unwrap();
        assert_eq!(inflated, data);
        // Without compression, as it was.
        let (server, mut client) = duplex(1 << 16);
        let mut socket = WebSocket::over(server, 1024, 1 << 20, 1 << 20);
        socket.queue_binary(Bytes::from_static(b"\x00\xff"));
        socket.flush().await.unwrap();
        drop(socket);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        assert_eq!(server_frames(&wire), [(frame::BINARY, vec![0x00, 0xff])]);
    }

    #[tokio::test]
    async fn partial_writes_resume_mid_frame_and_keep_the_stream_well_formed() {
        // A pipe that takes at most 7 bytes at a time: every frame is split across writes,
        // some inside their header.
        let (server, mut client) = duplex(7);
        let mut socket = WebSocket::over(server, 1024, 100, 1 << 20);
        let texts: Vec<Utf8Bytes> = [1, 125, 126, 300, 70_000]
            .iter()
            .map(|&n| Utf8Bytes::from("é".repeat(n / 2) + &"x".repeat(n % 2)))
            .collect();
        socket.queue_text(texts.clone());
        socket.queue_control(frame::control(frame::PING, b"hb"));
        socket.queue_text([Utf8Bytes::from_static("last")]);
        let reader = tokio::spawn(async move {
            let mut wire = Vec::new();
            client.read_to_end(&mut wire).await.unwrap();
            wire
        });
        socket.flush().await.unwrap();
        assert!(socket.pending.is_empty() && socket.written == 0);
        drop(socket);
        let frames = server_frames(&reader.await.unwrap());
        let mut expected: Vec<(u8, Vec<u8>)> = texts
            .iter()
            .map(|t| (frame::TEXT, t.as_bytes().to_vec()))
            .collect();
        expected.push((frame::PING, b"hb".to_vec()));
        expected.push((frame::TEXT, b"last".to_vec()));
        assert_eq!(frames, expected);
    }

    #[tokio::test]
    async fn a_cancelled_flush_goes_on_where_it_stopped_and_a_close_drops_only_unstarted_frames() {
        let (server, mut client) = duplex(64);
        let mut socket = WebSocket::over(server, 1024, 1 << 20, 1 << 20);
        let big = Utf8Bytes::from("a".repeat(200));
        socket.queue_text([big.clone(), big.clone(), big.clone()]);
        // The pipe fills after 64 bytes: the flush cannot finish, and is abandoned.
        let stalled = tokio::time::timeout(std::time::Duration::from_millis(50), socket.flush());
        assert!(stalled.await.is_err());
        assert_eq!(socket.written, 64, "the first frame is partly written");
        socket.discard_unstarted();
        assert_eq!(socket.pending.len(), 1, "only the started frame is kept");
        socket.queue_control(frame::close(4000, "slow"));
        let reader = tokio::spawn(async move {
            let mut wire = Vec::new();
            client.read_to_end(&mut wire).await.unwrap();
            wire
        });
        socket.flush().await.unwrap();
        drop(socket);
        let frames = server_frames(&reader.await.unwrap());
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], (frame::TEXT, big.as_bytes().to_vec()));
        assert_eq!(frames[1].0, frame::CLOSE);
        assert_eq!(&frames[1].1[..2], 4000u16.to_be_bytes());
    }

    #[tokio::test]
    async fn reads_decode_frames_across_chunks_and_end_at_eof() {
        let (server, mut client) = duplex(1024);
        // Reads of 3 bytes at most: every frame arrives in pieces.
        let mut socket = WebSocket::over(server, 3, 1024, 1 << 20);
        // "hi" masked with a zero mask, then a ping, then the end of the stream.
        client
            .write_all(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i', 0x89, 0x80, 0, 0, 0, 0])
            .await
            .unwrap();
        drop(client);
        assert_eq!(
            socket.recv().await.unwrap().unwrap(),
            Incoming::Text("hi".into())
        );
        assert_eq!(
            socket.recv().await.unwrap().unwrap(),
            Incoming::Ping(Vec::new())
        );
        assert!(
            socket.unread.capacity() == 0,
            "no buffer kept between frames"
        );
        assert!(socket.recv().await.is_none());
    }
}
