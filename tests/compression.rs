//! permessage-deflate (RFC 7692) against a real node over raw TCP: what the handshake answers,
//! compressed client messages inflated (and a decompression bomb refused with 1009 while a
//! bystander is served), RSV1 refused where nothing was agreed, members with and without
//! compression in one room receiving the same messages, one compression per room frame, and
//! context takeover across the idle drop of the server's compressor.
//!
//! The tests run one at a time (`SERIAL`): the counters they read are the process's, and the
//! bomb test reads the process's peak memory.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Client, RECV_TIMEOUT, TestServer};
use flate2::{Decompress, FlushDecompress};
use roomcast::config::CompressionMode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::timeout;

static SERIAL: Mutex<()> = Mutex::const_new(());

const MASK: [u8; 4] = [0x5c, 0x21, 0x9e, 0x03];
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
const CHROMIUM_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A client writing frames by hand, inflating what the server compressed with one decompressor
/// kept for the connection (as browsers do: it must work with and without context takeover).
struct DeflateClient {
    stream: TcpStream,
    read: Vec<u8>,
    /// The response's `Sec-WebSocket-Extensions`, if any.
    agreed: Option<String>,
    inflater: Decompress,
    next_id: u64,
    /// Messages read while waiting for a reply, returned first by `message`.
    backlog: std::collections::VecDeque<Received>,
}

/// One server message: its text and whether it came compressed, with its wire size.
#[derive(Debug)]
struct Received {
    text: String,
    compressed: bool,
    wire_len: usize,
}

impl DeflateClient {
    /// Opens a socket offering `extensions` (none if `None`) and reads the welcome.
    async fn open(server: &TestServer, user: &str, extensions: Option<&str>) -> Self {
        Self::open_with_window(server, user, extensions, 15).await
    }

    /// Like `open`, inflating with a window of `bits` (what the client allows the server).
    async fn open_with_window(
        server: &TestServer,
        user: &str,
        extensions: Option<&str>,
        bits: u8,
    ) -> Self {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let offer = extensions.map_or(String::new(), |e| {
            format!("Sec-WebSocket-Extensions: {e}\r\n")
        });
        let request = format!(
            "GET /ws?user={user} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{offer}\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut client = Self {
            stream,
            read: Vec::new(),
            agreed: None,
            inflater: Decompress::new_with_window_bits(false, bits),
            next_id: 1,
            backlog: Default::default(),
        };
        let head = loop {
            if let Some(end) = client.read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(client.read[..end].to_vec()).unwrap();
                client.read.drain(..end + 4);
                break head;
            }
            assert!(client.fill().await > 0, "closed during the handshake");
        };
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        client.agreed = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        let welcome = client.json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0; 16384];
        let n = timeout(RECV_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("read timed out")
            .unwrap_or(0);
        self.read.extend_from_slice(&chunk[..n]);
        n
    }

    /// Sends one frame, masked, with this first byte (FIN, RSV, opcode).
    async fn send(&mut self, first: u8, payload: &[u8]) {
        let mut frame = vec![first];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        // The server may close before taking it all (a refused frame): that is what some
        // tests expect, so a failed write is not an error here.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Sends `text` as one compressed message (RSV1).
    async fn send_compressed(&mut self, text: &[u8]) {
        self.send(0xC1, &deflate(text)).await;
    }

    /// The next frame: (first byte, payload); `None` at end of stream.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some(frame) = take_frame(&mut self.read) {
                return Some(frame);
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// The next text message, inflated if it came compressed; control frames skipped.
    async fn message(&mut self) -> Received {
        if let Some(received) = self.backlog.pop_front() {
            return received;
        }
        self.read_message().await
    }

    async fn read_message(&mut self) -> Received {
        loop {
            let (first, payload) = self.frame().await.expect("stream ended");
            assert_eq!(first & 0x80, 0x80, "the server sends whole messages");
            match first & 0x0f {
                0x1 => {}
                0x8 => panic!("closed: {:?}", close_code(&payload)),
                _ => continue,
            }
            let compressed = first & 0x40 != 0;
            assert!(
                !compressed || self.agreed.is_some(),
                "RSV1 without agreement"
            );
            let text = if compressed {
                inflate(&mut self.inflater, &payload)
            } else {
                payload.clone()
            };
            return Received {
                text: String::from_utf8(text).unwrap(),
                compressed,
                wire_len: payload.len(),
            };
        }
    }

    async fn json(&mut self) -> Value {
        serde_json::from_str(&self.message().await.text).unwrap()
    }

    /// Sends a request (compressed if `compressed`) and returns its reply.
    async fn request(&mut self, mut request: Value, compressed: bool) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        let text = request.to_string();
        if compressed {
            self.send_compressed(text.as_bytes()).await;
        } else {
            self.send(0x81, text.as_bytes()).await;
        }
        loop {
            let received = self.read_message().await;
            let reply: Value = serde_json::from_str(&received.text).unwrap();
            if reply["id"] == json!(id) {
                return reply;
            }
            self.backlog.push_back(received);
        }
    }

    async fn join(&mut self, room: &str) {
        let reply = self
            .request(json!({"type": "join", "room": room}), false)
            .await;
        assert_eq!(reply["type"], "joined", "{reply}");
    }

    /// The next `message` frame, as it came.
    async fn room_message(&mut self) -> Received {
        loop {
            let received = self.message().await;
            if received.text.starts_with(r#"{"type":"message""#) {
                return received;
            }
        }
    }

    /// Reads until the server's close frame, answers it, and returns its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let (first, payload) = self.frame().await.expect("no close frame");
            if first == 0x88 {
                self.send(0x88, &payload).await;
                return close_code(&payload).unwrap();
            }
        }
    }
}

fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

fn take_frame(read: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let [first, second, ref rest @ ..] = read[..] else {
        return None;
    };
    assert_eq!(second & 0x80, 0, "the server must not mask");
    let (len, at) = match second & 0x7f {
        126 if rest.len() >= 2 => (u16::from_be_bytes([rest[0], rest[1]]) as usize, 4),
        127 if rest.len() >= 8 => (
            u64::from_be_bytes(rest[..8].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if read.len() < at + len {
        return None;
    }
    let payload = read[at..at + len].to_vec();
    read.drain(..at + len);
    Some((first, payload))
}

/// Raw deflate as a client sends a message: flushed, the tail removed.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.flush().unwrap();
    let mut out = encoder.get_ref().clone();
    out.truncate(out.len() - TAIL.len());
    out
}

fn inflate(inflater: &mut Decompress, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(4 << 20);
    let before = inflater.total_in();
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("the server's compressed message inflates");
    assert_eq!(inflater.total_in() - before, input.len() as u64);
    out
}

/// A value of `/metrics` (0 when absent): `name` or `name{label="value"}`.
async fn metric(server: &TestServer, series: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (name, label) = series.split_once('{').unwrap_or((series, ""));
    let label = label.trim_end_matches('}');
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| s.split('{').next() == Some(name) && s.contains(label))
        .map_or(0.0, |(_, v)| v.parse().unwrap())
}

/// The process's peak resident memory, kB (`VmHWM`).
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn server_in(mode: CompressionMode, idle_ms: u64) -> TestServer {
    TestServer::with(|c| {
        c.compression.mode = mode;
        c.compression.idle_ms = idle_ms;
    })
    .await
}

#[tokio::test]
async fn the_handshake_agrees_to_one_offer_and_declines_what_it_cannot_accept() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let shared = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    let cases: [(Option<&str>, Option<&str>); 6] = [
        (None, None),
        (Some(CHROMIUM_OFFER), Some(shared)),
        // Firefox offers the bare name.
        (Some("permessage-deflate"), Some(shared)),
        (
            Some("x-webkit-deflate-frame, permessage-deflate; foo=1"),
            None,
        ),
        (
            Some("permessage-deflate; server_max_window_bits=99, permessage-deflate"),
            Some(shared),
        ),
        (
            Some("permessage-deflate; server_max_window_bits=\"9\""),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=9",
            ),
        ),
    ];
    for (i, (offer, answer)) in cases.into_iter().enumerate() {
        let client = DeflateClient::open(&server, &format!("u{i}"), offer).await;
        assert_eq!(client.agreed.as_deref(), answer, "offer {offer:?}");
    }
    let context = server_in(CompressionMode::Context, 10_000).await;
    let client = DeflateClient::open(&context, "c", Some(CHROMIUM_OFFER)).await;
    assert_eq!(
        client.agreed.as_deref(),
        Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=10")
    );
    let off = TestServer::with(|c| c.compression.enabled = false).await;
    let client = DeflateClient::open(&off, "off", Some(CHROMIUM_OFFER)).await;
    assert_eq!(client.agreed, None);
}

