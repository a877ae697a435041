//! The contract every broker engine must keep, written once against the `Broker` trait and run
//! for each engine. A fixture gives one or more nodes (a broker plus what it delivered) that
//! share the same rooms; the memory engine is a single node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::{RedisServer, unique_prefix};
use common::redis_cluster::RedisCluster;
use parking_lot::Mutex;
use roomcast::broker::memory::{HistoryBudget, MemoryBroker};
use roomcast::broker::redis::{PublishBatch, RedisBroker, RedisOptions};
use roomcast::broker::{
    Broker, BrokerError, Deliver, DurableRule, Order, Page, PageRequest, Presence, Retention,
};
use roomcast::protocol::Resume;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;

mod common;

/// What one node was handed by its broker, in arrival order.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
}

#[derive(Debug, Clone)]
enum Event {
    Publication {
        room: String,
        offset: u64,
        frame: Value,
    },
    Direct {
        user: String,
        frame: Value,
    },
    Presence {
        room: String,
        frame: Value,
    },
    Reset {
        room: String,
        frame: Value,
    },
    Disconnect {
        user: String,
    },
}

fn parse(frame: &Utf8Bytes) -> Value {
    serde_json::from_str(frame.as_str()).expect("the broker hands out valid JSON frames")
}

impl Deliver for Recorder {
    fn publication(&self, room: &str, offset: u64, frame: &Utf8Bytes) {
        let frame = parse(frame);
        self.events.lock().push(Event::Publication {
            room: room.into(),
            offset,
            frame,
        });
    }
    fn direct(&self, user: &str, frame: &Utf8Bytes) {
        let frame = parse(frame);
        self.events.lock().push(Event::Direct {
            user: user.into(),
            frame,
        });
    }
    fn presence(&self, room: &str, frame: &Utf8Bytes) {
        let frame = parse(frame);
        self.events.lock().push(Event::Presence {
            room: room.into(),
            frame,
        });
    }
    fn disconnect(&self, user: &str) {
        self.events
            .lock()
            .push(Event::Disconnect { user: user.into() });
    }
    fn reset(&self, room: &str, frame: &Utf8Bytes) {
        let frame = parse(frame);
        self.events.lock().push(Event::Reset {
            room: room.into(),
            frame,
        });
    }
}

