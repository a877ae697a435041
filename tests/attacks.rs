//! Attacks on a node's memory, file descriptors and fairness, each against the real server
//! (in-process, or the real binary as a child process when its RSS or file limit matters) over
//! real loopback sockets: stuck readers, history floods, slowloris, fragment floods, direct
//! message floods, malformed handshakes and over-complex JSON. Every test asserts the bound its
//! mechanism promises while a bystander in a room, connected from another loopback address,
//! keeps receiving every message published there, in order. docs/security.md cites these names.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use common::api::{Api, KEY};
use common::process::Process;
use common::redis::{RedisServer, unique_prefix, use_redis};
use common::{Client, RECV_TIMEOUT, TestServer, wait_ready};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout, timeout_at};

const MIB: u64 = 1024 * 1024;
/// Bystanders connect from here, so per-IP limits that attackers on 127.0.0.1 meet spare them.
const BYSTANDER_IP: [u8; 4] = [127, 0, 0, 2];
const ATTACKER_IP: [u8; 4] = [127, 0, 0, 1];
/// A JSON string this long makes a frame just under `max_message_bytes` (65,536).
const PAD: usize = 65_000;
const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";
const VERSION: &str = "Sec-WebSocket-Version: 13";
const KEY_LINE: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x5c, 0x13, 0xa7, 0x02];

// --- Raw sockets, HTTP and WebSocket frames ----------------------------------------------------

fn sock(addr: &str) -> SocketAddr {
    addr.parse().unwrap()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A TCP connection to `addr` from the loopback address `from`, with a fixed kernel receive
/// buffer when asked (no autotuning: a reader that stops backs up into the node after KiB).
async fn tcp_from(from: [u8; 4], addr: &str, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let connect = timeout(RECV_TIMEOUT, socket.connect(sock(addr))).await;
    connect.expect("connect timed out").expect("connect failed")
}

/// A handshake request for `/ws?{query}` with these header lines.
fn handshake(query: &str, lines: &[&str]) -> String {
    let head = "HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket";
    format!("GET /ws?{query} {head}\r\n{}\r\n\r\n", lines.join("\r\n"))
}

/// A response read off a raw socket: status and JSON body (`Null` if none or not JSON).
#[derive(Debug)]
struct Http {
    status: u16,
    body: Value,
}

/// Sends `request` on a new connection from `from` and reads the response: its head, and
/// (but after a 101) its body by `Content-Length`.
async fn http(from: [u8; 4], addr: &str, request: &str, limit: Duration) -> Http {
    let deadline = Instant::now() + limit;
    let mut stream = tcp_from(from, addr, None).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length:")?.trim().parse().ok()
            });
            if head.starts_with("HTTP/1.1 101") || body.len() >= length.unwrap_or(usize::MAX) {
                let (status, body) = (head[9..12].parse().unwrap(), body.parse());
                return Http {
                    status,
                    body: body.unwrap_or_default(),
                };
            }
        }
        let mut chunk = [0u8; 8192];
        let read = timeout_at(deadline, stream.read(&mut chunk)).await;
        let n = read.unwrap_or_else(|_| panic!("no whole response in time: {text:?}"));
        let n = n
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("cut short: {text:?}"));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the peer ends the connection (EOF or reset): `Some(bytes read)`, or `None` if it
/// is still open at the deadline.
async fn read_until_closed(stream: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let (mut all, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
    loop {
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(all),
            Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One client frame (FIN, opcode in `first`) masked with `mask`; a zero mask, which RFC 6455
/// allows, lets floods skip the masking work.
fn frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![first];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n => frame.extend([0x80 | 126, (n >> 8) as u8, n as u8]),
    }
    frame.extend_from_slice(&mask);
    match mask {
        [0, 0, 0, 0] => frame.extend_from_slice(payload),
        _ => frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4])),
    }
    frame
}

/// Reads server frames (at most 64 KiB, as in these tests) off a raw socket.
struct FrameReader {
    read: OwnedReadHalf,
    buf: Vec<u8>,
}

impl FrameReader {
    /// Reads more: `None` past `deadline`, `Some(0)` at the end of the stream or a reset.
    async fn fill(&mut self, deadline: Instant) -> Option<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = timeout_at(deadline, self.read.read(&mut chunk))
            .await
            .ok()?;
        let n = n.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        Some(n)
    }

    /// The next frame (first byte, payload): `None` if none came whole by `deadline`,
    /// `Some(None)` at the end of the stream.
    async fn next(&mut self, deadline: Instant) -> Option<Option<(u8, Vec<u8>)>> {
        loop {
            if let [first, second, ref rest @ ..] = self.buf[..] {
                let header = match second {
                    126 => rest
                        .get(..2)
                        .map(|n| (usize::from(n[0]) << 8 | usize::from(n[1]), 4)),
                    n => Some((usize::from(n), 2)),
                };
                assert!(second <= 126, "no frame here is masked or that long");
                if let Some((len, at)) = header
                    && self.buf.len() >= at + len
                {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some(Some((first, payload)));
                }
            }
            if self.fill(deadline).await? == 0 {
                return Some(None);
            }
        }
    }

    async fn frame(&mut self, deadline: Instant) -> Option<(u8, Vec<u8>)> {
        let next = self.next(deadline).await;
        next.expect("nothing from the node by the deadline")
    }

    /// Reads until the node's close frame and returns its code; panics if the socket is still
    /// open at `deadline` or ends without one.
    async fn close_code(&mut self, deadline: Instant) -> u16 {
        loop {
            match self.frame(deadline).await {
                Some((0x88, code)) => return u16::from_be_bytes([code[0], code[1]]),
                Some(_) => {}
                None => panic!("the connection ended without a close frame"),
            }
        }
    }
}

/// A WebSocket client writing frames by hand (as in tests/framing.rs), from a chosen loopback
/// address, its halves apart so one task can write while another reads.
struct RawWs {
    reader: FrameReader,
    writer: OwnedWriteHalf,
    next_id: u64,
    welcome: Value,
}

impl RawWs {
    /// Connects to `/ws?{query}` from `from`; asserts the 101 and reads the `welcome`.
    async fn open(from: [u8; 4], addr: &str, query: &str) -> Self {
        Self::open_with(from, addr, query, &[]).await
    }

