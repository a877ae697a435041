//! Three roomcast instances on a three-master Redis Cluster (cluster mode) act as one, with
//! rooms spread over the shards: one order per room, direct messages, presence and resume
//! across instances, each room's subscriptions on the shard owning its slot; a master killed
//! under traffic fails only its own rooms (never a false ack) and they come back when it
//! does; a replica taking over a dead master's slots, or a slot migrating to another master,
//! carries delivery on without a gap.

mod common;

use std::time::{Duration, Instant};

use common::redis::unique_prefix;
use common::redis_cluster::{RedisCluster, use_cluster};
use common::{Client, TestServer, wait_ready};
use serde_json::{Value, json};

/// `n` instances in cluster mode on `cluster`, ready, and the key prefix they share. Fault
/// tests pass a short `command_timeout_ms`; the others keep the default (2 s), which a loaded
/// 2-core machine running six clusters at once needs.
async fn instances(
    cluster: &RedisCluster,
    n: usize,
    history_size: usize,
    command_timeout_ms: Option<u64>,
) -> (String, Vec<TestServer>) {
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = TestServer::with(|c| {
            use_cluster(c, cluster, &prefix);
            c.node_id = Some(format!("n{i}"));
            c.history.size = history_size;
            if let Some(ms) = command_timeout_ms {
                c.redis.command_timeout_ms = ms;
            }
        })
        .await;
        wait_ready(&node.url(""), 200).await;
        nodes.push(node);
    }
    (prefix, nodes)
}