#[tokio::test]
async fn a_compressed_publish_is_inflated_and_reaches_members_with_and_without_compression() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut writer = DeflateClient::open(&server, "writer", Some(CHROMIUM_OFFER)).await;
    let mut plain = server.connect("plain").await;
    plain.join("lobby").await;
    writer.join("lobby").await;
    let text = "a chat line that repeats, ".repeat(20);
    let reply = writer
        .request(
            json!({"type": "publish", "room": "lobby", "data": {"text": text}}),
            true,
        )
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let got = plain.recv_message().await;
    assert_eq!(got["data"]["text"], text);
    let own = writer.room_message().await;
    assert!(own.compressed, "over min_bytes: compressed");
    let own: Value = serde_json::from_str(&own.text).unwrap();
    assert_eq!(own, got);
}

#[tokio::test]
async fn a_decompression_bomb_closes_with_1009_without_inflating_it_and_others_are_served() {
    let _serial = SERIAL.lock().await;
    // A limit above the bomb's compressed size, so it is the inflation that must stop it.
    const LIMIT: usize = 256 << 10;
    let server = TestServer::with(|c| c.limits.max_message_bytes = LIMIT).await;
    let mut bystander = server.connect("bystander").await;
    bystander.join("lobby").await;
    // 100 MB of spaces, deflated a megabyte at a time (the test must not hold 100 MB either,
    // or the peak below would show nothing).
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    for _ in 0..100 {
        encoder.write_all(&[b' '; 1 << 20]).unwrap();
    }
    encoder.flush().unwrap();
    let mut bomb = encoder.get_ref().clone();
    bomb.truncate(bomb.len() - TAIL.len());
    assert!(bomb.len() < LIMIT, "{} bytes on the wire", bomb.len());
    let peak = peak_rss_kb();
    let mut attacker = DeflateClient::open(&server, "attacker", Some(CHROMIUM_OFFER)).await;
    attacker.send(0xC1, &bomb).await;
    assert_eq!(attacker.close_code().await, 1009);
    let grown = peak_rss_kb().saturating_sub(peak);
    assert!(grown < 50_000, "peak memory grew by {grown} kB");
    // One byte past the limit once inflated: 1009; exactly the limit: served (a request that
    // is not JSON gets an error reply, the connection stays).
    let mut over = DeflateClient::open(&server, "over", Some(CHROMIUM_OFFER)).await;
    over.send_compressed(&vec![b'x'; LIMIT + 1]).await;
    assert_eq!(over.close_code().await, 1009);
    let mut at = DeflateClient::open(&server, "at", Some(CHROMIUM_OFFER)).await;
    at.send_compressed(&vec![b'x'; LIMIT]).await;
    assert_eq!(at.json().await["type"], "error");
    let mut publisher = server.connect("publisher").await;
    publisher.join("lobby").await;
    publisher.publish("lobby", json!("still here")).await;
    assert_eq!(bystander.recv_message().await["data"], "still here");
}

#[tokio::test]
async fn rsv1_without_agreement_closes_with_1002() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut client = DeflateClient::open(&server, "plain", None).await;
    client.send_compressed(br#"{"type":"ping"}"#).await;
    assert_eq!(client.close_code().await, 1002);
    // Agreed, but on a control frame.
    let mut client = DeflateClient::open(&server, "ctl", Some(CHROMIUM_OFFER)).await;
    client.send(0xC9, b"").await;
    assert_eq!(client.close_code().await, 1002);
}

