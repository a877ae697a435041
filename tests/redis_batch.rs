//! Batched publishes (`redis.publish_batch_max`): many sessions on two instances publishing at
//! once into several rooms share script calls, and still every room numbers its messages
//! 1, 2, 3… without gap or duplicate, every ack names the offset its message got, history and
//! resume are as without batching, and a Redis killed under a batch acks nothing it did not
//! order.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::redis::{RedisServer, unique_prefix, use_redis};
use common::{Client, TestServer, wait_ready};
use serde_json::{Value, json};

/// Two instances on `redis` sharing one prefix.
async fn two_nodes(redis: &RedisServer, adjust: impl Fn(&mut roomcast::Config)) -> Vec<TestServer> {
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for i in 0..2 {
        let node = TestServer::with(|c| {
            use_redis(c, redis, &prefix);
            c.node_id = Some(format!("n{i}"));
            adjust(c);
        })
        .await;
        wait_ready(&node.url(""), 200).await;
        nodes.push(node);
    }
    nodes
}

/// Script calls Redis has run so far (`EVALSHA` and `EVAL`, every script).
async fn script_calls(redis: &RedisServer) -> u64 {
    redis.command_calls(&["evalsha", "eval"]).await
}

/// `members` clients per room, alternating between the nodes, each joined to its room.
async fn members(nodes: &[TestServer], rooms: usize, members: usize) -> Vec<(String, Client)> {
    let mut out = Vec::new();
    for r in 0..rooms {
        for m in 0..members {
            let room = format!("room{r}");
            let mut client = nodes[m % nodes.len()].connect(&format!("u{r}-{m}")).await;
            client.join(&room).await;
            out.push((room, client));
        }
    }
    out
}

