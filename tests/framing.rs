//! WebSocket framing as the node speaks it, byte by byte over a raw TCP socket: what a browser
//! may send (fragments, pings between fragments, close codes) is answered as RFC 6455 says, and
//! what it may not (unmasked frames, reserved bits, unknown opcodes, bad close codes) ends the
//! connection with 1002 while everyone else is served; invalid UTF-8 ends it with 1007 as soon
//! as the bad byte arrives.

mod common;

use common::{RECV_TIMEOUT, TestServer};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A client that writes frames by hand. Masks with a fixed key, which the protocol allows.
struct RawClient {
    stream: TcpStream,
    read: Vec<u8>,
}

const MASK: [u8; 4] = [0xa1, 0x07, 0x3c, 0x5e];

impl RawClient {
    /// Opens a socket and completes the handshake; returns the client and the response head.
    async fn open(server: &TestServer, user: &str, protocols: Option<&str>) -> (Self, String) {
        Self::open_sending(server, user, protocols, &[]).await
    }

    /// Like `open`, with `early` written in the same write as the handshake request, before
    /// the server has answered it.
    async fn open_sending(
        server: &TestServer,
        user: &str,
        protocols: Option<&str>,
        early: &[u8],
    ) -> (Self, String) {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let protocols = protocols.map_or(String::new(), |p| {
            format!("Sec-WebSocket-Protocol: {p}\r\n")
        });
        let request = format!(
            "GET /ws?user={user} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive, Upgrade\r\n\
             Upgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{protocols}\r\n",
            server.addr
        );
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(early);
        stream.write_all(&bytes).await.unwrap();
        let mut client = Self {
            stream,
            read: Vec::new(),
        };
        let head = loop {
            if let Some(end) = client.read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(client.read[..end].to_vec()).unwrap();
                client.read.drain(..end + 4);
                break head;
            }
            client.fill().await;
        };
        (client, head)
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0; 4096];
        let n = timeout(RECV_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("read timed out")
            .unwrap();
        self.read.extend_from_slice(&chunk[..n]);
        n
    }

    /// Sends one frame with this first byte (FIN, RSV, opcode) and payload, masked unless told.
    async fn send(&mut self, first: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => frame.push(mask_bit | n as u8),
            n => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        if masked {
            frame.extend_from_slice(&MASK);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next frame from the server: (first byte, payload). `None` at end of stream.
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

    /// The next text frame as JSON, skipping control frames.
    async fn json(&mut self) -> Value {
        loop {
            let (first, payload) = self.frame().await.expect("stream ended");
            if first == 0x81 {
                return serde_json::from_slice(&payload).unwrap();
            }
        }
    }

    /// Reads until the server's close frame and returns its code; the TCP stream then ends.
    async fn close_code(&mut self) -> u16 {
        loop {
            let (first, payload) = self.frame().await.expect("no close frame");
            if first == 0x88 {
                // Reply, as a client must, so the server can end the connection cleanly.
                self.send(0x88, &payload, true).await;
                assert!(self.frame().await.is_none(), "nothing after the close");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

/// Takes one whole server frame off the front of `read`: (first byte, payload); `None` while
/// the frame is incomplete.
fn take_frame(read: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let [first, second, ref rest @ ..] = read[..] else {
        return None;
    };
    assert_eq!(second & 0x80, 0, "the server must not mask");
    let (len, at) = match second & 0x7f {
        126 if rest.len() >= 2 => (u16::from_be_bytes([rest[0], rest[1]]) as usize, 4),
        126 => return None,
        127 => panic!("no frame in these tests is that long"),
        n => (n as usize, 2),
    };
    if read.len() < at + len {
        return None;
    }
    let payload = read[at..at + len].to_vec();
    read.drain(..at + len);
    Some((first, payload))
}

#[tokio::test]
async fn the_handshake_accepts_case_and_token_lists_and_selects_only_our_subprotocol() {
    let server = TestServer::start().await;
    let (mut plain, head) = RawClient::open(&server, "plain", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The RFC's own example key and its answer (§1.3).
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(!head.to_ascii_lowercase().contains("sec-websocket-protocol"));
    assert_eq!(plain.json().await["type"], "welcome");

    let (_, head) = RawClient::open(&server, "proto", Some("chat.v2, roomcast.v1")).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: roomcast.v1"),
        "{head}"
    );
    let (_, head) = RawClient::open(&server, "other", Some("chat.v2")).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("sec-websocket-protocol"));
}

#[tokio::test]
async fn a_frame_sent_together_with_the_handshake_is_not_lost() {
    let server = TestServer::start().await;
    let mut frame = vec![0x81, 0x80 | 23];
    frame.extend_from_slice(&MASK);
    let text = br#"{"type":"ping","id":42}"#;
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    let (mut client, head) = RawClient::open_sending(&server, "eager", None, &frame).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(client.json().await["type"], "welcome");
    let reply = client.json().await;
    assert_eq!(
        (reply["type"].as_str(), reply["id"].as_u64()),
        (Some("pong"), Some(42))
    );
}

#[tokio::test]
async fn fragments_with_a_ping_between_them_make_one_request_and_the_ping_is_echoed() {
    let server = TestServer::start().await;
    let (mut client, _) = RawClient::open(&server, "frag", None).await;
    assert_eq!(client.json().await["type"], "welcome");
    client.send(0x01, br#"{"type":"pi"#, true).await;
    client.send(0x89, b"are you there", true).await;
    client.send(0x00, br#"ng","id":"#, true).await;
    client.send(0x80, b"7}", true).await;
    assert_eq!(
        client.frame().await.unwrap(),
        (0x8a, b"are you there".to_vec()),
        "the pong echoes the ping's payload, before the reply to the message"
    );
    let reply = client.json().await;
    assert_eq!(
        (reply["type"].as_str(), reply["id"].as_u64()),
        (Some("pong"), Some(7))
    );
    // A long message, with a 16-bit length, split in two.
    let text = format!(r#"{{"type":"ping","id":8,"pad":"{}"}}"#, "p".repeat(300));
    let (a, b) = text.as_bytes().split_at(100);
    client.send(0x01, a, true).await;
    client.send(0x80, b, true).await;
    assert_eq!(client.json().await["id"], 8);
}

#[tokio::test]
async fn the_clients_close_code_is_echoed_and_the_connection_ends() {
    let server = TestServer::start().await;
    let (mut client, _) = RawClient::open(&server, "leaver", None).await;
    assert_eq!(client.json().await["type"], "welcome");
    client
        .send(0x88, &[0x10, 0xe1, b'b', b'y', b'e'], true)
        .await;
    assert_eq!(client.frame().await, Some((0x88, vec![0x10, 0xe1])));
    assert_eq!(client.frame().await, None, "the server ends the TCP stream");

    let (mut quiet, _) = RawClient::open(&server, "quiet", None).await;
    assert_eq!(quiet.json().await["type"], "welcome");
    quiet.send(0x88, &[], true).await;
    assert_eq!(
        quiet.frame().await,
        Some((0x88, vec![])),
        "no code given, none echoed"
    );
}

#[tokio::test]
async fn framing_violations_close_with_1002_and_a_bystander_is_served() {
    let server = TestServer::start().await;
    let mut bystander = server.connect("bystander").await;
    bystander.join("room").await;
    let violations: [(u8, &[u8], bool); 7] = [
        (0x81, br#"{"type":"ping"}"#, false), // not masked
        (0xc1, br#"{"type":"ping"}"#, true),  // RSV1 without an extension
        (0x83, b"", true),                    // reserved data opcode
        (0x8b, b"", true),                    // reserved control opcode
        (0x80, b"orphan", true),              // continuation with no message
        (0x09, b"", true),                    // fragmented ping
        (0x88, &[0x03, 0xed], true),          // close code 1005, which no peer may send
    ];
    for (i, (first, payload, masked)) in violations.into_iter().enumerate() {
        let (mut client, _) = RawClient::open(&server, &format!("bad{i}"), None).await;
        assert_eq!(client.json().await["type"], "welcome");
        client.send(first, payload, masked).await;
        assert_eq!(client.close_code().await, 1002, "violation {i}");
    }
    let mut publisher = server.connect("publisher").await;
    publisher.join("room").await;
    let offset = publisher
        .publish("room", serde_json::json!("still here"))
        .await;
    assert_eq!(bystander.recv_message().await["offset"], offset);
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_at_the_first_bad_byte() {
    let server = TestServer::start().await;
    // Within a frame: the header announces 200 bytes, but only 12 are sent, the bad one among
    // them. The close comes without the other 188.
    let (mut client, _) = RawClient::open(&server, "midframe", None).await;
    assert_eq!(client.json().await["type"], "welcome");
    let mut payload = br#"{"type":"pi"#.to_vec();
    payload.push(0xff);
    let mut frame = vec![0x81, 0x80 | 126, 0, 200];
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    client.stream.write_all(&frame).await.unwrap();
    assert_eq!(client.close_code().await, 1007);
    // Across fragments: the second of a message that never ends.
    let (mut client, _) = RawClient::open(&server, "fragments", None).await;
    assert_eq!(client.json().await["type"], "welcome");
    client.send(0x01, "{\"data\":\"κό".as_bytes(), true).await;
    client.send(0x00, &[0xed, 0xa0, 0x80], true).await; // a UTF-16 surrogate
    assert_eq!(client.close_code().await, 1007);
}

#[tokio::test]
async fn random_bytes_after_the_handshake_end_each_connection_and_nobody_else_notices() {
    let server = TestServer::with(|c| c.limits.max_message_bytes = 4096).await;
    let mut bystander = server.connect("bystander").await;
    bystander.join("room").await;
    let mut publisher = server.connect("publisher").await;
    publisher.join("room").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut closes = Vec::new();
    for i in 0..150 {
        let (mut client, _) = RawClient::open(&server, &format!("junk{i}"), None).await;
        assert_eq!(client.json().await["type"], "welcome");
        let junk: Vec<u8> = (0..rng.random_range(1..400))
            .map(|_| rng.random())
            .collect();
        client.stream.write_all(&junk).await.unwrap();
        // Junk that announces a frame longer than what follows would leave the node waiting
        // for the rest; ending the stream settles that.
        client.stream.shutdown().await.unwrap();
        // Whatever the node makes of it (a close code, error replies, or the end of a stream
        // that ended), the connection ends within the receive timeout.
        while let Some((first, payload)) = client.frame().await {
            if first == 0x88 {
                closes.push(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
        let offset = publisher.publish("room", serde_json::json!(i)).await;
        assert_eq!(bystander.recv_message().await["offset"], offset);
    }
    assert!(
        closes.iter().all(|c| [1002, 1007, 1009].contains(c)),
        "{closes:?}"
    );
    assert!(
        closes.len() > 100,
        "most junk breaks a framing rule: {closes:?}"
    );
}

/// Pings share the inbound rate limit with messages: a client flooding them gets pongs for its
/// burst, none past it, and is closed with 4029 once it keeps on, whether or not it reads, while
/// the room is served. Before, every ping was answered, so a flood that was never read held the
/// connection's task in a write.
#[tokio::test]
async fn a_ping_flood_gets_pongs_up_to_the_limit_then_4029_and_others_are_served() {
    let server = TestServer::with(|c| {
        c.limits.inbound_rate_per_sec = 10;
        c.limits.inbound_burst = 20;
        c.limits.rate_limit_close_after = 30;
    })
    .await;
    let mut bystander = server.connect("bystander").await;
    bystander.join("room").await;
    let mut publisher = server.connect("publisher").await;
    publisher.join("room").await;
    let (mut flooder, _) = RawClient::open(&server, "flooder", None).await;
    assert_eq!(flooder.json().await["type"], "welcome");
    // 5,000 pings of the largest control payload in one go, far more than the limits allow,
    // written from a task of its own and never read meanwhile: the node stops reading once
    // it closes, and the rest may never leave the client's buffer.
    let mut ping = vec![0x89, 0x80 | 125];
    ping.extend_from_slice(&MASK);
    ping.extend((0..125).map(|i| b'p' ^ MASK[i % 4]));
    let flood = ping.repeat(5_000);
    let (mut reader, mut writer) = flooder.stream.into_split();
    let flooding = tokio::spawn(async move {
        let _ = writer.write_all(&flood).await;
        writer
    });
    for i in 0..5 {
        let offset = publisher.publish("room", serde_json::json!(i)).await;
        assert_eq!(bystander.recv_message().await["offset"], offset);
    }
    // Then read everything the node sent: the pongs of the burst (plus what refilled while it
    // read the flood), then the close.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut bytes = flooder.read;
    timeout(RECV_TIMEOUT, reader.read_to_end(&mut bytes))
        .await
        .expect("the node ends the connection")
        .ok();
    let mut pongs = 0;
    let mut close = None;
    while let Some((first, payload)) = take_frame(&mut bytes) {
        match first {
            0x8a => pongs += 1,
            0x88 => close = Some(u16::from_be_bytes([payload[0], payload[1]])),
            other => panic!("unexpected frame {other:#x}"),
        }
    }
    assert!(bytes.is_empty(), "a frame cut short");
    assert_eq!(close, Some(4029), "the flood is closed as rate-limit abuse");
    assert!(
        (20..30).contains(&pongs),
        "pongs for the burst of 20 and what refilled at 10/s, got {pongs}"
    );
    flooding.abort();
    let offset = publisher.publish("room", serde_json::json!("after")).await;
    assert_eq!(bystander.recv_message().await["offset"], offset);
}
