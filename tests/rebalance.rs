//! Rebalancing: a node added behind the load balancer gets its share of the long-lived
//! sessions, moved at a bounded rate; an operator can ask one node to shed a share of its
//! sessions through the API. Clients here do what the JS client and the load tester do on a
//! `goaway`: wait the hinted delay and reconnect through the balancer.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::api::{Api, KEY};
use common::haproxy::Haproxy;
use common::process::Process;
use common::redis::{RedisServer, redis_env, unique_prefix};
use common::{TestServer, wait_ready};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Sheds per second per node in these tests.
const RATE: usize = 20;

/// What the clients saw: the node each one is on now, and every `goaway` (node, when).
#[derive(Default)]
struct Fleet {
    on: Mutex<Vec<Option<String>>>,
    goaways: Mutex<Vec<(String, Instant)>>,
}

impl Fleet {
    fn new(clients: usize) -> Arc<Self> {
        Arc::new(Self {
            on: Mutex::new(vec![None; clients]),
            goaways: Mutex::default(),
        })
    }

    /// Connected clients per node.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for node in self.on.lock().iter().flatten() {
            *counts.entry(node.clone()).or_default() += 1;
        }
        counts
    }

    /// The most `goaway`s one node sent within any one second.
    fn worst_second(&self) -> usize {
        let goaways = self.goaways.lock();
        let mut worst = 0;
        for (node, at) in goaways.iter() {
            let within = goaways
                .iter()
                .filter(|(n, t)| n == node && *t >= *at && *t - *at < Duration::from_secs(1))
                .count();
            worst = worst.max(within);
        }
        worst
    }
}

/// One client: connects, notes its node, and after a `goaway` waits the hinted delay and
/// connects again (through the balancer, to whichever node it picks), while `reconnect`.
async fn member(i: usize, url: String, fleet: Arc<Fleet>, reconnect: bool) {
    loop {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut node = String::new();
        let mut after = 100;
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let frame: Value = serde_json::from_str(&text).unwrap();
            match frame["type"].as_str() {
                Some("welcome") => {
                    node = frame["node"].as_str().unwrap().to_owned();
                    fleet.on.lock()[i] = Some(node.clone());
                }
                Some("goaway") => {
                    fleet.goaways.lock().push((node.clone(), Instant::now()));
                    after = frame["reconnect_after_ms"].as_u64().unwrap();
                }
                _ => {}
            }
        }
        fleet.on.lock()[i] = None;
        if !reconnect {
            return;
        }
        tokio::time::sleep(Duration::from_millis(after)).await;
    }
}

