//! The byte stream under a simulated user's WebSocket: counts the WebSocket bytes read off the
//! connection (frames with their headers, above TLS, the HTTP handshake excluded) and, when the
//! server accepted permessage-deflate, inflates its compressed messages into the plain frames
//! tungstenite reads (see `deflate`). Generic over the stream, so it needs no other module.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::deflate::{self, Inflater};

/// A handshake response head longer than this is not scanned further (tungstenite refuses
/// such a response anyway); real ones are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes read from the connection per call while inflating.
const READ_CHUNK: usize = 4096;

/// Where in the connection the reader is.
enum Phase {
    /// Before the end of the HTTP response head, which is kept to read the extension answer.
    Head(Vec<u8>),
    /// Frames pass through as read.
    Plain,
    /// Frames go through the inflater.
    Deflate(Box<Inflater>),
}

/// `S` with byte counting and, if negotiated, inflation on the read side. Writes pass through.
pub struct Socket<S> {
    inner: S,
    offered: bool,
    max_message: usize,
    phase: Phase,
    /// WebSocket bytes read since the last [`take_read`](Self::take_read).
    read: u64,
}

impl<S> Socket<S> {
    /// `offered`: the handshake request carries [`deflate::OFFER`]; only then may an answer
    /// switch inflation on. `max_message`: the largest message inflated.
    pub fn new(inner: S, offered: bool, max_message: usize) -> Self {
        Self {
            inner,
            offered,
            max_message,
            phase: Phase::Head(Vec::new()),
            read: 0,
        }
    }

    /// Whether the server accepted permessage-deflate (known once the handshake is done).
    pub fn deflate(&self) -> bool {
        matches!(self.phase, Phase::Deflate(_))
    }

    /// WebSocket bytes read off the connection since the last call.
    pub fn take_read(&mut self) -> u64 {
        std::mem::take(&mut self.read)
    }
}

impl<S: AsyncRead + Unpin> Socket<S> {
    /// Reads the response head through to tungstenite, keeping it; the bytes after its end
    /// are frames, which stay here when inflation is switched on.
    fn poll_head(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let Phase::Head(head) = &mut self.phase else {
            unreachable!("only called in the head phase");
        };
        let new = &buf.filled()[before..];
        let scan_from = head.len().saturating_sub(3);
        head.extend_from_slice(new);
        let Some(at) = head[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") else {
            if head.len() > MAX_HEAD {
                self.phase = Phase::Plain;
            }
            return Poll::Ready(Ok(()));
        };
        let end = scan_from + at + 4;
        let frames = head.len() - end;
        self.read += frames as u64;
        let agreed = self
            .offered
            .then(|| deflate::agreed(&head[..end]))
            .flatten();
        match agreed {
            Some(agreed) => {
                let mut inflater = Box::new(Inflater::new(agreed, self.max_message));
                inflater.feed(&head[end..]).map_err(invalid)?;
                let filled = buf.filled().len() - frames;
                buf.set_filled(filled);
                self.phase = Phase::Deflate(inflater);
            }
            None => self.phase = Phase::Plain,
        }
        Poll::Ready(Ok(()))
    }

    /// Hands out inflated frames, reading more when none is ready. Returns nothing only at
    /// the end of the stream, as a plain read would.
    fn poll_inflated(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Phase::Deflate(inflater) = &mut self.phase else {
            unreachable!("only called when inflating");
        };
        loop {
            let pending = inflater.pending();
            if !pending.is_empty() {
                let n = pending.len().min(buf.remaining());
                buf.put_slice(&pending[..n]);
                inflater.consume(n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            self.read += read.filled().len() as u64;
            inflater.feed(read.filled()).map_err(invalid)?;
        }
    }
}

fn invalid(e: deflate::InflateError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncRead + Unpin> AsyncRead for Socket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Head(_) => this.poll_head(cx, buf),
            Phase::Deflate(_) => this.poll_inflated(cx, buf),
            Phase::Plain => {
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                this.read += (buf.filled().len() - before) as u64;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Socket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: \
        permessage-deflate; server_no_context_takeover\r\n\r\n";

    /// The head and a compressed frame in one read, as a server that writes its welcome right
    /// after the upgrade may deliver them: the head reaches the reader, the frame is inflated.
    #[tokio::test]
    async fn frames_after_the_head_in_the_same_read_are_inflated() {
        use flate2::{Compress, Compression, FlushCompress};
        let mut c = Compress::new(Compression::default(), false);
        let mut z = Vec::with_capacity(128);
        c.compress_vec(b"hello hello hello", &mut z, FlushCompress::Sync)
            .unwrap();
        z.truncate(z.len() - 4);
        let mut wire = HEAD.to_vec();
        wire.extend([0xc1, z.len() as u8]);
        wire.extend(&z);
        let (mut server, client) = tokio::io::duplex(4096);
        server.write_all(&wire).await.unwrap();
        drop(server);
        let mut socket = Socket::new(client, true, 1 << 20);
        let mut all = Vec::new();
        socket.read_to_end(&mut all).await.unwrap();
        let mut want = HEAD.to_vec();
        want.extend([0x81, 17]);
        want.extend(b"hello hello hello");
        assert_eq!(all, want);
        assert!(socket.deflate());
        assert_eq!(socket.take_read(), 2 + z.len() as u64);
    }

    #[tokio::test]
    async fn without_the_offer_or_the_answer_bytes_pass_and_are_counted() {
        for (offered, head) in [
            (false, HEAD),
            (
                true,
                &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"[..],
            ),
        ] {
            let mut wire = head.to_vec();
            wire.extend([0x81, 2, b'h', b'i']);
            let (mut server, client) = tokio::io::duplex(4096);
            server.write_all(&wire).await.unwrap();
            drop(server);
            let mut socket = Socket::new(client, offered, 1 << 20);
            let mut all = Vec::new();
            socket.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, wire);
            assert!(!socket.deflate());
            assert_eq!(socket.take_read(), 4);
        }
    }
}
