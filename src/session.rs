//! A live session as the rest of the node sees it: a cheap handle holding the sending side of
//! the session's bounded outbound queue and the switch that closes it.
//!
//! Anyone may queue a frame; nobody waits. A full queue means the client reads slower than
//! messages arrive, and the policy is to close it with 4000 rather than slow the sender or grow
//! memory (centrifuge and sockudo do the same).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::CloseCode;

/// Node-unique session number, used as the key in room member maps.
pub type SessionId = u64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Shared handle to one session. Cloning is an `Arc` clone.
#[derive(Clone, Debug)]
pub struct SessionHandle(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    id: SessionId,
    user: Arc<str>,
    tx: mpsc::Sender<Utf8Bytes>,
    closer: CancellationToken,
    /// First close reason wins; 0 means none yet.
    close_code: AtomicU16,
}

/// What `SessionHandle::send` did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The queue was full: the session is being closed as a slow consumer.
    Overflow,
    /// The session is already gone.
    Closed,
}

impl SessionHandle {
    /// Creates a handle and the receiving end of its queue of `capacity` frames.
    pub fn new(user: Arc<str>, capacity: usize) -> (Self, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(capacity);
        let shared = Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            user,
            tx,
            closer: CancellationToken::new(),
            close_code: AtomicU16::new(0),
        };
        (Self(Arc::new(shared)), rx)
    }

    pub fn id(&self) -> SessionId {
        self.0.id
    }

    pub fn user(&self) -> &Arc<str> {
        &self.0.user
    }

    /// Queues a frame without waiting. Overflow closes the session with 4000.
    pub fn send(&self, frame: Utf8Bytes) -> Sent {
        match self.0.tx.try_send(frame) {
            Ok(()) => Sent::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.0.close_code.load(Ordering::Acquire) == 0 {
                    metrics::counter!("roomcast_slow_consumer_closes_total").increment(1);
                }
                self.close(CloseCode::SlowConsumer);
                Sent::Overflow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Closed,
        }
    }

    /// Frames waiting in the queue.
    pub fn queued(&self) -> usize {
        self.0.tx.max_capacity() - self.0.tx.capacity()
    }

    /// Asks the session's task to close the socket with `code`. The first reason given wins.
    pub fn close(&self, code: CloseCode) {
        let _ =
            self.0
                .close_code
                .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire);
        self.0.closer.cancel();
    }

    /// Resolves once `close` has been called. Cancel safe.
    pub async fn closed(&self) {
        self.0.closer.cancelled().await
    }

    /// The reason given to `close`, if any.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self.0.close_code.load(Ordering::Acquire) {
            0 => None,
            n => Some(CloseCode::from_u16(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer_and_first_reason_wins() {
        let (handle, mut rx) = SessionHandle::new("u".into(), 2);
        assert_eq!(handle.send("a".into()), Sent::Queued);
        assert_eq!(handle.send("b".into()), Sent::Queued);
        assert_eq!(handle.close_code(), None);
        assert_eq!(handle.send("c".into()), Sent::Overflow);
        handle.closed().await;
        handle.close(CloseCode::GoingAway);
        assert_eq!(handle.close_code(), Some(CloseCode::SlowConsumer));
        assert_eq!(rx.recv().await.unwrap(), "a");
        drop(rx);
        assert_eq!(handle.send("d".into()), Sent::Closed);
    }
}
