//! One task per socket: reads requests, writes queued frames, pings, and closes with the right
//! code. Reading and writing share the task under one `select!`; writes take everything queued
//! and hand it to the socket in one vectored write, so a burst of room messages costs one
//! `send()` rather than many.
//!
//! Every wait on the socket also watches the session's close switch, so a client that stopped
//! reading cannot pin the task: the hub flips the switch when its queue overflows.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use super::Permits;
use super::frame::{self, Incoming};
use super::limiter::{TokenBucket, Verdict};
use super::socket::{RecvError, Socket};
use crate::auth::{AuthError, Identity};
use crate::node::Node;
use crate::protocol::{
    CloseCode, ErrorCode, ProtocolError, Request, RequestId, ServerFrame, decode_request, encode,
};
use crate::session::{Batch, Outbox, Outgoing, SessionHandle};

/// The heartbeat: a ping frame with no payload.
const PING: Bytes = Bytes::from_static(&[0x80 | frame::PING, 0]);
/// How long closing may take: sending the close frame and waiting for the client's reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the main loop ended.
enum Exit {
    /// The client closed or the connection broke: nothing more to send.
    Gone,
    /// The node is shutting down: flush what is queued, then close with 1001.
    Drain,
    /// Close with this code without flushing the queue.
    Close(CloseCode),
}

// Memory: a task's future is as large as the largest state it can be in, and an idle socket
// sits in its task for hours. The rarely taken, large paths (handling a request, writing a
// batch, draining, closing) are boxed so they take memory only while they run; the idle state
// is small (see docs/BENCHMARKS.md, idle connections).

/// Serves one upgraded socket until it closes. Runs as a tracked task; `permits` count it
/// against the connection limits until it ends.
///
/// A plain function returning one `async move` block, not an `async fn`: rustc keeps an
/// `async fn`'s arguments, and an async block's captures, for the whole life of the future,
/// so every value moved from them into a local is stored twice in each idle connection's task
/// (`-Zprint-type-sizes` showed 136 such bytes here).
pub fn serve(
    mut socket: Socket,
    node: Node,
    identity: Identity,
    permits: Permits,
) -> impl Future<Output = ()> {
    let (session, mut outbox) = node.new_session(identity.user.clone());
    let span = tracing::info_span!("session", id = session.id(), user = %identity.user);
    // Built here, outside the block, for the same reason: the block captures `conn` whole and
    // keeps it once, where values moved into a local inside it were also kept as captures.
    let mut conn = Connection {
        limiter: TokenBucket::new(
            node.config().limits.inbound_rate_per_sec,
            node.config().limits.inbound_burst,
            node.config().limits.rate_limit_close_after,
        ),
        node,
        session,
        rooms: HashSet::new(),
        identity,
    };
    async move {
        conn.node.open_session(&conn.session).await;
        tracing::debug!("open");
        let exit = conn.run(&mut socket, &mut outbox).await;
        // Leave every room first so nothing new is queued while closing.
        let rooms = std::mem::take(&mut conn.rooms);
        conn.node.close_session(&conn.session, rooms).await;
        let mut reason = None;
        let code = match exit {
            Exit::Gone => None,
            Exit::Drain => {
                let spread = conn.node.config().reconnect_spread_ms;
                let after = rand::random_range(0..=spread);
                let drained = Box::pin(drain(&mut socket, &mut outbox, after));
                let flushed = timeout(CLOSE_TIMEOUT, drained).await;
                reason = Some(format!("reconnect_after_ms={after}"));
                flushed
                    .is_ok_and(|r| r.is_ok())
                    .then_some(CloseCode::GoingAway)
            }
            Exit::Close(code) => Some(code),
        };
        if let Some(code) = code {
            metrics::counter!("roomcast_closes_total", "code" => code.code().to_string())
                .increment(1);
            let reason = reason.as_deref().unwrap_or(code.reason());
            let _ = timeout(CLOSE_TIMEOUT, Box::pin(close(&mut socket, code, reason))).await;
        }
        tracing::debug!(code = code.map(CloseCode::code), "closed");
        // Held to the end, and by the capture alone (a `let` would store a second copy).
        drop(permits);
    }
    .instrument(span)
}

/// The socket task's timekeeping, all served by one timer.
struct Clock {
    /// When the client last sent anything (pongs included).
    last_seen: Instant,
    next_ping: Instant,
    /// With a write delay: until when queued frames wait for more to join them.
    hold_until: Option<Instant>,
}

