//! Three roomcast instances on one private Redis act as one: same order and offsets for every
//! member wherever it is connected, direct messages and presence across instances, resume on
//! another instance, and Redis subscriptions only for rooms that have members somewhere.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::redis::{RedisServer, unique_prefix, use_redis};
use common::{Client, TestServer, wait_ready};
use serde_json::{Value, json};

async fn cluster(redis: &RedisServer, n: usize, history_size: usize) -> Vec<TestServer> {
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = TestServer::with(|c| {
            use_redis(c, redis, &prefix);
            c.node_id = Some(format!("n{i}"));
            c.history.size = history_size;
        })
        .await;
        wait_ready(&node.url(""), 200).await;
        nodes.push(node);
    }
    nodes
}

/// (offset, from, data) of the next `n` messages.
async fn messages(client: &mut Client, n: usize) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = client.recv_message().await;
        out.push((
            m["offset"].as_u64().unwrap(),
            m["from"].as_str().unwrap().to_owned(),
            m["data"].clone(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_three_instances_see_one_order() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3, 100).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = nodes[i % 3].connect(&format!("u{i}")).await;
        assert_eq!(c.welcome["node"], format!("n{}", i % 3));
        c.join("lobby").await;
        clients.push(c);
    }
    // Every client publishes concurrently and then reads what the room carried.
    const EACH: usize = 40;
    let total = EACH * clients.len();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                for seq in 0..EACH {
                    c.publish("lobby", json!({ "p": i, "seq": seq })).await;
                }
                messages(&mut c, total).await
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    let offsets: Vec<u64> = seen[0].iter().map(|m| m.0).collect();
    assert_eq!(
        offsets,
        (1..=total as u64).collect::<Vec<_>>(),
        "contiguous"
    );
    for other in &seen[1..] {
        assert_eq!(other, &seen[0], "every member sees the same sequence");
    }
    // Each publisher's own messages keep their order.
    for p in 0..6 {
        let seqs: Vec<u64> = seen[0]
            .iter()
            .filter(|m| m.2["p"] == p)
            .map(|m| m.2["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..EACH as u64).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_reach_every_session_on_any_instance() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3, 100).await;
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
    // With one of his sessions gone, the other still gets what follows.
    bob_2.close().await;
    alice
        .request(json!({"type": "send", "to": "bob", "data": 2}))
        .await;
    assert_eq!(bob_1.recv_type("direct").await["data"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_instances() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3, 100).await;
    let mut watcher = nodes[0].connect("watcher").await;
    watcher.join_with_presence("hall").await;
    assert_eq!(watcher.recv_type("presence_join").await["user"], "watcher");
    let mut carol_1 = nodes[1].connect("carol").await;
    carol_1.join("hall").await;
    let ev = watcher.recv_type("presence_join").await;
    assert_eq!(ev["user"], "carol");

    let mut carol_2 = nodes[2].connect("carol").await;
    carol_2.join("hall").await; // a second session: no second announcement
    let list = carol_2
        .request(json!({"type": "presence", "room": "hall"}))
        .await;
    assert_eq!(list["users"], json!(["carol", "watcher"]));

    carol_1
        .request(json!({"type": "leave", "room": "hall"}))
        .await;
    // Carol is still present through her session on n2.
    let list = watcher
        .request(json!({"type": "presence", "room": "hall"}))
        .await;
    assert_eq!(list["users"], json!(["carol", "watcher"]));
    carol_2
        .request(json!({"type": "leave", "room": "hall"}))
        .await;
    let ev = watcher.recv_type("presence_leave").await;
    assert_eq!(ev["user"], "carol");
    let list = watcher
        .request(json!({"type": "presence", "room": "hall"}))
        .await;
    assert_eq!(list["users"], json!(["watcher"]));
}

/// `PUBSUB CHANNELS` lists a room only while some instance hosts a member of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscriptions_follow_membership() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let node = TestServer::with(|c| {
            use_redis(c, &redis, &prefix);
            c.node_id = Some(format!("n{i}"));
        })
        .await;
        wait_ready(&node.url(""), 200).await;
        nodes.push(node);
    }
    let room_channels = || async {
        let all: Vec<String> = redis
            .query(&["PUBSUB", "CHANNELS", &format!("{prefix}:room:*")])
            .await;
        all.into_iter()
            .map(|c| c.rsplit(':').next().unwrap().to_owned())
            .collect::<BTreeSet<String>>()
    };
    assert!(room_channels().await.is_empty());

    let mut a = nodes[0].connect("a").await;
    let mut b = nodes[1].connect("b").await;
    a.join("alpha").await;
    b.join("beta").await;
    b.join("alpha").await;
    let expected: BTreeSet<String> = ["alpha", "beta"].map(String::from).into();
    assert_eq!(room_channels().await, expected);

    // Leaving unsubscribes after the configured delay (100 ms here); alpha still has `a`.
    b.request(json!({"type": "leave", "room": "beta"})).await;
    b.request(json!({"type": "leave", "room": "alpha"})).await;
    let only_alpha: BTreeSet<String> = ["alpha".to_owned()].into();
    poll_until(|| async { room_channels().await == only_alpha }).await;

    // Disconnecting counts as leaving.
    a.close().await;
    poll_until(|| async { room_channels().await.is_empty() }).await;
    let users: Vec<String> = redis
        .query(&["PUBSUB", "CHANNELS", &format!("{prefix}:user:*")])
        .await;
    assert_eq!(users, vec![format!("{prefix}:user:b")]);
}

