//! One task per socket: reads requests, writes queued frames, pings, and closes with the right
//! code. Reading and writing share the task under one `select!`; writes take everything queued
//! and hand it to the socket in one vectored write, so a burst of room messages costs one
//! `send()` rather than many.
//!
//! Every wait on the socket also watches the session's close switch, so a client that stopped
//! reading cannot pin the task: the hub flips the switch when its queue overflows.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use super::Permits;
use super::frame::{self, Incoming};
use super::latency::Sample;
use super::socket::{Event, RecvError, WebSocket};
use crate::auth::{AuthError, Identity};
use crate::backend::{Connected, Refusal};
use crate::node::limiter::{TokenBucket, Verdict};
use crate::node::{HistoryQuery, JoinRequest, Memberships, Node, NodeError};
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
    mut socket: WebSocket,
    node: Node,
    identity: Identity,
    permits: Permits,
    connected: Option<Box<Connected>>,
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
        direct: TokenBucket::new(
            node.config().limits.direct_rate_per_sec,
            node.config().limits.direct_burst,
            u32::MAX,
        ),
        node,
        session,
        rooms: Memberships::default(),
        identity,
        connected,
        clock: Clock {
            opened: Instant::now(),
            last_seen: Instant::now(),
            next_ping: Instant::now(),
            hold_until: None,
            message_started: None,
            rearm: false,
            sample: Sample::default(),
        },
    };
    async move {
        conn.node.open_session(&conn.session).await;
        tracing::debug!("open");
        let exit = conn.run(&mut socket, &mut outbox).await;
        // Leave every room first so nothing new is queued while closing.
        conn.node
            .close_session(&conn.session, &mut conn.rooms)
            .await;
        let (code, reason) = closing(&conn.node, &mut socket, &mut outbox, exit).await;
        if let Some(code) = code {
            metrics::counter!("roomcast_closes_total", "code" => code.code().to_string())
                .increment(1);
            let reason = reason.as_deref().unwrap_or(code.reason());
            let _ = timeout(CLOSE_TIMEOUT, Box::pin(socket.close(code, reason))).await;
        }
        let lasted = conn.clock.opened.elapsed();
        super::close_log::closed(permits.ip(), conn.session.user(), lasted, code);
        // Held to the end, and by the capture alone (a `let` would store a second copy).
        drop(permits);
    }
    .instrument(span)
}

/// The close code `exit` ends the session with, and a reason other than the code's own: a
/// drain first sends what is queued (within [`CLOSE_TIMEOUT`]) and tells the client when to
/// come back; a client already gone gets nothing.
async fn closing(
    node: &Node,
    socket: &mut WebSocket,
    outbox: &mut Outbox,
    exit: Exit,
) -> (Option<CloseCode>, Option<String>) {
    match exit {
        Exit::Gone => (None, None),
        Exit::Drain => {
            let after = rand::random_range(0..=node.config().reconnect_spread_ms);
            let flushed = timeout(CLOSE_TIMEOUT, Box::pin(drain(socket, outbox, after))).await;
            let code = flushed
                .is_ok_and(|r| r.is_ok())
                .then_some(CloseCode::GoingAway);
            (code, Some(format!("reconnect_after_ms={after}")))
        }
        Exit::Close(code) => (Some(code), None),
    }
}

/// The socket task's timekeeping, all served by one timer.
struct Clock {
    /// When the session began, for the close log line.
    opened: Instant,
    /// When the client last sent anything (pongs and fragments included).
    last_seen: Instant,
    next_ping: Instant,
    /// With a write delay: until when queued frames wait for more to join them.
    hold_until: Option<Instant>,
    /// When the client began the message it is still sending in fragments.
    message_started: Option<Instant>,
    /// A deadline may have moved earlier than the timer's: compute the next wake-up again.
    rearm: bool,
    /// The delivery latency sample of the batch being written, if it was sampled.
    sample: Sample,
}

/// The fixed intervals the clock measures against, from the configuration.
struct Intervals {
    ping: Duration,
    silence: Duration,
    write: Duration,
    message: Duration,
}

impl Clock {
    /// The earliest deadline: the next ping, the token's expiry, the end of a write delay, a
    /// stalled write's or an unfinished message's time limit.
    fn next_wake(&self, socket: &WebSocket, times: &Intervals, expiry: Instant) -> Instant {
        [
            self.hold_until,
            socket.stalled_since().map(|at| at + times.write),
            self.message_started.map(|at| at + times.message),
            socket.compressor_idle_at(),
        ]
        .into_iter()
        .flatten()
        .fold(self.next_ping.min(expiry), Instant::min)
    }
}

