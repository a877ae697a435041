//! Test helpers: a real roomcast server on a free loopback port and a real WebSocket client.
//! Every receive has a timeout, so a missing frame fails the test instead of hanging it.
#![allow(dead_code)] // each test binary uses a different subset

pub mod api;
pub mod haproxy;
pub mod process;
pub mod prometheus;
pub mod redis;
pub mod redis_cluster;
pub mod tools;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast::Config;
use roomcast::server::ServerError;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long any single expected frame may take to arrive.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A roomcast node served in-process on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServerError>>,
}

/// A config suited to tests: defaults with limits high enough not to interfere.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.limits.inbound_rate_per_sec = 100_000;
    config.limits.inbound_burst = 100_000;
    config.limits.connect_rate_per_ip = 100_000;
    config.limits.connect_burst_per_ip = 100_000;
    config.limits.max_connections_per_ip = 100_000;
    config.limits.max_pending_connections_per_ip = 100_000;
    config.limits.max_connections_per_user = 1_000;
    config.shutdown_grace_ms = 5_000;
    config
}

/// Polls `GET {base}/readyz` until it answers `want`; panics after 15 s.
pub async fn wait_ready(base: &str, want: u16) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if status.as_ref().ok() == Some(&want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{base}/readyz never answered {want} (last: {status:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// Starts a server with `test_config()` adjusted by `adjust`.
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        adjust(&mut config);
        config.validate().expect("test config must be valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(roomcast::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, user: &str) -> String {
        format!("ws://{}/ws?user={}", self.addr, user)
    }

    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(&self.ws_url(user)).await
    }

    /// Triggers shutdown without waiting for it.
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.trigger_shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server did not stop within 30 s")
            .expect("server task panicked")
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking the roomcast protocol.
pub struct Client {
    ws: Ws,
    pub welcome: Value,
    /// Frames read while waiting for something else, returned first by `recv`.
    backlog: VecDeque<Value>,
    next_id: u64,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
}

/// How a socket ended, as seen by the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed(u16),
    /// The connection ended without a close frame.
    Dropped,
}

/// A handshake error with the refusal's body, which says why.
fn describe(err: &tokio_tungstenite::tungstenite::Error) -> String {
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            format!("{err}: {}", String::from_utf8_lossy(body))
        }
        other => other.to_string(),
    }
}

/// A handshake the server refused: its HTTP status and JSON body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub body: Value,
}

impl Client {
    /// Connects with a hand-built request (headers, subprotocols); `Err` when the server
    /// refuses the upgrade. Panics on anything else.
    pub async fn try_connect(
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Result<Self, Refusal> {
        use tokio_tungstenite::tungstenite::Error;
        match tokio::time::timeout(RECV_TIMEOUT, connect_async(request))
            .await
            .expect("connect timed out")
        {
            Ok((ws, response)) => {
                let protocol = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap().to_owned());
                Ok(Self::welcomed(ws, protocol).await)
            }
            Err(Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                Err(Refusal {
                    status: response.status().as_u16(),
                    body: serde_json::from_slice(body).unwrap_or(Value::Null),
                })
            }
            Err(other) => panic!("connecting: {other}"),
        }
    }