async fn poll_until<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_another_instance_recovers_what_was_missed() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3, 5).await;
    let mut publisher = nodes[1].connect("pub").await;
    publisher.join("news").await;
    let mut reader = nodes[0].connect("reader").await;
    let joined = reader.join("news").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        publisher.publish("news", json!(i)).await;
    }
    let seen = messages(&mut reader, 3).await;
    assert_eq!(seen.last().unwrap().0, 3);
    reader.close().await;

    for i in 4..=7 {
        publisher.publish("news", json!(i)).await;
    }
    // Back on another instance: 4..=7 replayed, then live from 8, no gap, no duplicate.
    let mut back = nodes[2].connect("reader").await;
    let rejoined = back
        .request(json!({"type": "join", "room": "news", "since": 3, "epoch": epoch}))
        .await;
    assert_eq!(rejoined["recovered"], true, "{rejoined}");
    assert_eq!(rejoined["offset"], 7);
    assert_eq!(rejoined["epoch"], epoch.as_str());
    publisher.publish("news", json!(8)).await;
    let got: Vec<u64> = messages(&mut back, 5).await.iter().map(|m| m.0).collect();
    assert_eq!(got, vec![4, 5, 6, 7, 8]);

    // History holds 5 messages: resuming from 1 would need 2..=8, and 2 and 3 are gone.
    let mut late = nodes[1].connect("late").await;
    let reply = late
        .request(json!({"type": "join", "room": "news", "since": 1, "epoch": epoch}))
        .await;
    assert_eq!(reply["recovered"], false, "{reply}");
    late.expect_silence(Duration::from_millis(200)).await;
    // A stale epoch is never replayed.
    let mut stale = nodes[0].connect("stale").await;
    let reply = stale
        .request(json!({"type": "join", "room": "news", "since": 6, "epoch": "0000"}))
        .await;
    assert_eq!(reply["recovered"], false, "{reply}");
}