#[tokio::test]
async fn members_with_and_without_compression_get_identical_messages_and_each_frame_is_compressed_once()
 {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let min = roomcast::config::Compression::default().min_bytes;
    let mut compressing = Vec::new();
    for i in 0..3 {
        let mut client = DeflateClient::open(&server, &format!("z{i}"), Some(CHROMIUM_OFFER)).await;
        client.join("mixed").await;
        compressing.push(client);
    }
    let mut raw_plain = DeflateClient::open(&server, "rawplain", None).await;
    raw_plain.join("mixed").await;
    let mut plain = server.connect("plain").await;
    plain.join("mixed").await;
    let shared_before = metric(&server, r#"roomcast_deflate_frames_total{mode="shared"}"#).await;
    // Frame sizes around min_bytes (the envelope adds about 80 bytes to the text), and larger.
    let sizes = [min - 120, min - 80, min - 79, min - 78, min, 2_000, 60_000];
    for &size in &sizes {
        plain.publish("mixed", json!("y".repeat(size))).await;
    }
    let mut compressed = 0;
    for &size in &sizes {
        let reference = raw_plain.room_message().await;
        compressed += usize::from(reference.text.len() >= min);
        assert!(!reference.compressed);
        let decoded: Value = serde_json::from_str(&reference.text).unwrap();
        assert_eq!(decoded, plain.recv_message().await, "size {size}");
        for client in &mut compressing {
            let got = client.room_message().await;
            assert_eq!(got.text, reference.text, "byte for byte, size {size}");
            assert_eq!(got.compressed, reference.text.len() >= min, "size {size}");
            if got.compressed {
                // Sent compressed only when shorter; the repeated text of the large ones
                // (most of the frame) at least halves.
                let len = reference.text.len();
                assert!(got.wire_len < len, "size {size}: {} of {len}", got.wire_len);
                assert!(len < 1_000 || got.wire_len < len / 2, "size {size}");
            }
        }
    }
    let shared_after = metric(&server, r#"roomcast_deflate_frames_total{mode="shared"}"#).await;
    assert_eq!(
        shared_after - shared_before,
        compressed as f64,
        "one compression per room frame for {} members",
        compressing.len()
    );
}

#[tokio::test]
async fn context_takeover_compresses_across_messages_and_survives_the_idle_drop() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::with(|c| {
        c.compression.mode = CompressionMode::Context;
        c.compression.idle_ms = 1_000;
        c.compression.min_bytes = 0;
    })
    .await;
    // The client inflates with the window the server announced: the server must keep to it.
    let mut reader =
        DeflateClient::open_with_window(&server, "reader", Some(CHROMIUM_OFFER), 10).await;
    assert!(
        reader
            .agreed
            .as_deref()
            .is_some_and(|a| a.contains("server_max_window_bits=10")),
        "{:?}",
        reader.agreed
    );
    reader.join("ctx").await;
    // Beside it: a client that asked for no context (answered as in shared mode) and one
    // without compression; all three read the same messages.
    let mut alone = DeflateClient::open(
        &server,
        "alone",
        Some("permessage-deflate; server_no_context_takeover"),
    )
    .await;
    let answer = alone.agreed.clone().unwrap_or_default();
    assert!(answer.contains("server_no_context_takeover"), "{answer}");
    alone.join("ctx").await;
    let mut plain = DeflateClient::open(&server, "plain", None).await;
    plain.join("ctx").await;
    let mut writer = Client::connect(&server.ws_url("writer")).await;
    writer.join("ctx").await;
    let line = json!({"text": "see you at the station at nine, bring the tickets"});
    let mut sizes = Vec::new();
    for _ in 0..3 {
        writer.publish("ctx", line.clone()).await;
        let got = reader.room_message().await;
        assert!(got.compressed);
        assert_eq!(
            serde_json::from_str::<Value>(&got.text).unwrap()["data"],
            line
        );
        assert_eq!(alone.room_message().await.text, got.text);
        assert_eq!(plain.room_message().await.text, got.text);
        sizes.push(got.wire_len);
    }
    assert!(sizes[2] * 2 < sizes[0], "context takeover: {sizes:?} bytes");
    let made_before = metric(&server, "roomcast_deflate_compressors_total").await;
    // Idle past idle_ms: the compressor is dropped, the next message starts a fresh one, and
    // the client's decompressor (which kept its window) still reads it.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    writer.publish("ctx", line.clone()).await;
    let got = reader.room_message().await;
    assert_eq!(
        serde_json::from_str::<Value>(&got.text).unwrap()["data"],
        line
    );
    assert!(
        got.wire_len * 10 >= sizes[0] * 9,
        "fresh: {} vs {sizes:?}",
        got.wire_len
    );
    let made = metric(&server, "roomcast_deflate_compressors_total").await - made_before;
    assert_eq!(
        made, 1.0,
        "the idle compressor was dropped and a new one made"
    );
}