struct Connection {
    node: Node,
    session: SessionHandle,
    /// Rooms joined or being joined; changed only by the node, emptied when the session ends.
    rooms: Memberships,
    limiter: TokenBucket,
    /// Direct messages (`send`) have a budget of their own: one connection must not be able to
    /// flood another user off with them.
    direct: TokenBucket,
    /// The user, what its token allows, and until when (replaced by `refresh`).
    identity: Identity,
    /// The connect proxy's answer, until the session has started (boxed: one pointer in an
    /// idle connection).
    connected: Option<Box<Connected>>,
    clock: Clock,
}

impl Connection {
    async fn run(&mut self, socket: &mut WebSocket, outbox: &mut Outbox) -> Exit {
        let config = self.node.config();
        let times = Intervals {
            ping: config.heartbeat.interval(),
            silence: config.heartbeat.timeout(),
            write: config.limits.write_timeout(),
            message: config.limits.message_timeout(),
        };
        let write_delay = config.socket.write_delay();
        self.session.send(encode(&ServerFrame::Welcome {
            session: &format!("s-{}-{}", self.node.id(), self.session.id()),
            user: self.session.user(),
            node: self.node.id(),
            heartbeat_ms: config.heartbeat.interval_ms,
            max_message_bytes: config.limits.max_message_bytes,
            info: self.connected.as_ref().and_then(|c| c.info.as_deref()),
        }));
        if let Some(connected) = self.connected.take() {
            Box::pin(self.join_backend_rooms(connected.rooms)).await;
        }
        self.clock.next_ping = Instant::now() + times.ping;
        // One timer for every deadline: an idle socket holds one timer entry, not several.
        let timer = tokio::time::sleep_until(self.clock.next_ping.min(self.expiry_instant()));
        tokio::pin!(timer);
        // Unbiased on purpose: under a constant stream of outbound frames, reads and heartbeats
        // must still get their turn. No branch awaits the socket's write: a pending write goes
        // on inside `socket.next()`, so a client that stops reading cannot stop its timers.
        loop {
            // New frames are taken only once the last batch is written: until then they wait
            // in the session's queue, where the slow-consumer limits count them.
            let take_frames = self.clock.hold_until.is_none() && !socket.writing();
            let step = tokio::select! {
                out = outbox.next(take_frames) => self.on_outgoing(out, socket, outbox, write_delay),
                () = &mut timer => match self.on_timer(socket, outbox, &times) {
                    Ok(wake) => {
                        timer.as_mut().reset(wake);
                        Ok(())
                    }
                    Err(exit) => Err(exit),
                },
                event = socket.next() => match event {
                    Event::Flushed => {
                        self.written(outbox);
                        Ok(())
                    }
                    Event::Received(msg) => Box::pin(self.on_received(msg, socket, outbox)).await,
                },
            };
            if let Err(exit) = step {
                return exit;
            }
            if std::mem::take(&mut self.clock.rearm) {
                let wake = self.clock.next_wake(socket, &times, self.expiry_instant());
                if wake < timer.deadline() {
                    timer.as_mut().reset(wake);
                }
            }
        }
    }

    /// What the session's queue handed over: frames to write (or to hold for the write delay),
    /// a close, or a drain.
    fn on_outgoing(
        &mut self,
        out: Outgoing,
        socket: &mut WebSocket,
        outbox: &mut Outbox,
        write_delay: Duration,
    ) -> Result<(), Exit> {
        match out {
            Outgoing::Close(code) => Err(Exit::Close(code)),
            Outgoing::Drain => Err(Exit::Drain),
            Outgoing::Frames(batch) if write_delay.is_zero() => {
                self.queue_batch(socket, batch);
                self.write_now(socket, outbox)
            }
            Outgoing::Frames(batch) => {
                // The frames wait in the queue, where a drain still finds them and the
                // slow-consumer limits still count them; reads go on meanwhile.
                outbox.restore(batch);
                self.clock.hold_until = Some(Instant::now() + write_delay);
                self.clock.rearm = true;
                Ok(())
            }
        }
    }

