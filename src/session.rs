//! A live session as the rest of the node sees it: a cheap handle that queues frames for the
//! session's socket, and the close switch.
//!
//! Anyone may queue a frame; nobody waits. A full queue means the client reads slower than
//! messages arrive, and the policy is to close it with 4000 rather than slow the sender or grow
//! memory (centrifuge and sockudo do the same). "Full" counts frames and bytes, and counts the
//! batch the socket task is still writing: a stalled reader holds its queue plus that batch,
//! never more.
//!
//! The queue is a plain `VecDeque` under a short lock rather than a tokio mpsc channel, for two
//! measured reasons (docs/BENCHMARKS.md): an idle session holds no buffer at all (tokio's
//! channel allocates its first block of slots up front, about 1 KiB), and the writer takes the
//! whole queue in one step and is woken once per batch, where the channel cost a semaphore, a
//! block lookup and a wake-up per frame (a fifth of the node's CPU in a broadcast). Closing
//! wakes the same waker, so the socket task waits on one thing for frames and for closes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tungstenite::Utf8Bytes;

use crate::protocol::CloseCode;

/// Node-unique session number, used as the key in room member maps.
pub type SessionId = u64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Frames taken from the queue in one go, oldest first.
pub type Batch = VecDeque<Frame>;

/// A frame queued for a session: encoded text, and for a room frame, which many sessions share,
/// a slot where the first socket that compresses it leaves the result for the others. A plain
/// frame costs what its `Utf8Bytes` does; a shared one is one allocation per room frame, made
/// only when compression is on.
#[derive(Clone, Debug)]
pub enum Frame {
    Text(Utf8Bytes),
    Shared(Arc<SharedFrame>),
}

/// A room frame and its compressed form, computed at most once.
#[derive(Debug)]
pub struct SharedFrame {
    text: Utf8Bytes,
    /// `Some(None)`: compressing did not make it shorter.
    compressed: OnceLock<Option<Bytes>>,
}

impl Frame {
    /// A frame whose compressed form, once computed, is shared by every clone.
    pub fn shared(text: Utf8Bytes) -> Self {
        Self::Shared(Arc::new(SharedFrame {
            text,
            compressed: OnceLock::new(),
        }))
    }

    pub fn text(&self) -> &Utf8Bytes {
        match self {
            Self::Text(text) => text,
            Self::Shared(shared) => &shared.text,
        }
    }

    pub fn as_str(&self) -> &str {
        self.text().as_str()
    }

    /// The text, without the shared slot.
    pub fn into_text(self) -> Utf8Bytes {
        match self {
            Self::Text(text) => text,
            Self::Shared(shared) => shared.text.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.text().len()
    }

    pub fn is_empty(&self) -> bool {
        self.text().is_empty()
    }

    /// The frame compressed by `compress`: for a shared frame, computed by the first caller
    /// only and kept for the others; for a plain one, computed now.
    pub fn compressed(&self, compress: impl FnOnce(&[u8]) -> Option<Bytes>) -> Option<Bytes> {
        match self {
            Self::Text(text) => compress(text.as_bytes()),
            Self::Shared(shared) => shared
                .compressed
                .get_or_init(|| compress(shared.text.as_bytes()))
                .clone(),
        }
    }
}

impl From<Utf8Bytes> for Frame {
    fn from(text: Utf8Bytes) -> Self {
        Self::Text(text)
    }
}

impl PartialEq<&str> for Frame {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Shared handle to one session. Cloning is an `Arc` clone.
#[derive(Clone, Debug)]
pub struct SessionHandle(Arc<Shared>);

/// The socket task's end of the queue. Dropping it makes further sends answer
/// [`Sent::Closed`].
#[derive(Debug)]
pub struct Outbox(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    id: SessionId,
    user: Arc<str>,
    limits: QueueLimits,
    queue: Mutex<Queue>,
    /// The socket task, woken when a frame lands in an empty queue and on close.
    waker: AtomicWaker,
    /// First close reason wins; 0 means none yet.
    close_code: AtomicU16,
    /// The node is shutting down: flush the queue, then close with 1001.
    draining: AtomicBool,
}

/// How much one session may hold before it is closed as a slow consumer.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct Queue {
    frames: Batch,
    /// Bytes of `frames`.
    bytes: usize,
    /// The batch taken by the socket task and not yet reported written.
    writing: Held,
    /// The outbox was dropped: the socket task is gone.
    gone: bool,
}

/// Frames and bytes, counted together.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub frames: usize,
    pub bytes: usize,
}

