//! Reading a room's history beyond a resume: the `history` request (a page of it) and a join's
//! `rewind` (its latest messages before live ones). Limits come from `[history]`: `max_page`
//! and `max_rewind` messages, and `max_room_bytes` of frames, so either fits a session's queue.

use tungstenite::Utf8Bytes;

use super::{Node, NodeError};
use crate::broker::{Catchup, Order, Page, PageRequest};
use crate::protocol::HistoryOrder;

/// A `history` request's range, limit and order, as the client sent them.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery {
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub limit: Option<u64>,
    pub order: HistoryOrder,
}

impl Node {
    /// One page of `room`'s history, or `None` when the broker knows no such room. The limit
    /// is clamped to `history.max_page` (its default too).
    pub async fn history_page(
        &self,
        room: &str,
        query: HistoryQuery,
    ) -> Result<Option<Page>, NodeError> {
        let history = &self.0.config.history;
        let max = history.max_page as u64;
        let request = PageRequest {
            after: query.after.unwrap_or(0),
            before: query.before.unwrap_or(u64::MAX),
            limit: query.limit.unwrap_or(max).min(max) as usize,
            max_bytes: history.max_room_bytes,
            order: match query.order {
                HistoryOrder::NewestFirst => Order::NewestFirst,
                HistoryOrder::OldestFirst => Order::OldestFirst,
            },
        };
        Ok(self.0.broker.page(room, &request).await?)
    }

    /// The latest `n` (at most `history.max_rewind`, and fewer than `limits.outbound_queue`,
    /// so that they and `joined` fit the session's queue) messages up to the join's position
    /// `catchup.top`, oldest first: what a join with `rewind` delivers right after `joined`.
    /// They end exactly at `top`, and live delivery goes on above it, so nothing is missed or
    /// doubled between them. Empty when the room's epoch changed meanwhile.
    pub(super) async fn rewind(
        &self,
        room: &str,
        catchup: &Catchup,
        n: u64,
    ) -> Result<Vec<Utf8Bytes>, NodeError> {
        let history = &self.0.config.history;
        let queue = self.0.config.limits.outbound_queue.saturating_sub(1);
        let limit = n.min(history.max_rewind.min(queue) as u64) as usize;
        if limit == 0 || catchup.top == 0 {
            return Ok(Vec::new());
        }
        let request = PageRequest {
            after: 0,
            before: catchup.top + 1,
            limit,
            max_bytes: history.max_room_bytes,
            order: Order::NewestFirst,
        };
        let page = self.0.broker.page(room, &request).await?;
        Ok(match page {
            Some(page) if page.epoch == catchup.epoch => page.frames.into_iter().rev().collect(),
            _ => Vec::new(),
        })
    }
}
