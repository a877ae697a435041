//! Misbehaving clients: slow readers, silent sockets, floods, oversized and malformed frames.
//! Each must get its documented answer while everyone else keeps full service.

mod common;

use std::time::Duration;

use common::{Ended, TestServer};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_4000_and_others_get_everything() {
    const MESSAGES: u64 = 1_500;
    let server = TestServer::with(|c| {
        c.limits.outbound_queue = 64;
        c.history.size = 10;
    })
    .await;
    let payload = "x".repeat(8 * 1024);
    let mut slow = common::Client::connect_small_buffer(&server.ws_url("slow")).await;
    slow.join("room").await;
    let mut fast = server.connect("fast").await;
    fast.join("room").await;
    let mut publisher = server.connect("pub").await;
    publisher.join("room").await;

    // The fast reader drains concurrently; the slow one never reads until the end.
    let reader = tokio::spawn(async move {
        let mut offsets = Vec::new();
        while offsets.len() < MESSAGES as usize {
            offsets.push(fast.recv_message().await["offset"].as_u64().unwrap());
        }
        offsets
    });
    // `publish` waits for each ack, reading (and keeping) the publisher's own copies meanwhile,
    // so the publisher is never a slow consumer itself.
    for _ in 0..MESSAGES {
        publisher.publish("room", json!(payload)).await;
    }
    let offsets = reader.await.unwrap();
    assert_eq!(
        offsets,
        (1..=MESSAGES).collect::<Vec<_>>(),
        "the fast reader lost nothing"
    );

    let (frames, ended) = slow.read_to_end(Duration::from_secs(20)).await;
    assert_eq!(ended, Ended::Closed(4000));
    assert!(
        (frames.len() as u64) < MESSAGES,
        "slow client was cut off, got {}",
        frames.len()
    );
    // What the slow client did get was still in order and without gaps.
    let got: Vec<u64> = frames.iter().filter_map(|f| f["offset"].as_u64()).collect();
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "gap before the close"
    );
}