impl Queue {
    fn held(&self) -> Held {
        Held {
            frames: self.frames.len() + self.writing.frames,
            bytes: self.bytes + self.writing.bytes,
        }
    }
}

/// What `SessionHandle::send` did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The queue was full: the session is being closed as a slow consumer.
    Overflow,
    /// A direct message found the session holding half its budget: dropped, session kept.
    Dropped,
    /// The session is already gone.
    Closed,
}

/// What the socket task should do next.
#[derive(Debug)]
pub enum Outgoing {
    /// Write these frames.
    Frames(Batch),
    /// Close the socket with this code; whatever is queued is not written.
    Close(CloseCode),
    /// The node is shutting down: write what is queued, then close with 1001.
    Drain,
}

impl SessionHandle {
    /// Creates a handle and the socket task's end of its queue, bounded by `limits`.
    pub fn new(user: Arc<str>, limits: QueueLimits) -> (Self, Outbox) {
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            user,
            limits,
            queue: Mutex::default(),
            waker: AtomicWaker::new(),
            close_code: AtomicU16::new(0),
            draining: AtomicBool::new(false),
        });
        (Self(shared.clone()), Outbox(shared))
    }

    pub fn id(&self) -> SessionId {
        self.0.id
    }

    pub fn user(&self) -> &Arc<str> {
        &self.0.user
    }

    /// Queues a frame without waiting. Overflow (of frames or bytes) closes the session with
    /// 4000.
    pub fn send(&self, frame: Utf8Bytes) -> Sent {
        self.push(Frame::Text(frame), 1)
    }

    /// [`Self::send`] for a frame that may be shared with other sessions.
    pub fn send_frame(&self, frame: Frame) -> Sent {
        self.push(frame, 1)
    }

    /// Queues a direct message, unless the session already holds half its budget (frames or
    /// bytes): then the frame is dropped for this session and the session is kept. Direct
    /// messages come from other users, and a few of them at their rate limits could otherwise
    /// close a reader that keeps up with its rooms (four senders' bursts of 64 KiB messages
    /// outran one reading 30 MB/s); room messages keep the whole budget, and the close.
    pub fn send_direct(&self, frame: Utf8Bytes) -> Sent {
        self.push(Frame::Text(frame), 2)
    }

    /// Queues `frame` if the session holds under `1 / share` of its limits after it; otherwise
    /// a room frame (`share` 1) closes the session and a direct one (2) is dropped.
    fn push(&self, frame: Frame, share: usize) -> Sent {
        let mut queue = self.0.queue.lock();
        if queue.gone {
            return Sent::Closed;
        }
        let held = queue.held();
        let limits = self.0.limits;
        let full =
            held.frames >= limits.frames / share || held.bytes + frame.len() > limits.bytes / share;
        if full && share > 1 {
            return Sent::Dropped;
        }
        if full {
            drop(queue);
            if self.0.close_code.load(Ordering::Acquire) == 0 {
                metrics::counter!("roomcast_slow_consumer_closes_total").increment(1);
            }
            self.close(CloseCode::SlowConsumer);
            return Sent::Overflow;
        }
        let was_empty = queue.frames.is_empty();
        queue.bytes += frame.len();
        queue.frames.push_back(frame);
        drop(queue);
        // The task empties the whole queue when it wakes, so a non-empty queue means a wake-up
        // is already on its way: one per batch, not one per frame.
        if was_empty {
            self.0.waker.wake();
        }
        Sent::Queued
    }

    /// What the session holds: frames waiting in the queue and the batch being written.
    pub fn held(&self) -> Held {
        self.0.queue.lock().held()
    }

    /// Asks the session's task to close the socket with `code`. The first reason given wins.
    pub fn close(&self, code: CloseCode) {
        let _ =
            self.0
                .close_code
                .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire);
        self.0.waker.wake();
    }

    /// Asks the session's task to write out its queue and close with 1001 (node shutdown).
    /// Unlike `close`, a write in progress is not interrupted.
    pub fn drain(&self) {
        self.0.draining.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    /// The id the next session will get: every session with a lower one is older.
    pub fn next_id() -> SessionId {
        NEXT_ID.load(Ordering::Relaxed)
    }

    /// Whether `drain` was called (the session is on its way out).
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Acquire)
    }

    /// Resolves once `close` has been called. Only the session's own task may wait on this
    /// (the session has one waker, shared with [`Outbox::next`]).
    pub async fn closed(&self) {
        poll_fn(|cx| {
            self.0.waker.register(cx.waker());
            match self.close_code() {
                Some(_) => Poll::Ready(()),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The reason given to `close`, if any.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.0.close_code()
    }
}

impl Shared {
    fn close_code(&self) -> Option<CloseCode> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            n => Some(CloseCode::from_u16(n)),
        }
    }
}

