//! One chat user of a campaign: joins its room with presence on, publishes one keyed message at
//! a time and retries it with the same key until acked, resumes on another node whenever its
//! connection ends, and logs everything it sees with the time it saw it. The log is judged
//! afterwards (`check`); the user itself asserts nothing.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

/// Bound on connecting plus the welcome, and on a join's answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Wait before re-sending a publish or presence request answered `unavailable`.
const RETRY_AFTER: Duration = Duration::from_millis(300);
/// Reconnect backoff: doubles from the first value up to the second.
const BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_secs(1)];

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What one user saw, in order. Times are ms from the run's start.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// A `joined` frame: the reply to a join or resume, or (without `solicited`) the notice of
    /// a new epoch.
    Joined {
        at: u64,
        node: usize,
        epoch: String,
        offset: u64,
        recovered: Option<bool>,
        solicited: bool,
    },
    Message {
        at: u64,
        epoch: String,
        offset: u64,
        p: u64,
        s: u64,
    },
    /// This user's publish `s` was acknowledged at `offset` (while the user was in `epoch`).
    Ack {
        at: u64,
        s: u64,
        offset: u64,
        epoch: String,
        first_sent: u64,
        attempts: u32,
    },
    /// A request answered with an error code.
    Refused {
        at: u64,
        request: &'static str,
        code: String,
    },
    PresenceEvent {
        at: u64,
        join: bool,
        user: String,
        seq: u64,
    },
    PresenceList {
        at: u64,
        seq: u64,
        users: Vec<String>,
        last: bool,
    },
    /// The connection ended (a close code, or the error).
    Down { at: u64, why: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct UserLog {
    pub user: String,
    pub index: u64,
    pub room: String,
    pub events: Vec<Event>,
    /// Publishes never acknowledged by the end of the run (seq numbers).
    pub unacked: Vec<u64>,
}

/// What every user of a run shares.
#[derive(Clone)]
pub struct Plan {
    pub ports: Vec<u16>,
    pub start: Instant,
    pub every: Duration,
    /// No new publish after this (retries go on).
    pub publish_end: Instant,
    /// Set when the run is over: ask for the presence list one last time, and leave at
    /// `close_at` (all users at once, so that no final list races another user's leave).
    pub stop: watch::Receiver<bool>,
    pub close_at: Instant,
}

struct Publish {
    s: u64,
    first_sent: u64,
    attempts: u32,
}

#[derive(Clone, Copy)]
enum Req {
    Join,
    Publish,
    Presence { last: bool },
}

/// One connection's requests in flight and what is due on it.
struct Conn {
    pending: HashMap<u64, Req>,
    next_id: u64,
    joined: bool,
    join_deadline: Instant,
    /// When to (re)send the outstanding publish, and to ask for the presence list, if at all.
    resend_at: Option<Instant>,
    presence_at: Option<Instant>,
}

impl Conn {
    fn new() -> Self {
        Self {
            pending: HashMap::new(),
            next_id: 1,
            joined: false,
            join_deadline: Instant::now() + CONNECT_TIMEOUT,
            resend_at: None,
            presence_at: None,
        }
    }

    /// `request` numbered, and remembered until its answer.
    fn request(&mut self, mut request: Value, req: Req) -> Message {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, req);
        request["id"] = id.into();
        Message::text(request.to_string())
    }
}

struct User {
    log: UserLog,
    plan: Plan,
    node: usize,
    epoch: Option<String>,
    last: u64,
    seq: u64,
    outstanding: Option<Publish>,
    next_publish: Instant,
}

pub async fn run(index: u64, room: String, plan: Plan) -> UserLog {
    let node = index as usize % plan.ports.len();
    let mut user = User {
        log: UserLog {
            user: format!("u{index}"),
            index,
            room,
            events: Vec::new(),
            unacked: Vec::new(),
        },
        next_publish: plan.start,
        plan,
        node,
        epoch: None,
        last: 0,
        seq: 0,
        outstanding: None,
    };
    let mut backoff = BACKOFF[0];
    while !user.stopped() {
        match user.connect().await {
            Some(ws) => {
                backoff = BACKOFF[0];
                let why = user.session(ws).await;
                let at = user.now();
                user.log.events.push(Event::Down { at, why });
            }
            None => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF[1]);
            }
        }
        // Resume elsewhere, as a client behind a balancer would land on any node.
        user.node = (user.node + 1) % user.plan.ports.len();
    }
    user.log.unacked = user.outstanding.map(|p| p.s).into_iter().collect();
    user.log
}

impl User {
    fn stopped(&self) -> bool {
        *self.plan.stop.borrow()
    }

    fn now(&self) -> u64 {
        self.plan.start.elapsed().as_millis() as u64
    }