#[tokio::test]
async fn a_silent_client_is_closed_with_4008_and_a_live_one_is_not() {
    let server = TestServer::with(|c| {
        c.heartbeat.interval_ms = 100;
        c.heartbeat.timeout_ms = 300;
    })
    .await;
    let mut silent = server.connect("silent").await;
    let mut live = server.connect("live").await;
    // Reading answers the server's pings (tungstenite pongs automatically); not reading does not.
    live.expect_silence(Duration::from_millis(900)).await;
    let (_, ended) = silent.read_to_end(Duration::from_secs(5)).await;
    assert_eq!(ended, Ended::Closed(4008));
    live.send_text(r#"{"type":"ping","id":1}"#).await;
    assert_eq!(live.recv().await["type"], "pong");
}

#[tokio::test]
async fn the_rate_limit_answers_rate_limited_then_closes_abusers_with_4029() {
    let server = TestServer::with(|c| {
        c.limits.inbound_rate_per_sec = 5;
        c.limits.inbound_burst = 5;
        c.limits.rate_limit_close_after = 20;
    })
    .await;
    let mut bystander = server.connect("bystander").await;
    let mut flood = server.connect("flood").await;
    for id in 0..5 {
        flood.send_json(json!({"type":"ping","id":id})).await;
    }
    for id in 0..5 {
        assert_eq!(flood.recv().await, json!({"type":"pong","id":id}));
    }
    flood.send_json(json!({"type":"ping","id":99})).await;
    let limited = flood.recv().await;
    assert_eq!(limited["code"], "rate_limited", "{limited}");
    for id in 0..40 {
        flood.send_json(json!({"type":"ping","id":id})).await;
    }
    let (frames, ended) = flood.read_to_end(Duration::from_secs(5)).await;
    assert_eq!(ended, Ended::Closed(4029));
    assert!(
        frames.iter().all(|f| f["code"] == "rate_limited"),
        "{frames:?}"
    );
    bystander.send_json(json!({"type":"ping","id":1})).await;
    assert_eq!(bystander.recv().await["type"], "pong");
}

#[tokio::test]
async fn oversized_and_invalid_utf8_frames_get_their_close_codes() {
    let server = TestServer::with(|c| c.limits.max_message_bytes = 1024).await;
    let mut big = server.connect("big").await;
    big.send_text(format!(r#"{{"type":"ping","pad":"{}"}}"#, "y".repeat(2000)))
        .await;
    assert_eq!(big.expect_close().await, 1009);

    let mut fits = server.connect("fits").await;
    fits.send_text(format!(
        r#"{{"type":"ping","id":1,"pad":"{}"}}"#,
        "y".repeat(900)
    ))
    .await;
    assert_eq!(fits.recv().await["type"], "pong");

    // A raw text frame whose payload is not UTF-8.
    let mut bad = server.connect("bad-utf8").await;
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![0xff, 0xfe, 0x7b],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    bad.send_message(Message::Frame(frame)).await;
    assert_eq!(bad.expect_close().await, 1007);
}

/// One malformed frame and the error code the protocol promises for it.
fn malformed(rng: &mut rand::rngs::StdRng, i: usize) -> (Message, &'static str) {
    let junk: String = (0..rng.random_range(1..200))
        .map(|_| rng.random_range(0x20u8..0x7f) as char)
        .collect();
    match i % 10 {
        0 => (Message::text(format!("x{junk}")), "bad_json"),
        1 => (
            Message::text(format!("[{}]", rng.random::<u32>())),
            "bad_json",
        ),
        2 => (
            Message::text(format!(
                "{{\"type\":\"join\",\"room\":\"{}",
                junk.replace('"', "")
            )),
            "bad_json",
        ),
        3 => (
            Message::text(json!({"type": format!("x-{junk}"), "id": i}).to_string()),
            "unknown_type",
        ),
        4 => (
            Message::text(json!({"type":"join","id":i}).to_string()),
            "bad_request",
        ),
        5 => (
            Message::text(json!({"type":"join","room":rng.random::<u32>(),"id":i}).to_string()),
            "bad_request",
        ),
        6 => (
            Message::text(
                json!({"type":"join","room":format!("bad room {junk}"),"id":i}).to_string(),
            ),
            "invalid_room",
        ),
        7 => (
            Message::text(
                json!({"type":"publish","room":"elsewhere","data":junk,"id":i}).to_string(),
            ),
            "not_member",
        ),
        8 => {
            let bytes: Vec<u8> = (0..rng.random_range(1..500))
                .map(|_| rng.random())
                .collect();
            (Message::binary(bytes), "unsupported")
        }
        _ => (
            Message::text(json!({"type":"send","to":"","data":1,"id":i}).to_string()),
            "bad_request",
        ),
    }
}

#[tokio::test]
async fn thousands_of_bad_frames_get_documented_answers_and_a_bystander_loses_nothing() {
    const BAD_FRAMES: usize = 3_000;
    const ROOM_MESSAGES: u64 = 400;
    let server = TestServer::with(|c| c.limits.max_message_bytes = 4096).await;
    let mut bystander = server.connect("bystander").await;
    bystander.join("room").await;
    let mut attacker = server.connect("attacker").await;
    attacker.join("room").await;
    let mut publisher = server.connect("publisher").await;
    publisher.join("room").await;

    let publishing = tokio::spawn(async move {
        for i in 0..ROOM_MESSAGES {
            publisher.publish("room", json!({"i": i})).await;
        }
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for chunk in (0..BAD_FRAMES).collect::<Vec<_>>().chunks(100) {
        let mut expected = Vec::new();
        for &i in chunk {
            let (msg, code) = malformed(&mut rng, i);
            attacker.send_message(msg).await;
            expected.push(code);
        }
        for code in expected {
            // The attacker is also in the room; skip the room traffic it receives.
            let reply = loop {
                let v = attacker.recv().await;
                if v["type"] != "message" && v["type"] != "ack" {
                    break v;
                }
            };
            assert_eq!(reply["type"], "error", "{reply}");
            assert_eq!(reply["code"], code, "{reply}");
        }
    }
    // Oversized frames, each on its own connection: 1009 every time.
    for _ in 0..20 {
        let mut big = server.connect("big").await;
        big.send_text("z".repeat(10_000)).await;
        assert_eq!(big.expect_close().await, 1009);
    }
    publishing.await.unwrap();
    let mut offsets = Vec::new();
    while offsets.len() < ROOM_MESSAGES as usize {
        offsets.push(bystander.recv_message().await["offset"].as_u64().unwrap());
    }
    assert_eq!(offsets, (1..=ROOM_MESSAGES).collect::<Vec<_>>());
    // The attacker is still connected and served, and the node takes new clients.
    let pong: Value = attacker.request(json!({"type":"ping"})).await;
    assert_eq!(pong["type"], "pong");
    let mut fresh = server.connect("fresh").await;
    fresh.join("room").await;
}