struct Connection {
    node: Node,
    session: SessionHandle,
    /// Rooms joined or being joined; cleaned up when the session ends.
    rooms: HashSet<Arc<str>>,
    limiter: TokenBucket,
    /// The user, what its token allows, and until when (replaced by `refresh`).
    identity: Identity,
}

impl Connection {
    async fn run(&mut self, socket: &mut Socket, outbox: &mut Outbox) -> Exit {
        let config = self.node.config();
        let (interval, silence) = (config.heartbeat.interval(), config.heartbeat.timeout());
        let write_delay = config.socket.write_delay();
        self.session.send(encode(&ServerFrame::Welcome {
            session: &format!("s-{}-{}", self.node.id(), self.session.id()),
            user: self.session.user(),
            node: self.node.id(),
            heartbeat_ms: config.heartbeat.interval_ms,
            max_message_bytes: config.limits.max_message_bytes,
        }));
        let mut clock = Clock {
            last_seen: Instant::now(),
            next_ping: Instant::now() + interval,
            hold_until: None,
        };
        // One timer for the next ping, the token's expiry and the end of a write delay: an
        // idle socket holds one timer entry, not three.
        let timer = tokio::time::sleep_until(clock.next_ping.min(self.expiry_instant()));
        tokio::pin!(timer);
        // Unbiased on purpose: under a constant stream of outbound frames, reads and heartbeats
        // must still get their turn.
        loop {
            tokio::select! {
                out = outbox.next(), if clock.hold_until.is_none() => match out {
                    Outgoing::Close(code) => return Exit::Close(code),
                    Outgoing::Drain => return Exit::Drain,
                    Outgoing::Frames(batch) if write_delay.is_zero() => {
                        if let Err(exit) = self.guarded(Box::pin(write_batch(socket, batch))).await {
                            return exit;
                        }
                    }
                    Outgoing::Frames(batch) => {
                        // The frames wait in the queue, where a drain still finds them and
                        // the slow-consumer limit still counts them; reads go on meanwhile.
                        outbox.restore(batch);
                        let at = Instant::now() + write_delay;
                        clock.hold_until = Some(at);
                        if at < timer.deadline() {
                            timer.as_mut().reset(at);
                        }
                    }
                },
                () = &mut timer => {
                    let due = Box::pin(self.on_timer(socket, outbox, &mut clock, interval, silence));
                    match due.await {
                        Ok(wake) => timer.as_mut().reset(wake),
                        Err(exit) => return exit,
                    }
                }
                msg = socket.recv() => {
                    clock.last_seen = Instant::now();
                    match msg {
                        None | Some(Err(RecvError::Io(_))) => return Exit::Gone,
                        Some(Err(RecvError::Frame(err))) => {
                            tracing::debug!(%err, "bad frame");
                            return Exit::Close(err.close_code());
                        }
                        Some(Ok(Incoming::Close(code))) => {
                            // The close handshake: echo the client's code (none if it gave none).
                            let reply = code.map_or_else(
                                || frame::control(frame::CLOSE, &[]),
                                |code| frame::close(code, ""),
                            );
                            socket.discard_unstarted();
                            socket.queue_control(reply);
                            let _ = Box::pin(timeout(CLOSE_TIMEOUT, socket.flush())).await;
                            return Exit::Gone;
                        }
                        Some(Ok(Incoming::Ping(payload))) => match self.admit_control() {
                            Ok(true) => {
                                socket.queue_control(frame::control(frame::PONG, &payload));
                                if let Err(exit) = self.guarded(Box::pin(socket.flush())).await {
                                    return exit;
                                }
                            }
                            Ok(false) => {}
                            Err(exit) => return exit,
                        },
                        // A pong only proves liveness, which `last_seen` has noted.
                        Some(Ok(Incoming::Pong)) => {
                            if let Err(exit) = self.admit_control() {
                                return exit;
                            }
                        }
                        Some(Ok(msg)) => {
                            if let Some(exit) = Box::pin(self.on_message(msg)).await {
                                return exit;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The connection's one timer fired: writes frames whose delay is over, closes on token
    /// expiry or heartbeat silence, pings when due. Returns when the timer should fire next.
    async fn on_timer(
        &self,
        socket: &mut Socket,
        outbox: &mut Outbox,
        clock: &mut Clock,
        interval: Duration,
        silence: Duration,
    ) -> Result<Instant, Exit> {
        let now = Instant::now();
        if clock.hold_until.is_some_and(|at| at <= now) {
            clock.hold_until = None;
            self.guarded(write_batch(socket, outbox.take())).await?;
        }
        // A `refresh` may have moved the expiry since this timer was set.
        let expiry = self.expiry_instant();
        if expiry <= Instant::now() {
            return Err(Exit::Close(CloseCode::TokenExpired));
        }
        if clock.next_ping <= now {
            if now - clock.last_seen >= silence {
                return Err(Exit::Close(CloseCode::HeartbeatTimeout));
            }
            socket.queue_control(PING);
            self.guarded(socket.flush()).await?;
            clock.next_ping = now + interval;
        }
        let wake = clock.next_ping.min(expiry);
        Ok(clock.hold_until.map_or(wake, |at| at.min(wake)))
    }

    /// When the session's token runs out; far away when it has none.
    fn expiry_instant(&self) -> Instant {
        const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let Some(at) = self.identity.expires_at else {
            return Instant::now() + NEVER;
        };
        let left = at
            .saturating_mul(1000)
            .saturating_sub(crate::broker::unix_ms());
        Instant::now() + Duration::from_millis(left)
    }

    /// Runs a socket write unless the session is closed first (a stalled client must not pin
    /// the task). Write errors mean the client is gone.
    async fn guarded<E>(&self, write: impl Future<Output = Result<(), E>>) -> Result<(), Exit> {
        tokio::select! {
            result = write => result.map_err(|_| Exit::Gone),
            () = self.session.closed() => {
                Err(Exit::Close(self.session.close_code().unwrap_or(CloseCode::Internal)))
            }
        }
    }

    /// Whether a ping or pong from the client is within the inbound rate, which control frames
    /// share with messages: each costs a wake-up and a ping a write, so a flood of them must be
    /// bounded like any other. A ping over the limit gets no pong (a client that pings a few
    /// times a minute never meets it); persisting closes the socket with 4029 as for messages.
    /// Without this, a client flooding pings and never reading would hold its task in a pong's
    /// write, since pongs must be sent in order and its socket is full.
    fn admit_control(&mut self) -> Result<bool, Exit> {
        match self.limiter.check(Instant::now()) {
            Verdict::Allow => Ok(true),
            Verdict::Limited => {
                metrics::counter!("roomcast_rate_limited_total", "kind" => "control").increment(1);
                Ok(false)
            }
            Verdict::Abuse => Err(Exit::Close(CloseCode::RateLimitAbuse)),
        }
    }

    /// A text or binary message from the client (control frames are answered in `run`).
    async fn on_message(&mut self, msg: Incoming) -> Option<Exit> {
        let text = match msg {
            Incoming::Text(text) => Some(text),
            _ => None,
        };
        metrics::counter!("roomcast_frames_in_total").increment(1);
        match self.limiter.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Limited => {
                metrics::counter!("roomcast_rate_limited_total", "kind" => "inbound").increment(1);
                self.reply_error(
                    None,
                    &ProtocolError::new(ErrorCode::RateLimited, "slow down"),
                );
                return None;
            }
            Verdict::Abuse => return Some(Exit::Close(CloseCode::RateLimitAbuse)),
        }
        let Some(text) = text else {
            let err = ProtocolError::new(ErrorCode::Unsupported, "binary frames are not supported");
            self.reply_error(None, &err);
            return None;
        };
        match decode_request(&text) {
            Ok((id, request)) => {
                if let Err(err) = self.handle(id.as_ref(), request).await {
                    self.reply_error(id.as_ref(), &err);
                }
            }
            Err((id, err)) => self.reply_error(id.as_ref(), &err),
        }
        None
    }

    async fn handle(
        &mut self,
        id: Option<&RequestId>,
        request: Request,
    ) -> Result<(), ProtocolError> {
        let node = self.node.clone();
        let user = self.session.user().clone();
        match request {
            Request::Join {
                room,
                resume,
                presence,
            } => {
                if self.rooms.contains(room.as_str()) {
                    return Err(ProtocolError::new(ErrorCode::BadRequest, "already joined"));
                }
                if !self.identity.rooms.may_join(&room) {
                    return Err(forbidden("join", &room));
                }
                let max = node.config().limits.max_rooms_per_connection;
                if self.rooms.len() >= max {
                    let msg = format!("a connection may be in at most {max} rooms");
                    return Err(ProtocolError::new(ErrorCode::TooManyRooms, msg));
                }
                self.rooms.insert(Arc::from(room.as_str()));
                let joined = node
                    .join(&self.session, &room, resume.as_ref(), presence, id)
                    .await;
                if joined.is_err() {
                    self.rooms.remove(room.as_str());
                }
                joined
            }
            Request::Leave { room } => {
                if !self.rooms.remove(room.as_str()) {
                    return Err(not_member(&room));
                }
                node.leave(&self.session, &room).await;
                self.reply(&ServerFrame::Left { id, room: &room });
                Ok(())
            }
            Request::Publish { room, data } => {
                if !self.rooms.contains(room.as_str()) {
                    return Err(not_member(&room));
                }
                if !self.identity.rooms.may_publish(&room) {
                    return Err(forbidden("publish to", &room));
                }
                let offset = node.publish(&room, &user, &data).await?;
                self.reply(&ServerFrame::Ack {
                    id,
                    room: Some(&room),
                    offset: Some(offset),
                });
                Ok(())
            }
            Request::Send { to, data } => {
                node.send_direct(&to, &user, &data).await?;
                self.reply(&ServerFrame::Ack {
                    id,
                    room: None,
                    offset: None,
                });
                Ok(())
            }
            Request::Presence { room } => {
                if !self.rooms.contains(room.as_str()) {
                    return Err(not_member(&room));
                }
                let users = node.presence(&room).await?;
                let users: Vec<&str> = users.iter().map(String::as_str).collect();
                self.reply(&ServerFrame::Presence {
                    id,
                    room: &room,
                    users: &users,
                });
                Ok(())
            }
            Request::Refresh { token } => self.refresh(id, &token),
            Request::Ping => {
                self.reply(&ServerFrame::Pong { id });
                Ok(())
            }
        }
    }

    /// Replaces the session's token: same user, new expiry and permissions. Rooms already
    /// joined stay joined.
    fn refresh(&mut self, id: Option<&RequestId>, token: &str) -> Result<(), ProtocolError> {
        let verifier = self.node.verifier();
        if !verifier.enabled() {
            return Err(ProtocolError::new(
                ErrorCode::BadRequest,
                "authentication is off; nothing to refresh",
            ));
        }
        let identity = verifier.verify(token).map_err(token_error)?;
        if identity.user != self.identity.user {
            return Err(token_error(AuthError::WrongUser));
        }
        let expires_at = identity.expires_at.unwrap_or(u64::MAX);
        self.identity = identity;
        self.reply(&ServerFrame::Refreshed { id, expires_at });
        Ok(())
    }

    fn reply(&self, frame: &ServerFrame<'_>) {
        self.session.send(encode(frame));
    }

    fn reply_error(&self, id: Option<&RequestId>, err: &ProtocolError) {
        self.reply(&ServerFrame::Error {
            id,
            code: err.code,
            message: &err.message,
        });
    }
}

fn forbidden(action: &str, room: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Forbidden,
        format!("the token does not allow you to {action} {room}"),
    )
}

fn token_error(err: AuthError) -> ProtocolError {
    metrics::counter!("roomcast_auth_failures_total", "reason" => err.code()).increment(1);
    let code = match err {
        AuthError::Missing | AuthError::Invalid => ErrorCode::TokenInvalid,
        AuthError::Expired => ErrorCode::TokenExpired,
        AuthError::NotYetValid => ErrorCode::TokenNotYetValid,
        AuthError::TooLarge => ErrorCode::TokenTooLarge,
        AuthError::WrongUser => ErrorCode::TokenWrongUser,
    };
    ProtocolError::new(code, err.to_string())
}

fn not_member(room: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::NotMember, format!("not a member of {room}"))
}

/// Writes a batch taken from the queue.
async fn write_batch(socket: &mut Socket, batch: Batch) -> std::io::Result<()> {
    socket.queue_text(batch);
    socket.flush().await
}

/// Shutdown: writes out everything still queued, then a `goaway` telling the client when to
/// reconnect. The delay is drawn per client so a draining node's clients do not all land on the
/// remaining nodes in the same instant.
async fn drain(
    socket: &mut Socket,
    outbox: &mut Outbox,
    reconnect_after_ms: u64,
) -> std::io::Result<()> {
    socket.queue_text(outbox.take());
    socket.queue_text([encode(&ServerFrame::Goaway { reconnect_after_ms })]);
    socket.flush().await
}

/// Sends the close frame, then waits for the client's reply so the TCP close is clean. Frames
/// not yet started are dropped: the client is not going to read them.
async fn close(socket: &mut Socket, code: CloseCode, reason: &str) {
    socket.discard_unstarted();
    socket.queue_control(frame::close(code.code(), reason));
    if socket.flush().await.is_err() {
        return;
    }
    while let Some(Ok(item)) = socket.recv().await {
        if matches!(item, Incoming::Close(_)) {
            return;
        }
    }
}
