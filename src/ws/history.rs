//! The `history` reply: a page of stored `message` frames wrapped in one `history` frame,
//! each frame passed through as the raw JSON it was delivered as.

use tungstenite::Utf8Bytes;

use crate::broker::Page;
use crate::protocol::{RequestId, ServerFrame, encode};

/// The `history` frame answering request `id` with `page` of `room`.
pub(super) fn page_frame(id: Option<&RequestId>, room: &str, page: &Page) -> Utf8Bytes {
    // Stored frames are the server's own valid JSON: borrowing them as raw values copies nothing.
    let messages: Vec<&serde_json::value::RawValue> = page
        .frames
        .iter()
        .filter_map(|frame| serde_json::from_str(frame.as_str()).ok())
        .collect();
    encode(&ServerFrame::History {
        id,
        room,
        epoch: &page.epoch,
        top: page.top,
        messages: &messages,
        more: page.more,
    })
}