/// A free port below the kernel's ephemeral range: the third node binds it only after 300
/// clients hold outgoing connections, and one of those could take a port from that range.
fn free_port() -> u16 {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let start = 10_000 + (std::process::id() % 10_000) as u16;
    (start..low)
        .chain(10_000..start)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// Waits until `done` holds for the fleet, or panics with the counts after `limit`.
async fn until(fleet: &Fleet, limit: Duration, what: &str, done: impl Fn(&Fleet) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(fleet) {
        assert!(
            Instant::now() < deadline,
            "{what} not within {limit:?}: {:?}",
            fleet.counts()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every one of `nodes` within ±10 % of the mean, and every client connected.
fn balanced(fleet: &Fleet, clients: usize, nodes: usize) -> bool {
    let counts = fleet.counts();
    let mean = clients as f64 / nodes as f64;
    counts.len() == nodes
        && counts.values().sum::<usize>() == clients
        && counts
            .values()
            .all(|&n| (n as f64 - mean).abs() <= mean * 0.10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_behind_the_balancer_gets_its_share_at_a_bounded_rate() {
    const CLIENTS: usize = 300;
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let mut env = redis_env(&redis, &prefix);
    env.push(("ROOMCAST_REBALANCE__INTERVAL_MS", "500".into()));
    env.push(("ROOMCAST_REBALANCE__MAX_SHED_PER_SEC", RATE.to_string()));
    env.push(("ROOMCAST_RECONNECT_SPREAD_MS", "300".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let n0 = Process::start_with_env(&["--node-id", "n0"], &env);
    let n1 = Process::start_with_env(&["--node-id", "n1"], &env);
    // The third node's place is in the balancer from the start, down until it starts.
    let third = format!("127.0.0.1:{}", free_port());
    let lb = Haproxy::start(&[n0.addr.clone(), n1.addr.clone(), third.clone()]);
    wait_ready(&lb.base(), 200).await;

    let fleet = Fleet::new(CLIENTS);
    let members: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(member(i, lb.ws_url(&format!("u{i}")), fleet.clone(), true)))
        .collect();
    let limit = Duration::from_secs(20);
    until(&fleet, limit, "two balanced nodes", |f| {
        balanced(f, CLIENTS, 2)
    })
    .await;
    // Nodes report up to one interval apart, so while clients arrive one reading may show an
    // excess; a node sheds only what two readings in a row show. Balanced, nothing is shed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        fleet.goaways.lock().is_empty(),
        "shed while balanced or arriving"
    );

    let _n2 = Process::start_on(&third, &["--node-id", "n2"], &env);
    let began = Instant::now();
    until(
        &fleet,
        Duration::from_secs(40),
        "three balanced nodes",
        |f| balanced(f, CLIENTS, 3),
    )
    .await;
    let took = began.elapsed();
    // And it stays so: the nodes stop shedding once within the margin.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(balanced(&fleet, CLIENTS, 3), "{:?}", fleet.counts());
    let shed = fleet.goaways.lock().len();
    let worst = fleet.worst_second();
    println!(
        "balanced in {took:?}: {:?}; {shed} sessions shed, at most {worst} by one node in one second",
        fleet.counts()
    );
    // One shed per 1/RATE s: a one-second window can hold both ends' ticks.
    assert!(worst <= RATE + 1, "{worst} sheds in one second");
    for m in members {
        m.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_sheds_the_share_asked_for_at_the_bounded_rate() {
    const CLIENTS: usize = 40;
    let server = TestServer::with(|c| {
        c.api.keys = vec![KEY.into()];
        c.rebalance.max_shed_per_sec = RATE as u32;
        c.reconnect_spread_ms = 0;
    })
    .await;
    let api = Api::new(&server);
    let fleet = Fleet::new(CLIENTS);
    let members: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(member(
                i,
                server.ws_url(&format!("u{i}")),
                fleet.clone(),
                false,
            ))
        })
        .collect();
    until(
        &fleet,
        Duration::from_secs(10),
        "every client connected",
        |f| f.counts().values().sum::<usize>() == CLIENTS,
    )
    .await;

    api.post("/shed", json!({"fraction": 1.5}))
        .await
        .error(400, "bad_request");
    api.post("/shed", json!({"share": 0.5}))
        .await
        .error(400, "bad_request");
    let answer = api.post("/shed", json!({"fraction": 0.5})).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body["shedding"], CLIENTS / 2);

    until(
        &fleet,
        Duration::from_secs(10),
        "half the clients shed",
        |f| f.goaways.lock().len() == CLIENTS / 2,
    )
    .await;
    // No more than asked, at no more than the rate.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let goaways = fleet.goaways.lock().clone();
    assert_eq!(goaways.len(), CLIENTS / 2);
    let span = goaways.last().unwrap().1 - goaways[0].1;
    let least = Duration::from_secs(1) * (CLIENTS as u32 / 2 - 1) / RATE as u32;
    assert!(
        span >= least.mul_f64(0.9),
        "{} sheds in {span:?}",
        goaways.len()
    );
    assert_eq!(fleet.counts().values().sum::<usize>(), CLIENTS / 2);
    for m in members {
        m.abort();
    }
}