    /// Like `open`, with these header lines added to the handshake.
    async fn open_with(from: [u8; 4], addr: &str, query: &str, lines: &[&str]) -> Self {
        let mut stream = tcp_from(from, addr, None).await;
        let request = handshake(query, &[&[VERSION, KEY_LINE], lines].concat());
        stream.write_all(request.as_bytes()).await.unwrap();
        let (read, writer) = stream.into_split();
        let mut reader = FrameReader {
            read,
            buf: Vec::new(),
        };
        let deadline = Instant::now() + RECV_TIMEOUT;
        let end = loop {
            if let Some(end) = reader.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(
                reader.fill(deadline).await.unwrap_or(0) > 0,
                "no handshake answer"
            );
        };
        let head = String::from_utf8_lossy(&reader.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        reader.buf.drain(..end + 4);
        let mut ws = Self {
            reader,
            writer,
            next_id: 1,
            welcome: Value::Null,
        };
        ws.welcome = ws.json().await;
        assert_eq!(ws.welcome["type"], "welcome");
        ws
    }

    async fn send(&mut self, first: u8, payload: &[u8]) {
        let frame = frame(first, payload, MASK);
        self.writer.write_all(&frame).await.unwrap();
    }

    /// The next text frame as JSON (`{"unparsed": n}` if it is not), control frames skipped;
    /// panics on a close.
    async fn json(&mut self) -> Value {
        loop {
            match self.reader.frame(Instant::now() + RECV_TIMEOUT).await {
                Some((0x81, text)) => {
                    let unparsed = json!({"unparsed": text.len()});
                    return serde_json::from_slice(&text).unwrap_or(unparsed);
                }
                Some((0x88, p)) => panic!("closed by the node: {}", String::from_utf8_lossy(&p)),
                Some(_) => {}
                None => panic!("the connection ended"),
            }
        }
    }

    /// The reply carrying `id`; frames before it (room traffic, own echoes) are dropped.
    async fn reply(&mut self, id: u64) -> Value {
        for _ in 0..10_000 {
            let v = self.json().await;
            if v["id"] == id {
                return v;
            }
        }
        panic!("no reply to {id} among 10,000 frames");
    }

    async fn request(&mut self, mut request: Value) -> Value {
        self.next_id += 1;
        request["id"] = json!(self.next_id);
        self.send(0x81, request.to_string().as_bytes()).await;
        self.reply(self.next_id).await
    }

    /// Sends a request written out by hand (data no `Value` could hold byte for byte), with
    /// `"id":ID` in it replaced by a fresh id, and returns the reply.
    async fn ask(&mut self, text: &str) -> Value {
        self.next_id += 1;
        let text = text.replacen(r#""id":ID"#, &format!(r#""id":{}"#, self.next_id), 1);
        let frame = frame(0x81, text.as_bytes(), [0; 4]);
        self.writer.write_all(&frame).await.unwrap();
        self.reply(self.next_id).await
    }

    /// Publishes a string of `PAD` bytes and returns the acked offset.
    async fn publish_big(&mut self, room: &str) -> u64 {
        let pad = "x".repeat(PAD);
        let text = format!(r#"{{"id":ID,"type":"publish","room":"{room}","data":"{pad}"}}"#);
        let ack = self.ask(&text).await;
        let offset = ack["offset"].as_u64();
        offset.unwrap_or_else(|| panic!("publish to {room}: {ack}"))
    }
}

fn by_name(user: &str) -> String {
    format!("user={user}")
}

/// A bystander and a publisher in one room, from [`BYSTANDER_IP`]: the publisher publishes
/// `{"n": i}` every 50 ms until `finish`, and the bystander must receive each as its very next
/// frame, offset i + 1: a lost or reordered message, or a foreign frame (a leaked message, a
/// direct nobody was allowed to send it), fails the test.
struct Watch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<u64>,
}

impl Watch {
    async fn start(addr: &str, room: &str, query: impl Fn(&str) -> String) -> Self {
        let mut bystander = RawWs::open(BYSTANDER_IP, addr, &query("bystander")).await;
        let mut publisher = RawWs::open(BYSTANDER_IP, addr, &query("watch-pub")).await;
        for ws in [&mut bystander, &mut publisher] {
            let joined = ws.request(json!({"type": "join", "room": room})).await;
            assert_eq!(joined["offset"], 0, "a fresh room: {joined}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, room) = (stop.clone(), room.to_owned());
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while n < 3 || !flag.load(Relaxed) {
                assert!(n < 5_000, "the watch ran unbounded");
                let publish = json!({"type": "publish", "room": room, "data": {"n": n}});
                let ack = publisher.request(publish).await;
                assert_eq!(ack["offset"], n + 1, "publish {n}: {ack}");
                let got = bystander.json().await;
                let want = json!({"type": "message", "offset": n + 1, "data": {"n": n}});
                let got_part =
                    json!({"type": got["type"], "offset": got["offset"], "data": got["data"]});
                assert_eq!(got_part, want, "the bystander's frame {n}: {got}");
                n += 1;
                sleep(Duration::from_millis(50)).await;
            }
            n
        });
        Self { stop, task }
    }

    /// Stops publishing; asserts the bystander got every message, in order, at least three.
    async fn finish(self) {
        self.stop.store(true, Relaxed);
        let n = timeout(Duration::from_secs(30), self.task).await;
        let n = n.expect("the bystander stalled");
        assert!(n.expect("the bystander missed a message") >= 3);
    }
}

/// Replies one flooding connection got.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    acks: u64,
    rate_limited: u64,
}

/// Connects as `user` and writes `frames` as fast as the socket takes them until they run out
/// or `stop_at`, while a task counts the replies; returns once every frame is answered.
async fn flood(
    addr: String,
    user: String,
    frames: impl Iterator<Item = Vec<u8>>,
    stop_at: Instant,
) -> Tally {
    let ws = RawWs::open(ATTACKER_IP, &addr, &by_name(&user)).await;
    let (mut reader, mut writer) = (ws.reader, ws.writer);
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let wanted = target.clone();
    let counting = tokio::spawn(async move {
        let (mut tally, deadline) = (Tally::default(), Instant::now() + secs(120.0));
        while tally.acks + tally.rate_limited < wanted.load(Relaxed) {
            assert!(Instant::now() < deadline, "replies missing: {tally:?}");
            let next = reader.next(Instant::now() + secs(0.1)).await;
            match next.map(|f| f.unwrap_or_else(|| panic!("{user} was cut off: {tally:?}"))) {
                Some((0x81, text)) => match &serde_json::from_slice::<Value>(&text).unwrap() {
                    v if v["type"] == "ack" => tally.acks += 1,
                    v if v["code"] == "rate_limited" => tally.rate_limited += 1,
                    v => panic!("unexpected reply {v}"),
                },
                Some((0x88, code)) => panic!("{user} was closed: {code:?}"),
                _ => {}
            }
        }
        tally
    });
    let mut sent = 0;
    for frame in frames.take_while(|_| Instant::now() < stop_at) {
        writer.write_all(&frame).await.unwrap();
        sent += 1;
    }
    target.store(sent, Relaxed);
    Tally {
        sent,
        ..counting.await.unwrap()
    }
}

/// A `send` of a string just under 64 KiB, framed with a zero mask.
fn big_send(to: &str) -> Vec<u8> {
    let pad = "x".repeat(PAD);
    let text = format!(r#"{{"type":"send","to":"{to}","data":"{pad}","id":1}}"#);
    frame(0x81, text.as_bytes(), [0; 4])
}

// --- The node as a process: RSS, metrics, sockets ----------------------------------------------

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn gauge(addr: &str, name: &str) -> Option<f64> {
    let get = async {
        reqwest::get(format!("http://{addr}/metrics"))
            .await?
            .text()
            .await
    };
    let text = timeout(secs(5.0), get).await.ok()?.ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Samples a node's VmRSS every 25 ms, and a gauge every 200 ms, until `finish`: the peaks.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(u64, Option<f64>)>,
}

impl Sampler {
    fn start(pid: u32, gauge_of: Option<(String, &'static str)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut rss, mut peak) = (0, None::<f64>);
            for i in 0..12_000u32 {
                rss = rss.max(rss_kib(pid));
                if let Some((addr, name)) = gauge_of.as_ref().filter(|_| i % 8 == 0)
                    && let Some(v) = gauge(addr, name).await
                {
                    peak = Some(peak.map_or(v, |p| p.max(v)));
                }
                if flag.load(Relaxed) {
                    break;
                }
                sleep(Duration::from_millis(25)).await;
            }
            (rss, peak)
        });
        Self { stop, task }
    }

    async fn finish(self) -> (u64, Option<f64>) {
        self.stop.store(true, Relaxed);
        self.task.await.unwrap()
    }
}

/// Whether a process (the node) still holds its end of the connection `node` ↔ `peer` in
/// `/proc/net/tcp`: an entry with a non-zero inode. A socket the node closed is gone, or
/// orphaned (inode 0) while the kernel finishes it.
fn node_holds(node: SocketAddr, peer: SocketAddr) -> bool {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(a) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        ),
        SocketAddr::V6(_) => unreachable!("IPv4 only"),
    };
    let (local, remote) = (hex(node), hex(peer));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 9 && f[1] == local && f[2] == remote && f[9] != "0"
    })
}

