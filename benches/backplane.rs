//! The Redis backplane's capacity (issue goal 5): ordered publishes per second through one
//! Redis, driven through the real engine (`RedisBroker`: the publish batcher, the scripts, the
//! subscription and the per-room sequencing) without WebSockets in front, so that on a 2-core
//! machine Redis can have one core to itself and this process the other. WebSocket traffic
//! through Redis is measured by `scripts/bench redis`; this isolates what one Redis can order.
//! `scripts/bench backplane` starts a private `redis-server` and pins the two processes.
//!
//! Two engines ("nodes") share one Redis and both subscribe to every room, so each publish is
//! delivered to two nodes, as in rooms with members on two instances. Publisher tasks on both
//! publish round-robin over the rooms, each waiting for its ack before the next publish. Each
//! node checks that every room's offsets reach it as 1, 2, 3, ... After the publishers stop,
//! every acked publish must have reached both nodes, or the run fails (exit 1).
//!
//! Environment: `BACKPLANE_REDIS_URL` (required), `BACKPLANE_ROOMS` (1000),
//! `BACKPLANE_PUBLISHERS` per node (256), `BACKPLANE_SECS` measured (10, after 2 of warm-up),
//! `BACKPLANE_BATCH_MAX` (128; 1 = one script call per publish), `BACKPLANE_THREADS` (1).
//! Prints one JSON object.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use roomcast::broker::memory::HistoryBudget;
use roomcast::broker::redis::{PublishBatch, RedisBroker, RedisOptions};
use roomcast::broker::{Broker, Deliver};
use serde_json::json;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;

const WARM_UP: Duration = Duration::from_secs(2);
/// How long the end waits for deliveries still in flight before counting them lost.
const SETTLE: Duration = Duration::from_secs(10);

fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a whole number")),
        Err(_) => default,
    }
}

/// What one node received: per room the last offset delivered, and the count of deliveries
/// that did not follow it (a gap, a repeat or a step back).
struct Seen {
    last: Mutex<HashMap<String, u64>>,
    delivered: AtomicU64,
    disorder: AtomicU64,
}

impl Seen {
    fn new(rooms: &[String]) -> Self {
        Self {
            last: Mutex::new(rooms.iter().map(|r| (r.clone(), 0)).collect()),
            delivered: AtomicU64::new(0),
            disorder: AtomicU64::new(0),
        }
    }
}

