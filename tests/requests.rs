//! Every request of docs/protocol.md against a real server with real WebSocket clients.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Client, TestServer};
use serde_json::{Value, json};

#[tokio::test]
async fn welcome_names_session_user_node_and_limits() {
    let server = TestServer::start().await;
    let alice = server.connect("alice").await;
    let w = &alice.welcome;
    assert_eq!(w["user"], "alice");
    assert!(w["session"].as_str().unwrap().starts_with("s-"), "{w}");
    assert!(w["node"].as_str().unwrap().starts_with("n-"), "{w}");
    assert_eq!(w["heartbeat_ms"], 25_000);
    assert_eq!(w["max_message_bytes"], 65_536);
    let anon = Client::connect(&format!("ws://{}/ws", server.addr)).await;
    assert!(anon.user().starts_with("anon-"), "{}", anon.welcome);
    assert_ne!(anon.welcome["session"], alice.welcome["session"]);
}

#[tokio::test]
async fn publish_is_acked_and_delivered_to_every_member_including_the_publisher() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let joined = alice.join("lobby").await;
    assert_eq!(joined["offset"], 0);
    assert!(joined["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    bob.join("lobby").await;

    let offset = alice
        .publish("lobby", json!({"text": "hi", "n": [1, 2.5, null]}))
        .await;
    assert_eq!(offset, 1);
    for client in [&mut alice, &mut bob] {
        let m = client.recv_message().await;
        assert_eq!(m["room"], "lobby");
        assert_eq!(m["offset"], 1);
        assert_eq!(m["from"], "alice");
        assert_eq!(m["data"], json!({"text": "hi", "n": [1, 2.5, null]}));
        assert!(m["ts"].as_u64().unwrap() > 1_700_000_000_000);
    }
    assert_eq!(alice.publish("lobby", json!("second")).await, 2);
}

/// A publish key makes a retry safe: the same key in the same room answers the first
/// publication's offset and publishes nothing; another key, or the same key in another room,
/// publishes. A key breaking the naming rule is refused.
#[tokio::test]
async fn a_publish_retried_with_its_key_is_acked_with_the_first_offset_and_delivered_once() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    for room in ["r1", "r2"] {
        alice.join(room).await;
    }
    bob.join("r1").await;
    let publish = |room: &str, key: &str, n: u64| json!({"type": "publish", "room": room, "data": n, "key": key});
    let first = alice.request(publish("r1", "k-1", 1)).await;
    let again = alice.request(publish("r1", "k-1", 1)).await;
    assert_eq!(
        (first["type"].clone(), first["offset"].clone()),
        (json!("ack"), json!(1))
    );
    assert_eq!(
        again["offset"], 1,
        "a retry is acked with the first offset: {again}"
    );
    assert_eq!(alice.request(publish("r1", "k-2", 2)).await["offset"], 2);
    assert_eq!(
        alice.request(publish("r2", "k-1", 3)).await["offset"],
        1,
        "keys are per room"
    );
    let m1 = bob.recv_message().await;
    let m2 = bob.recv_message().await;
    assert_eq!(
        (m1["offset"].clone(), m1["data"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        (m2["offset"].clone(), m2["data"].clone()),
        (json!(2), json!(2)),
        "no duplicate"
    );
    bob.expect_silence(Duration::from_millis(200)).await;
    let bad = alice.request(publish("r1", "not a key", 4)).await;
    assert_eq!(bad["code"], "bad_request", "{bad}");
}

#[tokio::test]
async fn several_publishers_are_seen_in_one_identical_order_by_every_member() {
    publishers_interleave(&TestServer::start().await).await;
}

/// `socket.write_delay_ms` holds each write back to gather more frames into one `send()`; it
/// must change nothing else: same order for everyone, nothing lost or repeated.
#[tokio::test]
async fn a_write_delay_changes_nothing_but_timing() {
    let server = TestServer::with(|c| c.socket.write_delay_ms = 20).await;
    publishers_interleave(&server).await;
}

/// Three members publish 60 messages each at once; a fourth only watches. Every member must
/// see offsets 1..=180 in one identical order, each publisher's messages in its send order.
async fn publishers_interleave(server: &TestServer) {
    const PER_PUBLISHER: usize = 60;
    let mut clients = Vec::new();
    for user in ["p0", "p1", "p2", "watcher"] {
        let mut c = server.connect(user).await;
        c.join("race").await;
        clients.push(c);
    }
    let watcher = clients.pop().unwrap();
    // Publishers run concurrently so their messages interleave on the server.
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for seq in 0..PER_PUBLISHER {
                c.send_json(
                    json!({"type": "publish", "room": "race", "data": {"p": i, "seq": seq}}),
                )
                .await;
            }
            let mut seen = Vec::new();
            while seen.len() < 3 * PER_PUBLISHER {
                let v = c.recv().await;
                if v["type"] == "message" {
                    seen.push((v["offset"].as_u64().unwrap(), v["data"].clone()));
                }
            }
            seen
        }));
    }
    let mut watcher = watcher;
    let mut watched = Vec::new();
    while watched.len() < 3 * PER_PUBLISHER {
        let m = watcher.recv_message().await;
        watched.push((m["offset"].as_u64().unwrap(), m["data"].clone()));
    }
    let offsets: Vec<u64> = watched.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (1..=(3 * PER_PUBLISHER) as u64).collect::<Vec<_>>(),
        "contiguous from 1"
    );
    // Each publisher's own messages keep their send order.
    let mut last_seq: BTreeMap<u64, i64> = BTreeMap::new();
    for (_, data) in &watched {
        let (p, seq) = (data["p"].as_u64().unwrap(), data["seq"].as_i64().unwrap());
        let prev = last_seq.insert(p, seq).unwrap_or(-1);
        assert_eq!(seq, prev + 1, "publisher {p} out of order");
    }
    for task in tasks {
        assert_eq!(
            task.await.unwrap(),
            watched,
            "every member sees the same sequence"
        );
    }
}

