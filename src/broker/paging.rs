//! Reading a room's history a page at a time (the `history` request and `rewind` on join):
//! what is asked ([`PageRequest`]) and what an engine answers ([`Page`]).

use std::sync::Arc;

use tungstenite::Utf8Bytes;

/// Which end of the range a page is taken from, and the order of its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The latest messages of the range, latest first: paging backwards.
    NewestFirst,
    /// The earliest messages of the range, earliest first: paging forwards.
    OldestFirst,
}

/// Messages with `after < offset < before`, at most `limit` of them and (beyond the first)
/// at most `max_bytes` of frames, from the end `order` says.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// Exclusive lower bound (0: from the oldest held).
    pub after: u64,
    /// Exclusive upper bound (`u64::MAX`: up to the room's latest).
    pub before: u64,
    pub limit: usize,
    pub max_bytes: usize,
    pub order: Order,
}

/// One page of a room's history.
#[derive(Debug, Clone)]
pub struct Page {
    /// The room's epoch: the offsets below belong to it.
    pub epoch: Arc<str>,
    /// The room's latest offset (0 before the first message).
    pub top: u64,
    /// Encoded `message` frames, in the requested order, consecutive offsets.
    pub frames: Vec<Utf8Bytes>,
    /// Whether the history holds more messages of the range beyond this page, in the
    /// direction of the order.
    pub more: bool,
}

impl PageRequest {
    /// Whether `offset` lies in the range.
    pub fn contains(&self, offset: u64) -> bool {
        self.after < offset && offset < self.before
    }

    /// Takes frames `held` (consecutive offsets, oldest first, as `(offset, frame)`) from the
    /// request's end within the range and the limits. Shared by engines that hold the frames
    /// in memory; returns the frames in the requested order and whether more were left.
    pub fn take<'a>(
        &self,
        held: impl DoubleEndedIterator<Item = (u64, &'a Utf8Bytes)>,
    ) -> (Vec<Utf8Bytes>, bool) {
        let in_range = |(offset, _): &(u64, &Utf8Bytes)| self.contains(*offset);
        match self.order {
            Order::NewestFirst => self.fill(held.rev().filter(in_range)),
            Order::OldestFirst => self.fill(held.filter(in_range)),
        }
    }

    fn fill<'a>(
        &self,
        mut frames: impl Iterator<Item = (u64, &'a Utf8Bytes)>,
    ) -> (Vec<Utf8Bytes>, bool) {
        let mut page = Vec::new();
        let mut bytes = 0;
        for (_, frame) in frames.by_ref() {
            if page.len() == self.limit
                || (!page.is_empty() && bytes + frame.len() > self.max_bytes)
            {
                return (page, true);
            }
            bytes += frame.len();
            page.push(frame.clone());
        }
        (page, false)
    }
}
