//! One simulated user: connects at its ramp slot, joins its room, publishes and sends direct
//! messages on schedule, checks every delivery's offset, churns and resumes if chosen. One task
//! per user with at most one timer; all figures go to the worker's shared stats.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::auth::Credentials;
use crate::pad::Pad;
use crate::scenario::Scenario;
use crate::stats::{MemberCursor, WorkerStats};
use crate::target::{self, Endpoint, Ws};
use crate::wire::now_us;
use crate::wire::{self, Frame, Kind, Payload};

mod receive;

use crate::rng::Rng;

/// Reconnect attempts after an unplanned disconnect or a churn, before the user gives up.
const RECONNECT_ATTEMPTS: u32 = 3;
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);
/// How long a closing user waits for the close handshake before dropping the socket.
const CLOSE_WAIT: Duration = Duration::from_millis(500);
/// How many intervals late a fixed-rate sender may be and still catch up.
const CATCH_UP_GAPS: u32 = 10;

/// The next time of a schedule at `per_sec` whose current turn was due `at`. A turn that is a
/// little late is caught up (a worker busy reading a burst of deliveries is late by a few ms);
/// after a real stall the schedule skips ahead rather than burst into the server's rate limiter.
fn next_at(at: Instant, per_sec: f64, now: Instant) -> Instant {
    let gap = Duration::from_secs_f64(1.0 / per_sec);
    if at + gap * CATCH_UP_GAPS < now {
        now + gap
    } else {
        at + gap
    }
}

