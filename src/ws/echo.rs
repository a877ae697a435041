//! An echo endpoint on roomcast's own WebSocket layer, for conformance testing: every text and
//! binary message comes back as it was received, every ping gets its pong. `tests/autobahn.rs`
//! runs the Autobahn testsuite's fuzzing client against it.
//!
//! Why it exists: the suite's cases send messages and expect them echoed, and `/ws` speaks JSON
//! requests, so it would answer them with error frames. This endpoint shares everything that
//! the suite checks with `/ws`: the [`Handshake`] and its permessage-deflate negotiation, the
//! [`WebSocket`] (its decoder, inflation, compression of sent text, writes), and the close
//! sequences ([`WebSocket::close`], [`WebSocket::answer_close`]). What it leaves out is the
//! session (rooms, rate limits, heartbeats). Binary messages, which roomcast never sends
//! otherwise, are compressed under the rules for text ([`WebSocket::queue_binary`]). The server
//! never mounts it; only the test serves it, on a loopback port of its own.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::timeout;
use tokio_util::task::TaskTracker;
use tungstenite::Utf8Bytes;

use super::frame::{self, Incoming};
use super::handshake::{Handshake, NotWebSocket};
use super::socket::{Event, RecvError, WebSocket};
use crate::config::{self, Config};

/// How long closing may take, as for a session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Echo {
    read_chunk: usize,
    write_chunk: usize,
    max_message: usize,
    compression: Arc<config::Compression>,
    tasks: TaskTracker,
}

/// The echo endpoint, answering the handshake at any path, under the sections of `config` that
/// `/ws` reads for it: `socket` (read and write sizes), `limits.max_message_bytes` (the suite's
/// largest message is 16 MiB, against 64 KiB for a session by default) and `compression`.
/// Sockets live until their client closes.
pub fn router(config: &Config) -> Router {
    let echo = Echo {
        read_chunk: config.socket.read_buffer_bytes,
        write_chunk: config.socket.write_buffer_bytes,
        max_message: config.limits.max_message_bytes,
        compression: Arc::new(config.compression.clone()),
        tasks: TaskTracker::new(),
    };
    Router::new().fallback(upgrade).with_state(echo)
}

async fn upgrade(State(echo): State<Echo>, ws: Result<Handshake, NotWebSocket>) -> Response {
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let agreed = ws.negotiate(&echo.compression);
    let Echo {
        read_chunk,
        write_chunk,
        max_message,
        ..
    } = echo;
    ws.accept(&echo.tasks, move |upgraded| {
        let socket = WebSocket::new(upgraded, read_chunk, write_chunk, max_message);
        echo_messages(socket.with_deflate(agreed))
    })
}

/// Echoes until the client closes or breaks the framing rules, which closes as for a session.
async fn echo_messages(mut socket: WebSocket) {
    loop {
        let item = match socket.next().await {
            Event::Flushed => continue,
            Event::Received(None | Some(Err(RecvError::Io(_)))) => return,
            Event::Received(Some(Err(RecvError::Frame(err)))) => {
                let code = err.close_code();
                let _ = timeout(CLOSE_TIMEOUT, socket.close(code, code.reason())).await;
                return;
            }
            Event::Received(Some(Ok(item))) => item,
        };
        match item {
            Incoming::Text(text) => socket.queue_text([Utf8Bytes::from(text)]),
            Incoming::Binary(data) => socket.queue_binary(Bytes::from(data)),
            Incoming::Ping(payload) => socket.queue_control(frame::control(frame::PONG, &payload)),
            Incoming::Pong | Incoming::Fragment => {}
            Incoming::Close(code) => {
                let _ = timeout(CLOSE_TIMEOUT, socket.answer_close(code)).await;
                return;
            }
        }
    }
}