    async fn connect(&mut self) -> Option<Ws> {
        let url = format!(
            "ws://127.0.0.1:{}/ws?user={}",
            self.plan.ports[self.node], self.log.user
        );
        let (mut ws, _) = timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .ok()?
            .ok()?;
        // The welcome first; anything else means the node is not serving.
        match timeout(CONNECT_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"welcome\"") => Some(ws),
            _ => None,
        }
    }

    /// One connection: join (or resume), then read and publish until it ends or the run does.
    async fn session(&mut self, mut ws: Ws) -> String {
        let mut conn = Conn::new();
        let mut join = serde_json::json!({"type": "join", "room": self.log.room, "presence": true});
        if let Some(epoch) = &self.epoch {
            join["since"] = self.last.into();
            join["epoch"] = epoch.clone().into();
        }
        if ws.send(conn.request(join, Req::Join)).await.is_err() {
            return "send failed".into();
        }
        let mut stop = self.plan.stop.clone();
        loop {
            let wake = self.wake(&conn);
            tokio::select! {
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    return self.finish(ws, &mut conn).await;
                }
                () = sleep_until(wake) => {
                    let now = Instant::now();
                    if !conn.joined && now >= conn.join_deadline {
                        return "no answer to join".into();
                    }
                    for m in self.due(&mut conn, now) {
                        if ws.send(m).await.is_err() {
                            return "send failed".into();
                        }
                    }
                }
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(c))) => {
                            return format!("closed {}", c.map_or(0, |c| u16::from(c.code)));
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return format!("error: {e}"),
                        None => return "eof".into(),
                    };
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                    let req = frame["id"].as_u64().and_then(|id| conn.pending.remove(&id));
                    let reaction = self.on_frame(&frame, req);
                    if let Some(end) = self.react(&mut conn, reaction) {
                        return end;
                    }
                }
            }
        }
    }

    fn publish_due(&self, conn: &Conn) -> bool {
        conn.joined && self.outstanding.is_none() && self.next_publish < self.plan.publish_end
    }

    /// The next moment something is due on this connection.
    fn wake(&self, conn: &Conn) -> Instant {
        [
            (!conn.joined).then_some(conn.join_deadline),
            self.publish_due(conn).then_some(self.next_publish),
            conn.resend_at,
            conn.presence_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// The requests due at `now`: a presence list, a new publish, a publish sent again.
    fn due(&mut self, conn: &mut Conn, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        if conn.presence_at.is_some_and(|t| t <= now) {
            conn.presence_at = None;
            out.push(conn.request(self.presence_request(), Req::Presence { last: false }));
        }
        if self.publish_due(conn) && self.next_publish <= now {
            self.seq += 1;
            let first_sent = self.now();
            self.outstanding = Some(Publish {
                s: self.seq,
                first_sent,
                attempts: 0,
            });
            conn.resend_at = Some(now);
        }
        if conn.resend_at.is_some_and(|t| t <= now) {
            conn.resend_at = None;
            if let Some(p) = self.publish_request() {
                out.push(conn.request(p, Req::Publish));
            }
        }
        out
    }

    /// Acts on what a frame asked for; `Some` ends the connection with that reason.
    fn react(&self, conn: &mut Conn, reaction: Reaction) -> Option<String> {
        let now = Instant::now();
        match reaction {
            Reaction::None => {}
            Reaction::Joined => {
                conn.joined = true;
                conn.presence_at = Some(now);
                if self.outstanding.is_some() {
                    conn.resend_at = Some(now);
                }
            }
            Reaction::AskPresence(after) => conn.presence_at = Some(now + after),
            Reaction::Resend => conn.resend_at = Some(now + RETRY_AFTER),
            Reaction::Rejoin => return Some("join refused".into()),
        }
        None
    }

    fn presence_request(&self) -> Value {
        serde_json::json!({"type": "presence", "room": self.log.room})
    }

    fn publish_request(&mut self) -> Option<Value> {
        let index = self.log.index;
        let p = self.outstanding.as_mut()?;
        p.attempts += 1;
        Some(serde_json::json!({
            "type": "publish",
            "room": self.log.room,
            "key": format!("u{index}-{}", p.s),
            "data": {"p": index, "s": p.s},
        }))
    }

    /// Records one frame and says what the session should do about it.
    fn on_frame(&mut self, f: &Value, req: Option<Req>) -> Reaction {
        let at = self.now();
        let (event, reaction) = match (f["type"].as_str().unwrap_or(""), req) {
            ("joined", req) => self.on_joined(f, req, at),
            ("message", _) => (Some(self.on_message(f, at)), Reaction::None),
            ("ack", Some(Req::Publish)) => (self.on_ack(f, at), Reaction::None),
            ("presence", Some(Req::Presence { last })) => {
                (Some(presence_list(f, at, last)), Reaction::None)
            }
            ("presence_join" | "presence_leave", _) => {
                (Some(presence_event(f, at)), Reaction::None)
            }
            ("error", Some(req)) => refused(f, at, req),
            _ => (None, Reaction::None),
        };
        self.log.events.extend(event);
        reaction
    }

    /// A join's answer, or (unsolicited) the notice of lost offsets or a new epoch.
    fn on_joined(&mut self, f: &Value, req: Option<Req>, at: u64) -> (Option<Event>, Reaction) {
        let solicited = matches!(req, Some(Req::Join));
        let recovered = f["recovered"].as_bool();
        let epoch = f["epoch"].as_str().unwrap_or("").to_string();
        let offset = f["offset"].as_u64().unwrap_or(0);
        // A recovered resume continues from `last`; anything else restarts there.
        if recovered != Some(true) || self.epoch.as_deref() != Some(&epoch) {
            self.last = offset;
        }
        self.epoch = Some(epoch.clone());
        let event = Event::Joined {
            at,
            node: self.node,
            epoch,
            offset,
            recovered,
            solicited,
        };
        let reaction = if solicited {
            Reaction::Joined
        } else {
            Reaction::AskPresence(Duration::ZERO)
        };
        (Some(event), reaction)
    }

    fn on_message(&mut self, f: &Value, at: u64) -> Event {
        let offset = f["offset"].as_u64().unwrap_or(0);
        self.last = self.last.max(offset);
        Event::Message {
            at,
            epoch: self.epoch.clone().unwrap_or_default(),
            offset,
            p: f["data"]["p"].as_u64().unwrap_or(u64::MAX),
            s: f["data"]["s"].as_u64().unwrap_or(0),
        }
    }

    /// The outstanding publish was acknowledged: the next one is due a period later.
    fn on_ack(&mut self, f: &Value, at: u64) -> Option<Event> {
        self.next_publish = Instant::now() + self.plan.every;
        let p = self.outstanding.take()?;
        Some(Event::Ack {
            at,
            s: p.s,
            offset: f["offset"].as_u64().unwrap_or(0),
            epoch: self.epoch.clone().unwrap_or_default(),
            first_sent: p.first_sent,
            attempts: p.attempts,
        })
    }

    /// The run is over: ask for the presence list one last time, wait for it, close.
    async fn finish(&mut self, mut ws: Ws, conn: &mut Conn) -> String {
        let request = conn.request(self.presence_request(), Req::Presence { last: true });
        if ws.send(request).await.is_ok() {
            // Until `close_at`, the connection's end, or an error; pings are answered on the way.
            let deadline = self.plan.close_at;
            while let Ok(Some(Ok(message))) = timeout_at_next(&mut ws, deadline).await {
                let Message::Text(t) = message else { continue };
                let Ok(frame) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                let req = frame["id"].as_u64().and_then(|id| conn.pending.remove(&id));
                self.on_frame(&frame, req);
            }
        }
        let _ = timeout(Duration::from_millis(500), ws.close(None)).await;
        "run over".into()
    }
}

fn presence_list(f: &Value, at: u64, last: bool) -> Event {
    let users = f["users"].as_array().map(|u| {
        u.iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    });
    Event::PresenceList {
        at,
        seq: f["seq"].as_u64().unwrap_or(0),
        users: users.unwrap_or_default(),
        last,
    }
}

fn presence_event(f: &Value, at: u64) -> Event {
    Event::PresenceEvent {
        at,
        join: f["type"] == "presence_join",
        user: f["user"].as_str().unwrap_or("").to_string(),
        seq: f["seq"].as_u64().unwrap_or(0),
    }
}

/// A request answered with an error: what to log, and what to do (rejoin elsewhere after a
/// refused join, send a publish or presence request again after a while).
fn refused(f: &Value, at: u64, req: Req) -> (Option<Event>, Reaction) {
    let (request, reaction) = match req {
        Req::Join => ("join", Reaction::Rejoin),
        Req::Publish => ("publish", Reaction::Resend),
        Req::Presence { .. } => ("presence", Reaction::AskPresence(RETRY_AFTER)),
    };
    let code = f["code"].as_str().unwrap_or("").to_string();
    (Some(Event::Refused { at, request, code }), reaction)
}

async fn timeout_at_next(
    ws: &mut Ws,
    deadline: Instant,
) -> Result<
    Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    tokio::time::error::Elapsed,
> {
    tokio::time::timeout_at(deadline, ws.next()).await
}

enum Reaction {
    None,
    /// The join was answered: publish and ask for the presence list.
    Joined,
    /// Ask for the presence list after this long.
    AskPresence(Duration),
    /// Send the outstanding publish again (same key).
    Resend,
    /// The join was refused: end this connection and try another node.
    Rejoin,
}