/// A node process with the inbound and connection limits out of the way, and `env`.
fn node_with(env: &[(&str, &str)]) -> Process {
    let mut all = vec![
        ("ROOMCAST_LIMITS__INBOUND_RATE_PER_SEC", "100000"),
        ("ROOMCAST_LIMITS__INBOUND_BURST", "100000"),
        ("ROOMCAST_LIMITS__CONNECT_RATE_PER_IP", "100000"),
        ("ROOMCAST_LIMITS__CONNECT_BURST_PER_IP", "100000"),
        ("ROOMCAST_LIMITS__MAX_CONNECTIONS_PER_IP", "100000"),
    ];
    all.extend_from_slice(env);
    Process::start_with_env(&[], &all)
}

// --- Tokens and JSON ---------------------------------------------------------------------------

fn token_with(header: &Header, claims: Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(header, &claims, &key).unwrap()
}

/// An HS256 token for `sub`, valid 10 minutes, with the `extra` claims.
fn token(sub: &str, extra: Value) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let mut claims = json!({"sub": sub, "exp": exp});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    token_with(&Header::new(Algorithm::HS256), claims)
}

fn by_token(user: &str) -> String {
    format!("token={}", token(user, json!({})))
}

async fn auth_server(adjust: impl FnOnce(&mut roomcast::Config)) -> TestServer {
    TestServer::with(|c| {
        c.auth.secret = SECRET.into();
        adjust(c);
    })
    .await
}

/// `[[[…]]]`, `depth` arrays deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

// --- 1. Stuck readers --------------------------------------------------------------------------

/// Guards `limits.outbound_queue_bytes` (a session holding over 1 MiB, queued frames plus the
/// write in progress, is closed with 4000), `limits.write_timeout_ms`, the 5 s bound on closing
/// a stalled socket, and the `roomcast_queued_bytes` gauge. Before, a session held up to 1,024
/// frames whatever their size: 40 readers that never read, sent 100 direct messages of 64 KiB
/// each, took the node from 19 to 161 MiB of RSS and were never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_stuck_readers_of_64k_direct_messages_stay_under_the_rss_ceiling_and_are_closed_in_time()
 {
    const VICTIMS: usize = 40;
    const SENDERS: usize = 4;
    const PER_VICTIM: usize = 100;
    const QUEUE_BYTES: u64 = MIB; // limits.outbound_queue_bytes, default
    const QUEUED: &str = "roomcast_queued_bytes";
    let node = node_with(&[
        ("ROOMCAST_LIMITS__WRITE_TIMEOUT_MS", "3000"),
        ("ROOMCAST_LIMITS__DIRECT_RATE_PER_SEC", "100000"),
        ("ROOMCAST_LIMITS__DIRECT_BURST", "100000"),
    ]);
    let (pid, addr) = (node.child.id(), node.addr.clone());
    let watch = Watch::start(&addr, "stuck-lobby", by_name).await;
    let baseline = rss_kib(pid);
    let sampler = Sampler::start(pid, Some((addr.clone(), QUEUED)));

    // Victims: a 4 KiB receive buffer, the handshake's status line read, then nothing more.
    let mut victims = Vec::new();
    for user in (0..VICTIMS)
        .map(|i| format!("victim{i}"))
        .chain(["quiet".into()])
    {
        let mut stream = tcp_from(ATTACKER_IP, &addr, Some(4096)).await;
        let request = handshake(&format!("user={user}"), &[VERSION, KEY_LINE]);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut status = [0u8; 12];
        stream.read_exact(&mut status).await.unwrap();
        assert_eq!(&status, b"HTTP/1.1 101");
        victims.push(stream);
    }
    // The quiet one gets 64 KiB messages one at a time until the node holds one (the kernel
    // took what it could and the write is stuck): far under 1 MiB, so only the write timeout
    // can close it.
    let mut sender = RawWs::open(ATTACKER_IP, &addr, "user=quiet-sender").await;
    let text = format!(
        r#"{{"id":ID,"type":"send","to":"quiet","data":"{}"}}"#,
        "x".repeat(PAD)
    );
    'sending: for sent in 1..200 {
        assert_eq!(sender.ask(&text).await["type"], "ack");
        // Stuck once the node still holds a message 300 ms after it was accepted.
        let settle = Instant::now() + secs(0.3);
        while gauge(&addr, QUEUED).await.expect(QUEUED) >= 32_000.0 {
            if Instant::now() >= settle {
                println!("stuck readers: the kernel took {} messages", sent - 1);
                break 'sending;
            }
            sleep(secs(0.05)).await;
        }
        assert!(sent < 199, "the kernel took {sent} messages of 64 KiB");
    }
    let (node_addr, quiet) = (sock(&addr), victims[VICTIMS].local_addr().unwrap());
    let stalled = Instant::now();
    let quiet_released = tokio::spawn(async move {
        while node_holds(node_addr, quiet) {
            assert!(
                stalled.elapsed() < secs(12.0),
                "the quiet reader still held after 12 s"
            );
            sleep(secs(0.1)).await;
        }
        stalled.elapsed()
    });
    let forever = Instant::now() + secs(3600.0);
    let floods: Vec<_> = (0..SENDERS)
        .map(|s| {
            let to = (s..VICTIMS).step_by(SENDERS).cycle();
            let frames = to
                .take(PER_VICTIM * VICTIMS / SENDERS)
                .map(|v| big_send(&format!("victim{v}")));
            tokio::spawn(flood(addr.clone(), format!("sender{s}"), frames, forever))
        })
        .collect();
    for f in floods {
        let tally = f.await.unwrap();
        assert_eq!(tally.acks, tally.sent, "every send is accepted: {tally:?}");
    }
    let left = Instant::now();
    let (peak, peak_queued) = sampler.finish().await;
    let ceiling = baseline + (VICTIMS as u64 * QUEUE_BYTES + 64 * MIB) / 1024;
    println!("stuck readers: RSS {baseline} KiB, peak {peak} KiB (ceiling {ceiling} KiB)");
    assert!(peak <= ceiling, "peak RSS {peak} KiB over {ceiling} KiB");
    let most = VICTIMS as f64 * (QUEUE_BYTES + 64 * 1024) as f64 + MIB as f64;
    let peak_queued = peak_queued.expect(QUEUED);
    assert!(peak_queued <= most, "queued bytes peaked at {peak_queued}");

    // Every victim's socket is let go within write_timeout (3 s) + 5 s, and 4 s of slack.
    let peers: Vec<SocketAddr> = victims.iter().map(|v| v.local_addr().unwrap()).collect();
    loop {
        let held = peers
            .iter()
            .filter(|p| node_holds(sock(&addr), **p))
            .count();
        if held == 0 {
            break;
        }
        assert!(
            left.elapsed() < secs(12.0),
            "{held} stuck readers still held after 12 s"
        );
        sleep(secs(0.1)).await;
    }
    let released = left.elapsed();
    let quiet_released = quiet_released.await.unwrap();
    // Reading now drains what the kernel kept and finds the end of the stream.
    let deadline = Instant::now() + secs(10.0);
    let drains = victims.into_iter().map(|mut v| {
        tokio::spawn(async move { read_until_closed(&mut v, deadline).await.is_some() })
    });
    for d in drains.collect::<Vec<_>>() {
        assert!(d.await.unwrap(), "a victim's stream never ended");
    }
    let queued_after = gauge(&addr, QUEUED).await.expect(QUEUED);
    println!(
        "queued bytes peak {peak_queued}, then {queued_after}; all let go {released:?} after \
         the senders left, the quiet one {quiet_released:?} after its write stalled"
    );
    assert!(
        queued_after < 64.0 * 1024.0,
        "{queued_after} bytes still queued"
    );
    watch.finish().await;
}

