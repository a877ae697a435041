//! End to end: haproxy (round robin, health-checking `/readyz`) in front of three roomcast
//! processes sharing one Redis. Clients cannot tell which instance they are on; when one
//! instance drains, its clients reconnect through the balancer and resume without loss.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::haproxy::Haproxy;
use common::process::Process;
use common::redis::{RedisServer, redis_env, unique_prefix};
use common::{Client, Ended, wait_ready};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behind_haproxy_act_as_one() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let env = redis_env(&redis, &prefix);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let nodes: Vec<Process> = (0..3)
        .map(|i| Process::start_with_env(&["--node-id", &format!("n{i}")], &env))
        .collect();
    for node in &nodes {
        wait_ready(&format!("http://{}", node.addr), 200).await;
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let lb = Haproxy::start(&addrs);
    wait_ready(&lb.base(), 200).await;

    // Round robin spreads six clients over all three instances.
    let mut clients = Vec::new();
    let mut epochs = BTreeSet::new();
    for i in 0..6 {
        let mut c = Client::connect(&lb.ws_url(&format!("u{i}"))).await;
        epochs.insert(c.join("lobby").await["epoch"].as_str().unwrap().to_owned());
        clients.push(c);
    }
    assert_eq!(epochs.len(), 1, "one history for the room across instances");
    let epoch = epochs.pop_first().unwrap();
    let on: BTreeSet<String> = clients
        .iter()
        .map(|c| c.welcome["node"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on.len(), 3, "clients landed on {on:?}");

    for (i, c) in clients.iter_mut().enumerate() {
        for seq in 0..5 {
            c.publish("lobby", json!({"p": i, "seq": seq})).await;
        }
    }
    let mut sequences = Vec::new();
    for c in clients.iter_mut() {
        let mut seen = Vec::new();
        for _ in 0..30 {
            let m = c.recv_message().await;
            seen.push((m["offset"].as_u64().unwrap(), m["data"].clone()));
        }
        sequences.push(seen);
    }
    let offsets: Vec<u64> = sequences[0].iter().map(|m| m.0).collect();
    assert_eq!(offsets, (1..=30).collect::<Vec<_>>());
    assert!(
        sequences.iter().all(|s| *s == sequences[0]),
        "one order for all"
    );

    // Drain n1: its clients get 1001, the balancer stops sending new clients there.
    let victim = 1;
    nodes[victim].signal("-TERM");
    let mut moved = Vec::new();
    let mut stayed = Vec::new();
    for c in clients {
        if c.welcome["node"] == format!("n{victim}") {
            moved.push(c);
        } else {
            stayed.push(c);
        }
    }
    let mut users = Vec::new();
    for mut c in moved {
        let (_, ended) = c.read_to_end(Duration::from_secs(10)).await;
        assert_eq!(ended, Ended::Closed(1001));
        users.push(c.user().to_owned());
    }
    assert!(!users.is_empty());
    // Traffic goes on while they are away.
    for seq in 0..5 {
        stayed[0].publish("lobby", json!({"while_away": seq})).await;
    }
    for user in users {
        let mut back = Client::connect(&lb.ws_url(&user)).await;
        assert_ne!(
            back.welcome["node"],
            format!("n{victim}"),
            "balancer avoided the draining node"
        );
        let reply = back
            .request(json!({"type": "join", "room": "lobby", "since": 30, "epoch": epoch}))
            .await;
        assert_eq!(reply["recovered"], true, "{reply}");
        for offset in 31..=35 {
            assert_eq!(back.recv_message().await["offset"], offset);
        }
    }
}