/// Adds what `ws` read off its connection since the last call to the wire byte count.
fn count_wire(shared: &Shared, ws: &mut Ws) {
    let n = ws.get_mut().take_read();
    shared.stats.borrow_mut().counters.wire_bytes_received += n;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqKind {
    Publish,
    Direct,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    sent_us: u64,
    kind: ReqKind,
}

/// How a session ended.
enum End {
    /// The run is over.
    Closing,
    /// This user's planned disconnect.
    Churn,
    /// The server closed or the socket broke.
    Lost,
    /// The server is draining (close 1001): reconnect elsewhere and resume.
    Drained,
}

/// State every user of this worker shares (single thread, hence `Rc`/`RefCell`).
pub struct Shared {
    pub scenario: Scenario,
    pub targets: Vec<Endpoint>,
    /// Signs each connection's token when the scenario has a `jwt_secret`.
    pub credentials: Option<Credentials>,
    pub start: Instant,
    pub publish_end: Instant,
    pub stats: RefCell<WorkerStats>,
    pub closing: watch::Receiver<bool>,
    pub pad: Pad,
    /// Room and user name prefix, unique per run so runs never share history.
    pub prefix: String,
    pub seed: u64,
}

impl Shared {
    pub fn user_name(&self, index: u64) -> String {
        format!("{}-u{index}", self.prefix)
    }
}

struct User {
    index: u64,
    name: String,
    room: Option<Rc<str>>,
    publishes: bool,
    /// Membership that survives reconnects: the room history and the last offset seen.
    cursor: Option<MemberCursor>,
    epoch: Option<Rc<str>>,
    /// After a recovered resume, offsets up to here are the replay of what was missed.
    replay_until: Option<u64>,
    /// Last `seq` seen from each publisher of the room. Allocated on the first message, so an
    /// idle user pays nothing; a member holds one entry per publisher it hears.
    last_seq: HashMap<u64, u64>,
    next_id: u64,
    seq: u64,
    pending: VecDeque<Pending>,
    rng: Rng,
    next_publish: Option<Instant>,
    next_direct: Option<Instant>,
    churn_at: Option<Instant>,
    /// Reconnects so far that moved to the next URL (`resume_elsewhere`).
    moves: u64,
}

/// Runs user `index` until the run closes. Never panics on network trouble; everything is
/// counted.
pub async fn run(shared: Rc<Shared>, index: u64) {
    let mut user = User::new(&shared, index);
    let connect_at =
        shared.start + Duration::from_secs_f64(index as f64 / shared.scenario.ramp_per_sec);
    let mut closing = shared.closing.clone();
    tokio::select! {
        () = sleep_until(connect_at) => {}
        _ = closing.wait_for(|c| *c) => return,
    }
    let mut resuming = false;
    loop {
        let opened = user.open(&shared, resuming).await;
        if resuming {
            // Back, or given up: either way the drain need not wait for this user any more.
            shared.stats.borrow_mut().away -= 1;
        }
        let Some(ws) = opened else { return };
        let end = user.session(&shared, ws).await;
        match end {
            End::Closing => return,
            End::Churn => {
                {
                    let mut st = shared.stats.borrow_mut();
                    st.counters.churn_disconnects += 1;
                    st.away += 1;
                }
                let down = Duration::from_millis(shared.scenario.churn_down_ms);
                tokio::select! {
                    () = tokio::time::sleep(down) => {}
                    _ = closing.wait_for(|c| *c) => {
                        shared.stats.borrow_mut().away -= 1;
                        return;
                    }
                }
            }
            End::Lost | End::Drained => {
                let mut st = shared.stats.borrow_mut();
                if matches!(end, End::Drained) {
                    st.counters.server_drains += 1;
                } else {
                    st.counters.unexpected_disconnects += 1;
                }
                if *closing.borrow() {
                    return;
                }
                st.away += 1;
            }
        }
        if shared.scenario.resume_elsewhere {
            user.moves += 1;
        }
        resuming = true;
    }
}

impl User {
    fn new(shared: &Shared, index: u64) -> Self {
        let s = &shared.scenario;
        let mut rng = Rng::new(index ^ shared.seed);
        let placement = s.placement(index);
        let room =
            placement.map(|p| Rc::from(format!("{}-g{}r{}", shared.prefix, p.group, p.room)));
        // Decide churn by a draw of its own so the choice does not depend on other settings.
        let churn_at = (rng.unit() < s.churn).then(|| {
            let ramp = Duration::from_secs_f64(s.ramp_secs());
            let at = s.duration_secs * (0.2 + 0.5 * rng.unit());
            shared.start + ramp + Duration::from_secs_f64(at)
        });
        Self {
            index,
            name: shared.user_name(index),
            room,
            publishes: placement.is_some_and(|p| p.publishes) && s.publish_per_sec > 0.0,
            cursor: None,
            epoch: None,
            replay_until: None,
            last_seq: HashMap::new(),
            next_id: 1,
            seq: 0,
            pending: VecDeque::new(),
            rng,
            next_publish: None,
            next_direct: None,
            churn_at,
            moves: 0,
        }
    }

    /// Connects (with retries when resuming), reads the welcome and joins or resumes the room.
    async fn open(&mut self, shared: &Shared, resuming: bool) -> Option<Ws> {
        let s = &shared.scenario;
        let t = ((self.index + self.moves) % shared.targets.len() as u64) as usize;
        let target = &shared.targets[t];
        let source = target::source_addr(
            target,
            self.index / shared.targets.len() as u64,
            s.source_ips,
        );
        let limit = Duration::from_millis(s.connect_timeout_ms);
        let attempts = if resuming { RECONNECT_ATTEMPTS } else { 1 };
        let mut ws = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(RECONNECT_BACKOFF * attempt).await;
            }
            if *shared.closing.borrow() {
                return None;
            }
            let began = Instant::now();
            let credentials = shared.credentials.as_ref();
            match target::connect(target, source, &self.name, credentials, limit).await {
                Ok(socket) => {
                    let mut st = shared.stats.borrow_mut();
                    if resuming {
                        st.counters.reconnects_ok += 1;
                    } else {
                        st.counters.connects_ok += 1;
                        st.connect_time.record(began.elapsed().as_micros() as u64);
                    }
                    st.connected += 1;
                    st.counters.deflate_connections += u64::from(socket.get_ref().deflate());
                    ws = Some(socket);
                    break;
                }
                Err(e) => {
                    let mut st = shared.stats.borrow_mut();
                    *st.counters.connect_errors.entry(e.kind()).or_default() += 1;
                    st.error_sample(e.to_string());
                }
            }
        }
        let Some(mut ws) = ws else {
            let mut st = shared.stats.borrow_mut();
            if resuming {
                st.counters.reconnects_failed += 1;
            } else {
                st.counters.connects_failed += 1;
            }
            return None;
        };
        let joined = self.handshake(shared, &mut ws, limit).await;
        count_wire(shared, &mut ws);
        match joined {
            Ok(()) => {
                self.schedule(shared);
                Some(ws)
            }
            Err(why) => {
                let mut st = shared.stats.borrow_mut();
                st.counters.join_failed += 1;
                st.connected -= 1;
                st.error_sample(why);
                None
            }
        }
    }

    /// Waits for `welcome`, then joins (or resumes) the room and waits for `joined`.
    async fn handshake(
        &mut self,
        shared: &Shared,
        ws: &mut Ws,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let first = tokio::time::timeout_at(deadline, ws.next()).await;
        match first {
            Ok(Some(Ok(Message::Text(t)))) if matches!(Frame::parse(&t), Ok(f) if f.kind == Kind::Welcome) =>
                {}
            Ok(other) => return Err(format!("expected welcome, got {other:?}")),
            Err(_) => return Err("no welcome before the connect timeout".into()),
        }
        let Some(room) = self.room.clone() else {
            return Ok(());
        };
        let id = self.take_id();
        let since = match (&self.cursor, &self.epoch) {
            (Some(c), Some(e)) => Some((c.last, e.clone())),
            _ => None,
        };
        let request = wire::join(&room, id, since.as_ref().map(|(s, e)| (*s, &**e)));
        ws.send(Message::text(request))
            .await
            .map_err(|e| format!("sending join: {e}"))?;
        loop {
            let frame = match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(_))) => continue,
                Ok(other) => return Err(format!("connection ended while joining: {other:?}")),
                Err(_) => return Err(format!("no `joined` for {room} before the connect timeout")),
            };
            let f =
                Frame::parse(&frame).map_err(|e| format!("unreadable frame while joining: {e}"))?;
            if f.id != Some(id) {
                self.on_frame(shared, &frame);
                continue;
            }
            if f.kind != Kind::Joined {
                return Err(format!(
                    "join {room} refused: {}",
                    f.code.as_deref().unwrap_or("?")
                ));
            }
            let (Some(epoch), Some(offset)) = (f.epoch.as_deref(), f.offset) else {
                return Err("`joined` without epoch or offset".into());
            };
            self.joined(shared, &room, epoch, offset, f.recovered);
            return Ok(());
        }
    }

    /// Sets the next publish and direct-message times, with a random phase so users spread out.
    /// Direct messages start once the ramp is over: before, the recipient may not be connected
    /// yet and the message would be accepted and dropped, which is the protocol, not a loss.
    fn schedule(&mut self, shared: &Shared) {
        let s = &shared.scenario;
        let now = Instant::now();
        if self.publishes && self.cursor.is_some() {
            let gap = 1.0 / s.publish_per_sec;
            self.next_publish = Some(now + Duration::from_secs_f64(gap * self.rng.unit()));
        }
        if s.direct_per_sec > 0.0 && s.users > 1 {
            let gap = 1.0 / s.direct_per_sec;
            let from = now.max(shared.start + Duration::from_secs_f64(s.ramp_secs()));
            self.next_direct = Some(from + Duration::from_secs_f64(gap * self.rng.unit()));
        }
    }

    fn next_action(&self, publish_end: Instant) -> Option<Instant> {
        let publishing = [self.next_publish, self.next_direct]
            .into_iter()
            .flatten()
            .filter(|t| *t < publish_end);
        publishing.chain(self.churn_due_at()).min()
    }

    /// When to churn: never while a request waits for its answer. A connection dropped then
    /// leaves that request unanswered (counted abandoned), and every publish acknowledged is
    /// how a run shows that none went unanswered. The churn comes with the next answer.
    fn churn_due_at(&self) -> Option<Instant> {
        self.churn_at.filter(|_| self.pending.is_empty())
    }

    async fn session(&mut self, shared: &Shared, mut ws: Ws) -> End {
        let mut closing = shared.closing.clone();
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        loop {
            let next = self.next_action(shared.publish_end);
            match (next, timer.as_mut()) {
                (Some(at), Some(t)) if t.deadline() != at => t.as_mut().reset(at),
                (Some(at), None) => timer = Some(Box::pin(sleep_until(at))),
                (None, Some(_)) => timer = None,
                _ => {}
            }
            tokio::select! {
                biased;
                _ = closing.wait_for(|c| *c) => {
                    self.finish(shared);
                    self.disconnected(shared);
                    let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(None)).await;
                    return End::Closing;
                }
                // The timer before frames: a member of a busy room always has a frame ready,
                // and would otherwise publish late (or skip ahead) at high delivery rates.
                () = async { timer.as_mut().expect("guarded").await }, if timer.is_some() => {
                    let now = Instant::now();
                    if self.churn_due_at().is_some_and(|t| t <= now) {
                        self.churn_at = None;
                        self.disconnected(shared);
                        return End::Churn;
                    }
                    if let Err(e) = self.act(shared, &mut ws, now).await {
                        self.lost(shared, None, Some(e.to_string()));
                        return End::Lost;
                    }
                }
                frame = ws.next() => { count_wire(shared, &mut ws); match frame {
                    Some(Ok(Message::Text(t))) => self.on_frame(shared, &t),
                    Some(Ok(Message::Close(close))) => {
                        let code = close.map(|c| u16::from(c.code));
                        if code == Some(1001) {
                            self.disconnected(shared);
                            return End::Drained;
                        }
                        let code = code.map_or_else(|| "none".to_string(), |c| c.to_string());
                        self.lost(shared, Some(code), None);
                        return End::Lost;
                    }
                    // The pong goes out by itself on the next read or write.
                    Some(Ok(Message::Ping(_))) => shared.stats.borrow_mut().counters.pings += 1,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.lost(shared, None, Some(e.to_string()));
                        return End::Lost;
                    }
                    None => {
                        self.lost(shared, Some("eof".into()), None);
                        return End::Lost;
                    }
                }},
            }
        }
    }

    /// Sends whatever is due at `now`.
    async fn act(
        &mut self,
        shared: &Shared,
        ws: &mut Ws,
        now: Instant,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let s = &shared.scenario;
        if let (Some(at), Some(room)) = (self.next_publish, self.room.clone()) {
            if at <= now {
                self.next_publish = Some(next_at(at, s.publish_per_sec, now));
                let (id, payload) = self.start_request(shared, ReqKind::Publish);
                let pad = shared.pad.pick(self.pad_draw());
                let text = wire::publish(&room, id, payload, pad);
                ws.send(Message::text(text)).await?;
            }
        }
        if let Some(at) = self.next_direct {
            if at <= now {
                self.next_direct = Some(next_at(at, s.direct_per_sec, now));
                let to = shared.user_name(self.direct_peer(shared));
                let (id, payload) = self.start_request(shared, ReqKind::Direct);
                let pad = shared.pad.pick(self.pad_draw());
                ws.send(Message::text(wire::send(&to, id, payload, pad)))
                    .await?;
            }
        }
        Ok(())
    }

    /// A random other user on the same URL (nodes without a shared broker cannot reach others).
    fn direct_peer(&mut self, shared: &Shared) -> u64 {
        let n = shared.targets.len() as u64;
        let users = shared.scenario.users;
        let lane = self.index % n;
        let lane_users = (users - lane).div_ceil(n);
        let mut peer = lane + n * (self.rng.next_u64() % lane_users);
        if peer == self.index && lane_users > 1 {
            peer = lane + n * ((peer / n + 1) % lane_users);
        }
        peer
    }

    /// Which padding the next message takes: from the user and its sequence number, so the
    /// user's own random draws (peers, churn) stay what they were.
    fn pad_draw(&self) -> u64 {
        (self.index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.seq)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Numbers the next request, records it as pending, and gives the payload that lets the
    /// receivers measure latency and order.
    fn start_request(&mut self, shared: &Shared, kind: ReqKind) -> (u64, Payload) {
        self.seq += 1;
        let id = self.take_id();
        let sent_us = now_us();
        self.request(shared, id, sent_us, kind);
        let payload = Payload {
            p: self.index,
            s: self.seq,
            t: sent_us,
        };
        (id, payload)
    }

    fn request(&mut self, shared: &Shared, id: u64, sent_us: u64, kind: ReqKind) {
        self.pending.push_back(Pending { id, sent_us, kind });
        let mut st = shared.stats.borrow_mut();
        st.pending += 1;
        match kind {
            ReqKind::Publish => st.counters.published += 1,
            ReqKind::Direct => st.counters.direct_sent += 1,
        }
    }

    /// The connection is gone: requests in flight will never be answered.
    fn disconnected(&mut self, shared: &Shared) {
        let mut st = shared.stats.borrow_mut();
        st.pending -= self.pending.len() as u64;
        st.counters.abandoned += self.pending.len() as u64;
        st.connected -= 1;
        self.pending.clear();
        self.next_publish = None;
        self.next_direct = None;
    }

    fn lost(&mut self, shared: &Shared, close_code: Option<String>, error: Option<String>) {
        self.disconnected(shared);
        let mut st = shared.stats.borrow_mut();
        if let Some(code) = close_code {
            st.count_close(&code);
        }
        if let Some(e) = error {
            st.error_sample(format!("connection error: {e}"));
        }
    }

    /// The run is over while this user is connected: record where its member cursor ended.
    /// Users offline at the end (failed reconnects) are not members then and are not counted.
    fn finish(&mut self, shared: &Shared) {
        if let Some(cursor) = self.cursor.take() {
            shared.stats.borrow_mut().member_end(&cursor);
        }
    }
}
