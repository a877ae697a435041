//! `roomcast_delivery_seconds`: how long a room message took from its publish being accepted
//! to its write on a recipient's socket, sampled on the write path.
//!
//! What one sample is: the wall-clock time from the message's `ts` (stamped by the broker that
//! ordered it, on the publishing node, when it took the publish) to the moment the write of
//! the batch holding the frame completed, that is, the last byte was handed to the kernel (not
//! when the client read it). It covers ordering, the Redis round trip when there is one, the
//! fan-out, the wait in the session's queue (a write delay included) and the write. The
//! batch's oldest message frame is the one sampled: the longest wait of that write. Both ends
//! are whole milliseconds (`ts` has no finer grain), so one sample is off by less than 1 ms
//! either way and right on average; across nodes it includes their clocks' skew (negatives
//! count as 0).
//!
//! Why sampled, and how: the write path runs once per batch per socket, hundreds of thousands
//! of times a second in a broadcast, and the recorder keeps every sample until its next upkeep
//! (8 bytes each). So each runtime thread takes at most one sample per millisecond: the first
//! batch handed to a socket after that millisecond. A quiet node samples every batch; a busy
//! one at most 1,000 a second per thread. Skipping costs a monotonic clock read per batch;
//! only a sampled batch pays for reading `ts` from the frame's last bytes
//! ([`message_ts`], no JSON parse), the wall clock and the record.

use std::cell::Cell;
use std::num::NonZeroU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::protocol::message_ts;
use crate::session::Batch;

/// Least time between two samples on one thread.
const EVERY: Duration = Duration::from_millis(1);
/// Frames of a batch looked at for a message (a batch of replies and events has none).
const LOOK_AT: usize = 4;

thread_local! {
    /// When this thread may take its next sample.
    static NEXT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The `ts` of the sampled frame of the batch being written, if it was sampled. 8 bytes in
/// each connection's task (`ts` 0, 1970, never occurs).
#[derive(Debug, Default)]
pub struct Sample(Option<NonZeroU64>);

impl Sample {
    /// A batch is handed to the socket: keeps its oldest message's `ts` if this thread is due
    /// a sample.
    pub fn taken(&mut self, batch: &Batch) {
        if self.0.is_some() || !due() {
            return;
        }
        self.0 = batch
            .iter()
            .take(LOOK_AT)
            .find_map(|frame| message_ts(frame.as_str()))
            .and_then(NonZeroU64::new);
    }

    /// Everything handed to the socket is written: records the sample, if one was kept.
    pub fn written(&mut self) {
        let Some(ts) = self.0.take() else { return };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let millis = now.saturating_sub(ts.get());
        metrics::histogram!("roomcast_delivery_seconds").record(millis as f64 / 1000.0);
    }
}

/// Whether this thread's next sample is due, and if so, moves the next one `EVERY` later.
fn due() -> bool {
    let now = Instant::now();
    NEXT.with(|next| {
        if next.get().is_some_and(|at| now < at) {
            return false;
        }
        next.set(Some(now + EVERY));
        true
    })
}

#[cfg(test)]
mod tests {
    use tungstenite::Utf8Bytes;

    use super::*;
    use crate::protocol::encode_message;
    use crate::session::Frame;

    fn message(ts: u64) -> Frame {
        let data = serde_json::value::RawValue::from_string("1".into()).unwrap();
        encode_message("r", 1, "u", &data, ts).into()
    }

    #[test]
    fn a_sample_is_the_oldest_message_of_a_batch_when_the_thread_is_due_one() {
        NEXT.with(|next| next.set(None));
        let mut sample = Sample::default();
        let reply = Frame::from(Utf8Bytes::from(r#"{"type":"ack","id":1}"#));
        sample.taken(&[reply, message(7), message(9)].into());
        assert_eq!(sample.0.map(NonZeroU64::get), Some(7));
        // Taken again before the write ended: the first sample stays.
        NEXT.with(|next| next.set(None));
        sample.taken(&[message(11)].into());
        assert_eq!(sample.0.map(NonZeroU64::get), Some(7));
        sample.written();
        assert!(sample.0.is_none());
        // This thread's last sample was under a millisecond ago (as if): none taken.
        NEXT.with(|next| next.set(Some(Instant::now() + Duration::from_secs(60))));
        sample.taken(&[message(13)].into());
        assert!(sample.0.is_none());
        NEXT.with(|next| next.set(None));
        sample.taken(&[message(13)].into());
        assert_eq!(sample.0.map(NonZeroU64::get), Some(13));
    }
}
