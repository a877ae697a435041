//! History a client can use, against a real server (memory engine, and Redis engine on a
//! private Redis): paging with `history` requests, `rewind` on join, durable history in Redis
//! Streams across a node restart and a Redis restart (AOF), retention by count, age and bytes,
//! and a room's epoch outliving its resume buffer.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::Process;
use common::redis::{RedisServer, redis_env, unique_prefix, use_redis};
use common::{Client, TestServer, wait_ready};
use roomcast::Config;
use roomcast::config::Durable;
use serde_json::{Value, json};

/// Joins `room` (publishing needs membership; a second join is refused, which is fine) and
/// publishes `n` messages `{"n": i}` to it, `CHUNK` in flight at a time; returns the acked
/// offsets in order. The room's own `message` frames coming back are skipped.
async fn publish_many(client: &mut Client, room: &str, n: u64) -> Vec<u64> {
    const CHUNK: u64 = 250;
    let joined = client.request(json!({"type": "join", "room": room})).await;
    assert!(
        joined["type"] == "joined" || joined["code"] == "bad_request",
        "join {room}: {joined}"
    );
    let mut offsets = Vec::new();
    let mut sent = 0;
    while sent < n {
        let batch = CHUNK.min(n - sent);
        for i in 0..batch {
            let msg = json!({"type": "publish", "room": room, "data": {"n": sent + i}});
            client.send_json(msg).await;
        }
        while (offsets.len() as u64) < sent + batch {
            let ack = client.recv().await;
            // The room's own messages, and (a test dropping the room in Redis) its
            // unsolicited restart notice.
            if ack["type"] == "message" || (ack["type"] == "joined" && ack["id"].is_null()) {
                continue;
            }
            assert_eq!(ack["type"], "ack", "{ack}");
            offsets.push(ack["offset"].as_u64().unwrap());
        }
        sent += batch;
    }
    offsets
}

/// A `history` request for `room` with `fields` added.
async fn history(client: &mut Client, room: &str, fields: Value) -> Value {
    let mut request = json!({"type": "history", "room": room});
    for (k, v) in fields.as_object().unwrap() {
        request[k] = v.clone();
    }
    client.request(request).await
}

/// The offsets of a `history` reply's messages, checking each is a `message` frame of `room`.
fn offsets(reply: &Value, room: &str) -> Vec<u64> {
    assert_eq!(reply["type"], "history", "{reply}");
    reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!((&m["type"], &m["room"]), (&json!("message"), &json!(room)));
            m["offset"].as_u64().unwrap()
        })
        .collect()
}

/// Room for 10,000 messages in the resume buffer, pages of up to 1,000.
fn big_history(c: &mut Config) {
    c.history.size = 10_000;
    c.history.max_room_bytes = 4 << 20;
    c.history.max_page = 1_000;
    c.limits.outbound_queue = 20_000;
    c.limits.outbound_queue_bytes = 16 << 20;
}

fn durable(pattern: &str, max_age_s: u64, max_count: usize) -> Durable {
    Durable {
        pattern: pattern.into(),
        max_age_s,
        max_count,
    }
}

/// A server on the Redis engine under `prefix`, adjusted by `adjust`, once it is ready (its
/// subscription connected: before, joins answer `unavailable`).
async fn on_redis(redis: &RedisServer, prefix: &str, adjust: fn(&mut Config)) -> TestServer {
    let mut config = common::test_config();
    use_redis(&mut config, redis, prefix);
    adjust(&mut config);
    let server = TestServer::with(move |c| *c = config).await;
    wait_ready(&server.url(""), 200).await;
    server
}