/// (offset, data) of a message.
fn entry(message: &Value) -> (u64, Value) {
    (message["offset"].as_u64().unwrap(), message["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_over_many_rooms_get_gapless_offsets() {
    const ROOMS: usize = 8;
    const MEMBERS: usize = 4;
    const EACH: usize = 40;
    const PER_ROOM: usize = MEMBERS * EACH;
    let redis = RedisServer::start();
    let nodes = two_nodes(&redis, |_| {}).await;
    let clients = members(&nodes, ROOMS, MEMBERS).await;
    let calls_before = script_calls(&redis).await;

    // Every member publishes concurrently, then reads all its room carried.
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(room, mut c)| {
            tokio::spawn(async move {
                let user = c.user().to_owned();
                let mut acked = Vec::new();
                for seq in 0..EACH {
                    let data = json!({ "from": user, "seq": seq });
                    acked.push((c.publish(&room, data.clone()).await, data));
                }
                let mut seen = Vec::new();
                for _ in 0..PER_ROOM {
                    seen.push(entry(&c.recv_message().await));
                }
                (room, acked, seen)
            })
        })
        .collect();
    let mut acks: HashMap<String, BTreeMap<u64, Value>> = HashMap::new();
    let mut seen_by_member = Vec::new();
    for task in tasks {
        let (room, acked, seen) = task.await.unwrap();
        let room_acks = acks.entry(room.clone()).or_default();
        for (offset, data) in acked {
            assert!(
                room_acks.insert(offset, data).is_none(),
                "{room}: offset {offset} acked twice"
            );
        }
        seen_by_member.push((room, seen));
    }
    let calls = script_calls(&redis).await - calls_before;
    let publishes = (ROOMS * PER_ROOM) as u64;
    println!("{publishes} publishes in {calls} script calls");
    assert!(calls < publishes, "no batching: {calls} calls");

    let all: Vec<u64> = (1..=PER_ROOM as u64).collect();
    for (room, room_acks) in &acks {
        assert_eq!(room_acks.keys().copied().collect::<Vec<_>>(), all, "{room}");
    }
    // Every member got every message of its room once, in offset order, and each one is the
    // message whose ack carried that offset.
    for (room, seen) in seen_by_member {
        let expected: Vec<(u64, Value)> = acks[&room].clone().into_iter().collect();
        assert_eq!(seen, expected, "{room}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_resume_after_batched_publishes() {
    const HISTORY: usize = 10;
    const PUBLISHERS: usize = 8;
    const EACH: usize = 10;
    const TOP: u64 = (PUBLISHERS * EACH) as u64;
    let redis = RedisServer::start();
    let nodes = two_nodes(&redis, |c| c.history.size = HISTORY).await;
    let mut reader = nodes[0].connect("reader").await;
    let epoch = reader.join("room0").await["epoch"].clone();
    reader.close().await;

    let publishers = members(&nodes, 1, PUBLISHERS).await;
    let tasks: Vec<_> = publishers
        .into_iter()
        .map(|(room, mut c)| {
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for seq in 0..EACH {
                    let data = json!({ "from": c.user(), "seq": seq });
                    acked.push((c.publish("room0", data.clone()).await, data));
                }
                (room, acked)
            })
        })
        .collect();
    let mut acks = BTreeMap::new();
    for task in tasks {
        acks.extend(task.await.unwrap().1);
    }
    assert_eq!(acks.len() as u64, TOP);

    // The history holds exactly the last HISTORY messages: a resume from TOP - HISTORY
    // replays them (with the acked offsets and data), one from further back cannot.
    let mut back = nodes[1].connect("reader").await;
    let reply = back
        .request(
            json!({"type": "join", "room": "room0", "since": TOP - HISTORY as u64, "epoch": epoch}),
        )
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["offset"], TOP);
    for offset in TOP - HISTORY as u64 + 1..=TOP {
        assert_eq!(
            entry(&back.recv_message().await),
            (offset, acks[&offset].clone())
        );
    }
    let mut late = nodes[0].connect("late").await;
    let reply = late
        .request(json!({"type": "join", "room": "room0", "since": TOP - HISTORY as u64 - 1, "epoch": epoch}))
        .await;
    assert_eq!(reply["recovered"], false, "{reply}");

    // In Redis: the capped history (trimmed back to HISTORY once it holds an eighth more)
    // expiring after history.ttl_secs, and the epoch and top after history.epoch_ttl_secs.
    let prefix = nodes_prefix(&redis).await;
    let held: usize = redis.query(&["LLEN", &format!("{prefix}:log:room0")]).await;
    assert!((HISTORY..=HISTORY + HISTORY / 8).contains(&held), "{held}");
    for (key, ttl_ms) in [("log", 300_000), ("meta", 86_400_000)] {
        let ttl: i64 = redis
            .query(&["PTTL", &format!("{prefix}:{key}:room0")])
            .await;
        assert!(
            (ttl_ms - 10_000..=ttl_ms).contains(&ttl),
            "{key} PTTL {ttl}"
        );
    }
}

/// A node with history off publishes without adding to the room's log, so the log has a hole
/// there. A resume across the hole is refused (not recovered) instead of replaying the frames
/// after it under the wrong offsets; a resume from after the hole is still replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_with_a_hole_is_never_replayed_across_it() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for size in [10, 0] {
        let node = TestServer::with(|c| {
            use_redis(c, &redis, &prefix);
            c.node_id = Some(format!("size{size}"));
            c.history.size = size;
        })
        .await;
        wait_ready(&node.url(""), 200).await;
        nodes.push(node);
    }
    let mut kept = nodes[0].connect("kept").await;
    let epoch = kept.join("room0").await["epoch"].clone();
    let mut off = nodes[1].connect("off").await;
    off.join("room0").await;
    for n in 1..=5u64 {
        let publisher = if n == 3 { &mut off } else { &mut kept };
        assert_eq!(publisher.publish("room0", json!({ "n": n })).await, n);
    }

    for since in 0..=3u64 {
        let mut reader = nodes[0].connect(&format!("reader{since}")).await;
        let reply = reader
            .request(json!({"type": "join", "room": "room0", "since": since, "epoch": epoch}))
            .await;
        assert_eq!(reply["offset"], 5, "{reply}");
        if since < 3 {
            assert_eq!(reply["recovered"], false, "since {since}: {reply}");
            continue;
        }
        assert_eq!(reply["recovered"], true, "since {since}: {reply}");
        for n in 4..=5u64 {
            assert_eq!(entry(&reader.recv_message().await), (n, json!({ "n": n })));
        }
    }
}