impl Outbox {
    /// Waits for queued frames (all of them, taken at once; only when `frames`, so a writer
    /// still busy with the last batch hears of closes and drains alone), a close or a drain. A
    /// close wins over a drain, and both over frames still queued. Cancel safe: nothing is
    /// taken unless it is returned.
    pub async fn next(&mut self, frames: bool) -> Outgoing {
        poll_fn(|cx| self.poll_next(cx, frames)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, frames: bool) -> Poll<Outgoing> {
        // Register before looking, so a frame or close arriving in between still wakes us.
        self.0.waker.register(cx.waker());
        if let Some(code) = self.0.close_code() {
            return Poll::Ready(Outgoing::Close(code));
        }
        if self.0.draining.load(Ordering::Acquire) {
            return Poll::Ready(Outgoing::Drain);
        }
        if !frames {
            return Poll::Pending;
        }
        match self.take() {
            batch if batch.is_empty() => Poll::Pending,
            batch => Poll::Ready(Outgoing::Frames(batch)),
        }
    }

    /// Puts frames taken with [`Self::next`] back at the head of the queue, before anything
    /// queued since, to be taken again later (a write delay holds them there).
    pub fn restore(&mut self, mut batch: Batch) {
        let mut queue = self.0.queue.lock();
        queue.bytes += queue.writing.bytes;
        queue.writing = Held::default();
        batch.append(&mut queue.frames);
        queue.frames = batch;
    }

    /// Takes whatever is queued now, without waiting. The frames still count against the
    /// session's limits until [`Self::written`].
    pub fn take(&mut self) -> Batch {
        let mut queue = self.0.queue.lock();
        let frames = std::mem::take(&mut queue.frames);
        queue.writing.frames += frames.len();
        queue.writing.bytes += std::mem::take(&mut queue.bytes);
        frames
    }

    /// Everything taken so far has been written (or dropped): it no longer counts.
    pub fn written(&mut self) {
        self.0.queue.lock().writing = Held::default();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut queue = self.0.queue.lock();
        queue.gone = true;
        queue.frames = Batch::new();
        queue.bytes = 0;
        queue.writing = Held::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(frames: usize, bytes: usize) -> QueueLimits {
        QueueLimits { frames, bytes }
    }

    #[test]
    fn a_queued_frame_takes_no_more_room_than_its_text() {
        // The shared variant is one pointer beside `Utf8Bytes`'s non-null vtable: no tag.
        assert_eq!(
            std::mem::size_of::<Frame>(),
            std::mem::size_of::<Utf8Bytes>()
        );
    }

    #[tokio::test]
    async fn bytes_held_count_the_batch_being_written_and_overflow_closes_as_slow_consumer() {
        let (handle, mut outbox) = SessionHandle::new("u".into(), limits(100, 10));
        assert_eq!(handle.send("aaaa".into()), Sent::Queued);
        let batch = outbox.take();
        assert_eq!(batch, ["aaaa"]);
        assert_eq!(handle.send("bbbb".into()), Sent::Queued);
        assert_eq!(
            handle.held(),
            Held {
                frames: 2,
                bytes: 8
            }
        );
        // 8 held + 4 > 10: the write in progress still counts.
        assert_eq!(handle.send("cccc".into()), Sent::Overflow);
        assert_eq!(handle.close_code(), Some(CloseCode::SlowConsumer));
    }

    #[tokio::test]
    async fn a_direct_message_past_half_the_budget_is_dropped_and_the_session_kept() {
        let (handle, _outbox) = SessionHandle::new("u".into(), limits(100, 10));
        assert_eq!(handle.send_direct("aaaa".into()), Sent::Queued);
        assert_eq!(
            handle.send_direct("bb".into()),
            Sent::Dropped,
            "4 + 2 > 10 / 2"
        );
        assert_eq!(handle.close_code(), None);
        assert_eq!(
            handle.send("bbbbbb".into()),
            Sent::Queued,
            "rooms use it all"
        );
        assert_eq!(
            handle.held(),
            Held {
                frames: 2,
                bytes: 10
            }
        );
    }

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer_and_first_reason_wins() {
        let (handle, mut outbox) = SessionHandle::new("u".into(), limits(2, 1024));
        assert_eq!(handle.send("a".into()), Sent::Queued);
        assert_eq!(handle.send("b".into()), Sent::Queued);
        assert_eq!(handle.close_code(), None);
        assert_eq!(handle.send("c".into()), Sent::Overflow);
        handle.closed().await;
        handle.close(CloseCode::GoingAway);
        assert_eq!(handle.close_code(), Some(CloseCode::SlowConsumer));
        assert!(matches!(
            outbox.next(true).await,
            Outgoing::Close(CloseCode::SlowConsumer)
        ));
        assert_eq!(outbox.take(), ["a", "b"]);
        drop(outbox);
        assert_eq!(handle.send("d".into()), Sent::Closed);
    }

    #[tokio::test]
    async fn the_writer_is_woken_for_the_first_frame_and_takes_the_whole_batch() {
        let (handle, mut outbox) = SessionHandle::new("u".into(), limits(8, 1024));
        let writer = tokio::spawn(async move {
            match outbox.next(true).await {
                Outgoing::Frames(batch) => batch,
                other => panic!("expected frames, got {other:?}"),
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(handle.send("a".into()), Sent::Queued);
        let batch = writer.await.unwrap();
        assert!(!batch.is_empty() && batch[0] == "a", "{batch:?}");
    }

    #[tokio::test]
    async fn frames_queued_while_nobody_waits_come_out_in_order() {
        let (handle, mut outbox) = SessionHandle::new("u".into(), limits(8, 1024));
        for frame in ["a", "b", "c"] {
            handle.send(frame.into());
        }
        assert_eq!(
            handle.held(),
            Held {
                frames: 3,
                bytes: 3
            }
        );
        match outbox.next(true).await {
            Outgoing::Frames(batch) => assert_eq!(batch, ["a", "b", "c"]),
            other => panic!("expected frames, got {other:?}"),
        }
        assert_eq!(
            handle.held(),
            Held {
                frames: 3,
                bytes: 3
            },
            "until written"
        );
        outbox.written();
        assert_eq!(handle.held(), Held::default());
        handle.send("d".into());
        let taken = outbox.take();
        handle.send("e".into());
        outbox.restore(taken);
        assert_eq!(
            handle.held(),
            Held {
                frames: 2,
                bytes: 2
            }
        );
        handle.drain();
        assert!(matches!(outbox.next(true).await, Outgoing::Drain));
        assert_eq!(outbox.take(), ["d", "e"], "restored frames come first");
    }
}