// --- 2. History budget -------------------------------------------------------------------------

/// Guards `history.max_bytes` (memory engine, node-wide; the least recently published rooms
/// lose their history first) and `history.max_room_bytes`. Before, every room kept its last 100
/// messages for 5 minutes: 200 rooms of eight 64 KiB messages took the node from 19 to 118 MiB
/// of RSS, and the first room still resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_cycled_with_64k_messages_keep_history_under_max_bytes_and_the_oldest_lose_it_first()
{
    const CYCLERS: usize = 4;
    const ROOMS_EACH: usize = 50;
    const PER_ROOM: u64 = 8;
    const MAX_BYTES: u64 = 32 * MIB;
    let node = node_with(&[("ROOMCAST_HISTORY__MAX_BYTES", "33554432")]);
    let (pid, addr) = (node.child.id(), node.addr.clone());
    let watch = Watch::start(&addr, "history-lobby", by_name).await;
    let baseline = rss_kib(pid);
    let sampler = Sampler::start(pid, None);
    let cycle = async |k: usize, addr: String| {
        let mut ws = RawWs::open(ATTACKER_IP, &addr, &format!("user=cycler{k}")).await;
        let mut epochs = Vec::new();
        for r in 0..ROOMS_EACH {
            let room = format!("cycle-{k}-{r}");
            let joined = ws.request(json!({"type": "join", "room": room})).await;
            for i in 1..=PER_ROOM {
                assert_eq!(ws.publish_big(&room).await, i);
            }
            let left = ws.request(json!({"type": "leave", "room": room})).await;
            assert_eq!(left["type"], "left");
            epochs.push((room, joined["epoch"].as_str().unwrap().to_owned()));
        }
        epochs
    };
    let cyclers: Vec<_> = (0..CYCLERS)
        .map(|k| tokio::spawn(cycle(k, addr.clone())))
        .collect();
    let mut rooms = Vec::new();
    for c in cyclers {
        rooms.push(c.await.unwrap());
    }
    let (peak, _) = sampler.finish().await;
    let ceiling = baseline + (MAX_BYTES + 32 * MIB) / 1024;
    println!("history cycle: RSS {baseline} KiB, peak {peak} KiB (ceiling {ceiling} KiB)");
    assert!(peak <= ceiling, "peak RSS {peak} KiB over {ceiling} KiB");

    let mut reader = Client::connect(&node.ws_url("resumer")).await;
    let since = PER_ROOM - 2;
    for (k, epochs) in rooms.iter().enumerate() {
        for (recent, (room, epoch)) in [(false, &epochs[0]), (true, epochs.last().unwrap())] {
            let resume = json!({"type": "join", "room": room, "since": since, "epoch": epoch});
            let joined = reader.request(resume).await;
            assert_eq!(joined["recovered"], recent, "cycler {k}: {joined}");
        }
        for offset in since + 1..=PER_ROOM {
            assert_eq!(reader.recv_message().await["offset"], offset);
        }
    }
    watch.finish().await;
}

/// Guards the API's obedience to `limits.max_message_bytes`, what `welcome` promises: `data`
/// over it is refused 413 `message_too_large` by both publish endpoints (the body limit raised,
/// so that the message limit is what refuses). Before, the API published any `data` its body
/// limit let through, a megabyte included.
#[tokio::test]
async fn api_publishes_of_data_over_max_message_bytes_are_refused_413_and_60k_gets_through() {
    let server = TestServer::with(|c| {
        c.api.keys = vec![KEY.into()];
        c.api.max_body_bytes = 4 * MIB as usize;
    })
    .await;
    let watch = Watch::start(&server.addr.to_string(), "api-lobby", by_name).await;
    let api = Api::new(&server);
    let mut member = server.connect("member").await;
    let max = member.welcome["max_message_bytes"].as_u64().unwrap() as usize;
    member.join("api-big").await;
    let (one, many) = ("/rooms/api-big/publish", "/publish");
    for size in [MIB as usize, 100 * 1024, max + 1] {
        let data = "y".repeat(size);
        let answer = api.post(one, json!({"data": data})).await;
        answer.error(413, "message_too_large");
        let rooms = json!({"rooms": ["api-big", "api-other"], "data": data});
        api.post(many, rooms).await.error(413, "message_too_large");
    }
    let data = "z".repeat(60 * 1024);
    let answer = api.post(one, json!({"data": data})).await;
    assert_eq!(answer.body["offset"], 1, "{}", answer.body);
    let answer = api
        .post(many, json!({"rooms": ["api-big"], "data": data}))
        .await;
    assert_eq!(answer.body["results"][0]["offset"], 2, "{}", answer.body);
    for offset in 1..=2 {
        let m = member.recv_message().await;
        assert_eq!((&m["offset"], &m["data"]), (&json!(offset), &json!(data)));
    }
    watch.finish().await;
}