    /// Hands frames taken from the session's queue to the socket, sampling their latency.
    fn queue_batch(&mut self, socket: &mut WebSocket, batch: Batch) {
        self.clock.sample.taken(&batch);
        let had_compressor = socket.holds_compressor();
        socket.queue_text(batch);
        // A compressor just made is to be dropped once idle: the timer may be set for later.
        self.clock.rearm |= !had_compressor && socket.holds_compressor();
    }

    /// Everything handed to the socket is written: it no longer counts against the session's
    /// limits, and a latency sample taken with it is recorded.
    fn written(&mut self, outbox: &mut Outbox) {
        outbox.written();
        self.clock.sample.written();
    }

    /// Writes what the socket takes now; the rest goes on in `socket.next()`, and a write that
    /// has to wait arms the write deadline.
    fn write_now(&mut self, socket: &mut WebSocket, outbox: &mut Outbox) -> Result<(), Exit> {
        match socket.flush_now() {
            Ok(true) => {
                self.written(outbox);
                Ok(())
            }
            Ok(false) => {
                self.clock.rearm = true;
                Ok(())
            }
            Err(_) => Err(Exit::Gone),
        }
    }

    /// The connection's one timer fired: writes frames whose delay is over; closes on a stalled
    /// write, an unfinished message, token expiry or heartbeat silence; pings when due. Returns
    /// when the timer should fire next.
    fn on_timer(
        &mut self,
        socket: &mut WebSocket,
        outbox: &mut Outbox,
        times: &Intervals,
    ) -> Result<Instant, Exit> {
        let now = Instant::now();
        socket.drop_idle_compressor(now);
        if self.clock.hold_until.is_some_and(|at| at <= now) {
            self.clock.hold_until = None;
            if !socket.writing() {
                self.queue_batch(socket, outbox.take());
                self.write_now(socket, outbox)?;
            }
        }
        if socket
            .stalled_since()
            .is_some_and(|at| now - at >= times.write)
        {
            metrics::counter!("roomcast_slow_consumer_closes_total").increment(1);
            return Err(Exit::Close(CloseCode::SlowConsumer));
        }
        if self
            .clock
            .message_started
            .is_some_and(|at| now - at >= times.message)
        {
            return Err(Exit::Close(CloseCode::PolicyViolation));
        }
        // A `refresh` may have moved the expiry since this timer was set. Read from the wall
        // clock, which `exp` is in: the instant derived from it is never before `now`.
        if self.token_expired() {
            return Err(Exit::Close(CloseCode::TokenExpired));
        }
        let expiry = self.expiry_instant();
        if self.clock.next_ping <= now {
            if now - self.clock.last_seen >= times.silence {
                return Err(Exit::Close(CloseCode::HeartbeatTimeout));
            }
            socket.queue_control(PING);
            self.write_now(socket, outbox)?;
            self.clock.next_ping = now + times.ping;
        }
        Ok(self.clock.next_wake(socket, times, expiry))
    }

    /// What `socket.next()` read: a message, a control frame, a fragment, or the end.
    async fn on_received(
        &mut self,
        msg: Option<Result<Incoming, RecvError>>,
        socket: &mut WebSocket,
        outbox: &mut Outbox,
    ) -> Result<(), Exit> {
        let now = Instant::now();
        self.clock.last_seen = now;
        let msg = match msg {
            None | Some(Err(RecvError::Io(_))) => return Err(Exit::Gone),
            Some(Err(RecvError::Frame(err))) => {
                tracing::debug!(%err, "bad frame");
                return Err(Exit::Close(err.close_code()));
            }
            Some(Ok(msg)) => msg,
        };
        match msg {
            Incoming::Close(code) => {
                let _ = timeout(CLOSE_TIMEOUT, socket.answer_close(code)).await;
                Err(Exit::Gone)
            }
            Incoming::Ping(payload) => {
                if self.admit_frame("control")? {
                    socket.queue_control(frame::control(frame::PONG, &payload));
                    self.write_now(socket, outbox)?;
                }
                Ok(())
            }
            // A pong only proves liveness, which `last_seen` has noted.
            Incoming::Pong => self.admit_frame("control").map(drop),
            // Charged like any frame, so a message that never ends cannot stream for free,
            // and timed from its first fragment.
            Incoming::Fragment => {
                self.admit_frame("fragment")?;
                if self.clock.message_started.is_none() {
                    self.clock.message_started = Some(now);
                    self.clock.rearm = true;
                }
                Ok(())
            }
            msg => {
                self.clock.message_started = None;
                self.on_message(msg).await.map_or(Ok(()), Err)
            }
        }
    }

