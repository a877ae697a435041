//! Faults with the Redis backplane: Redis SIGKILLed under traffic and restarted empty, and an
//! instance SIGKILLed while its users are in rooms. Nothing crashes, nothing is falsely
//! acknowledged, delivery and resume come back right.

mod common;

use std::time::{Duration, Instant};

use common::process::Process;
use common::redis::{RedisServer, redis_env, unique_prefix, use_redis};
use common::{Client, TestServer, wait_ready};
use serde_json::json;

async fn node(redis: &RedisServer, prefix: &str, id: &str) -> TestServer {
    let node = TestServer::with(|c| {
        use_redis(c, redis, prefix);
        c.node_id = Some(id.into());
        c.redis.command_timeout_ms = 500;
    })
    .await;
    wait_ready(&node.url(""), 200).await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_traffic_then_restarted_empty() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let n0 = node(&redis, &prefix, "n0").await;
    let n1 = node(&redis, &prefix, "n1").await;
    let mut publisher = n0.connect("pub").await;
    let mut reader = n1.connect("reader").await;
    let mut resumer = n1.connect("resumer").await;
    publisher.join("live").await;
    reader.join("live").await;
    let old_epoch = resumer.join("live").await["epoch"].clone();

    for i in 0..20 {
        let reply = publisher.try_publish("live", json!({"before": i})).await;
        assert_eq!(reply["type"], "ack", "{reply}");
    }
    for _ in 0..20 {
        resumer.recv_message().await;
    }
    resumer.close().await;

    redis.kill();
    // Redis is gone: every publish is refused with `unavailable`, none acknowledged.
    for i in 0..10 {
        let reply = publisher.try_publish("live", json!({"down": i})).await;
        assert_eq!(
            reply["type"], "error",
            "false ack while Redis is dead: {reply}"
        );
        assert_eq!(reply["code"], "unavailable", "{reply}");
    }
    // Both instances stay up and keep their clients; readiness tells the balancer.
    for n in [&n0, &n1] {
        let health = reqwest::get(n.url("/healthz")).await.unwrap();
        assert_eq!(health.status(), 200);
        wait_ready(&n.url(""), 503).await;
    }
    assert_eq!(
        reader.request(json!({"type": "ping"})).await["type"],
        "pong"
    );

    redis.restart();
    let restarted = Instant::now();
    let mut acked_after = Vec::new();
    while acked_after.is_empty() {
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "publishing never recovered"
        );
        let reply = publisher.try_publish("live", json!({"after": 0})).await;
        if reply["type"] == "ack" {
            acked_after.push(reply["offset"].as_u64().unwrap());
        } else {
            assert_eq!(reply["code"], "unavailable", "{reply}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "publishing recovered {:?} after Redis restarted",
        restarted.elapsed()
    );
    for n in [&n0, &n1] {
        wait_ready(&n.url(""), 200).await;
    }
    for i in 1..5 {
        let reply = publisher.try_publish("live", json!({"after": i})).await;
        assert_eq!(reply["type"], "ack", "{reply}");
        acked_after.push(reply["offset"].as_u64().unwrap());
    }
    assert_eq!(
        acked_after,
        vec![1, 2, 3, 4, 5],
        "Redis lost the room: numbering restarts"
    );

    // The reader got all 20 from before, a notice of the new epoch, then all 5 from after.
    for i in 0..20 {
        let m = reader.next_event().await;
        assert_eq!(m["data"], json!({"before": i}), "{m}");
    }
    let notice = reader.next_event().await;
    assert_eq!(notice["type"], "joined", "{notice}");
    assert_eq!(notice["recovered"], false);
    assert_eq!(notice["offset"], 0);
    assert_ne!(notice["epoch"], old_epoch);
    let new_epoch = notice["epoch"].clone();
    for i in 0..5 {
        let m = reader.next_event().await;
        assert_eq!(m["offset"], i + 1, "{m}");
        assert_eq!(m["data"], json!({"after": i}), "{m}");
    }

    // A client resuming from before the loss is told it cannot recover...
    let mut back = n0.connect("resumer").await;
    let reply = back
        .request(json!({"type": "join", "room": "live", "since": 20, "epoch": old_epoch}))
        .await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["epoch"], new_epoch);
    // ...while one that saw the new epoch recovers exactly what it missed.
    let mut fresh = n1.connect("fresh").await;
    let reply = fresh
        .request(json!({"type": "join", "room": "live", "since": 2, "epoch": new_epoch}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    for offset in 3..=5 {
        assert_eq!(fresh.recv_message().await["offset"], offset);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instance_users_vanish_and_recover_elsewhere() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let n0 = node(&redis, &prefix, "n0").await;
    let env = redis_env(&redis, &prefix);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut doomed = Process::start_with_env(&["--node-id", "doomed"], &env);
    wait_ready(&format!("http://{}", doomed.addr), 200).await;

    let mut watcher = n0.connect("watcher").await;
    watcher.join_with_presence("hall").await;
    assert_eq!(watcher.recv_type("presence_join").await["user"], "watcher");
    let mut ghost = Client::connect(&doomed.ws_url("ghost")).await;
    assert_eq!(ghost.welcome["node"], "doomed");
    let epoch = ghost.join_with_presence("hall").await["epoch"].clone();
    assert_eq!(watcher.recv_type("presence_join").await["user"], "ghost");
    for i in 1..=3 {
        watcher.publish("hall", json!(i)).await;
    }
    for offset in 1..=3 {
        assert_eq!(ghost.recv_message().await["offset"], offset);
    }

    doomed.kill();
    let killed = Instant::now();
    for i in 4..=6 {
        watcher.publish("hall", json!(i)).await;
    }
    // The lease (1.5 s here) runs out and the reaper (every 0.5 s) announces the departure.
    let left = loop {
        let v = watcher.recv().await;
        if v["type"] == "presence_leave" {
            break v;
        }
    };
    let vanished = killed.elapsed();
    assert_eq!(left["user"], "ghost");
    println!("a killed instance's user left presence after {vanished:?}");
    assert!(
        vanished < Duration::from_millis(1_500 + 500 + 1_000),
        "bound is lease + lease/3 (+1 s scheduling slack), took {vanished:?}"
    );
    let list = watcher
        .request(json!({"type": "presence", "room": "hall"}))
        .await;
    assert_eq!(list["users"], json!(["watcher"]));

    // The user reconnects through a surviving instance and recovers what it missed.
    let mut back = n0.connect("ghost").await;
    let reply = back
        .request(json!({"type": "join", "room": "hall", "since": 3, "epoch": epoch}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    for offset in 4..=6 {
        assert_eq!(back.recv_message().await["offset"], offset);
    }
}

/// Readiness is about completing commands, not only about the subscription socket: a paused
/// Redis (SIGSTOP; its sockets stay open) and a Redis refusing writes at `maxmemory` with
/// `noeviction` both turn `/readyz` 503 while every publish fails, and 200 again once Redis
/// recovers. Before the write probe, `/readyz` answered 200 throughout both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_while_redis_is_paused_or_full_and_200_once_it_recovers() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let n0 = node(&redis, &prefix, "n0").await;
    let mut alice = n0.connect("alice").await;
    alice.join("r").await;
    assert_eq!(alice.try_publish("r", json!(0)).await["type"], "ack");

    redis.pause();
    let paused = Instant::now();
    wait_ready(&n0.url(""), 503).await;
    let noticed = paused.elapsed();
    println!("readiness turned 503 {noticed:?} after Redis paused");
    // The probe runs every second under the command timeout (500 ms here).
    assert!(
        noticed < Duration::from_millis(1_000 + 500 + 1_000),
        "{noticed:?}"
    );
    let reply = alice.try_publish("r", json!(1)).await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
    redis.resume();
    wait_ready(&n0.url(""), 200).await;

    let _: () = redis
        .query(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .await;
    let _: () = redis.query(&["CONFIG", "SET", "maxmemory", "1"]).await;
    let full = Instant::now();
    wait_ready(&n0.url(""), 503).await;
    println!(
        "readiness turned 503 {:?} after Redis filled up",
        full.elapsed()
    );
    let reply = alice.try_publish("r", json!(2)).await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
    let _: () = redis.query(&["CONFIG", "SET", "maxmemory", "0"]).await;
    wait_ready(&n0.url(""), 200).await;
    assert_eq!(alice.try_publish("r", json!(3)).await["type"], "ack");
}

/// An idle room whose history Redis lost (SIGKILL, restarted empty) is announced to its members
/// on every node without waiting for a publish, which may never come: an unsolicited `joined`
/// with `recovered: false`, the same new epoch on every node. The first publish afterwards is
/// offset 1 of that epoch everywhere, with no second notice. Before, members stayed on the
/// stale epoch with no notice while `/readyz` already answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_room_lost_by_redis_is_announced_on_every_node_without_a_publish() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let n0 = node(&redis, &prefix, "n0").await;
    let n1 = node(&redis, &prefix, "n1").await;
    let mut a = n0.connect("a").await;
    let mut b = n1.connect("b").await;
    let old_epoch = a.join("quiet").await["epoch"].clone();
    b.join("quiet").await;
    a.publish("quiet", json!("before")).await;
    assert_eq!(a.recv_message().await["offset"], 1);
    assert_eq!(b.recv_message().await["offset"], 1);

    redis.restart();
    let restarted = Instant::now();
    let (na, nb) = (a.next_event().await, b.next_event().await);
    println!(
        "idle room's members told {:?} after Redis restarted",
        restarted.elapsed()
    );
    for notice in [&na, &nb] {
        assert_eq!(notice["type"], "joined", "{notice}");
        assert_eq!(notice["recovered"], false, "{notice}");
        assert_eq!(notice["offset"], 0, "{notice}");
        assert_ne!(notice["epoch"], old_epoch, "{notice}");
    }
    assert_eq!(
        na["epoch"], nb["epoch"],
        "one new epoch for the whole cluster"
    );
    assert!(restarted.elapsed() < Duration::from_secs(5));

    for n in [&n0, &n1] {
        wait_ready(&n.url(""), 200).await;
    }
    assert_eq!(a.publish("quiet", json!("after")).await, 1);
    for member in [&mut a, &mut b] {
        let m = member.next_event().await;
        assert_eq!(m["type"], "message", "no second notice: {m}");
        assert_eq!(
            (m["offset"].clone(), m["data"].clone()),
            (json!(1), json!("after"))
        );
    }
}

/// A live node that could not renew its presence leases in time (its process stopped for 3 s
/// against a 1.5 s lease, as under a long GC-like stall or a Redis it could not reach) has them
/// reaped by the other node, which announces `presence_leave` for its users although they are
/// still connected. When it runs again it restores the leases at its next renewal and announces
/// `presence_join`, so a member's view built from events alone ends equal to the presence list
/// and to who is connected. Before, the restore was silent and event-driven views (the demo's
/// included) showed connected users as gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaped_lease_of_a_live_node_is_restored_with_presence_join() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let n0 = node(&redis, &prefix, "n0").await;
    let env = redis_env(&redis, &prefix);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stalled = Process::start_with_env(&["--node-id", "stalled"], &env);
    wait_ready(&format!("http://{}", stalled.addr), 200).await;
    let mut watcher = n0.connect("watcher").await;
    watcher.join_with_presence("hall").await;
    let mut bob = Client::connect(&stalled.ws_url("bob")).await;
    bob.join_with_presence("hall").await;
    let mut view = std::collections::BTreeSet::new();
    let apply = |view: &mut std::collections::BTreeSet<String>, event: &serde_json::Value| {
        let user = event["user"].as_str().map(str::to_owned);
        match (event["type"].as_str(), user) {
            (Some("presence_join"), Some(user)) => view.insert(user),
            (Some("presence_leave"), Some(user)) => view.remove(&user),
            _ => false,
        };
    };
    while view.len() < 2 {
        apply(&mut view, &watcher.recv().await);
    }

    stalled.signal("-STOP");
    let left = watcher.recv_type("presence_leave").await;
    assert_eq!(left["user"], "bob", "the lease was reaped: {left}");
    stalled.signal("-CONT");
    let resumed = Instant::now();
    view.remove("bob");
    // The restore comes at the stalled node's next renewal (every lease / 3 = 0.5 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !view.contains("bob") {
        let event = tokio::time::timeout_at(deadline, watcher.recv())
            .await
            .expect("bob's restored lease was never announced");
        apply(&mut view, &event);
    }
    println!(
        "presence_join restored bob {:?} after his node resumed",
        resumed.elapsed()
    );
    let expected = json!(["bob", "watcher"]);
    assert_eq!(json!(view), expected, "the event view");
    let list = watcher
        .request(json!({"type": "presence", "room": "hall"}))
        .await;
    assert_eq!(list["users"], expected, "the presence list");
    assert_eq!(bob.request(json!({"type": "ping"})).await["type"], "pong");
}

/// A publication whose earlier offsets never reached this node and are no longer in the
/// history (here: three offsets taken in Redis without being logged or published, as a
/// trimmed history looks to a reader that fell behind) cannot be filled. Before, the node
/// delivered it anyway and members saw the offset jump without notice; now they are told first,
/// with an unsolicited `joined` in the same epoch whose offset is the last one lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_the_history_no_longer_holds_is_announced_before_what_follows() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let n0 = node(&redis, &prefix, "n0").await;
    let mut member = n0.connect("member").await;
    let joined = member.join("hall").await;
    let epoch = joined["epoch"].clone();
    let mut publisher = n0.connect("publisher").await;
    publisher.join("hall").await;
    assert_eq!(publisher.publish("hall", json!("one")).await, 1);
    assert_eq!(member.next_event().await["offset"], 1);

    let meta = format!("{prefix}:meta:hall");
    let _: i64 = redis.query(&["HINCRBY", &meta, "top", "3"]).await;
    assert_eq!(publisher.publish("hall", json!("five")).await, 5);
    let notice = member.next_event().await;
    assert_eq!(
        (
            &notice["type"],
            &notice["epoch"],
            &notice["offset"],
            &notice["recovered"]
        ),
        (&json!("joined"), &epoch, &json!(4), &json!(false)),
        "offsets 2-4 are announced lost: {notice}"
    );
    let next = member.next_event().await;
    assert_eq!(
        (&next["offset"], &next["data"]),
        (&json!(5), &json!("five"))
    );
}

/// Redis refusing writes (`maxmemory`) for twice the lease stops every node's renewals at once
/// while the reaper's deletes still go through, so every lease looks expired, live nodes'
/// included. Before, the reapers announced `presence_leave` for users connected all along (and
/// restored them once Redis took writes again); the fault campaign found the same after a Redis
/// pause longer than the lease. A node that saw its own renewals fail now reaps nothing until
/// they have gone through for a whole lease, by when every live node has renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refusing_writes_past_the_lease_announces_no_leave_for_connected_users() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let n0 = node(&redis, &prefix, "n0").await;
    let n1 = node(&redis, &prefix, "n1").await;
    let mut watcher = n0.connect("watcher").await;
    watcher.join_with_presence("hall").await;
    let mut bob = n1.connect("bob").await;
    bob.join_with_presence("hall").await;
    while watcher.recv_type("presence_join").await["user"] != "bob" {}

    let _: () = redis
        .query(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .await;
    let _: () = redis.query(&["CONFIG", "SET", "maxmemory", "1"]).await;
    // Lease 1.5 s, reapers every 0.5 s: a false leave came within the full period and the
    // seconds after it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(frame) = tokio::time::timeout_at(deadline, watcher.recv()).await {
        assert_ne!(frame["type"], "presence_leave", "false leave: {frame}");
    }
    let _: () = redis.query(&["CONFIG", "SET", "maxmemory", "0"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(frame) = tokio::time::timeout_at(deadline, watcher.recv()).await {
        assert_ne!(frame["type"], "presence_leave", "false leave: {frame}");
    }
    let list = watcher
        .request(json!({"type": "presence", "room": "hall"}))
        .await;
    assert_eq!(list["users"], json!(["bob", "watcher"]), "{list}");
}

/// A publish answered `unavailable` during a Redis stall may still be applied when Redis
/// resumes (its script was already sent). A client that retries with the same publish key gets
/// the offset it was given, on another node too, and members see the message once. Before
/// keys, every such retry published the message a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_with_its_key_after_a_redis_stall_is_applied_once() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let n0 = node(&redis, &prefix, "n0").await;
    let n1 = node(&redis, &prefix, "n1").await;
    let mut alice = n0.connect("alice").await;
    let mut again = n1.connect("alice").await;
    let mut bob = n1.connect("bob").await;
    alice.join("stall").await;
    again.join("stall").await;
    bob.join("stall").await;
    let publish = json!({"type": "publish", "room": "stall", "data": "once", "key": "m-1"});

    redis.pause();
    let reply = alice.request(publish.clone()).await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
    redis.resume();
    wait_ready(&n0.url(""), 200).await;
    // The retry goes through another node, as after a reconnect through the balancer.
    let retry = again.request(publish.clone()).await;
    assert_eq!(retry["type"], "ack", "{retry}");
    assert_eq!(retry["offset"], 1, "{retry}");
    let m = bob.recv_message().await;
    assert_eq!(
        (m["offset"].clone(), m["data"].clone()),
        (json!(1), json!("once"))
    );
    bob.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        again.request(publish).await["offset"],
        1,
        "and any later retry"
    );
}
