//! Lifecycle webhooks end to end: real node processes on one real Redis, and a real HTTP
//! receiver (axum on a free loopback port) that checks every request's signature and can be
//! told to answer 500. Leases are 1.5 s (`redis_env`) and the debounce short, so a dead node's
//! users go offline within seconds; waits are generous for a loaded machine.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::process::Process;
use common::redis::{RedisServer, redis_env, unique_prefix};
use common::{Client, wait_ready};
use parking_lot::Mutex;
use roomcast::backend::sign;
use serde_json::{Value, json};

const SECRET: &str = "test-secret-0123456789";
/// Longer than any transition here takes (lease + renewal period + debounce + linger), on a
/// loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Events of POSTs answered 200, in arrival order.
    delivered: Vec<Value>,
    /// Every POST's sending node and event ids, answered 200 or not, recorded on arrival.
    posts: Vec<(String, Vec<String>)>,
}

struct Receiver {
    url: String,
    seen: Arc<Mutex<Seen>>,
    fail: Arc<AtomicBool>,
    /// Milliseconds to wait before answering (a slow backend).
    delay_ms: Arc<AtomicU64>,
    bad_signatures: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Seen>>,
    fail: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    bad_signatures: Arc<AtomicU64>,
}

async fn receive(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp: u64 = header(sign::TIMESTAMP_HEADER)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let expected = sign::signature(SECRET.as_bytes(), timestamp, &body);
    if header(sign::SIGNATURE_HEADER) != Some(expected.as_str()) {
        s.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let batch: Value = serde_json::from_slice(&body).expect("a JSON batch");
    let events = batch["events"].as_array().expect("events").clone();
    let node = header("x-roomcast-node").unwrap_or_default().to_owned();
    let ids = events.iter().map(|e| e["id"].as_str().unwrap().to_owned());
    s.seen.lock().posts.push((node, ids.collect()));
    let delay = s.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        // Dropped here, unanswered, if the sender dies meanwhile.
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if s.fail.load(Ordering::Relaxed) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    s.seen.lock().delivered.extend(events);
    StatusCode::OK
}

impl Receiver {
    async fn start() -> Self {
        let shared = Shared {
            seen: Arc::default(),
            fail: Arc::default(),
            delay_ms: Arc::default(),
            bad_signatures: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            seen: shared.seen,
            fail: shared.fail,
            delay_ms: shared.delay_ms,
            bad_signatures: shared.bad_signatures,
        }
    }

    /// Delivered events of `kind` about `subject` (the user or room).
    fn count(&self, kind: &str, subject: &str) -> usize {
        let seen = self.seen.lock();
        seen.delivered
            .iter()
            .filter(|e| e["type"] == kind && (e["user"] == subject || e["room"] == subject))
            .count()
    }

    /// Waits until `count(kind, subject)` reaches `want`; fails after [`PATIENCE`].
    async fn wait_for(&self, kind: &str, subject: &str, want: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.count(kind, subject) < want {
            assert!(
                Instant::now() < deadline,
                "no {kind} for {subject} within {PATIENCE:?}; got {:?}",
                self.seen.lock().delivered
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every delivered event arrived once: ids unique, and no (type, subject) twice unless
    /// `allowed` says how many.
    fn assert_no_duplicates(&self) {
        let seen = self.seen.lock();
        let mut ids = HashMap::new();
        for event in &seen.delivered {
            *ids.entry(event["id"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "events delivered twice: {repeated:?}");
        assert_eq!(self.bad_signatures.load(Ordering::Relaxed), 0);
    }
}

/// `n` nodes on one Redis sending to `receiver`, with `debounce_ms`.
async fn cluster(
    redis: &RedisServer,
    receiver: &Receiver,
    n: usize,
    extra: &[(&str, &str)],
) -> Vec<Process> {
    let prefix = unique_prefix();
    let mut env = redis_env(redis, &prefix);
    env.push(("ROOMCAST_WEBHOOKS__URL", receiver.url.clone()));
    env.push(("ROOMCAST_WEBHOOKS__SECRET", SECRET.into()));
    env.push(("ROOMCAST_WEBHOOKS__LINGER_MS", "50".into()));
    env.push(("ROOMCAST_WEBHOOKS__TIMEOUT_MS", "2000".into()));
    for (k, v) in extra {
        env.push((k, (*v).to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let nodes: Vec<Process> = (0..n)
        .map(|i| Process::start_with_env(&["--node-id", &format!("n{i}")], &env))
        .collect();
    for node in &nodes {
        wait_ready(&format!("http://{}", node.addr), 200).await;
    }
    nodes
}

/// A counter's value in `node`'s `/metrics` (0 when absent).
async fn metric(node: &Process, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", node.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // `name` may carry one label (`…{result="ok"}`): series with that label among theirs.
    let (base, label) = name
        .split_once('{')
        .map_or((name, ""), |(b, l)| (b, l.trim_end_matches('}')));
    text.lines()
        .filter(|l| l.starts_with(base) && l[base.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            l.split(' ')
                .next()
                .is_some_and(|series| series.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_last_holder_fires_offline_and_vacated_exactly_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let debounce = [("ROOMCAST_WEBHOOKS__DEBOUNCE_MS", "1000")];
    let mut nodes = cluster(&redis, &receiver, 3, &debounce).await;

    // alice only on n0, in `solo` alone and in `shared` with carol, who is on n1.
    let mut alice = Client::connect(&nodes[0].ws_url("alice")).await;
    alice.join("solo").await;
    alice.join("shared").await;
    let mut carol = Client::connect(&nodes[1].ws_url("carol")).await;
    carol.join("shared").await;
    receiver.wait_for("user_online", "alice", 1).await;
    receiver.wait_for("user_online", "carol", 1).await;
    receiver.wait_for("room_occupied", "solo", 1).await;
    receiver.wait_for("room_occupied", "shared", 1).await;

    // Renewals must have run a whole lease before a node reaps others (presence's rule).
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let killed = Instant::now();
    nodes[0].kill();
    drop(alice);
    receiver.wait_for("user_offline", "alice", 1).await;
    receiver.wait_for("room_vacated", "solo", 1).await;
    let took = killed.elapsed();
    eprintln!("offline and vacated {took:?} after the SIGKILL");
    // Lease 1.5 s + a renewal period 0.5 s + debounce 1 s + linger, with room for load.
    assert!(took < Duration::from_secs(10), "offline after {took:?}");

    // Both survivors reap; a second lease and debounce later still only one of each.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.count("user_offline", "alice"), 1);
    assert_eq!(receiver.count("room_vacated", "solo"), 1);
    assert_eq!(
        receiver.count("room_vacated", "shared"),
        0,
        "carol is still in it"
    );
    assert_eq!(receiver.count("user_online", "alice"), 1);
    assert_eq!(receiver.count("room_occupied", "shared"), 1);

    // The last member leaving vacates it, once.
    let left = carol
        .request(json!({"type": "leave", "room": "shared"}))
        .await;
    assert_eq!(left["type"], "left", "{left}");
    receiver.wait_for("room_vacated", "shared", 1).await;
    carol.close().await;
    receiver.wait_for("user_offline", "carol", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.count("room_vacated", "shared"), 1);
    assert_eq!(receiver.count("user_offline", "carol"), 1);
    receiver.assert_no_duplicates();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_within_the_debounce_fires_nothing() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let debounce = [("ROOMCAST_WEBHOOKS__DEBOUNCE_MS", "3000")];
    let mut nodes = cluster(&redis, &receiver, 3, &debounce).await;

    let mut dave = Client::connect(&nodes[0].ws_url("dave")).await;
    dave.join("den").await;
    receiver.wait_for("user_online", "dave", 1).await;
    receiver.wait_for("room_occupied", "den", 1).await;

    // A clean close, then back on another node at once.
    dave.close().await;
    let mut dave = Client::connect(&nodes[1].ws_url("dave")).await;
    dave.join("den").await;
    // The node dying under him, and back on the third within the debounce: the lease of the
    // dead node is reaped while he holds one elsewhere, so nothing either.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    nodes[1].kill();
    drop(dave);
    let mut dave = Client::connect(&nodes[2].ws_url("dave")).await;
    dave.join("den").await;

    // Past a lease, a renewal period and the debounce: nothing new.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(receiver.count("user_online", "dave"), 1);
    assert_eq!(receiver.count("user_offline", "dave"), 0);
    assert_eq!(receiver.count("room_occupied", "den"), 1);
    assert_eq!(receiver.count("room_vacated", "den"), 0);

    // Gone for good: one offline, one vacated, a debounce later.
    dave.close().await;
    receiver.wait_for("user_offline", "dave", 1).await;
    receiver.wait_for("room_vacated", "den", 1).await;
    receiver.assert_no_duplicates();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_retries_then_a_dead_letter() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.fail.store(true, Ordering::Relaxed);
    let settings = [
        ("ROOMCAST_WEBHOOKS__MAX_ATTEMPTS", "3"),
        ("ROOMCAST_WEBHOOKS__BACKOFF_MS", "100"),
        ("ROOMCAST_WEBHOOKS__BACKOFF_MAX_MS", "200"),
        ("ROOMCAST_WEBHOOKS__EVENTS", "[\"user_online\"]"),
    ];
    let nodes = cluster(&redis, &receiver, 2, &settings).await;

    let _erin = Client::connect(&nodes[0].ws_url("erin")).await;
    // Three tries of the one event, then a dead letter on whichever node tried last.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let dead = metric(&nodes[0], "roomcast_webhook_dead_letters_total").await
            + metric(&nodes[1], "roomcast_webhook_dead_letters_total").await;
        if dead >= 1.0 {
            assert_eq!(dead, 1.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let posts = receiver.seen.lock().posts.clone();
    assert_eq!(posts.len(), 3, "three tries: {posts:?}");
    assert!(
        posts.iter().all(|p| p.1 == posts[0].1),
        "the same event: {posts:?}"
    );
    let retries = metric(&nodes[0], "roomcast_webhook_retries_total").await
        + metric(&nodes[1], "roomcast_webhook_retries_total").await;
    assert_eq!(retries, 2.0);

    // The backend is back: later events go through, the dead one never comes back.
    receiver.fail.store(false, Ordering::Relaxed);
    let _frank = Client::connect(&nodes[1].ws_url("frank")).await;
    receiver.wait_for("user_online", "frank", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.count("user_online", "erin"), 0);
    assert_eq!(receiver.seen.lock().posts.len(), 4);
    let (mut refused, mut ok, mut delivered) = (0.0, 0.0, 0.0);
    for node in &nodes {
        refused += metric(node, "roomcast_webhook_posts_total{result=\"refused\"}").await;
        ok += metric(node, "roomcast_webhook_posts_total{result=\"ok\"}").await;
        delivered += metric(node, "roomcast_webhook_events_delivered_total").await;
    }
    assert_eq!((refused, ok, delivered), (3.0, 1.0, 1.0));
    let depth = metric(&nodes[0], "roomcast_webhook_queue_depth").await
        + metric(&nodes[1], "roomcast_webhook_queue_depth").await;
    assert_eq!(depth, 0.0, "nothing left waiting");
    receiver.assert_no_duplicates();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_to_a_user_with_no_session_fires_direct_undelivered() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let nodes = cluster(&redis, &receiver, 2, &[]).await;

    let mut gina = Client::connect(&nodes[0].ws_url("gina")).await;
    let _hank = Client::connect(&nodes[1].ws_url("hank")).await;
    let to_hank = json!({"type": "send", "to": "hank", "data": {"n": 1}});
    assert_eq!(gina.request(to_hank).await["type"], "ack");
    let to_ghost = json!({"type": "send", "to": "ghost", "data": {"text": "ping"}});
    assert_eq!(gina.request(to_ghost).await["type"], "ack");
    receiver.wait_for("direct_undelivered", "ghost", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.count("direct_undelivered", "hank"), 0);
    let event = receiver
        .seen
        .lock()
        .delivered
        .iter()
        .find(|e| e["type"] == "direct_undelivered")
        .cloned()
        .unwrap();
    assert_eq!(event["from"], "gina");
    assert_eq!(event["data"], json!({"text": "ping"}));
    assert!(
        event["ts"].as_u64().is_some() && event["seq"].as_u64().is_some(),
        "{event}"
    );
    receiver.assert_no_duplicates();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_mid_post_loses_nothing_and_the_repeat_keeps_its_id() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    // Hold = 2 x timeout + 1 s = 3 s: then the other node sends the batch again.
    let settings = [
        ("ROOMCAST_WEBHOOKS__TIMEOUT_MS", "1000"),
        ("ROOMCAST_WEBHOOKS__EVENTS", "[\"user_online\"]"),
    ];
    let mut nodes = cluster(&redis, &receiver, 2, &settings).await;
    receiver.delay_ms.store(60_000, Ordering::Relaxed);

    let _ivy = Client::connect(&nodes[0].ws_url("ivy")).await;
    let deadline = Instant::now() + PATIENCE;
    let (sender, ids) = loop {
        if let Some(first) = receiver.seen.lock().posts.first().cloned() {
            break first;
        }
        assert!(Instant::now() < deadline, "no POST within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The node whose POST hangs dies before it can settle the batch.
    let index = if sender == "n0" { 0 } else { 1 };
    nodes[index].kill();
    receiver.delay_ms.store(0, Ordering::Relaxed);

    receiver.wait_for("user_online", "ivy", 1).await;
    let (resender, again) = receiver.seen.lock().posts.last().unwrap().clone();
    assert_ne!(resender, sender, "sent again by the survivor");
    assert_eq!(again, ids, "the same event, with the same id");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.count("user_online", "ivy"), 1);
    receiver.assert_no_duplicates();
}

/// Sessions per churning user, and the gaps between them: short ones well inside the
/// debounce, long ones well past it.
const CHURN_SESSIONS: usize = 3;
const CHURN_DEBOUNCE_MS: u64 = 1_500;
const SHORT_GAP: Duration = Duration::from_millis(100);
const LONG_GAP: Duration = Duration::from_millis(4_000);

/// One churning user: sessions on random nodes, each in the user's own room and in `hall`,
/// separated by short or long gaps. Returns how many long gaps it took: the truth is then
/// `1 + long` onlines and offlines (occupied and vacated for its room).
async fn churn(addrs: Vec<String>, user: String, seed: u64) -> usize {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut long = 0;
    for session in 0..CHURN_SESSIONS {
        let addr = &addrs[rng.random_range(0..addrs.len())];
        let mut c = Client::connect(&format!("ws://{addr}/ws?user={user}")).await;
        c.join(&format!("room-{user}")).await;
        c.join("hall").await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        c.close().await;
        if session + 1 < CHURN_SESSIONS {
            if rng.random_bool(0.5) {
                long += 1;
                tokio::time::sleep(LONG_GAP).await;
            } else {
                tokio::time::sleep(SHORT_GAP).await;
            }
        }
    }
    long
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_across_three_nodes_matches_the_truth_exactly() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let debounce = CHURN_DEBOUNCE_MS.to_string();
    let settings = [
        ("ROOMCAST_WEBHOOKS__DEBOUNCE_MS", debounce.as_str()),
        ("ROOMCAST_WEBHOOKS__BATCH_MAX", "5"),
    ];
    let nodes = cluster(&redis, &receiver, 3, &settings).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();

    // An anchor keeps `hall` occupied throughout, so it is occupied and vacated once.
    let mut anchor = Client::connect(&nodes[0].ws_url("anchor")).await;
    anchor.join("hall").await;
    let users: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
    let runs = users
        .iter()
        .enumerate()
        .map(|(i, user)| tokio::spawn(churn(addrs.clone(), user.clone(), 1_000 + i as u64)));
    let longs: Vec<usize> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    anchor.close().await;

    let truth: Vec<(&str, String, usize)> = users
        .iter()
        .zip(&longs)
        .flat_map(|(user, long)| {
            let n = 1 + long;
            let room = format!("room-{user}");
            [
                ("user_online", user.clone(), n),
                ("user_offline", user.clone(), n),
                ("room_occupied", room.clone(), n),
                ("room_vacated", room, n),
            ]
        })
        .chain([
            ("room_occupied", "hall".to_owned(), 1),
            ("room_vacated", "hall".to_owned(), 1),
            ("user_online", "anchor".to_owned(), 1),
            ("user_offline", "anchor".to_owned(), 1),
        ])
        .collect();
    for (kind, subject, n) in &truth {
        receiver.wait_for(kind, subject, *n).await;
    }
    // A debounce and more later, nothing beyond the truth either.
    tokio::time::sleep(Duration::from_millis(CHURN_DEBOUNCE_MS + 1_500)).await;
    let wrong: Vec<_> = truth
        .iter()
        .filter(|(kind, subject, n)| receiver.count(kind, subject) != *n)
        .map(|(kind, subject, n)| (kind, subject, n, receiver.count(kind, subject)))
        .collect();
    assert!(wrong.is_empty(), "(kind, subject, truth, seen): {wrong:?}");
    let total: usize = truth.iter().map(|t| t.2).sum();
    assert_eq!(
        receiver.seen.lock().delivered.len(),
        total,
        "no event outside the truth"
    );
    let largest = receiver.seen.lock().posts.iter().map(|p| p.1.len()).max();
    assert!(
        largest <= Some(5),
        "batches of at most batch_max: {largest:?}"
    );
    receiver.assert_no_duplicates();
}

/// The memory engine (one node) decides the same events: online, a reconnect inside the
/// debounce firing nothing, offline and vacated after it, and direct_undelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_engine_sends_the_same_events() {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let server = common::TestServer::with(move |c| {
        c.webhooks.url = url;
        c.webhooks.secret = SECRET.into();
        c.webhooks.linger_ms = 50;
        c.webhooks.debounce_ms = 1_000;
    })
    .await;
    let mut jill = server.connect("jill").await;
    jill.join("attic").await;
    receiver.wait_for("user_online", "jill", 1).await;
    receiver.wait_for("room_occupied", "attic", 1).await;
    jill.close().await;
    let mut jill = server.connect("jill").await;
    jill.join("attic").await;
    let to_ghost = json!({"type": "send", "to": "ghost", "data": [1, 2]});
    assert_eq!(jill.request(to_ghost).await["type"], "ack");
    receiver.wait_for("direct_undelivered", "ghost", 1).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(receiver.count("user_offline", "jill"), 0);
    assert_eq!(receiver.count("user_online", "jill"), 1);
    jill.close().await;
    receiver.wait_for("user_offline", "jill", 1).await;
    receiver.wait_for("room_vacated", "attic", 1).await;
    let seqs: Vec<u64> = receiver
        .seen
        .lock()
        .delivered
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in decision order: {seqs:?}"
    );
    receiver.assert_no_duplicates();
}

/// A user back after the debounce, before any sender looked for due events (a long linger):
/// the arrival moves the offline out itself, so online, offline, online, in `seq` order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_after_the_debounce_still_fires_the_offline_first() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let settings = [
        ("ROOMCAST_WEBHOOKS__DEBOUNCE_MS", "300"),
        ("ROOMCAST_WEBHOOKS__LINGER_MS", "6000"),
        (
            "ROOMCAST_WEBHOOKS__EVENTS",
            "[\"user_online\", \"user_offline\"]",
        ),
    ];
    let nodes = cluster(&redis, &receiver, 1, &settings).await;
    let kate = Client::connect(&nodes[0].ws_url("kate")).await;
    kate.close().await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let _kate = Client::connect(&nodes[0].ws_url("kate")).await;
    receiver.wait_for("user_online", "kate", 2).await;
    receiver.wait_for("user_offline", "kate", 1).await;
    let mut events = receiver.seen.lock().delivered.clone();
    events.sort_by_key(|e| e["seq"].as_u64().unwrap());
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["user_online", "user_offline", "user_online"]);
    receiver.assert_no_duplicates();
}

/// Redis paused past the lease stops every renewal at once; afterwards no node takes the
/// others' late leases for dead ones (it reaps only after a whole lease of its own renewals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_pause_past_the_lease_sends_no_offline() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let debounce = [("ROOMCAST_WEBHOOKS__DEBOUNCE_MS", "1000")];
    let nodes = cluster(&redis, &receiver, 2, &debounce).await;
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut c = Client::connect(&node.ws_url(&format!("p{i}"))).await;
        c.join(&format!("pr{i}")).await;
        clients.push(c);
    }
    receiver.wait_for("user_online", "p1", 1).await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    redis.pause();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    redis.resume();
    // Past a lease, a renewal period and the debounce after Redis is back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seen = receiver.seen.lock().delivered.clone();
    let offline: Vec<_> = seen
        .iter()
        .filter(|e| e["type"] == "user_offline" || e["type"] == "room_vacated")
        .collect();
    assert!(offline.is_empty(), "{offline:?}");
    receiver.assert_no_duplicates();
}

/// A node stalled (SIGSTOP) past its lease looks dead: the others reap it and an offline
/// waits out the debounce. Back (SIGCONT) within it, its next renewal cancels that: nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stalled_past_its_lease_and_back_within_the_debounce_sends_nothing() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let debounce = [("ROOMCAST_WEBHOOKS__DEBOUNCE_MS", "4000")];
    let nodes = cluster(&redis, &receiver, 2, &debounce).await;
    let mut leo = Client::connect(&nodes[0].ws_url("leo")).await;
    leo.join("lair").await;
    receiver.wait_for("room_occupied", "lair", 1).await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    nodes[0].signal("-STOP");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    nodes[0].signal("-CONT");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(receiver.count("user_offline", "leo"), 0);
    assert_eq!(receiver.count("room_vacated", "lair"), 0);
    assert_eq!(receiver.count("user_online", "leo"), 1);
    receiver.assert_no_duplicates();
}

/// At `queue_capacity` waiting events, further ones are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_queue_capacity_are_dropped_and_counted() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.fail.store(true, Ordering::Relaxed);
    let settings = [
        ("ROOMCAST_WEBHOOKS__QUEUE_CAPACITY", "2"),
        ("ROOMCAST_WEBHOOKS__EVENTS", "[\"user_online\"]"),
        ("ROOMCAST_WEBHOOKS__MAX_ATTEMPTS", "100"),
    ];
    let nodes = cluster(&redis, &receiver, 1, &settings).await;
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(Client::connect(&nodes[0].ws_url(&format!("q{i}"))).await);
    }
    let dropped = metric(&nodes[0], "roomcast_webhook_events_dropped_total").await;
    let emitted = metric(&nodes[0], "roomcast_webhook_events_emitted_total").await;
    assert_eq!((emitted, dropped), (2.0, 2.0));
    receiver.fail.store(false, Ordering::Relaxed);
    receiver.wait_for("user_online", "q0", 1).await;
    receiver.wait_for("user_online", "q1", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.seen.lock().delivered.len(), 2);
}

/// With webhooks off, nothing of theirs runs: no key under `{prefix}:wh:`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_webhooks_off_no_key_is_written() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let env = redis_env(&redis, &prefix);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = Process::start_with_env(&[], &env);
    wait_ready(&format!("http://{}", node.addr), 200).await;
    let mut mia = Client::connect(&node.ws_url("mia")).await;
    mia.join("moor").await;
    let to_ghost = json!({"type": "send", "to": "ghost", "data": 1});
    assert_eq!(mia.request(to_ghost).await["type"], "ack");
    mia.close().await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let keys: Vec<String> = redis.query(&["KEYS", &format!("{prefix}:wh:*")]).await;
    assert!(keys.is_empty(), "{keys:?}");
}
