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
        let mut pending: HashMap<u64, Req> = HashMap::new();
        let mut next_id = 1;
        let mut send = |ws_req: Value, req: Req, pending: &mut HashMap<u64, Req>| {
            let id = next_id;
            next_id += 1;
            pending.insert(id, req);
            let mut v = ws_req;
            v["id"] = id.into();
            Message::text(v.to_string())
        };
        let mut join = serde_json::json!({"type": "join", "room": self.log.room, "presence": true});
        if let Some(epoch) = &self.epoch {
            join["since"] = self.last.into();
            join["epoch"] = epoch.clone().into();
        }
        if ws.send(send(join, Req::Join, &mut pending)).await.is_err() {
            return "send failed".into();
        }
        let join_deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut joined = false;
        // When to (re)send the outstanding publish or the presence request, if at all.
        let mut resend_at: Option<Instant> = None;
        let mut presence_at: Option<Instant> = None;
        let mut stop = self.plan.stop.clone();
        loop {
            let publish_due =
                joined && self.outstanding.is_none() && self.next_publish < self.plan.publish_end;
            let wake = [
                (!joined).then_some(join_deadline),
                publish_due.then_some(self.next_publish),
                resend_at,
                presence_at,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    return self.finish(ws, &mut send, &mut pending).await;
                }
                () = sleep_until(wake) => {
                    let now = Instant::now();
                    if !joined && now >= join_deadline {
                        return "no answer to join".into();
                    }
                    let mut out = Vec::new();
                    if presence_at.is_some_and(|t| t <= now) {
                        presence_at = None;
                        out.push(send(self.presence_request(), Req::Presence { last: false }, &mut pending));
                    }
                    if publish_due && self.next_publish <= now {
                        self.seq += 1;
                        self.outstanding = Some(Publish { s: self.seq, first_sent: self.now(), attempts: 0 });
                        resend_at = Some(now);
                    }
                    if resend_at.is_some_and(|t| t <= now) {
                        resend_at = None;
                        if let Some(p) = self.publish_request() {
                            out.push(send(p, Req::Publish, &mut pending));
                        }
                    }
                    for m in out {
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
                    let req = frame["id"].as_u64().and_then(|id| pending.remove(&id));
                    match self.on_frame(&frame, req) {
                        Reaction::None => {}
                        Reaction::Joined => {
                            joined = true;
                            presence_at = Some(Instant::now());
                            if self.outstanding.is_some() {
                                resend_at = Some(Instant::now());
                            }
                        }
                        Reaction::AskPresence(after) => presence_at = Some(Instant::now() + after),
                        Reaction::Resend => resend_at = Some(Instant::now() + RETRY_AFTER),
                        Reaction::Rejoin => return "join refused".into(),
                    }
                }
            }
        }
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
        let kind = f["type"].as_str().unwrap_or("");
        let epoch = || f["epoch"].as_str().unwrap_or("").to_string();
        let offset = f["offset"].as_u64().unwrap_or(0);
        let mut event = None;
        let reaction = match (kind, req) {
            ("joined", req) => {
                let solicited = matches!(req, Some(Req::Join));
                let recovered = f["recovered"].as_bool();
                event = Some(Event::Joined {
                    at,
                    node: self.node,
                    epoch: epoch(),
                    offset,
                    recovered,
                    solicited,
                });
                // A recovered resume continues from `last`; anything else restarts there.
                if recovered != Some(true) || self.epoch.as_deref() != Some(&epoch()) {
                    self.last = offset;
                }
                self.epoch = Some(epoch());
                if solicited {
                    Reaction::Joined
                } else {
                    Reaction::AskPresence(Duration::ZERO)
                }
            }
            ("message", _) => {
                let (p, s) = (
                    f["data"]["p"].as_u64().unwrap_or(u64::MAX),
                    f["data"]["s"].as_u64().unwrap_or(0),
                );
                let epoch = self.epoch.clone().unwrap_or_default();
                event = Some(Event::Message {
                    at,
                    epoch,
                    offset,
                    p,
                    s,
                });
                self.last = self.last.max(offset);
                Reaction::None
            }
            ("ack", Some(Req::Publish)) => {
                if let Some(p) = self.outstanding.take() {
                    let epoch = self.epoch.clone().unwrap_or_default();
                    event = Some(Event::Ack {
                        at,
                        s: p.s,
                        offset,
                        epoch,
                        first_sent: p.first_sent,
                        attempts: p.attempts,
                    });
                }
                self.next_publish = Instant::now() + self.plan.every;
                Reaction::None
            }
            ("presence", Some(Req::Presence { last })) => {
                let users = f["users"]
                    .as_array()
                    .map(|u| {
                        u.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                event = Some(Event::PresenceList {
                    at,
                    seq: f["seq"].as_u64().unwrap_or(0),
                    users,
                    last,
                });
                Reaction::None
            }
            ("presence_join" | "presence_leave", _) => {
                let user = f["user"].as_str().unwrap_or("").to_string();
                event = Some(Event::PresenceEvent {
                    at,
                    join: kind == "presence_join",
                    user,
                    seq: f["seq"].as_u64().unwrap_or(0),
                });
                Reaction::None
            }
            ("error", Some(req)) => {
                let code = f["code"].as_str().unwrap_or("").to_string();
                let (name, reaction) = match req {
                    Req::Join => ("join", Reaction::Rejoin),
                    Req::Publish => ("publish", Reaction::Resend),
                    Req::Presence { .. } => ("presence", Reaction::AskPresence(RETRY_AFTER)),
                };
                event = Some(Event::Refused {
                    at,
                    request: name,
                    code,
                });
                reaction
            }
            _ => Reaction::None,
        };
        self.log.events.extend(event);
        reaction
    }

    /// The run is over: ask for the presence list one last time, wait for it, close.
    async fn finish(
        &mut self,
        mut ws: Ws,
        send: &mut impl FnMut(Value, Req, &mut HashMap<u64, Req>) -> Message,
        pending: &mut HashMap<u64, Req>,
    ) -> String {
        let request = send(
            self.presence_request(),
            Req::Presence { last: true },
            pending,
        );
        if ws.send(request).await.is_ok() {
            // Until `close_at`, the connection's end, or an error; pings are answered on the way.
            let deadline = self.plan.close_at;
            while let Ok(Some(Ok(message))) = timeout_at_next(&mut ws, deadline).await {
                let Message::Text(t) = message else { continue };
                let Ok(frame) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                let req = frame["id"].as_u64().and_then(|id| pending.remove(&id));
                self.on_frame(&frame, req);
            }
        }
        let _ = timeout(Duration::from_millis(500), ws.close(None)).await;
        "run over".into()
    }
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