/// Guards `history.max_room_bytes` on the Redis engine: the room's log (`{prefix}:log:{room}`)
/// is trimmed by bytes as well as by count. Before, it kept `history.size` (100) frames: 100
/// messages of 64 KiB were 6.4 MiB of Redis memory for one room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_rooms_history_of_100_messages_of_64k_stays_under_max_room_bytes() {
    const MESSAGES: u64 = 100;
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let server = TestServer::with(|c| use_redis(c, &redis, &prefix)).await;
    wait_ready(&server.url(""), 200).await;
    let mut bystander = server.connect("bystander").await;
    bystander.join("redis-big").await;
    let reading = tokio::spawn(async move {
        let mut offsets = Vec::new();
        while offsets.len() < MESSAGES as usize {
            let m = bystander.recv_message().await;
            assert_eq!(m["data"].as_str().map(str::len), Some(PAD));
            offsets.push(m["offset"].as_u64().unwrap());
        }
        offsets
    });
    let addr = server.addr.to_string();
    let mut publisher = RawWs::open(ATTACKER_IP, &addr, "user=publisher").await;
    publisher
        .request(json!({"type": "join", "room": "redis-big"}))
        .await;
    for i in 1..=MESSAGES {
        assert_eq!(publisher.publish_big("redis-big").await, i);
    }
    let offsets = timeout(secs(30.0), reading).await.unwrap().unwrap();
    assert_eq!(
        offsets,
        (1..=MESSAGES).collect::<Vec<_>>(),
        "the bystander got all"
    );
    let key = format!("{prefix}:log:redis-big");
    let frames: Vec<Vec<u8>> = redis.query(&["LRANGE", &key, "0", "-1"]).await;
    let bytes: usize = frames.iter().map(Vec::len).sum();
    println!("redis history: {} frames, {bytes} bytes", frames.len());
    assert!(
        bytes <= 512 * 1024,
        "{} frames, {bytes} bytes",
        frames.len()
    );
    assert!(!frames.is_empty(), "the newest messages are kept");
}

// --- 3. Slowloris ------------------------------------------------------------------------------

/// The node binary under `prlimit --nofile=N:N`, which sets the limit and execs it (same pid).
fn start_with_nofile(limit: u32) -> Process {
    use std::io::BufRead;
    let mut child = std::process::Command::new("prlimit")
        .arg(format!("--nofile={limit}:{limit}"))
        .args([
            "--",
            env!("CARGO_BIN_EXE_roomcast"),
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning roomcast under prlimit (util-linux)");
    let mut line = String::new();
    let stdout = child.stdout.as_mut().unwrap();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("roomcast listening on ")
        .expect(&line);
    Process {
        addr: addr.to_owned(),
        child,
    }
}

/// Guards `limits.max_pending_connections_per_ip` (128 connections per IP that have not
/// upgraded; beyond, 429 and closed at once). Before, a node with 1,024 file descriptors
/// accepted idle connections until it had none left, and then nobody else got in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_idle_or_half_sent_connections_from_one_ip_leave_others_served_within_2_s() {
    const CROWD: usize = 1_100;
    const PENDING_PER_IP: usize = 128;
    const CODE: &str = r#""error":"too_many_pending_connections""#;
    // This process needs 1,100 descriptors for the crowd: raise its own soft limit.
    let me = std::process::id().to_string();
    let mut raise = std::process::Command::new("prlimit");
    raise.args(["--pid", &me, "--nofile=4096:"]);
    assert!(
        raise.status().unwrap().success(),
        "prlimit --nofile=4096: failed"
    );
    let node = start_with_nofile(1024);
    let (pid, addr) = (node.child.id(), node.addr.clone());
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(files.split_whitespace().nth(3), Some("1024"), "{files}");
    let watch = Watch::start(&addr, "loris-lobby", by_name).await;

    let mut crowd = Vec::new();
    for i in 0..CROWD {
        let mut stream = tcp_from(ATTACKER_IP, &addr, None).await;
        if i % 2 == 1 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        crowd.push(stream);
    }
    let started = Instant::now();
    let newcomer = RawWs::open(BYSTANDER_IP, &addr, "user=newcomer");
    let newcomer = timeout(secs(2.0), newcomer).await;
    newcomer.expect("a WebSocket from 127.0.0.2 was not welcomed within 2 s");
    let upgraded_in = started.elapsed();
    let started = Instant::now();
    let request = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let health = http([127, 0, 0, 3], &addr, request, secs(2.0)).await;
    assert_eq!(health.status, 200, "{health:?}");
    let health_in = started.elapsed();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();

    // The crowd: at most 128 still open, the rest answered 429 and closed.
    let deadline = Instant::now() + secs(3.0);
    let reads = crowd
        .into_iter()
        .map(|mut s| tokio::spawn(async move { read_until_closed(&mut s, deadline).await }));
    let (mut open, mut refused, mut cut) = (0, 0, 0);
    for read in reads.collect::<Vec<_>>() {
        match read.await.unwrap() {
            None => open += 1,
            Some(b)
                if b.starts_with(b"HTTP/1.1 429") && String::from_utf8_lossy(&b).contains(CODE) =>
            {
                refused += 1
            }
            Some(bytes) if bytes.is_empty() => cut += 1,
            Some(bytes) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&bytes)),
        }
    }
    println!(
        "slowloris: newcomer welcomed in {upgraded_in:?}, /healthz in {health_in:?}, node fds \
         {fds}; crowd: {open} open, {refused} answered 429, {cut} closed silently"
    );
    assert!(
        open <= PENDING_PER_IP,
        "{open} pending connections from one IP"
    );
    assert!(
        refused >= (CROWD - PENDING_PER_IP) / 2,
        "{refused} answered 429"
    );
    assert!(
        fds <= PENDING_PER_IP + 64,
        "the node holds {fds} file descriptors"
    );
    watch.finish().await;
}