/// (room, offset, data) of the next `n` messages.
async fn messages(client: &mut Client, n: usize) -> Vec<(String, u64, Value)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = client.recv_message().await;
        out.push((
            m["room"].as_str().unwrap().to_owned(),
            m["offset"].as_u64().unwrap(),
            m["data"].clone(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_per_room_across_instances_and_shards() {
    let cluster = RedisCluster::start(3, 0);
    let (prefix, nodes) = instances(&cluster, 3, 100, None).await;
    let rooms: Vec<String> = (0..3).map(|s| cluster.room_on(s, "lobby")).collect();
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = nodes[i % 3].connect(&format!("u{i}")).await;
        for room in &rooms {
            c.join(room).await;
        }
        clients.push(c);
    }
    // Each room's channel is subscribed on its own shard, by sharded pub/sub only.
    for (s, room) in rooms.iter().enumerate() {
        for (m, master) in cluster.nodes.iter().enumerate() {
            let channels: Vec<String> = master
                .query(&["PUBSUB", "SHARDCHANNELS", &format!("{prefix}:room:*")])
                .unwrap();
            let here = channels.contains(&format!("{prefix}:room:{{{room}}}"));
            assert_eq!(here, s == m, "{room} on master {m}: {channels:?}");
            let classic: Vec<String> = master.query(&["PUBSUB", "CHANNELS", "*"]).unwrap();
            assert!(classic.is_empty(), "no classic pub/sub: {classic:?}");
        }
    }
    const EACH: usize = 15;
    let per_room = EACH * clients.len();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let rooms = rooms.clone();
            tokio::spawn(async move {
                for seq in 0..EACH {
                    for room in &rooms {
                        c.publish(room, json!({ "p": i, "seq": seq })).await;
                    }
                }
                messages(&mut c, per_room * rooms.len()).await
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    for room in &rooms {
        let of = |s: &Vec<(String, u64, Value)>| -> Vec<(u64, Value)> {
            s.iter()
                .filter(|m| &m.0 == room)
                .map(|m| (m.1, m.2.clone()))
                .collect()
        };
        let first = of(&seen[0]);
        let offsets: Vec<u64> = first.iter().map(|m| m.0).collect();
        assert_eq!(offsets, (1..=per_room as u64).collect::<Vec<_>>(), "{room}");
        for other in &seen[1..] {
            assert_eq!(of(other), first, "every member sees {room} in one order");
        }
        for p in 0..6 {
            let seqs: Vec<u64> = first
                .iter()
                .filter(|m| m.1["p"] == p)
                .map(|m| m.1["seq"].as_u64().unwrap())
                .collect();
            assert_eq!(seqs, (0..EACH as u64).collect::<Vec<_>>());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_and_presence_cross_instances() {
    let cluster = RedisCluster::start(3, 0);
    let (_, nodes) = instances(&cluster, 3, 100, None).await;
    let mut bob_1 = nodes[1].connect("bob").await;
    let mut bob_2 = nodes[2].connect("bob").await;
    let mut alice = nodes[0].connect("alice").await;
    let ack = alice
        .request(json!({"type": "send", "to": "bob", "data": {"hi": 1}}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    for bob in [&mut bob_1, &mut bob_2] {
        let d = bob.recv_type("direct").await;
        assert_eq!(d["from"], "alice");
        assert_eq!(d["data"], json!({"hi": 1}));
    }

    let hall = cluster.room_on(2, "hall");
    let mut watcher = nodes[0].connect("watcher").await;
    watcher.join_with_presence(&hall).await;
    assert_eq!(watcher.recv_type("presence_join").await["user"], "watcher");
    let mut carol_1 = nodes[1].connect("carol").await;
    carol_1.join(&hall).await;
    assert_eq!(watcher.recv_type("presence_join").await["user"], "carol");
    let mut carol_2 = nodes[2].connect("carol").await;
    carol_2.join(&hall).await; // a second session: no second announcement
    let list = carol_2
        .request(json!({"type": "presence", "room": hall}))
        .await;
    assert_eq!(list["users"], json!(["carol", "watcher"]));
    carol_1
        .request(json!({"type": "leave", "room": hall}))
        .await;
    carol_2
        .request(json!({"type": "leave", "room": hall}))
        .await;
    let ev = watcher.recv_type("presence_leave").await;
    assert_eq!(ev["user"], "carol");
    let list = watcher
        .request(json!({"type": "presence", "room": hall}))
        .await;
    assert_eq!(list["users"], json!(["watcher"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_another_instance_recovers_what_was_missed() {
    let cluster = RedisCluster::start(3, 0);
    let (_, nodes) = instances(&cluster, 3, 5, None).await;
    let news = cluster.room_on(1, "news");
    let mut publisher = nodes[1].connect("pub").await;
    publisher.join(&news).await;
    let mut reader = nodes[0].connect("reader").await;
    let epoch = reader.join(&news).await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..=3 {
        publisher.publish(&news, json!(i)).await;
    }
    assert_eq!(messages(&mut reader, 3).await.last().unwrap().1, 3);
    reader.close().await;
    for i in 4..=7 {
        publisher.publish(&news, json!(i)).await;
    }
    let mut back = nodes[2].connect("reader").await;
    let rejoined = back
        .request(json!({"type": "join", "room": news, "since": 3, "epoch": epoch}))
        .await;
    assert_eq!(rejoined["recovered"], true, "{rejoined}");
    assert_eq!(rejoined["offset"], 7);
    publisher.publish(&news, json!(8)).await;
    let got: Vec<u64> = messages(&mut back, 5).await.iter().map(|m| m.1).collect();
    assert_eq!(got, vec![4, 5, 6, 7, 8]);
    // History holds 5: resuming from 1 would need 2 and 3, which are gone.
    let mut late = nodes[1].connect("late").await;
    let reply = late
        .request(json!({"type": "join", "room": news, "since": 1, "epoch": epoch}))
        .await;
    assert_eq!(reply["recovered"], false, "{reply}");
}

/// SIGKILL one master (no replica): its slots are down. No instance crashes or stops being
/// ready; publishes to its rooms get `unavailable`, never an ack, while rooms on the other
/// shards carry on. Restarted on its port from its nodes.conf (empty: no persistence), it
/// rejoins; its rooms work again, members are told the history was lost, and then get the
/// new numbering from 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shard_fails_only_its_rooms_and_recovers() {
    let mut cluster = RedisCluster::start(3, 0);
    let (_, nodes) = instances(&cluster, 3, 100, Some(1_000)).await;
    let doomed = cluster.room_on(1, "doomed");
    let safe = cluster.room_on(2, "safe");
    let mut publisher = nodes[0].connect("pub").await;
    let mut reader = nodes[1].connect("reader").await;
    for room in [&doomed, &safe] {
        publisher.join(room).await;
    }
    let old_epoch = reader.join(&doomed).await["epoch"].clone();
    reader.join(&safe).await;
    for i in 0..10 {
        for room in [&doomed, &safe] {
            let reply = publisher.try_publish(room, json!({"before": i})).await;
            assert_eq!(reply["type"], "ack", "{reply}");
        }
    }
    for _ in 0..20 {
        reader.recv_message().await;
    }

    cluster.kill(1);
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let reply = publisher.try_publish(&doomed, json!({"down": i})).await;
        assert_eq!(
            reply["type"], "error",
            "false ack from a dead shard: {reply}"
        );
        assert_eq!(reply["code"], "unavailable", "{reply}");
        let sent = Instant::now();
        let reply = publisher.try_publish(&safe, json!({"during": i})).await;
        slowest = slowest.max(sent.elapsed());
        assert_eq!(
            reply["type"], "ack",
            "the other shards keep working: {reply}"
        );
        assert_eq!(reply["offset"], 11 + i, "{reply}");
    }
    println!("with a shard down, the slowest ack from another shard took {slowest:?}");
    for i in 0..5 {
        let m = reader.recv_message().await;
        assert_eq!(m["room"], safe.as_str());
        assert_eq!(m["data"], json!({"during": i}), "{m}");
    }
    for n in &nodes {
        let health = reqwest::get(n.url("/healthz")).await.unwrap();
        assert_eq!(health.status(), 200);
        let ready = reqwest::get(n.url("/readyz")).await.unwrap();
        assert_eq!(
            ready.status(),
            200,
            "a shard down for everyone keeps nodes ready"
        );
    }

    cluster.restart(1);
    let restarted = Instant::now();
    let mut acked = Vec::new();
    while acked.is_empty() {
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "publishing to the restarted shard never recovered"
        );
        let reply = publisher.try_publish(&doomed, json!({"after": 0})).await;
        if reply["type"] == "ack" {
            acked.push(reply["offset"].as_u64().unwrap());
        } else {
            assert_eq!(reply["code"], "unavailable", "{reply}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "publishing to the restarted shard recovered {:?} after its restart",
        restarted.elapsed()
    );
    for i in 1..4 {
        let reply = publisher.try_publish(&doomed, json!({"after": i})).await;
        assert_eq!(reply["type"], "ack", "{reply}");
        acked.push(reply["offset"].as_u64().unwrap());
    }
    assert_eq!(
        acked,
        vec![1, 2, 3, 4],
        "the shard lost the room: numbering restarts"
    );
    let notice = reader.next_event().await;
    assert_eq!(notice["type"], "joined", "{notice}");
    assert_eq!(notice["room"], doomed.as_str());
    assert_ne!(notice["epoch"], old_epoch);
    for i in 0..4 {
        let m = reader.next_event().await;
        assert_eq!(m["room"], doomed.as_str(), "{m}");
        assert_eq!(m["offset"], i + 1, "{m}");
        assert_eq!(m["data"], json!({"after": i}), "{m}");
    }
    // The other rooms never noticed: same numbering, and their presence leases were renewed
    // all along (the outage outlasted the 1.5 s lease).
    let reply = publisher.try_publish(&safe, json!({"end": true})).await;
    assert_eq!(reply["offset"], 16, "{reply}");
    assert_eq!(reader.recv_message().await["offset"], 16);
    let list = publisher
        .request(json!({"type": "presence", "room": safe}))
        .await;
    assert_eq!(list["users"], json!(["pub", "reader"]), "{list}");
    for node in nodes {
        node.shutdown().await.expect("instance stops cleanly");
    }
}

/// A master with a replica is SIGKILLed under traffic: the replica is promoted (on another
/// port) and every instance moves the room's subscription to it. Acked messages were
/// replicated, so the room keeps its epoch and numbering; members see every offset once, in
/// order, without a restart notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_takes_over_and_delivery_goes_on() {
    let mut cluster = RedisCluster::start(3, 1);
    let (prefix, nodes) = instances(&cluster, 3, 100, Some(1_000)).await;
    let room = cluster.room_on(0, "ha");
    let mut publisher = nodes[0].connect("pub").await;
    let mut reader = nodes[1].connect("reader").await;
    let mut other = nodes[2].connect("other").await;
    publisher.join(&room).await;
    let epoch = reader.join(&room).await["epoch"].clone();
    other.join(&room).await;
    for i in 1..=10 {
        publisher.publish(&room, json!(i)).await;
    }
    // Wait until the replica holds all ten, so the failover cannot lose an acked one.
    let meta = format!("{prefix}:meta:{{{room}}}");
    cluster.wait_until("the replica caught up", |c| {
        let client = redis::Client::open(c.nodes[3].url()).unwrap();
        let Ok(mut conn) = client.get_connection() else {
            return false;
        };
        let _: redis::RedisResult<()> = redis::cmd("READONLY").query(&mut conn);
        redis::cmd("HGET")
            .arg(&meta)
            .arg("top")
            .query::<Option<u64>>(&mut conn)
            .is_ok_and(|top| top == Some(10))
    });

    cluster.kill(0);
    let killed = Instant::now();
    let mut next = 11;
    while next <= 20 {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the replica never took over"
        );
        let reply = publisher.try_publish(&room, json!(next)).await;
        if reply["type"] == "ack" {
            assert_eq!(reply["offset"], next, "numbering goes on: {reply}");
            next += 1;
        } else {
            assert_eq!(reply["code"], "unavailable", "{reply}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "the replica took over {:?} after the kill",
        killed.elapsed()
    );
    for client in [&mut reader, &mut other] {
        let got: Vec<u64> = messages(client, 20).await.iter().map(|m| m.1).collect();
        assert_eq!(
            got,
            (1..=20).collect::<Vec<_>>(),
            "every offset once, in order"
        );
    }
    // The new master carries the room's subscriptions; a resume across the failover works.
    let promoted: Vec<String> = cluster.nodes[3]
        .query(&["PUBSUB", "SHARDCHANNELS", &format!("{prefix}:room:*")])
        .unwrap();
    assert_eq!(promoted, vec![format!("{prefix}:room:{{{room}}}")]);
    let mut back = nodes[2].connect("back").await;
    let reply = back
        .request(json!({"type": "join", "room": room, "since": 5, "epoch": epoch}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let got: Vec<u64> = messages(&mut back, 15).await.iter().map(|m| m.1).collect();
    assert_eq!(got, (6..=20).collect::<Vec<_>>());
}

/// A room's slot migrates to another master under traffic (CLUSTER SETSLOT … MIGRATING /
/// IMPORTING, MIGRATE, SETSLOT … NODE): the old master drops the slot's shard channels, every
/// instance resubscribes on the new owner and fills the gap from the moved history, so members
/// see every acked offset once, in order, and no ack is false.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrating_slot_moves_the_subscriptions() {
    let cluster = RedisCluster::start(3, 0);
    let (prefix, nodes) = instances(&cluster, 3, 100, None).await;
    let room = cluster.room_on(0, "moving");
    let slot = cluster.slot(&room).to_string();
    let mut publisher = nodes[0].connect("pub").await;
    let mut reader = nodes[1].connect("reader").await;
    let mut other = nodes[2].connect("other").await;
    for c in [&mut publisher, &mut reader, &mut other] {
        c.join(&room).await;
    }
    for i in 1..=5 {
        publisher.publish(&room, json!(i)).await;
    }

    let (src, dst) = (&cluster.nodes[0], &cluster.nodes[1]);
    let ok = |r: redis::RedisResult<()>| r.expect("cluster command");
    ok(dst.query(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src.id]));
    ok(src.query(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst.id]));
    let keys: Vec<String> = src
        .query(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
        .unwrap();
    assert!(keys.len() >= 2, "the room's keys are in its slot: {keys:?}");
    let port = dst.port.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(keys.iter().map(String::as_str));
    let _: String = src.query(&migrate).unwrap();
    for node in &cluster.nodes {
        ok(node.query(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst.id]));
    }

    let moved = Instant::now();
    let mut next = 6;
    while next <= 10 {
        assert!(
            moved.elapsed() < Duration::from_secs(10),
            "publishing never resumed"
        );
        let reply = publisher.try_publish(&room, json!(next)).await;
        if reply["type"] == "ack" {
            assert_eq!(
                reply["offset"], next,
                "the history moved with the slot: {reply}"
            );
            next += 1;
        } else {
            assert_eq!(reply["code"], "unavailable", "{reply}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for client in [&mut reader, &mut other] {
        let got: Vec<u64> = messages(client, 10).await.iter().map(|m| m.1).collect();
        assert_eq!(
            got,
            (1..=10).collect::<Vec<_>>(),
            "every offset once, in order"
        );
    }
    let channel = format!("{prefix}:room:{{{room}}}");
    let pattern = format!("{prefix}:room:*");
    let on_dst: Vec<String> = dst.query(&["PUBSUB", "SHARDCHANNELS", &pattern]).unwrap();
    assert_eq!(on_dst, vec![channel]);
    let on_src: Vec<String> = src.query(&["PUBSUB", "SHARDCHANNELS", &pattern]).unwrap();
    assert!(on_src.is_empty(), "{on_src:?}");
}