    /// Wraps an open socket and reads the server's `welcome`.
    async fn welcomed(ws: Ws, protocol: Option<String>) -> Self {
        let mut client = Self {
            ws,
            welcome: Value::Null,
            backlog: VecDeque::new(),
            next_id: 1,
            protocol,
        };
        client.welcome = client.recv_type("welcome").await;
        client
    }

    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(RECV_TIMEOUT, connect_async(url))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("connecting to {url}: {}", describe(&e)));
        Self::welcomed(ws, None).await
    }

    /// Connects with a 4 KiB kernel receive buffer (no autotuning), so a client that stops
    /// reading backs up into the server's queue after kilobytes rather than tens of megabytes.
    pub async fn connect_small_buffer(url: &str) -> Self {
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (ws, _) = tokio::time::timeout(
            RECV_TIMEOUT,
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
        )
        .await
        .expect("handshake timed out")
        .unwrap();
        Self::welcomed(ws, None).await
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send failed");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    pub async fn send_message(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send failed");
    }

    /// The next JSON frame (control frames skipped). Panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        self.recv_wire().await
    }

    async fn recv_wire(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("read failed");
            match msg {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("server sent bad JSON");
                }
                Message::Close(frame) => panic!("unexpected close: {frame:?}"),
                Message::Binary(_) => panic!("server sent a binary frame"),
                _ => {}
            }
        }
    }

    /// The next frame, which must have `"type": ty`.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "expected a {ty} frame, got {v}");
        v
    }

    /// Sends `request` with a fresh id and returns the reply carrying that id. Other frames
    /// arriving meanwhile are kept for `recv`.
    pub async fn request(&mut self, mut request: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.send_json(request).await;
        loop {
            let v = self.recv_wire().await;
            if v["id"] == json!(id) {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    pub async fn join(&mut self, room: &str) -> Value {
        let reply = self.request(json!({"type": "join", "room": room})).await;
        assert_eq!(reply["type"], "joined", "join {room}: {reply}");
        reply
    }

    pub async fn join_with_presence(&mut self, room: &str) -> Value {
        let reply = self
            .request(json!({"type": "join", "room": room, "presence": true}))
            .await;
        assert_eq!(reply["type"], "joined", "join {room}: {reply}");
        reply
    }

    /// Publishes and returns the acked offset.
    pub async fn publish(&mut self, room: &str, data: Value) -> u64 {
        let reply = self
            .request(json!({"type": "publish", "room": room, "data": data}))
            .await;
        assert_eq!(reply["type"], "ack", "publish to {room}: {reply}");
        reply["offset"].as_u64().expect("ack carries an offset")
    }

    /// Publishes once and returns the reply, whether `ack` or `error`.
    pub async fn try_publish(&mut self, room: &str, data: Value) -> Value {
        self.request(json!({"type": "publish", "room": room, "data": data}))
            .await
    }

    /// The next `message`, or unsolicited `joined` (the room's history was lost), skipping
    /// everything else.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            match v["type"].as_str() {
                Some("message") => return v,
                Some("joined") if v.get("id").is_none() => return v,
                _ => {}
            }
        }
    }

    /// Reads the next `message` frame, skipping acks and presence events.
    pub async fn recv_message(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == "message" {
                return v;
            }
            assert!(
                matches!(
                    v["type"].as_str(),
                    Some("ack" | "presence_join" | "presence_leave")
                ),
                "expected a message, got {v}"
            );
        }
    }

    /// Reads until the socket ends and reports how; frames before the close are returned too.
    pub async fn read_to_end(&mut self, limit: Duration) -> (Vec<Value>, Ended) {
        let mut frames: Vec<Value> = self.backlog.drain(..).collect();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("socket was not closed in time");
            match next {
                Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                    return (frames, Ended::Closed(code.into()));
                }
                Some(Ok(Message::Close(None))) => return (frames, Ended::Closed(1005)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (frames, Ended::Dropped),
            }
        }
    }

    /// Reads until close and returns the close code (frames before it are discarded).
    pub async fn expect_close(&mut self) -> u16 {
        match self.read_to_end(RECV_TIMEOUT).await.1 {
            Ended::Closed(code) => code,
            Ended::Dropped => panic!("connection dropped without a close frame"),
        }
    }

    /// Asserts nothing arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        assert!(
            self.backlog.is_empty(),
            "unexpected frames: {:?}",
            self.backlog
        );
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(text)))) => panic!("unexpected frame: {text}"),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("unexpected: {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    pub fn user(&self) -> &str {
        self.welcome["user"].as_str().unwrap()
    }
}

/// Fails unless `node` >= 20 is on PATH (its built-in WebSocket and test runner are needed).
pub fn require_node() {
    let out = std::process::Command::new("node").arg("--version").output().unwrap_or_else(|err| {
        panic!("cannot run node ({err}): these tests need Node.js >= 20; `scripts/test` installs it")
    });
    let version = String::from_utf8_lossy(&out.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "node {} is too old: these tests need Node.js >= 20 (built-in WebSocket and test runner); \
         see `scripts/test`",
        version.trim()
    );
}