async fn read_offsets(client: &mut Client, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(client.recv_message().await["offset"].as_u64().unwrap());
    }
    out
}

#[tokio::test]
async fn resume_replays_exactly_what_was_missed_then_goes_live() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let joined = alice.join("room").await;
    let epoch = joined["epoch"].as_str().unwrap().to_string();
    bob.join("room").await;
    for i in 1..=5 {
        bob.publish("room", json!(i)).await;
    }
    assert_eq!(read_offsets(&mut alice, 5).await, [1, 2, 3, 4, 5]);
    alice.close().await;

    for i in 6..=8 {
        bob.publish("room", json!(i)).await;
    }
    let mut alice = server.connect("alice").await;
    let reply = alice
        .request(json!({"type": "join", "room": "room", "since": 5, "epoch": epoch}))
        .await;
    assert_eq!(reply["type"], "joined", "{reply}");
    assert_eq!(reply["recovered"], true);
    assert_eq!(reply["offset"], 8);
    assert_eq!(reply["epoch"], epoch.as_str());
    assert_eq!(read_offsets(&mut alice, 3).await, [6, 7, 8]);
    bob.publish("room", json!(9)).await;
    assert_eq!(read_offsets(&mut alice, 1).await, [9]);
    alice.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn resume_with_nothing_missed_recovers_with_no_replay() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let epoch = alice.join("room").await["epoch"].clone();
    alice.publish("room", json!(1)).await;
    let mut again = server.connect("alice").await;
    let reply = again
        .request(json!({"type":"join","room":"room","since":1,"epoch":epoch}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    again.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn resume_past_the_history_or_in_another_epoch_is_not_recovered() {
    let server = TestServer::with(|c| c.history.size = 5).await;
    let mut bob = server.connect("bob").await;
    let epoch = bob.join("room").await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 1..=12 {
        bob.publish("room", json!(i)).await;
    }
    let mut alice = server.connect("alice").await;
    // Offsets 3..=7 fell out of the 5-message history: a replay would have a gap.
    let reply = alice
        .request(json!({"type":"join","room":"room","since":2,"epoch":epoch}))
        .await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["offset"], 12);
    bob.publish("room", json!(13)).await;
    assert_eq!(
        read_offsets(&mut alice, 1).await,
        [13],
        "no replay, live from offset+1"
    );
    alice.request(json!({"type":"leave","room":"room"})).await;

    // The oldest kept message is 9 (13 - 5 + 1): since = 8 still recovers 9..=13.
    let reply = alice
        .request(json!({"type":"join","room":"room","since":8,"epoch":epoch}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(read_offsets(&mut alice, 5).await, [9, 10, 11, 12, 13]);
    alice.request(json!({"type":"leave","room":"room"})).await;

    for (since, epoch) in [(10, "not-the-epoch"), (99, epoch.as_str())] {
        let reply = alice
            .request(json!({"type":"join","room":"room","since":since,"epoch":epoch}))
            .await;
        assert_eq!(
            reply["recovered"], false,
            "since {since} epoch {epoch}: {reply}"
        );
        alice
            .expect_silence(std::time::Duration::from_millis(100))
            .await;
        alice.request(json!({"type":"leave","room":"room"})).await;
    }
}

#[tokio::test]
async fn resume_while_the_room_is_busy_has_no_gap_and_no_duplicate() {
    // History deep enough to cover everything published during the resume.
    let server = TestServer::with(|c| {
        c.history.size = 1000;
        c.limits.outbound_queue = 2048;
    })
    .await;
    let mut publisher = server.connect("pub").await;
    let epoch = publisher.join("busy").await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..20 {
        publisher.publish("busy", json!(i)).await;
    }
    // Keep publishing while the other client resumes from offset 10.
    let pump = tokio::spawn(async move {
        for i in 0..300 {
            publisher
                .send_json(json!({"type":"publish","room":"busy","data":i}))
                .await;
        }
        publisher
    });
    let mut reader = server.connect("reader").await;
    let reply = reader
        .request(json!({"type":"join","room":"busy","since":10,"epoch":epoch}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let _publisher = pump.await.unwrap();
    let seen = read_offsets(&mut reader, 310).await;
    assert_eq!(seen, (11..=320).collect::<Vec<_>>());
}

#[tokio::test]
async fn leave_stops_delivery_and_non_members_cannot_publish_or_ask_presence() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.join("room").await;
    bob.join("room").await;
    let left = alice.request(json!({"type":"leave","room":"room"})).await;
    assert_eq!(left, json!({"type":"left","id":left["id"],"room":"room"}));
    bob.publish("room", json!("after")).await;
    bob.recv_message().await;
    alice.expect_silence(Duration::from_millis(200)).await;
    for request in [
        json!({"type":"leave","room":"room"}),
        json!({"type":"publish","room":"room","data":1}),
        json!({"type":"presence","room":"room"}),
    ] {
        let reply = alice.request(request).await;
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["code"], "not_member", "{reply}");
    }
    let again = alice.join("room").await;
    assert_eq!(again["offset"], 1);
    let dup = alice.request(json!({"type":"join","room":"room"})).await;
    assert_eq!(dup["code"], "bad_request", "{dup}");
}

#[tokio::test]
async fn room_limit_per_connection() {
    let server = TestServer::with(|c| c.limits.max_rooms_per_connection = 2).await;
    let mut alice = server.connect("alice").await;
    alice.join("a").await;
    alice.join("b").await;
    let reply = alice.request(json!({"type":"join","room":"c"})).await;
    assert_eq!(reply["code"], "too_many_rooms", "{reply}");
    alice.request(json!({"type":"leave","room":"a"})).await;
    alice.join("c").await;
}

#[tokio::test]
async fn presence_lists_users_and_announces_first_join_and_last_leave() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    alice.join_with_presence("room").await;
    assert_eq!(alice.recv_type("presence_join").await["user"], "alice");

    let mut bob1 = server.connect("bob").await;
    bob1.join("room").await;
    let event = alice.recv_type("presence_join").await;
    assert_eq!(
        event,
        json!({"type":"presence_join","room":"room","seq":2,"user":"bob"})
    );

    // A second session of bob changes nothing for presence.
    let mut bob2 = server.connect("bob").await;
    bob2.join("room").await;
    let reply = alice
        .request(json!({"type":"presence","room":"room"}))
        .await;
    assert_eq!(reply["users"], json!(["alice", "bob"]));
    assert_eq!(reply["seq"], 2, "the list reflects events up to bob's join");
    bob1.request(json!({"type":"leave","room":"room"})).await;
    alice.expect_silence(Duration::from_millis(200)).await;

    // bob's last session disconnects without leaving: still announced.
    bob2.close().await;
    let event = alice.recv_type("presence_leave").await;
    assert_eq!(
        event,
        json!({"type":"presence_leave","room":"room","seq":3,"user":"bob"})
    );
    let reply = alice
        .request(json!({"type":"presence","room":"room"}))
        .await;
    assert_eq!(reply["users"], json!(["alice"]));
}

#[tokio::test]
async fn presence_events_are_opt_in() {
    let server = TestServer::start().await;
    let mut quiet = server.connect("quiet").await;
    quiet.join("room").await;
    let mut bob = server.connect("bob").await;
    bob.join("room").await;
    bob.close().await;
    quiet.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn direct_messages_reach_every_session_of_the_user() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob1 = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let ack = alice
        .request(json!({"type":"send","to":"bob","data":{"text":"psst"}}))
        .await;
    assert_eq!(ack, json!({"type":"ack","id":ack["id"]}));
    for bob in [&mut bob1, &mut bob2] {
        let d = bob.recv_type("direct").await;
        assert_eq!(d["from"], "alice");
        assert_eq!(d["data"], json!({"text":"psst"}));
        assert!(d["ts"].is_u64());
    }
    carol.expect_silence(Duration::from_millis(200)).await;
    // Offline users: accepted, nothing delivered, nothing breaks.
    let ack = alice
        .request(json!({"type":"send","to":"nobody","data":1}))
        .await;
    assert_eq!(ack["type"], "ack");
}

#[tokio::test]
async fn ping_echoes_string_and_number_ids() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    alice.send_text(r#"{"type":"ping","id":"abc"}"#).await;
    assert_eq!(alice.recv().await, json!({"type":"pong","id":"abc"}));
    alice.send_text(r#"{"type":"ping","id":42}"#).await;
    assert_eq!(alice.recv().await, json!({"type":"pong","id":42}));
    alice.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(alice.recv().await, json!({"type":"pong"}));
}

#[tokio::test]
async fn http_endpoints_answer_json() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(server.url(path)).send();
    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
    let r = get("/readyz").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");

    let r = get("/ws").await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_websocket");
    let r = get("/nope").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");

    let url = format!("ws://{}/ws?user=bad%20name", server.addr);
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 400);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"], "invalid_user");
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

/// Every node serves the browser client at `/roomcast.js`, production (no demo) included, so a
/// web app imports the client that matches its node; the demo page only with `demo`; neither
/// with both off.
#[tokio::test]
async fn the_browser_client_is_served_without_the_demo_unless_turned_off() {
    let plain = TestServer::with(|c| c.demo = false).await;
    let js = reqwest::get(plain.url("/roomcast.js")).await.unwrap();
    assert_eq!(js.status(), 200);
    let kind = js.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/javascript"), "{kind}");
    assert!(js.text().await.unwrap().contains("export class Roomcast"));
    assert_eq!(reqwest::get(plain.url("/")).await.unwrap().status(), 404);
    let none = TestServer::with(|c| {
        c.demo = false;
        c.serve_client = false;
    })
    .await;
    let js = reqwest::get(none.url("/roomcast.js")).await.unwrap();
    assert_eq!(js.status(), 404);
}