/// Guards `limits.header_timeout_ms`: a connection without a whole request head within it is
/// closed. Before, a half-sent head (or none) held its connection forever.
#[tokio::test]
async fn a_connection_that_never_finishes_its_request_head_is_closed_after_header_timeout() {
    let server = TestServer::with(|c| c.limits.header_timeout_ms = 1_000).await;
    let addr = server.addr.to_string();
    let watch = Watch::start(&addr, "head-lobby", by_name).await;
    let start = Instant::now();
    let mut partial = tcp_from(ATTACKER_IP, &addr, None).await;
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = tcp_from(ATTACKER_IP, &addr, None).await;
    let whole = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = http(ATTACKER_IP, &addr, whole, RECV_TIMEOUT).await;
    assert_eq!(answer.status, 200, "a whole head is served at once");
    for (name, stream) in [("half-sent", &mut partial), ("silent", &mut silent)] {
        let bytes = read_until_closed(stream, start + secs(1.0 + 2.0)).await;
        let took = start.elapsed();
        let bytes = bytes.unwrap_or_else(|| panic!("the {name} connection open at {took:?}"));
        println!("header timeout: the {name} connection closed after {took:?}");
        assert!(took >= secs(0.8), "{name} closed after {took:?}");
        assert!(!bytes.starts_with(b"HTTP/1.1 2"), "{name} was served");
    }
    watch.finish().await;
}

/// Guards `api.body_timeout_ms`: a body that stops arriving gets 408 `request_timeout`. Before,
/// the handler waited for the missing 90 bytes forever.
#[tokio::test]
async fn an_api_body_that_stops_arriving_is_answered_408_after_body_timeout() {
    let server = TestServer::with(|c| {
        c.api.keys = vec![KEY.into()];
        c.api.body_timeout_ms = 1_000;
    })
    .await;
    let addr = server.addr.to_string();
    let watch = Watch::start(&addr, "body-lobby", by_name).await;
    let request = format!(
        "POST /api/rooms/body-lobby/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"data\":1,"
    );
    let start = Instant::now();
    let answer = http(ATTACKER_IP, &addr, &request, secs(1.0 + 2.0)).await;
    let took = start.elapsed();
    println!("body timeout: answered {} after {took:?}", answer.status);
    assert_eq!(
        (answer.status, &answer.body["error"]),
        (408, &json!("request_timeout"))
    );
    assert!(took >= secs(0.8), "answered after {took:?}");
    watch.finish().await;
}

// --- 4. Fragments ------------------------------------------------------------------------------

/// Guards the inbound token bucket's charge for continuation fragments. Before, only whole
/// messages were charged, so a message that never ends, streamed as empty fragments, was read
/// forever at full speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_empty_continuation_frames_is_rate_limited_and_closed_with_4029() {
    let server = TestServer::with(|c| {
        c.limits.inbound_rate_per_sec = 50;
        c.limits.inbound_burst = 100;
        c.limits.rate_limit_close_after = 100;
    })
    .await;
    let addr = server.addr.to_string();
    let watch = Watch::start(&addr, "frag-lobby", by_name).await;
    let ws = RawWs::open(ATTACKER_IP, &addr, "user=fragger").await;
    let (mut reader, mut writer) = (ws.reader, ws.writer);
    let start = Instant::now();
    let opening = frame(0x01, br#"{"type":"pi"#, MASK);
    writer.write_all(&opening).await.unwrap();
    let flooding = tokio::spawn(async move {
        let batch = frame(0x00, b"", MASK).repeat(1024);
        for _ in 0..5_000 {
            if writer.write_all(&batch).await.is_err() {
                break;
            }
        }
    });
    let code = reader.close_code(start + secs(5.0)).await;
    let took = start.elapsed();
    flooding.abort();
    println!("continuation flood: closed with {code} after {took:?}");
    assert_eq!(code, 4029);
    watch.finish().await;
}

/// Guards `limits.message_timeout_ms`: a fragmented message must be whole within it or the
/// socket is closed with 1008. Before, a fragment a second, within every rate, kept a half
/// message open for as long as the client liked.
#[tokio::test]
async fn a_message_trickled_one_fragment_a_second_is_closed_with_1008_after_message_timeout() {
    let server = TestServer::with(|c| c.limits.message_timeout_ms = 2_000).await;
    let addr = server.addr.to_string();
    let watch = Watch::start(&addr, "trickle-lobby", by_name).await;
    let ws = RawWs::open(ATTACKER_IP, &addr, "user=trickler").await;
    let (mut reader, mut writer) = (ws.reader, ws.writer);
    let mut prompt = RawWs::open(ATTACKER_IP, &addr, "user=prompt").await;
    let start = Instant::now();
    let opening = frame(0x01, br#"{"type":"ping","#, MASK);
    writer.write_all(&opening).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..10 {
            sleep(secs(1.0)).await;
            if writer.write_all(&frame(0x00, b" ", MASK)).await.is_err() {
                break;
            }
        }
    });
    // A message whose two fragments come a second apart is whole in time, and served.
    prompt.send(0x01, br#"{"type":"ping","#).await;
    sleep(secs(1.0)).await;
    prompt.send(0x80, br#""id":5}"#).await;
    assert_eq!(prompt.json().await, json!({"type": "pong", "id": 5}));

    let code = reader.close_code(start + secs(2.0 + 2.0)).await;
    let took = start.elapsed();
    trickle.abort();
    println!("trickled fragments: closed with {code} after {took:?}");
    assert_eq!(code, 1008);
    assert!(took >= secs(1.5), "closed after {took:?}");
    watch.finish().await;
}

// --- 5. Direct messages ------------------------------------------------------------------------

/// Guards the JWT `direct` claim (glob patterns of users the token may message; `[]` nobody;
/// absent: anyone, unless a `rooms` claim restricts the token, then nobody). Before, any token
/// could message anyone.
#[tokio::test]
async fn the_direct_claim_decides_whom_a_token_may_message_and_a_rooms_claim_alone_allows_nobody() {
    let server = auth_server(|_| {}).await;
    let addr = server.addr.to_string();
    let watch = Watch::start(&addr, "direct-lobby", by_token).await;
    let mut clients = std::collections::HashMap::new();
    for (user, claims) in [
        ("bob", json!({})),
        ("support:1", json!({})),
        ("carol", json!({})),
        ("dave", json!({})),
        ("mallory", json!({"rooms": {"join": [], "publish": []}})),
        ("alice", json!({"direct": ["bob", "support:*"]})),
        ("nemo", json!({"direct": []})),
    ] {
        let url = format!("ws://{addr}/ws?token={}", token(user, claims));
        clients.insert(user, Client::connect(&url).await);
    }
    let refused = [
        ("mallory", "bob"),
        ("mallory", "carol"),
        ("alice", "carol"),
        ("nemo", "bob"),
    ];
    let allowed = [
        ("alice", "bob"),
        ("alice", "support:1"),
        ("dave", "carol"),
        ("dave", "bob"),
    ];
    let cases = refused
        .map(|p| (p, "forbidden"))
        .into_iter()
        .chain(allowed.map(|p| (p, "ack")));
    for ((from, to), answer) in cases {
        let send = json!({"type": "send", "to": to, "data": format!("{from}>{to}")});
        let reply = clients.get_mut(from).unwrap().request(send).await;
        let got = if reply["type"] == "ack" {
            &reply["type"]
        } else {
            &reply["code"]
        };
        assert_eq!(got, answer, "{from} to {to}: {reply}");
    }
    for (to, from) in [
        ("bob", "alice"),
        ("bob", "dave"),
        ("support:1", "alice"),
        ("carol", "dave"),
    ] {
        let direct = clients.get_mut(to).unwrap().recv_type("direct").await;
        let data = json!(format!("{from}>{to}"));
        assert_eq!((&direct["from"], &direct["data"]), (&json!(from), &data));
    }
    for to in ["bob", "support:1", "carol"] {
        clients.get_mut(to).unwrap().expect_silence(secs(0.2)).await;
    }
    watch.finish().await;
}

/// Guards `limits.direct_rate_per_sec` / `limits.direct_burst` (defaults 10/s, 20): past them a
/// `send` answers `rate_limited` and the connection stays open. Before, all 30 were acked.
#[tokio::test]
async fn thirty_direct_messages_in_a_burst_get_twenty_acks_then_rate_limited_and_stay_connected() {
    let server = TestServer::start().await;
    let watch = Watch::start(&server.addr.to_string(), "burst-lobby", by_name).await;
    let mut target = server.connect("target").await;
    let mut burster = server.connect("burster").await;
    for id in 1..=30 {
        burster
            .send_json(json!({"type": "send", "to": "target", "data": id, "id": id}))
            .await;
    }
    let (mut acked, mut limited) = (Vec::new(), 0);
    for id in 1..=30 {
        let reply = burster.recv().await;
        assert_eq!(reply["id"], id, "replies come in request order: {reply}");
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("ack"), _) => acked.push(id),
            (Some("error"), Some("rate_limited")) => limited += 1,
            _ => panic!("send {id}: {reply}"),
        }
    }
    println!("direct burst: acked {acked:?}, {limited} rate_limited");
    assert_eq!(
        acked[..20],
        (1..=20).collect::<Vec<_>>(),
        "the burst of 20 is acked"
    );
    assert!(
        limited >= 8,
        "a token refills every 100 ms: {limited} refused of 30"
    );
    for id in acked {
        assert_eq!(target.recv_type("direct").await["data"], id);
    }
    assert_eq!(
        burster.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    watch.finish().await;
}