impl Recorder {
    /// Waits (bounded) until `want` events match, then returns them.
    async fn wait_for(&self, want: usize, matches: impl Fn(&Event) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen: Vec<Event> = self
                .events
                .lock()
                .iter()
                .filter(|e| matches(e))
                .cloned()
                .collect();
            if seen.len() >= want || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn publications(&self, room: &str) -> Vec<(u64, Value)> {
        self.events
            .lock()
            .iter()
            .filter_map(|e| match e {
                Event::Publication {
                    room: r,
                    offset,
                    frame,
                } if r == room => Some((*offset, frame.clone())),
                _ => None,
            })
            .collect()
    }
}

struct Node {
    broker: Arc<dyn Broker>,
    presence: Arc<dyn Presence>,
    seen: Arc<Recorder>,
}

impl Node {
    fn new<E: Broker + Presence>(engine: Arc<E>, seen: Arc<Recorder>) -> Self {
        Self {
            broker: engine.clone(),
            presence: engine,
            seen,
        }
    }
}

fn data(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

const LIMITS: HistoryBudget = HistoryBudget::new(10, Duration::from_secs(300));

fn memory_node(limits: HistoryBudget) -> (Arc<MemoryBroker>, Node) {
    let seen = Arc::new(Recorder::default());
    let broker = Arc::new(MemoryBroker::new(limits, seen.clone()));
    (broker.clone(), Node::new(broker, seen))
}

// ---- the contract -------------------------------------------------------------------------

/// Offsets start at 1 and rise by one; every subscribed node sees them in that order with the
/// frame it was published with.
async fn offsets_are_contiguous_and_ordered(nodes: &[Node]) {
    for node in nodes {
        node.broker.subscribe("c:order").await.unwrap();
    }
    let mut acked = Vec::new();
    for i in 0..200 {
        let from = &nodes[i % nodes.len()];
        acked.push(
            from.broker
                .publish("c:order", "alice", &data(&format!("{{\"i\":{i}}}")))
                .await
                .unwrap(),
        );
    }
    assert_eq!(acked, (1..=200).collect::<Vec<u64>>());
    for node in nodes {
        let got = node
            .seen
            .wait_for(
                200,
                |e| matches!(e, Event::Publication { room, .. } if room == "c:order"),
            )
            .await;
        assert_eq!(got.len(), 200);
        let pubs = node.seen.publications("c:order");
        for (i, (offset, frame)) in pubs.iter().enumerate() {
            assert_eq!(*offset, i as u64 + 1);
            assert_eq!(frame["type"], "message");
            assert_eq!(frame["room"], "c:order");
            assert_eq!(frame["offset"], *offset);
            assert_eq!(frame["from"], "alice");
            assert_eq!(
                frame["data"]["i"], i as u64,
                "data passes through unchanged"
            );
            assert!(frame["ts"].as_u64().unwrap() > 1_600_000_000_000);
        }
    }
    for node in nodes {
        node.broker.unsubscribe("c:order").await;
    }
}

/// Concurrent publishers still get distinct, gap-free offsets.
async fn concurrent_publishers_get_distinct_offsets(nodes: &[Node]) {
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for p in 0..4 {
            let broker = node.broker.clone();
            tasks.push(tokio::spawn(async move {
                let mut offsets = Vec::new();
                for i in 0..50 {
                    let body = data(&format!("{{\"n\":{n},\"p\":{p},\"i\":{i}}}"));
                    offsets.push(broker.publish("c:concurrent", "bob", &body).await.unwrap());
                }
                offsets
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let total = 200 * nodes.len() as u64;
    assert_eq!(all, (1..=total).collect::<Vec<u64>>());
}

/// Resume: recovered with exactly the missed messages inside the window; not recovered when
/// the window no longer reaches back, or when the epoch differs.
async fn resume_replays_exactly_what_was_missed(nodes: &[Node]) {
    let broker = &nodes[0].broker;
    let first = broker.history("c:resume", None).await.unwrap();
    assert_eq!(first.top, 0);
    assert!(!first.recovered);
    for i in 1..=15u64 {
        broker
            .publish("c:resume", "carol", &data(&i.to_string()))
            .await
            .unwrap();
    }
    let epoch = first.epoch.clone();
    // History keeps the last 10: offsets 6..=15. since=5 needs 6.. → recovered.
    for node in nodes {
        let h = node
            .broker
            .history(
                "c:resume",
                Some(&Resume {
                    since: 5,
                    epoch: epoch.to_string(),
                }),
            )
            .await
            .unwrap();
        assert_eq!(h.epoch, epoch, "every node agrees on the epoch");
        assert_eq!(h.top, 15);
        assert!(h.recovered);
        let offsets: Vec<u64> = h
            .replay
            .iter()
            .map(|f| parse(f)["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, (6..=15).collect::<Vec<u64>>());
    }
    // since=4 needs offset 5, which is gone.
    let gap = broker
        .history(
            "c:resume",
            Some(&Resume {
                since: 4,
                epoch: epoch.to_string(),
            }),
        )
        .await
        .unwrap();
    assert!(!gap.recovered);
    assert!(gap.replay.is_empty());
    // Up to date: recovered with nothing to replay.
    let current = broker
        .history(
            "c:resume",
            Some(&Resume {
                since: 15,
                epoch: epoch.to_string(),
            }),
        )
        .await
        .unwrap();
    assert!(current.recovered);
    assert!(current.replay.is_empty());
    // A position from the future or another epoch is not trusted.
    let future = broker
        .history(
            "c:resume",
            Some(&Resume {
                since: 99,
                epoch: epoch.to_string(),
            }),
        )
        .await
        .unwrap();
    assert!(!future.recovered);
    let far = broker
        .history(
            "c:resume",
            Some(&Resume {
                since: u64::MAX,
                epoch: epoch.to_string(),
            }),
        )
        .await
        .unwrap();
    assert!(
        !far.recovered,
        "a position past any offset is never recovered"
    );
    let other = broker
        .history(
            "c:resume",
            Some(&Resume {
                since: 14,
                epoch: "not-the-epoch".into(),
            }),
        )
        .await
        .unwrap();
    assert!(!other.recovered);
    assert!(other.replay.is_empty());
}

/// A direct message reaches the user on every node watching it, with sender and data intact.
async fn direct_reaches_every_node(nodes: &[Node]) {
    for node in nodes {
        node.broker.watch_user("dave").await.unwrap();
    }
    nodes[0]
        .broker
        .send_direct("dave", "erin", &data(r#"{"hi":true}"#))
        .await
        .unwrap();
    for node in nodes {
        let got = node
            .seen
            .wait_for(
                1,
                |e| matches!(e, Event::Direct { user, .. } if user == "dave"),
            )
            .await;
        let [Event::Direct { frame, .. }] = got.as_slice() else {
            panic!("one direct, got {got:?}")
        };
        assert_eq!(frame["type"], "direct");
        assert_eq!(frame["from"], "erin");
        assert_eq!(frame["data"]["hi"], true);
    }
    nodes[0].broker.disconnect_user("dave").await.unwrap();
    for node in nodes {
        let got = node
            .seen
            .wait_for(
                1,
                |e| matches!(e, Event::Disconnect { user } if user == "dave"),
            )
            .await;
        assert_eq!(got.len(), 1, "every node is told to disconnect dave");
    }
    for node in nodes {
        node.broker.unwatch_user("dave").await;
    }
}

/// Presence: join announced once per user, leave once, the list is sorted and shared. Events
/// are numbered 1, 2, 3 in the room, and a list carries the number of the last event it
/// reflects, so a client can order the two.
async fn presence_announces_first_join_and_last_leave(nodes: &[Node]) {
    let room = "c:presence";
    for node in nodes {
        node.broker.subscribe(room).await.unwrap();
    }
    nodes[0].presence.add(room, "zoe").await.unwrap();
    nodes[nodes.len() - 1]
        .presence
        .add(room, "adam")
        .await
        .unwrap();
    nodes[0].presence.add(room, "zoe").await.unwrap(); // already present: silent
    for node in nodes {
        let list = node.presence.list(room).await.unwrap();
        assert_eq!(
            (list.users, list.seq),
            (vec!["adam".into(), "zoe".into()], 2)
        );
    }
    nodes[0].presence.remove(room, "zoe").await;
    nodes[0].presence.remove(room, "zoe").await; // already gone: silent
    for node in nodes {
        let got = node
            .seen
            .wait_for(
                3,
                |e| matches!(e, Event::Presence { room: r, .. } if r == room),
            )
            .await;
        let kinds: Vec<(String, String)> = got
            .iter()
            .map(|e| match e {
                Event::Presence { frame, .. } => (
                    frame["type"].as_str().unwrap().into(),
                    frame["user"].as_str().unwrap().into(),
                ),
                _ => unreachable!(),
            })
            .collect();
        let seqs: Vec<u64> = got
            .iter()
            .map(|e| match e {
                Event::Presence { frame, .. } => frame["seq"].as_u64().unwrap(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3], "numbered in order: {kinds:?}");
        let zoe: Vec<&str> = kinds
            .iter()
            .filter(|(_, u)| u == "zoe")
            .map(|(t, _)| t.as_str())
            .collect();
        assert_eq!(
            zoe,
            ["presence_join", "presence_leave"],
            "on every node, in order"
        );
        assert_eq!(kinds.len(), 3, "no repeated announcements: {kinds:?}");
        let list = node.presence.list(room).await.unwrap();
        assert_eq!((list.users, list.seq), (vec!["adam".to_owned()], 3));
    }
    // A node removes what it added: presence is held per node.
    nodes[nodes.len() - 1].presence.remove(room, "adam").await;
    assert!(nodes[0].presence.list(room).await.unwrap().users.is_empty());
    for node in nodes {
        node.broker.unsubscribe(room).await;
    }
}

/// A publish key is honoured cluster-wide: the same key in the same room, from any node, is
/// ordered once and answers the first offset; keys are per room; unkeyed publishes go on.
async fn publish_keys_order_a_publication_once(nodes: &[Node]) {
    let room = "c:keys";
    for node in nodes {
        node.broker.subscribe(room).await.unwrap();
    }
    let once = |n: usize, key: &str, body: &str| {
        let broker = nodes[n % nodes.len()].broker.clone();
        let (key, body) = (key.to_owned(), data(body));
        async move {
            broker
                .publish_once(room, "kay", &body, Some(&key), None)
                .await
                .unwrap()
        }
    };
    assert_eq!(once(0, "k1", "1").await, (1, false));
    assert_eq!(
        once(1, "k1", "1").await,
        (1, true),
        "a retry on another node"
    );
    assert_eq!(once(2, "k1", "1").await, (1, true));
    assert_eq!(
        nodes[0]
            .broker
            .publish(room, "kay", &data("2"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(once(1, "k2", "3").await, (3, false));
    let body = data("4");
    let other = nodes[0]
        .broker
        .publish_once("c:keys-2", "kay", &body, Some("k1"), None);
    assert_eq!(other.await.unwrap(), (1, false), "keys are per room");
    for node in nodes {
        node.seen
            .wait_for(
                3,
                |e| matches!(e, Event::Publication { room: r, .. } if r == room),
            )
            .await;
        let offsets: Vec<u64> = node
            .seen
            .publications(room)
            .iter()
            .map(|(o, _)| *o)
            .collect();
        assert_eq!(offsets, [1, 2, 3], "each publication delivered once");
        node.broker.unsubscribe(room).await;
    }
}

/// The application's backend's message id (publish proxy) is in the frame every node delivers
/// and in the history a resume replays, keyed or not; a publication without one has none.
async fn message_ids_travel_with_the_frame(nodes: &[Node]) {
    let room = "c:ids";
    for node in nodes {
        node.broker.subscribe(room).await.unwrap();
    }
    let body = data(r#"{"t":"a"}"#);
    let first = nodes[0]
        .broker
        .publish_once(room, "ida", &body, None, Some("m-1"));
    assert_eq!(first.await.unwrap(), (1, false));
    let last = &nodes[nodes.len() - 1];
    let keyed = last
        .broker
        .publish_once(room, "ida", &body, Some("k"), Some("m\"2"));
    assert_eq!(keyed.await.unwrap(), (2, false));
    assert_eq!(
        nodes[0].broker.publish(room, "ida", &body).await.unwrap(),
        3
    );
    let want = [Some("m-1"), Some("m\"2"), None];
    for node in nodes {
        node.seen
            .wait_for(
                3,
                |e| matches!(e, Event::Publication { room: r, .. } if r == room),
            )
            .await;
        let ids: Vec<Option<String>> = node
            .seen
            .publications(room)
            .iter()
            .map(|(_, f)| f["id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            ids,
            want.map(|i| i.map(str::to_owned)),
            "delivered with the id"
        );
    }
    let since = nodes[0].broker.history(room, None).await.unwrap();
    let resume = Resume {
        epoch: since.epoch.to_string(),
        since: 0,
    };
    let replay = nodes[0].broker.history(room, Some(&resume)).await.unwrap();
    let ids: Vec<Option<String>> = replay
        .replay
        .iter()
        .map(|f| parse(f)["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        ids,
        want.map(|i| i.map(str::to_owned)),
        "kept in history with the id"
    );
    for node in nodes {
        node.broker.unsubscribe(room).await;
    }
}

/// Pages read the same history from every node: consecutive offsets from the requested end,
/// `more` when the range holds more, nothing for a room never used. A room matching the
/// fixtures' durable pattern (Redis engines: a stream) pages back past the resume history's 10.
async fn pages_read_the_history_from_any_node(nodes: &[Node]) {
    for _ in 0..8 {
        nodes[0]
            .broker
            .publish("c:page", "u", &data("1"))
            .await
            .unwrap();
    }
    for _ in 0..15 {
        nodes[0]
            .broker
            .publish("c:durable:1", "u", &data("1"))
            .await
            .unwrap();
    }
    let page = |after, before, limit, order| PageRequest {
        after,
        before,
        limit,
        max_bytes: usize::MAX,
        order,
    };
    let offsets = |p: &Page| -> Vec<u64> {
        p.frames
            .iter()
            .map(|f| parse(f)["offset"].as_u64().unwrap())
            .collect()
    };
    for node in nodes {
        let read = |room: &'static str, request: PageRequest| {
            let broker = node.broker.clone();
            async move { broker.page(room, &request).await.unwrap() }
        };
        let newest = read("c:page", page(0, u64::MAX, 3, Order::NewestFirst)).await;
        let newest = newest.expect("a used room");
        assert_eq!(
            (offsets(&newest), newest.more, newest.top),
            (vec![8, 7, 6], true, 8)
        );
        let oldest = read("c:page", page(5, u64::MAX, 10, Order::OldestFirst)).await;
        let oldest = oldest.unwrap();
        assert_eq!((offsets(&oldest), oldest.more), (vec![6, 7, 8], false));
        let inner = read("c:page", page(2, 6, 2, Order::OldestFirst)).await;
        assert_eq!(offsets(&inner.unwrap()), [3, 4]);
        let none = read("c:never", page(0, u64::MAX, 3, Order::NewestFirst)).await;
        assert!(none.is_none(), "an unknown room");
        let deep = read("c:durable:1", page(0, u64::MAX, 100, Order::NewestFirst)).await;
        let deep = offsets(&deep.unwrap());
        assert!(deep.len() >= 10, "{deep:?}");
        assert_eq!(
            deep,
            (16 - deep.len() as u64..=15).rev().collect::<Vec<_>>()
        );
    }
}

async fn run_contract(nodes: &[Node]) {
    message_ids_travel_with_the_frame(nodes).await;
    pages_read_the_history_from_any_node(nodes).await;
    offsets_are_contiguous_and_ordered(nodes).await;
    publish_keys_order_a_publication_once(nodes).await;
    concurrent_publishers_get_distinct_offsets(nodes).await;
    resume_replays_exactly_what_was_missed(nodes).await;
    direct_reaches_every_node(nodes).await;
    presence_announces_first_join_and_last_leave(nodes).await;
}

// ---- engines -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_engine_keeps_the_contract() {
    let (_, node) = memory_node(LIMITS);
    run_contract(&[node]).await;
}

/// Three Redis-engine nodes on one private Redis: the same contract, across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_keeps_the_contract_across_three_nodes() {
    contract_on_three_redis_nodes(BATCHED).await;
}

/// The same with batching off (`redis.publish_batch_max = 1`): one PUBLISH script per
/// publication, the path cluster mode always takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_keeps_the_contract_without_batching() {
    let one = PublishBatch {
        max: 1,
        pipeline: 1,
    };
    contract_on_three_redis_nodes(one).await;
}

async fn contract_on_three_redis_nodes(batch: PublishBatch) {
    let redis = RedisServer::start();
    let stop = CancellationToken::new();
    let prefix = unique_prefix();
    let nodes: Vec<Node> = (0..3)
        .map(|i| redis_node_with(&redis, &prefix, i, &stop, batch))
        .collect();
    for node in &nodes {
        wait_available(&*node.broker).await;
    }
    run_contract(&nodes).await;
    stop.cancel();
}

/// Stopping the node ends the publish batcher: a publish then fails at once with
/// `unavailable` instead of waiting out the command timeout, and is never acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_publisher_stops_with_the_node() {
    let redis = RedisServer::start();
    let stop = CancellationToken::new();
    let node = redis_node(&redis, &unique_prefix(), 0, &stop);
    wait_available(&*node.broker).await;
    assert_eq!(node.broker.publish("r", "u", &data("1")).await.unwrap(), 1);
    stop.cancel();
    // The task notices the cancellation at its next turn.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let err = node.broker.publish("r", "u", &data("2")).await.unwrap_err();
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// The same contract on three nodes sharing a three-master Redis Cluster (cluster mode: hash
/// tags, sharded pub/sub, one subscription connection per master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_engine_keeps_the_contract_across_three_nodes() {
    let cluster = RedisCluster::start(3, 0);
    let stop = CancellationToken::new();
    let prefix = unique_prefix();
    let nodes: Vec<Node> = (0..3)
        .map(|i| cluster_node(&cluster, &prefix, i, &stop))
        .collect();
    for node in &nodes {
        wait_available(&*node.broker).await;
    }
    run_contract(&nodes).await;
    stop.cancel();
}

fn cluster_node(cluster: &RedisCluster, prefix: &str, i: usize, stop: &CancellationToken) -> Node {
    let seen = Arc::new(Recorder::default());
    let opts = options(String::new(), prefix, i, BATCHED);
    let broker = RedisBroker::start_cluster(&cluster.seeds(), opts, seen.clone(), stop.clone());
    Node::new(Arc::new(broker.unwrap()), seen)
}

/// The default batching: up to 128 publications per script call, two calls in flight.
const BATCHED: PublishBatch = PublishBatch {
    max: 128,
    pipeline: 2,
};

fn options(url: String, prefix: &str, i: usize, publish_batch: PublishBatch) -> RedisOptions {
    RedisOptions {
        url,
        prefix: prefix.into(),
        node_id: format!("n{i}"),
        history: LIMITS,
        presence_lease: Duration::from_secs(15),
        unsubscribe_delay: Duration::from_millis(50),
        command_timeout: Duration::from_secs(2),
        publish_batch,
        retention: Retention {
            durable: vec![DurableRule {
                pattern: "c:durable:*".into(),
                max_age: Duration::from_secs(3600),
                max_count: 100,
            }],
            ..Retention::default()
        },
    }
}

fn redis_node(redis: &RedisServer, prefix: &str, i: usize, stop: &CancellationToken) -> Node {
    redis_node_with(redis, prefix, i, stop, BATCHED)
}

fn redis_node_with(
    redis: &RedisServer,
    prefix: &str,
    i: usize,
    stop: &CancellationToken,
    batch: PublishBatch,
) -> Node {
    let seen = Arc::new(Recorder::default());
    let opts = options(redis.url(), prefix, i, batch);
    let broker = Arc::new(RedisBroker::start(opts, seen.clone(), stop.clone()).unwrap());
    Node::new(broker, seen)
}

async fn wait_available(broker: &dyn Broker) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !broker.available() {
        assert!(Instant::now() < deadline, "redis engine never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Memory-engine specifics: history expires by TTL; the log of a room nobody is in keeps its
/// epoch and top for the epoch TTL (its numbering goes on, an old position is told it is not
/// recovered), and is then freed, so memory returns to its baseline after churn; a subscribed
/// log is kept.
#[tokio::test]
async fn memory_engine_frees_idle_rooms_after_ttl() {
    let ttl = Duration::from_secs(60);
    let epoch_ttl = Duration::from_secs(600);
    let seen = Arc::new(Recorder::default());
    let retention = Retention {
        epoch_ttl,
        ..Retention::default()
    };
    let memory = Arc::new(
        MemoryBroker::new(HistoryBudget::new(10, ttl), seen.clone()).with_retention(retention),
    );
    let node = Node::new(memory.clone(), seen);
    for r in 0..1000 {
        node.broker
            .publish(&format!("churn:{r}"), "u", &data("1"))
            .await
            .unwrap();
    }
    node.broker.subscribe("kept").await.unwrap();
    node.broker.publish("kept", "u", &data("1")).await.unwrap();
    assert_eq!(memory.log_count(), 1001);

    // Inside the TTL nothing goes: a reconnecting client could still resume.
    memory.sweep(Instant::now());
    assert_eq!(memory.log_count(), 1001);
    let epoch = node.broker.history("churn:7", None).await.unwrap().epoch;
    let resume = |since| Resume {
        since,
        epoch: epoch.to_string(),
    };
    let h = node
        .broker
        .history("churn:7", Some(&resume(0)))
        .await
        .unwrap();
    assert!(h.recovered);

    // Past the history TTL the messages are gone but the epoch and top stay.
    memory.sweep(Instant::now() + ttl + Duration::from_secs(1));
    assert_eq!(memory.log_count(), 1001, "epochs outlive the history");
    let idle = node
        .broker
        .history("churn:7", Some(&resume(0)))
        .await
        .unwrap();
    assert!(!idle.recovered, "the message itself expired");
    assert_eq!((&*idle.epoch, idle.top), (&*epoch, 1));
    let next = node
        .broker
        .publish("churn:7", "u", &data("2"))
        .await
        .unwrap();
    assert_eq!(next, 2, "numbering goes on in the same epoch");

    // Past the epoch TTL an idle room is freed and starts over in a new epoch.
    memory.sweep(Instant::now() + epoch_ttl + ttl + Duration::from_secs(1));
    assert_eq!(
        memory.log_count(),
        1,
        "only the subscribed room's log remains"
    );
    let kept = node.broker.history("kept", None).await.unwrap();
    assert_eq!(kept.top, 1, "a subscribed room keeps its offsets");
    let fresh = node
        .broker
        .history("churn:7", Some(&resume(1)))
        .await
        .unwrap();
    assert!(!fresh.recovered);
    assert_eq!(fresh.top, 0);
    assert_ne!(fresh.epoch, epoch);

    node.broker.unsubscribe("kept").await;
    memory.sweep(Instant::now() + (epoch_ttl + ttl) * 3);
    assert_eq!(memory.log_count(), 0);
    assert_eq!(memory.history_bytes(), 0, "nothing left counted");
}

/// Rooms kept only for their epoch count in `history.max_bytes`: past it, the sweep frees
/// idle ones at once (their numbering restarts in a new epoch) rather than the node growing.
/// A room never published to (only joined) has no numbering to keep and is freed at once.
#[tokio::test]
async fn memory_engine_drops_idle_epochs_past_its_byte_budget() {
    let (memory, node) = memory_node(HistoryBudget::new(10, Duration::from_secs(300)));
    node.broker.history("joined:only", None).await.unwrap();
    node.broker
        .publish("published", "u", &data("1"))
        .await
        .unwrap();
    memory.sweep(Instant::now() + Duration::from_secs(301));
    assert_eq!(memory.log_count(), 1, "the published room keeps its epoch");

    // No history kept (size 0): every log is an epoch only, 1000 of them over a 16 KiB budget.
    let limits = HistoryBudget {
        max_bytes: 16 * 1024,
        ..HistoryBudget::new(0, Duration::from_secs(300))
    };
    let (memory, node) = memory_node(limits);
    for r in 0..1000 {
        let room = format!("idle:{r}");
        node.broker.publish(&room, "u", &data("1")).await.unwrap();
    }
    assert_eq!(memory.log_count(), 1000);
    assert!(memory.history_bytes() > 16 * 1024);
    memory.sweep(Instant::now());
    assert_eq!(
        memory.log_count(),
        0,
        "idle rooms over the budget are dropped"
    );
    assert_eq!(memory.history_bytes(), 0);
}

/// Redis restarts empty under two subscribed nodes: both reconnect on their own, announce the
/// restart (new epoch) and then deliver the new numbering from 1, none missed, even the ones
/// published before their subscription was back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_rides_out_a_redis_restart() {
    let mut redis = RedisServer::start();
    let stop = CancellationToken::new();
    let prefix = unique_prefix();
    let nodes: Vec<Node> = (0..2)
        .map(|i| redis_node(&redis, &prefix, i, &stop))
        .collect();
    for node in &nodes {
        wait_available(&*node.broker).await;
        node.broker.subscribe("c:restart").await.unwrap();
    }
    let old = nodes[0]
        .broker
        .history("c:restart", None)
        .await
        .unwrap()
        .epoch;
    for i in 0..3 {
        nodes[0]
            .broker
            .publish("c:restart", "u", &data(&i.to_string()))
            .await
            .unwrap();
    }
    // Everything acked so far has reached both nodes. (Killed a moment earlier, Redis could
    // take a message it already acked down with it, with the history it would be read from.)
    for node in &nodes {
        node.seen
            .wait_for(3, |e| matches!(e, Event::Publication { .. }))
            .await;
    }
    redis.kill();
    let refused = nodes[0].broker.publish("c:restart", "u", &data("9")).await;
    assert!(refused.is_err(), "no ack without Redis");
    redis.restart();
    // Publish as soon as commands work again, before the subscriptions are necessarily back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acked = Vec::new();
    while acked.len() < 3 {
        assert!(Instant::now() < deadline, "publishing never recovered");
        match nodes[0].broker.publish("c:restart", "u", &data("1")).await {
            Ok(offset) => acked.push(offset),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(
        acked,
        vec![1, 2, 3],
        "numbering restarts with the lost history"
    );
    for node in &nodes {
        wait_available(&*node.broker).await;
        let got = node
            .seen
            .wait_for(7, |e| {
                matches!(e, Event::Publication { .. } | Event::Reset { .. })
            })
            .await;
        let [Event::Reset { room, frame }] = &got[3..4] else {
            panic!("expected the restart notice after 3 publications: {got:?}")
        };
        assert_eq!(room, "c:restart");
        assert_eq!(frame["type"], "joined");
        assert_ne!(frame["epoch"], old.as_ref(), "a new epoch");
        assert_eq!(frame["offset"], 0);
        let offsets: Vec<u64> = node
            .seen
            .publications("c:restart")
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(offsets, vec![1, 2, 3, 1, 2, 3]);
    }
    stop.cancel();
}

/// Memory-engine specifics: history is bounded in bytes per room (oldest messages go first) and
/// for the whole node, where the rooms published to least recently lose their history first,
/// so their resumes answer `recovered: false` while recent rooms still recover.
#[tokio::test]
async fn memory_engine_keeps_history_under_its_byte_budgets() {
    let limits = HistoryBudget {
        max_room_bytes: 64 * 1024,
        max_bytes: 1024 * 1024,
        ..HistoryBudget::new(100, Duration::from_secs(300))
    };
    let (memory, node) = memory_node(limits);
    let big = data(&format!("\"{}\"", "x".repeat(16 * 1024)));
    let resume_from_start = |epoch: &str| Resume {
        since: 0,
        epoch: epoch.to_owned(),
    };
    // One room: 10 messages of 16 KiB, only the last 3 fit in 64 KiB with their envelopes.
    for _ in 0..10 {
        node.broker.publish("one", "u", &big).await.unwrap();
    }
    let one = node.broker.history("one", None).await.unwrap();
    let kept = node
        .broker
        .history(
            "one",
            Some(&Resume {
                since: 7,
                ..resume_from_start(&one.epoch)
            }),
        )
        .await
        .unwrap();
    assert!(
        kept.recovered && kept.replay.len() == 3,
        "{}",
        kept.replay.len()
    );
    let older = node
        .broker
        .history(
            "one",
            Some(&Resume {
                since: 6,
                ..resume_from_start(&one.epoch)
            }),
        )
        .await
        .unwrap();
    assert!(!older.recovered, "the fourth newest was dropped for bytes");

    // Many rooms: 200 x 16 KiB is 3.2 MiB against a 1 MiB budget.
    for r in 0..200 {
        node.broker
            .publish(&format!("cycle:{r}"), "u", &big)
            .await
            .unwrap();
        assert!(
            memory.history_bytes() <= 1024 * 1024,
            "{}",
            memory.history_bytes()
        );
    }
    let early = node.broker.history("cycle:0", None).await.unwrap();
    let early = node
        .broker
        .history("cycle:0", Some(&resume_from_start(&early.epoch)))
        .await
        .unwrap();
    assert!(
        !early.recovered,
        "the least recently published room lost its history"
    );
    let late = node.broker.history("cycle:199", None).await.unwrap();
    let late = node
        .broker
        .history("cycle:199", Some(&resume_from_start(&late.epoch)))
        .await
        .unwrap();
    assert!(late.recovered && late.replay.len() == 1);
}