/// The prefix the test's nodes use, read back from the one room's meta key.
async fn nodes_prefix(redis: &RedisServer) -> String {
    let keys: Vec<String> = redis.query(&["KEYS", "*:meta:room0"]).await;
    keys[0].strip_suffix(":meta:room0").unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_batches_acks_only_what_it_ordered() {
    const ROOMS: usize = 4;
    const PUBLISHERS: usize = 4;
    let mut redis = RedisServer::start();
    let nodes = two_nodes(&redis, |c| c.redis.command_timeout_ms = 500).await;
    let mut readers = Vec::new();
    for r in 0..ROOMS {
        let mut reader = nodes[1].connect(&format!("reader{r}")).await;
        reader.join(&format!("room{r}")).await;
        readers.push(reader);
    }
    // Readers take everything until a quiet spell long enough to mean Redis is gone.
    let readers: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let quiet = Duration::from_secs(3);
                while let Ok(m) = tokio::time::timeout(quiet, reader.recv_message()).await {
                    seen.push(entry(&m));
                }
                seen
            })
        })
        .collect();
    // Publishers go on until Redis has refused each of them three times.
    let publishers: Vec<_> = members(&nodes, ROOMS, PUBLISHERS)
        .await
        .into_iter()
        .map(|(room, mut c)| {
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut refused = 0;
                for seq in 0.. {
                    let data = json!({ "from": c.user(), "seq": seq });
                    let reply = c.try_publish(&room, data.clone()).await;
                    if reply["type"] == "ack" {
                        acked.push((reply["offset"].as_u64().unwrap(), data));
                        continue;
                    }
                    assert_eq!(reply["code"], "unavailable", "{reply}");
                    refused += 1;
                    if refused == 3 {
                        break;
                    }
                }
                (room, acked)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();

    let mut acks: HashMap<String, BTreeMap<u64, Value>> = HashMap::new();
    for task in publishers {
        let (room, acked) = task.await.unwrap();
        for (offset, data) in acked {
            let room_acks = acks.entry(room.clone()).or_default();
            assert!(
                room_acks.insert(offset, data).is_none(),
                "{room}: {offset} acked twice"
            );
        }
    }
    for (r, reader) in readers.into_iter().enumerate() {
        let room = format!("room{r}");
        let seen = reader.await.unwrap();
        let room_acks = &acks[&room];
        assert!(
            !room_acks.is_empty() && !seen.is_empty(),
            "{room}: no traffic before the kill"
        );
        let offsets: Vec<u64> = seen.iter().map(|m| m.0).collect();
        assert_eq!(
            offsets,
            (1..=seen.len() as u64).collect::<Vec<_>>(),
            "{room}"
        );
        // Every ack names the message Redis ordered at that offset.
        for (offset, data) in &seen {
            if let Some(acked) = room_acks.get(offset) {
                assert_eq!(
                    acked, data,
                    "{room}: offset {offset} acked for another message"
                );
            }
        }
        // An acked message the reader missed can only be one Redis ordered in its last
        // instant, whose announcement died in its output buffer (docs/architecture.md): at
        // most one per publisher, each waiting for one ack at a time.
        let last = seen.len() as u64;
        let missed: Vec<u64> = room_acks.keys().copied().filter(|o| *o > last).collect();
        println!(
            "{room}: {} acked, {last} delivered, acked but undelivered: {missed:?}",
            room_acks.len()
        );
        assert!(
            missed.len() <= PUBLISHERS,
            "{room}: acked and never delivered: {missed:?}"
        );
    }
}