/// Publishes 10,000 messages to `room` and pages back through all of them, 700 at a time:
/// every offset once, in order, each page's `more` true until the last.
async fn page_back_through_10_000(server: &TestServer, room: &str) {
    const TOTAL: u64 = 10_000;
    let mut publisher = server.connect("pub").await;
    let acked = publish_many(&mut publisher, room, TOTAL).await;
    assert_eq!(acked, (1..=TOTAL).collect::<Vec<_>>());

    let mut reader = server.connect("reader").await;
    let (mut seen, mut before, mut epoch) = (Vec::new(), None::<u64>, None);
    loop {
        let mut fields = json!({"limit": 700});
        if let Some(b) = before {
            fields["before"] = json!(b);
        }
        let reply = history(&mut reader, room, fields).await;
        let page = offsets(&reply, room);
        assert_eq!(reply["top"], TOTAL);
        let e = reply["epoch"].clone();
        assert_eq!(epoch.get_or_insert(e.clone()), &e, "one epoch throughout");
        for m in reply["messages"].as_array().unwrap() {
            assert_eq!(m["data"]["n"], m["offset"].as_u64().unwrap() - 1);
        }
        seen.extend_from_slice(&page);
        before = page.last().copied();
        if reply["more"] == false {
            break;
        }
        assert_eq!(
            page.len(),
            700,
            "a page short of its limit says more: false"
        );
    }
    let want: Vec<u64> = (1..=TOTAL).rev().collect();
    assert_eq!(seen, want, "no gap, no duplicate, newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_engine_pages_back_through_10_000_messages() {
    let server = TestServer::with(big_history).await;
    page_back_through_10_000(&server, "big").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_pages_back_through_10_000_messages_in_its_log_and_its_stream() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let server = on_redis(&redis, &prefix, |c| {
        big_history(c);
        c.history.durable = vec![durable("keep:*", 3600, 20_000)];
    })
    .await;
    page_back_through_10_000(&server, "big").await;
    page_back_through_10_000(&server, "keep:big").await;
    let stream = format!("{prefix}:stream:keep:big");
    let len: u64 = redis.query(&["XLEN", &stream]).await;
    assert_eq!(len, 10_000, "the durable room's stream holds every message");
    let plain: u64 = redis
        .query(&["EXISTS", &format!("{prefix}:stream:big")])
        .await;
    assert_eq!(plain, 0, "a room matching no pattern has no stream");
}

/// Ranges, orders, limits and `more`, on 20 messages, and every refusal with its code.
async fn ranges_limits_and_refusals(server: &TestServer) {
    let mut p = server.connect("pub").await;
    publish_many(&mut p, "r", 20).await;
    let mut c = server.connect("ranges").await;
    let cases: &[(Value, &[u64], bool)] = &[
        (json!({}), &[20, 19, 18, 17, 16, 15, 14, 13, 12, 11], true),
        (json!({"limit": 3, "before": 11}), &[10, 9, 8], true),
        (
            json!({"after": 15, "limit": 50}),
            &[20, 19, 18, 17, 16],
            false,
        ),
        (
            json!({"after": 5, "before": 10, "limit": 2, "order": "oldest_first"}),
            &[6, 7],
            true,
        ),
        (
            json!({"after": 5, "before": 10, "limit": 4, "order": "oldest_first"}),
            &[6, 7, 8, 9],
            false,
        ),
        (
            json!({"after": 18, "order": "oldest_first"}),
            &[19, 20],
            false,
        ),
        (json!({"order": "oldest_first", "limit": 2}), &[1, 2], true),
        (json!({"after": 20}), &[], false),
        (json!({"after": 5000, "before": 6000}), &[], false),
        (json!({"before": 3, "limit": 5000}), &[2, 1], false),
    ];
    for (fields, want, more) in cases {
        let reply = history(&mut c, "r", fields.clone()).await;
        assert_eq!(offsets(&reply, "r"), *want, "{fields}: {reply}");
        assert_eq!(reply["more"], *more, "{fields}: {reply}");
        assert_eq!(reply["top"], 20);
        assert!(reply["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // The limit is clamped to history.max_page (10 here).
    let clamped = history(&mut c, "r", json!({"limit": 5000})).await;
    assert_eq!(offsets(&clamped, "r").len(), 10);

    let refusals = [
        (json!({"before": 3, "after": 2}), "bad_range"),
        (json!({"before": 5, "after": 5}), "bad_range"),
        (json!({"before": 1}), "bad_range"),
        (json!({"limit": 0}), "bad_request"),
        (json!({"limit": -3}), "bad_request"),
        (json!({"after": "x"}), "bad_request"),
        (json!({"order": "sideways"}), "bad_request"),
    ];
    for (fields, code) in refusals {
        let reply = history(&mut c, "r", fields.clone()).await;
        assert_eq!(
            (&reply["type"], &reply["code"]),
            (&json!("error"), &json!(code)),
            "{fields}: {reply}"
        );
        assert!(reply["id"].is_number(), "the request id is echoed: {reply}");
    }
    let unknown = history(&mut c, "never-used", json!({})).await;
    assert_eq!(unknown["code"], "unknown_room", "{unknown}");
    let bad_name = history(&mut c, "a b", json!({})).await;
    assert_eq!(bad_name["code"], "invalid_room", "{bad_name}");
    let no_room = c.request(json!({"type": "history"})).await;
    assert_eq!(no_room["code"], "bad_request", "{no_room}");
    // Refusals leave the connection usable, and reading needs no membership.
    assert_eq!(
        offsets(&history(&mut c, "r", json!({"limit": 1})).await, "r"),
        [20]
    );
}

fn small_pages(c: &mut Config) {
    c.history.max_page = 10;
}

#[tokio::test]
async fn memory_engine_answers_ranges_limits_and_bad_input() {
    let server = TestServer::with(small_pages).await;
    ranges_limits_and_refusals(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_answers_ranges_limits_and_bad_input() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let server = on_redis(&redis, &prefix, |c| {
        small_pages(c);
    })
    .await;
    ranges_limits_and_refusals(&server).await;
}

/// Collects `n` `message` frames of `room`, checking nothing else arrives in between.
async fn messages(client: &mut Client, n: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < n {
        let v = client.recv().await;
        assert_eq!(v["type"], "message", "{v}");
        got.push(v["offset"].as_u64().unwrap());
    }
    got
}

/// Rewind less than, equal to and more than what the room holds (within `history.max_rewind`,
/// 4 here, and beyond it), then live messages with no gap; and a join with rewind while
/// another client publishes without pause.
async fn rewinds(server: &TestServer) {
    let mut publisher = server.connect("pub").await;
    publish_many(&mut publisher, "rw", 4).await;
    let mut joiners = Vec::new();
    let all = vec![1, 2, 3, 4];
    for (n, want) in [(3, vec![2, 3, 4]), (4, all.clone()), (50, all)] {
        let mut c = server.connect(&format!("j{n}")).await;
        let joined = c
            .request(json!({"type": "join", "room": "rw", "rewind": n}))
            .await;
        assert_eq!(
            (&joined["type"], &joined["offset"]),
            (&json!("joined"), &json!(4))
        );
        assert_eq!(messages(&mut c, want.len()).await, want, "rewind {n}");
        joiners.push(c);
    }
    // Nothing more than asked for, then live delivery goes on after the rewound ones.
    publish_many(&mut publisher, "rw", 1).await;
    for c in &mut joiners {
        assert_eq!(messages(c, 1).await, [5]);
    }
    publish_many(&mut publisher, "rw", 1).await;
    // Never more than history.max_rewind (4 here).
    let mut capped = server.connect("capped").await;
    capped
        .request(json!({"type": "join", "room": "rw", "rewind": 1000}))
        .await;
    assert_eq!(messages(&mut capped, 4).await, [3, 4, 5, 6]);
    capped.expect_silence(Duration::from_millis(300)).await;
    // An empty room rewinds nothing.
    let mut empty = server.connect("empty").await;
    let joined = empty
        .request(json!({"type": "join", "room": "rw-empty", "rewind": 10}))
        .await;
    assert_eq!(joined["offset"], 0);
    empty.expect_silence(Duration::from_millis(300)).await;
    // A resume with rewind is refused: they are two ways to say where to start.
    let both = empty
        .request(json!({"type": "join", "room": "rw", "rewind": 1, "since": 1, "epoch": "e"}))
        .await;
    assert_eq!(both["code"], "bad_request", "{both}");

    // Under a steady stream of publications: rewound and live ones meet without gap or repeat.
    let url = server.ws_url("streamer");
    let streamer = tokio::spawn(async move {
        let mut c = Client::connect(&url).await;
        for _ in 0..20 {
            publish_many(&mut c, "rw", 10).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut late = server.connect("late").await;
    let joined = late
        .request(json!({"type": "join", "room": "rw", "rewind": 4}))
        .await;
    let top = joined["offset"].as_u64().unwrap();
    streamer.await.unwrap();
    let last = 6 + 200; // 4, 1 and 1 above, then the streamer's 200
    let first = top.saturating_sub(3).max(1);
    let got = messages(&mut late, (last - first + 1) as usize).await;
    let want: Vec<u64> = (first..=last).collect();
    assert_eq!(got, want, "joined at {top}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_engine_rewinds_on_join() {
    let server = TestServer::with(|c| c.history.max_rewind = 4).await;
    rewinds(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_rewinds_on_join_from_its_log_and_its_stream() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let server = on_redis(&redis, &prefix, |c| {
        c.history.max_rewind = 4;
    })
    .await;
    rewinds(&server).await;
    // A durable room rewinds from its stream, beyond the resume buffer's 100.
    let server = on_redis(&redis, &unique_prefix(), |c| {
        c.history.size = 100;
        c.history.max_rewind = 500;
        c.limits.outbound_queue = 1_024;
        c.history.durable = vec![durable("*", 3600, 1000)];
    })
    .await;
    let mut publisher = server.connect("pub").await;
    publish_many(&mut publisher, "deep", 300).await;
    let mut c = server.connect("deep").await;
    c.request(json!({"type": "join", "room": "deep", "rewind": 250}))
        .await;
    assert_eq!(messages(&mut c, 250).await, (51..=300).collect::<Vec<_>>());

    // Never as many as the session's queue holds (limits.outbound_queue, 8 here).
    let server = on_redis(&redis, &unique_prefix(), |c| {
        c.history.size = 5;
        c.limits.outbound_queue = 8;
        c.history.durable = vec![durable("*", 3600, 1000)];
    })
    .await;
    // One at a time: a queue of 8 cannot hold a pipelined publisher's acks.
    let mut publisher = server.connect("pub").await;
    publisher.join("small").await;
    for i in 0..20 {
        publisher.publish("small", json!(i)).await;
    }
    let mut c = server.connect("small").await;
    c.request(json!({"type": "join", "room": "small", "rewind": 100}))
        .await;
    assert_eq!(messages(&mut c, 7).await, (14..=20).collect::<Vec<_>>());
    c.expect_silence(Duration::from_millis(300)).await;
}

/// Waits until `reply()` is not an `unavailable` error (the node reconnecting to Redis).
async fn when_available(client: &mut Client, request: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = client.request(request.clone()).await;
        if reply["code"] != "unavailable" {
            return reply;
        }
        assert!(Instant::now() < deadline, "still unavailable: {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A durable room's history outlives the node (a new process) and Redis itself (SIGKILL and
/// restart, back from its append-only file): the same messages, the same epoch, numbering
/// going on where it stopped. While Redis is down, `history` answers `unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_history_survives_a_node_restart_and_a_redis_restart() {
    let mut redis = RedisServer::start_persistent();
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("durable.toml");
    std::fs::write(
        &file,
        "[[history.durable]]\npattern = \"keep:*\"\nmax_age_s = 3600\nmax_count = 1000\n",
    )
    .unwrap();
    let env = redis_env(&redis, &prefix);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = ["--config", file.to_str().unwrap()];
    let request = json!({"type": "history", "room": "keep:a", "limit": 100});

    let node = Process::start_with_env(&args, &env);
    let mut c = Client::connect(&node.ws_url("alice")).await;
    let join = json!({"type": "join", "room": "keep:a"});
    assert_eq!(when_available(&mut c, join.clone()).await["type"], "joined");
    let acked = publish_many(&mut c, "keep:a", 30).await;
    assert_eq!(acked, (1..=30).collect::<Vec<_>>());
    let before = when_available(&mut c, request.clone()).await;
    assert_eq!(
        offsets(&before, "keep:a"),
        (1..=30).rev().collect::<Vec<_>>()
    );
    drop(c);
    drop(node);

    let node = Process::start_with_env(&args, &env);
    let mut c = Client::connect(&node.ws_url("bob")).await;
    let mut after_node = when_available(&mut c, request.clone()).await;
    after_node["id"] = before["id"].clone();
    assert_eq!(
        after_node, before,
        "a new node process reads the same history"
    );

    redis.restart();
    let after_redis = when_available(&mut c, request.clone()).await;
    assert_eq!(after_redis["epoch"], before["epoch"], "{after_redis}");
    assert_eq!(
        after_redis["messages"], before["messages"],
        "the stream came back from the AOF"
    );
    assert_eq!(when_available(&mut c, join).await["type"], "joined");
    assert_eq!(c.publish("keep:a", json!("next")).await, 31);

    redis.kill();
    let down = c.request(request.clone()).await;
    assert_eq!(
        (&down["type"], &down["code"]),
        (&json!("error"), &json!("unavailable")),
        "{down}"
    );
}

/// Durable retention: by count (the oldest go first), by age (entries older than `max_age_s`
/// are gone, while the numbering stays), and a page's bytes within `history.max_room_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_history_keeps_to_its_count_age_and_bytes() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let server = on_redis(&redis, &prefix, |c| {
        c.history.max_room_bytes = 64 * 1024;
        c.history.durable = vec![
            durable("count:*", 3600, 5),
            durable("age:*", 2, 1000),
            durable("long:*", 172_800, 1000),
            durable("*", 3600, 1000),
        ];
    })
    .await;
    let mut c = server.connect("ret").await;

    publish_many(&mut c, "count:a", 8).await;
    let reply = history(&mut c, "count:a", json!({})).await;
    assert_eq!(offsets(&reply, "count:a"), [8, 7, 6, 5, 4]);
    assert_eq!((&reply["more"], &reply["top"]), (&json!(false), &json!(8)));

    publish_many(&mut c, "age:a", 3).await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    publish_many(&mut c, "age:a", 1).await;
    let reply = history(&mut c, "age:a", json!({})).await;
    assert_eq!(offsets(&reply, "age:a"), [4], "older than 2 s: gone");
    assert_eq!(reply["top"], 4);

    // 20 KiB messages: three fit in a 64 KiB page.
    let big = "x".repeat(20 * 1024);
    c.join("bytes:a").await;
    for _ in 0..10 {
        c.publish("bytes:a", json!(big)).await;
    }
    let reply = history(&mut c, "bytes:a", json!({"limit": 10})).await;
    assert_eq!(offsets(&reply, "bytes:a"), [10, 9, 8]);
    assert_eq!(reply["more"], true);
    let rest = history(&mut c, "bytes:a", json!({"before": 8, "limit": 10})).await;
    assert_eq!(offsets(&rest, "bytes:a"), [7, 6, 5]);
    // A rewind keeps to the same bytes: the latest three.
    let mut late = server.connect("late").await;
    late.request(json!({"type": "join", "room": "bytes:a", "rewind": 10}))
        .await;
    assert_eq!(messages(&mut late, 3).await, [8, 9, 10]);
    late.expect_silence(Duration::from_millis(300)).await;

    // Lifetimes: the stream expires max_age_s after the last publication; the epoch lives at
    // least as long as the durable history.
    let stream: i64 = redis
        .query(&["PTTL", &format!("{prefix}:stream:count:a")])
        .await;
    assert!(
        (3_500_000..=3_600_000).contains(&stream),
        "stream PTTL {stream}"
    );
    publish_many(&mut c, "long:a", 1).await;
    let meta: i64 = redis
        .query(&["PTTL", &format!("{prefix}:meta:long:a")])
        .await;
    assert!(meta > 172_000_000, "meta PTTL {meta}");

    // A room Redis lost (its meta hash gone) starts a new epoch with an empty stream.
    let before = history(&mut c, "count:a", json!({})).await;
    let _: u64 = redis
        .query(&["DEL", &format!("{prefix}:meta:count:a")])
        .await;
    c.request(json!({"type": "leave", "room": "count:a"})).await;
    publish_many(&mut c, "count:a", 1).await;
    let reply = history(&mut c, "count:a", json!({})).await;
    assert_eq!(offsets(&reply, "count:a"), [1]);
    assert_ne!(reply["epoch"], before["epoch"]);
}

/// An idle room's resume buffer expires (`history.ttl_secs`) but its epoch and top stay for
/// `history.epoch_ttl_secs`: a join sees the same epoch and offset, a resume from an offset no
/// longer held is told `recovered: false` in that same epoch, and the next publication
/// continues the numbering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_keeps_an_idle_rooms_epoch_past_the_history_ttl() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let server = on_redis(&redis, &prefix, |c| {
        c.history.ttl_secs = 1;
    })
    .await;
    let mut c = server.connect("idle").await;
    let epoch = c.join("idle").await["epoch"].clone();
    publish_many(&mut c, "idle", 3).await;
    c.request(json!({"type": "leave", "room": "idle"})).await;

    let log = format!("{prefix}:log:idle");
    let deadline = Instant::now() + Duration::from_secs(15);
    while redis.query::<u64>(&["EXISTS", &log]).await == 1 {
        assert!(Instant::now() < deadline, "the log never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ttl: i64 = redis.query(&["PTTL", &format!("{prefix}:meta:idle")]).await;
    assert!(
        ttl > 3_600_000,
        "the epoch lives on for the epoch TTL: {ttl} ms"
    );

    let mut other = server.connect("other").await;
    let page = history(&mut other, "idle", json!({})).await;
    assert_eq!((&page["epoch"], &page["top"]), (&epoch, &json!(3)));
    assert_eq!(
        offsets(&page, "idle"),
        Vec::<u64>::new(),
        "the messages expired"
    );
    let resumed = other
        .request(json!({"type": "join", "room": "idle", "since": 1, "epoch": epoch}))
        .await;
    assert_eq!(
        (&resumed["epoch"], &resumed["offset"], &resumed["recovered"]),
        (&epoch, &json!(3), &json!(false))
    );
    assert_eq!(other.publish("idle", json!("again")).await, 4);

    // A room only joined, never published to, has no numbering to keep: its hash lives no
    // longer than the history.
    other.join("never-published").await;
    let ttl: i64 = redis
        .query(&["PTTL", &format!("{prefix}:meta:never-published")])
        .await;
    assert!((0..=1_000).contains(&ttl), "{ttl} ms");
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Reading a room's history takes the same permission as joining it.
#[tokio::test]
async fn history_needs_the_permission_to_join() {
    const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";
    let server = TestServer::with(|c| c.auth.secret = SECRET.into()).await;
    let claims = json!({
        "sub": "carol", "exp": unix_secs() + 60, "rooms": {"join": ["team:*"], "publish": ["*"]},
    });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let mut carol = Client::connect(&format!("ws://{}/ws?token={token}", server.addr)).await;
    carol.join("team:a").await;
    carol.publish("team:a", json!(1)).await;
    let denied = history(&mut carol, "secret", json!({})).await;
    assert_eq!(denied["code"], "forbidden", "{denied}");
    let allowed = history(&mut carol, "team:a", json!({})).await;
    assert_eq!(offsets(&allowed, "team:a"), [1]);
}

/// `[[history.durable]]` is checked at start-up: it needs the Redis broker, a pattern of name
/// characters and `*`, and positive limits; `epoch_ttl_secs` is at least `ttl_secs`.
#[test]
fn history_configuration_is_checked_naming_the_key() {
    type Adjust = Box<dyn Fn(&mut Config)>;
    let cases: Vec<(Adjust, &str)> = vec![
        (
            Box::new(|c| c.history.durable = vec![durable("a:*", 60, 10)]),
            "history.durable",
        ),
        (
            Box::new(|c| {
                c.broker = roomcast::config::BrokerKind::Redis;
                c.history.durable = vec![durable("a b", 60, 10)];
            }),
            "history.durable.pattern",
        ),
        (
            Box::new(|c| {
                c.broker = roomcast::config::BrokerKind::Redis;
                c.history.durable = vec![durable("a:*", 0, 10)];
            }),
            "history.durable.max_age_s",
        ),
        (
            Box::new(|c| {
                c.broker = roomcast::config::BrokerKind::Redis;
                c.history.durable = vec![durable("a:*", 60, 0)];
            }),
            "history.durable.max_count",
        ),
        (
            Box::new(|c| c.history.epoch_ttl_secs = 10),
            "history.epoch_ttl_secs",
        ),
        (Box::new(|c| c.history.max_page = 0), "history.max_page"),
    ];
    for (adjust, key) in cases {
        let mut config = common::test_config();
        adjust(&mut config);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}