/// Guards the per-connection direct-message rate against a flood aimed at one user: four
/// connections sending 64 KiB directs as fast as they can get 20 + 10/s each through, and the
/// recipient's half-budget for directs: what a victim reading at a modest pace (a frame every
/// 2 ms at most) cannot take in time is dropped for it and counted, and it is never closed.
/// Before, every send was accepted, the victim's queue filled and it was closed with 4000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_connections_flooding_one_user_with_64k_directs_are_throttled_and_the_reader_stays_open()
 {
    const ATTACKERS: usize = 4;
    const PACE: Duration = Duration::from_millis(2);
    let node = node_with(&[]);
    let addr = node.addr.clone();
    let watch = Watch::start(&addr, "flood-lobby", by_name).await;
    let mut victim = RawWs::open([127, 0, 0, 4], &addr, "user=victim").await;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let reading = tokio::spawn(async move {
        let (mut directs, mut pinged) = (0u64, false);
        for _ in 0..100_000 {
            if flag.load(Relaxed) && !pinged {
                victim.send(0x81, br#"{"type":"ping","id":"end"}"#).await;
                pinged = true;
            }
            let next = victim.reader.next(Instant::now() + secs(0.1)).await;
            match next.map(|f| f.expect("the victim's connection ended")) {
                None => {}
                Some((0x81, text)) if text.starts_with(br#"{"type":"direct""#) => {
                    assert!(text.len() > PAD, "a whole direct");
                    directs += 1;
                    sleep(PACE).await;
                }
                Some((0x81, text)) if text == br#"{"type":"pong","id":"end"}"# => return directs,
                Some((0x88, code)) => panic!(
                    "the victim was closed with {} after {directs} directs",
                    String::from_utf8_lossy(&code[2..])
                ),
                Some((first, text)) => panic!("the victim got {first:#x} {text:?}"),
            }
        }
        panic!("the victim read unbounded");
    });
    let start = Instant::now();
    let stop_at = start + secs(4.0);
    let floods: Vec<_> = (0..ATTACKERS)
        .map(|a| {
            let frames = std::iter::repeat(big_send("victim"));
            tokio::spawn(flood(addr.clone(), format!("attacker{a}"), frames, stop_at))
        })
        .collect();
    let mut tallies = Vec::new();
    for f in floods {
        tallies.push(f.await.unwrap());
    }
    let took = start.elapsed();
    stop.store(true, Relaxed);
    let received = timeout(secs(30.0), reading).await;
    let received = received
        .expect("the victim never got its pong")
        .expect("the victim failed");
    let acks: u64 = tallies.iter().map(|t| t.acks).sum();
    println!("direct flood over {took:?}: {tallies:?}; the victim got {received}");
    let most = 20 + (10.0 * took.as_secs_f64()).ceil() as u64 + 1;
    for tally in &tallies {
        assert!(tally.acks <= most, "{tally:?} over {most} in {took:?}");
        assert!(tally.rate_limited > 0, "{tally:?}");
    }
    // What the victim could not take in time was dropped for it (it holds half its budget
    // at most in directs) and counted; nothing else is missing, and it was never closed.
    let dropped = gauge(&addr, "roomcast_direct_dropped_total")
        .await
        .unwrap_or(0.0) as u64;
    println!("the victim got {received} and {dropped} were dropped for it");
    assert!(received > 0);
    assert_eq!(
        received + dropped,
        acks,
        "each accepted direct delivered or counted dropped"
    );
    watch.finish().await;
}

// --- 7. Handshake and parsing ------------------------------------------------------------------

/// Guards the handshake's check of `Sec-WebSocket-Key` (base64 of 16 bytes) and its refusal of
/// duplicated security headers (`duplicate_header`). Before, any key was accepted, and of two
/// `Origin` headers only the first was checked, so an allowed one smuggled an evil one in.
#[tokio::test]
async fn bad_keys_and_duplicated_security_headers_are_refused_with_400_and_never_upgraded() {
    use base64::Engine;
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
    let server =
        auth_server(|c| c.auth.allowed_origins = vec!["https://chat.example".into()]).await;
    let addr = server.addr.to_string();
    let watch = Watch::start(&addr, "handshake-lobby", by_token).await;
    let jwt = token("alice", json!({}));
    let query = format!("token={jwt}");
    let ask = async |query: &str, lines: &[&str]| {
        http(ATTACKER_IP, &addr, &handshake(query, lines), RECV_TIMEOUT).await
    };
    let (good, evil) = (
        "Origin: https://chat.example",
        "Origin: https://evil.example",
    );
    assert_eq!(ask(&query, &[VERSION, KEY_LINE, good]).await.status, 101);
    let refused = ask(&query, &[VERSION, KEY_LINE, evil]).await;
    assert_eq!(
        (refused.status, &refused.body["error"]),
        (403, &json!("origin_forbidden"))
    );
    for key in ["", "not base64 at all!", &b64(15), &b64(17), &b64(32)] {
        let answer = ask(&query, &[VERSION, &format!("Sec-WebSocket-Key: {key}")]).await;
        let got = (answer.status, &answer.body["error"]);
        assert_eq!(
            got,
            (400, &json!("not_websocket")),
            "key {key:?}: {answer:?}"
        );
    }
    let key2 = format!("Sec-WebSocket-Key: {}", b64(16));
    let bearer = format!("Authorization: Bearer {jwt}");
    for (query, lines) in [
        (&query[..], &[VERSION, KEY_LINE, good, evil][..]),
        (&query, &[VERSION, KEY_LINE, &key2]),
        (&query, &[VERSION, VERSION, KEY_LINE]),
        ("", &[VERSION, KEY_LINE, &bearer, &bearer]),
        (&query, &[VERSION, KEY_LINE, "Host: evil.example"]),
    ] {
        let answer = ask(query, lines).await;
        let got = (answer.status, &answer.body["error"]);
        assert_eq!(
            got,
            (400, &json!("duplicate_header")),
            "{lines:?}: {answer:?}"
        );
    }
    watch.finish().await;
}

/// Guards the token's travel and checks: the `Bearer` scheme is case-insensitive on `/ws` as on
/// `/api` (RFC 7235), and a JWT header with `crit` (extensions roomcast does not understand) is
/// refused. Before, `bearer` was not recognised (401 `token_missing`) and `crit` was ignored.
#[tokio::test]
async fn a_lowercase_bearer_scheme_is_accepted_on_ws_and_a_token_with_crit_is_refused() {
    let server = auth_server(|_| {}).await;
    let addr = server.addr.to_string();
    let watch = Watch::start(&addr, "bearer-lobby", by_token).await;
    let bearer = format!("Authorization: bearer {}", token("alice", json!({})));
    let alice = RawWs::open_with(ATTACKER_IP, &addr, "", &[&bearer]).await;
    assert_eq!(alice.welcome["user"], "alice");
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp".into()]);
    let crit = token_with(&header, json!({"sub": "mallory", "exp": u32::MAX}));
    let request = handshake(&format!("token={crit}"), &[VERSION, KEY_LINE]);
    let answer = http(ATTACKER_IP, &addr, &request, RECV_TIMEOUT).await;
    let got = (answer.status, &answer.body["error"]);
    assert_eq!(got, (401, &json!("token_invalid")), "crit: {answer:?}");
    watch.finish().await;
}

/// Guards the complexity check on `data` (at most 64 levels deep, numbers at most 64
/// characters), which protects every parser downstream (history readers, other clients' JSON
/// libraries, the API's users). Before, a 30,000-deep array or a 60,000-digit number was
/// passed through or refused as `bad_json`, never `data_too_complex`.
#[tokio::test]
async fn data_nested_past_64_levels_or_a_number_past_64_digits_is_refused_and_never_delivered() {
    let server = TestServer::with(|c| c.api.keys = vec![KEY.into()]).await;
    let addr = server.addr.to_string();
    let watch = Watch::start(&addr, "deep-lobby", by_name).await;
    let api = Api::new(&server);
    let mut attacker = RawWs::open(ATTACKER_IP, &addr, "user=attacker").await;
    let mut fine = server.connect("fine").await;
    fine.join("deep-fine").await;
    for room in ["deep-lobby", "deep-fine"] {
        attacker
            .request(json!({"type": "join", "room": room}))
            .await;
    }
    let post = async |room: &str, data: &str| {
        let (path, body) = (
            format!("/rooms/{room}/publish"),
            format!(r#"{{"data":{data}}}"#),
        );
        api.post_raw(&path, "application/json", &body).await
    };
    let publish = |room: &str, data: &str| {
        format!(r#"{{"id":ID,"type":"publish","room":"{room}","data":{data}}}"#)
    };
    let send =
        |to: &str, data: &str| format!(r#"{{"id":ID,"type":"send","to":"{to}","data":{data}}}"#);
    for data in [nested(30_000), "7".repeat(60_000)] {
        for text in [publish("deep-lobby", &data), send("bystander", &data)] {
            let reply = attacker.ask(&text).await;
            assert_eq!(reply["code"], "data_too_complex", "{reply}");
        }
        post("deep-lobby", &data)
            .await
            .error(400, "data_too_complex");
    }
    // At the limits: accepted, and delivered whole.
    for data in [nested(64), "9".repeat(64)] {
        for text in [publish("deep-fine", &data), send("fine", &data)] {
            assert_eq!(attacker.ask(&text).await["type"], "ack");
        }
        let answer = post("deep-fine", &data).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let expected: Value = serde_json::from_str(&data).unwrap();
        for kind in ["message", "direct", "message"] {
            assert_eq!(fine.recv_type(kind).await["data"], expected);
        }
    }
    watch.finish().await;
}

/// Guards publish keys against growing Redis: a client publishing with a fresh key every time
/// (3,000 keyed publishes in one room) leaves at most 2,048 keys for the room, in one hash,
/// not one Redis key per publish kept for the history TTL; a retry of a recent key is still
/// answered with its first offset, and the bystander gets every publish once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_publishes_keep_a_bounded_number_of_keys_per_room_in_redis() {
    const PUBLISHES: u64 = 3_000;
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let server = TestServer::with(|c| use_redis(c, &redis, &prefix)).await;
    wait_ready(&server.url(""), 200).await;
    let mut bystander = server.connect("bystander").await;
    bystander.join("keyed").await;
    let mut alice = server.connect("alice").await;
    alice.join("keyed").await;
    let publish =
        |n: u64| json!({"type": "publish", "room": "keyed", "data": n, "key": format!("k-{n}")});
    for n in 1..=PUBLISHES {
        alice.send_json(publish(n)).await;
    }
    for n in 1..=PUBLISHES {
        let m = bystander.recv_message().await;
        assert_eq!(
            (m["offset"].as_u64(), m["data"].as_u64()),
            (Some(n), Some(n))
        );
    }
    let retry = alice.request(publish(PUBLISHES)).await;
    assert_eq!(
        retry["offset"], PUBLISHES,
        "a recent key still answers: {retry}"
    );
    let keys: u64 = redis.query(&["HLEN", &format!("{prefix}:pk:keyed")]).await;
    let all: Vec<String> = redis.query(&["KEYS", &format!("{prefix}:*")]).await;
    println!(
        "after {PUBLISHES} keyed publishes: {keys} keys kept, {} Redis keys",
        all.len()
    );
    assert!(keys <= 2_048, "{keys} keys kept");
    assert!(all.len() < 20, "one Redis key per publish? {}", all.len());
    bystander.expect_silence(Duration::from_millis(200)).await;
}