    fn token_expired(&self) -> bool {
        self.identity
            .expires_at
            .is_some_and(|at| crate::broker::unix_ms() >= at.saturating_mul(1000))
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

    /// Whether a ping, pong or fragment from the client is within the inbound rate, which
    /// they share with messages: each costs a wake-up and a ping a write, so a flood of them
    /// must be bounded like any other. A ping over the limit gets no pong (a client that pings
    /// a few times a minute never meets it); persisting closes the socket with 4029 as for
    /// messages. Without this, a client flooding pings and never reading would fill its socket
    /// with pongs, and one streaming empty fragments would cost a core.
    fn admit_frame(&mut self, kind: &'static str) -> Result<bool, Exit> {
        match self.limiter.check(Instant::now()) {
            Verdict::Allow => Ok(true),
            Verdict::Limited => {
                metrics::counter!("roomcast_rate_limited_total", "kind" => kind).increment(1);
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

    /// One request, by kind: each kind's rules and reply are in its own method below.
    async fn handle(
        &mut self,
        id: Option<&RequestId>,
        request: Request,
    ) -> Result<(), ProtocolError> {
        match request {
            Request::Join {
                room,
                resume,
                presence,
                rewind,
            } => {
                let request = JoinRequest {
                    resume: resume.as_ref(),
                    presence,
                    id,
                    rewind,
                    from_backend: false,
                };
                self.join(&room, request).await
            }
            Request::History {
                room,
                before,
                after,
                limit,
                order,
            } => {
                let query = HistoryQuery {
                    before,
                    after,
                    limit,
                    order,
                };
                self.history(id, &room, query).await
            }
            Request::Leave { room } => self.leave(id, &room).await,
            Request::Publish { room, data, key } => {
                self.publish(id, &room, &data, key.as_deref()).await
            }
            Request::Send { to, data } => self.send_direct(id, &to, &data).await,
            Request::Presence { room } => self.presence(id, &room).await,
            Request::Refresh { token } => self.refresh(id, &token).await,
            Request::Ping => {
                self.reply(&ServerFrame::Pong { id });
                Ok(())
            }
        }
    }

    async fn join(&mut self, room: &str, request: JoinRequest<'_>) -> Result<(), ProtocolError> {
        if !self.identity.permissions.may_join(room) {
            return Err(forbidden("join", room));
        }
        let node = self.node.clone();
        Ok(node
            .join(&self.session, &mut self.rooms, room, request)
            .await?)
    }

    /// The rooms the connect proxy named, joined before any request is read, each answered
    /// with `joined` (or an `error` frame naming the room's refusal). Past
    /// `limits.max_rooms_per_connection` one `too_many_rooms` error names how many were left
    /// out, so a long list cannot flood the session's queue with refusals.
    async fn join_backend_rooms(&mut self, rooms: Vec<String>) {
        let total = rooms.len();
        for (done, room) in rooms.into_iter().enumerate() {
            let request = JoinRequest {
                from_backend: true,
                ..JoinRequest::default()
            };
            let node = self.node.clone();
            let joined = node
                .join(&self.session, &mut self.rooms, &room, request)
                .await;
            let Err(err) = joined else { continue };
            let full = matches!(err, NodeError::TooManyRooms { .. });
            let err = ProtocolError::from(err);
            let message = if full {
                format!(
                    "{} rooms from {room} on not joined: {}",
                    total - done,
                    err.message
                )
            } else {
                format!("{room}: {}", err.message)
            };
            self.reply_error(None, &ProtocolError { message, ..err });
            if full {
                return;
            }
        }
    }

    /// A page of the room's history: allowed to whoever may join the room, member or not.
    async fn history(
        &mut self,
        id: Option<&RequestId>,
        room: &str,
        query: HistoryQuery,
    ) -> Result<(), ProtocolError> {
        if !self.identity.permissions.may_join(room) {
            return Err(forbidden("read the history of", room));
        }
        let Some(page) = self.node.clone().history_page(room, query).await? else {
            return Err(ProtocolError::new(
                ErrorCode::UnknownRoom,
                format!("no history of {room}: never used, or idle for too long"),
            ));
        };
        self.session
            .send(super::history::page_frame(id, room, &page));
        Ok(())
    }

    async fn leave(&mut self, id: Option<&RequestId>, room: &str) -> Result<(), ProtocolError> {
        let node = self.node.clone();
        node.leave(&self.session, &mut self.rooms, room).await?;
        self.reply(&ServerFrame::Left { id, room });
        Ok(())
    }

    async fn publish(
        &mut self,
        id: Option<&RequestId>,
        room: &str,
        data: &RawValue,
        key: Option<&str>,
    ) -> Result<(), ProtocolError> {
        self.rooms.check(room)?;
        if !self.identity.permissions.may_publish(room) {
            return Err(forbidden("publish to", room));
        }
        let user = self.session.user().clone();
        let node = self.node.clone();
        let offset = node.publish_from_client(room, &user, data, key).await?;
        self.reply(&ServerFrame::Ack {
            id,
            room: Some(room),
            offset: Some(offset),
        });
        Ok(())
    }

    async fn send_direct(
        &mut self,
        id: Option<&RequestId>,
        to: &str,
        data: &RawValue,
    ) -> Result<(), ProtocolError> {
        if !self.identity.permissions.may_send_to(to) {
            return Err(forbidden("send direct messages to", to));
        }
        if self.direct.check(Instant::now()) != Verdict::Allow {
            metrics::counter!("roomcast_rate_limited_total", "kind" => "direct").increment(1);
            let limits = &self.node.config().limits;
            let msg = format!(
                "at most {} direct messages a second (burst {})",
                limits.direct_rate_per_sec, limits.direct_burst
            );
            return Err(ProtocolError::new(ErrorCode::RateLimited, msg));
        }
        let user = self.session.user().clone();
        self.node.clone().send_direct(to, &user, data).await?;
        self.reply(&ServerFrame::Ack {
            id,
            room: None,
            offset: None,
        });
        Ok(())
    }

    async fn presence(&mut self, id: Option<&RequestId>, room: &str) -> Result<(), ProtocolError> {
        self.rooms.check(room)?;
        let list = self.node.clone().presence(room).await?;
        let users: Vec<&str> = list.users.iter().map(String::as_str).collect();
        self.reply(&ServerFrame::Presence {
            id,
            room,
            seq: list.seq,
            users: &users,
        });
        Ok(())
    }

    /// Replaces the session's token: same user, new expiry and permissions. Rooms already
    /// joined stay joined.
    async fn refresh(&mut self, id: Option<&RequestId>, token: &str) -> Result<(), ProtocolError> {
        let verifier = self.node.verifier();
        if !verifier.enabled() {
            return Err(ProtocolError::new(
                ErrorCode::BadRequest,
                "authentication is off; nothing to refresh",
            ));
        }
        let identity = verifier.verify(token).await.map_err(token_error)?;
        if identity.user != self.identity.user {
            return Err(token_error(AuthError::WrongUser));
        }
        let expires_at = identity.expires_at.unwrap_or(u64::MAX);
        self.identity = identity;
        // The new expiry may be earlier than the one the timer waits for.
        self.clock.rearm = true;
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
            app_code: err.app_code.as_deref(),
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

/// Shutdown: writes out everything still queued, then a `goaway` telling the client when to
/// reconnect. The delay is drawn per client so a draining node's clients do not all land on the
/// remaining nodes in the same instant.
async fn drain(
    socket: &mut WebSocket,
    outbox: &mut Outbox,
    reconnect_after_ms: u64,
) -> std::io::Result<()> {
    socket.queue_text(outbox.take());
    socket.queue_text([encode(&ServerFrame::Goaway { reconnect_after_ms })]);
    socket.flush().await
}

/// The node's errors on this endpoint's wire.
impl From<NodeError> for ProtocolError {
    fn from(err: NodeError) -> Self {
        match &err {
            NodeError::Unavailable(_) => {
                ProtocolError::new(ErrorCode::Unavailable, err.to_string())
            }
            NodeError::AlreadyJoined => ProtocolError::new(ErrorCode::BadRequest, err.to_string()),
            NodeError::TooManyRooms { .. } => {
                ProtocolError::new(ErrorCode::TooManyRooms, err.to_string())
            }
            NodeError::NotMember(_) => ProtocolError::new(ErrorCode::NotMember, err.to_string()),
            NodeError::Refused(Refusal::Denied(denial)) => ProtocolError {
                code: ErrorCode::Denied,
                message: denial.message.clone(),
                app_code: Some(denial.code.clone()),
            },
            NodeError::Refused(Refusal::Unavailable(_)) => {
                ProtocolError::new(ErrorCode::BackendUnavailable, err.to_string())
            }
        }
    }
}