/// Many users arriving at once on two instances: each gets its welcome and its joined, and
/// receives what members on the other instance publish; every user channel ends up subscribed,
/// with fewer SUBSCRIBE commands than channels (first subscriptions share one command).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_arriving_at_once_are_all_subscribed() {
    const USERS: usize = 300;
    const ROOMS: usize = 10;
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2, 100).await;
    let subscribes_before = redis.command_calls(&["subscribe"]).await;
    // User i is on node i % 2 in room (i / 2) % ROOMS, so every room has members on both.
    let arrivals: Vec<_> = (0..USERS)
        .map(|i| {
            let url = nodes[i % 2].ws_url(&format!("u{i}"));
            tokio::spawn(async move {
                let mut client = Client::connect(&url).await;
                client.join(&format!("r{}", (i / 2) % ROOMS)).await;
                client
            })
        })
        .collect();
    let mut clients = Vec::new();
    for arrival in arrivals {
        clients.push(arrival.await.expect("a user failed to connect or join"));
    }
    let subscribes = redis.command_calls(&["subscribe"]).await - subscribes_before;
    let channels = USERS + 2 * ROOMS;
    println!("{channels} channels subscribed with {subscribes} SUBSCRIBE commands");
    assert!(subscribes < channels as u64, "no grouping: {subscribes}");

    let users: Vec<String> = redis.query(&["PUBSUB", "CHANNELS", "*:user:*"]).await;
    assert_eq!(users.len(), USERS, "user channels: {users:?}");
    let mut numsub = vec!["PUBSUB".to_owned(), "NUMSUB".to_owned()];
    numsub.extend(users);
    let args: Vec<&str> = numsub.iter().map(String::as_str).collect();
    let counts: std::collections::HashMap<String, u64> = redis.query(&args).await;
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");

    // In each room, user 2r (node 0) and user 2r + 1 (node 1) publish once.
    for (i, client) in clients.iter_mut().enumerate().take(2 * ROOMS) {
        client
            .publish(&format!("r{}", (i / 2) % ROOMS), json!(i))
            .await;
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let room = (i / 2) % ROOMS;
        let got = messages(client, 2).await;
        let from: BTreeSet<String> = got.iter().map(|m| m.1.clone()).collect();
        let expected: BTreeSet<String> =
            [format!("u{}", 2 * room), format!("u{}", 2 * room + 1)].into();
        assert_eq!(from, expected, "u{i} in r{room}");
        assert_eq!(got.iter().map(|m| m.0).collect::<Vec<_>>(), vec![1, 2]);
    }
}

/// A presence list and the presence events travel different ways (a read on the command
/// connection; the room's channel), so an event can arrive before a list that does not include
/// it. Numbered events and lists let a member order them: in 100 fresh rooms, alice joins on
/// one node, then bob joins on the other while alice asks for the list; alice's view, the list
/// then the events numbered after it, always ends as the server's: both present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_list_and_the_events_after_it_always_add_up_to_the_truth() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2, 100).await;
    let (mut early_events, mut lists_without_bob) = (0, 0);
    for trial in 0..100 {
        let room = format!("p{trial}");
        let mut alice = nodes[0].connect("alice").await;
        alice.join_with_presence(&room).await;
        let mut bob = nodes[1].connect("bob").await;
        let ask = json!({"type": "presence", "room": room});
        let (list, _) = tokio::join!(alice.request(ask), bob.join(&room));
        // Events read before the reply wait in the backlog; the rest come after it.
        let mut events = Vec::new();
        while !events.iter().any(|e: &Value| e["user"] == "bob") {
            let frame = alice.recv().await;
            if frame["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("presence_"))
            {
                events.push(frame);
            }
        }
        let seq = list["seq"].as_u64().expect("a presence list carries seq");
        let mut view: BTreeSet<String> = list["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect();
        lists_without_bob += usize::from(!view.contains("bob"));
        for event in &events {
            let event_seq = event["seq"].as_u64().expect("an event carries seq");
            early_events += usize::from(event_seq <= seq);
            if event_seq > seq {
                let user = event["user"].as_str().unwrap().to_owned();
                if event["type"] == "presence_join" {
                    view.insert(user);
                } else {
                    view.remove(&user);
                }
            }
        }
        let view: Vec<String> = view.into_iter().collect();
        assert_eq!(
            view,
            ["alice", "bob"],
            "trial {trial}: {list} then {events:?}"
        );
        bob.close().await;
        alice.close().await;
    }
    println!(
        "{lists_without_bob} of 100 lists did not include bob yet; \
         {early_events} events were already in the list they came with"
    );
}