impl Deliver for Seen {
    fn publication(&self, room: &str, offset: u64, _frame: &Utf8Bytes) {
        let mut last = self.last.lock();
        let Some(last) = last.get_mut(room) else {
            self.disorder.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if offset != *last + 1 {
            self.disorder.fetch_add(1, Ordering::Relaxed);
        }
        *last = offset;
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
    fn direct(&self, _user: &str, _frame: &Utf8Bytes) {}
    fn presence(&self, _room: &str, _frame: &Utf8Bytes) {}
    fn reset(&self, _room: &str, _frame: &Utf8Bytes) {
        self.disorder.fetch_add(1, Ordering::Relaxed);
    }
    fn disconnect(&self, _user: &str) {}
}

/// Publishes and acks, counted by every publisher task.
#[derive(Default)]
struct Counts {
    acked: AtomicU64,
    errors: AtomicU64,
}

/// User + system CPU seconds of process `pid` so far (`/proc/<pid>/stat`).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|err| panic!("/proc/{pid}/stat: {err}"));
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    ticks / 100.0
}

async fn redis_pid(url: &str) -> String {
    let client = redis::Client::open(url).expect("BACKPLANE_REDIS_URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis reachable");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .expect("INFO server");
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .expect("INFO names the process")
        .trim()
        .to_owned()
}

fn main() {
    let threads = setting("BACKPLANE_THREADS", 1) as usize;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let url = std::env::var("BACKPLANE_REDIS_URL")
        .expect("BACKPLANE_REDIS_URL names the Redis to measure");
    let rooms = setting("BACKPLANE_ROOMS", 1000) as usize;
    let publishers = setting("BACKPLANE_PUBLISHERS", 256) as usize;
    let secs = setting("BACKPLANE_SECS", 10);
    let batch_max = setting("BACKPLANE_BATCH_MAX", 128) as usize;
    let redis_pid = redis_pid(&url).await;
    let prefix = format!("backplane{:08x}", rand::random::<u32>());
    let rooms: Vec<String> = (0..rooms).map(|r| format!("room{r}")).collect();
    let stop = CancellationToken::new();

    let mut nodes = Vec::new();
    for n in 0..2 {
        let seen = Arc::new(Seen::new(&rooms));
        let opts = RedisOptions {
            url: url.clone(),
            prefix: prefix.clone(),
            node_id: format!("n{n}"),
            history: HistoryBudget::new(100, Duration::from_secs(300)),
            presence_lease: Duration::from_secs(15),
            unsubscribe_delay: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            publish_batch: PublishBatch {
                max: batch_max,
                pipeline: 2,
            },
            retention: Default::default(),
        };
        let broker = RedisBroker::start(opts, seen.clone(), stop.clone()).expect("redis url");
        let broker: Arc<dyn Broker> = Arc::new(broker);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !broker.available() {
            assert!(
                Instant::now() < deadline,
                "the engine never connected to {url}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for room in &rooms {
            broker.subscribe(room).await.expect("subscribe");
            // The room's position before the first publish, as a joining member would read it.
            broker.history(room, None).await.expect("history");
        }
        nodes.push((broker, seen));
    }

    let data: Arc<RawValue> =
        Arc::from(RawValue::from_string(json!({ "text": "x".repeat(88) }).to_string()).unwrap());
    let counts = Arc::new(Counts::default());
    let running = Arc::new(AtomicBool::new(true));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (n, (broker, _)) in nodes.iter().enumerate() {
        for p in 0..publishers {
            let (broker, rooms, data) = (broker.clone(), rooms.clone(), data.clone());
            let (counts, running, measuring) = (counts.clone(), running.clone(), measuring.clone());
            let from = format!("n{n}p{p}");
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut r = (n * publishers + p) % rooms.len();
                while running.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    match broker.publish(&rooms[r], &from, &data).await {
                        Ok(_) => counts.acked.fetch_add(1, Ordering::Relaxed),
                        Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
                    };
                    if measuring.load(Ordering::Relaxed) {
                        latencies.push(sent.elapsed().as_micros() as u32);
                    }
                    r = (r + 1) % rooms.len();
                }
                latencies
            }));
        }
    }

    tokio::time::sleep(WARM_UP).await;
    measuring.store(true, Ordering::Relaxed);
    let (acked0, redis0, own0) = (
        counts.acked.load(Ordering::Relaxed),
        cpu_seconds(&redis_pid),
        cpu_seconds("self"),
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (acked1, redis1, own1) = (
        counts.acked.load(Ordering::Relaxed),
        cpu_seconds(&redis_pid),
        cpu_seconds("self"),
    );
    let window = started.elapsed().as_secs_f64();
    measuring.store(false, Ordering::Relaxed);
    running.store(false, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort_unstable();
    let percentile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |&us| f64::from(us) / 1000.0)
    };

    // Every acked publish must reach both nodes.
    let acked = counts.acked.load(Ordering::Relaxed);
    let deadline = Instant::now() + SETTLE;
    let delivered = || -> Vec<u64> {
        nodes
            .iter()
            .map(|(_, seen)| seen.delivered.load(Ordering::Relaxed))
            .collect()
    };
    while delivered().iter().any(|&d| d < acked) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = delivered();
    let lost: u64 = delivered.iter().map(|&d| acked.saturating_sub(d)).sum();
    let disorder: u64 = nodes
        .iter()
        .map(|(_, seen)| seen.disorder.load(Ordering::Relaxed))
        .sum();
    stop.cancel();

    let in_window = (acked1 - acked0) as f64;
    let redis_cpu = redis1 - redis0;
    let report = json!({
        "rooms": rooms.len(),
        "publishers_per_node": publishers,
        "batch_max": batch_max,
        "window_secs": window,
        "acked_per_sec": in_window / window,
        "redis_cpu_share": redis_cpu / window,
        "redis_us_per_publish": 1e6 * redis_cpu / in_window,
        "publishes_per_redis_cpu_second": in_window / redis_cpu,
        "bench_cpu_share": (own1 - own0) / window,
        "ack_p50_ms": percentile(0.5),
        "ack_p99_ms": percentile(0.99),
        "acked": acked,
        "errors": counts.errors.load(Ordering::Relaxed),
        "delivered_per_node": delivered,
        "lost": lost,
        "out_of_order": disorder,
    });
    println!("{report}");
    if lost > 0 || disorder > 0 {
        eprintln!("FAIL: {lost} acked publishes not delivered, {disorder} out of order");
        std::process::exit(1);
    }
}
