//! Prometheus metrics at `GET /metrics`. Counters and histograms are recorded where things
//! happen, through the `metrics` facade (a relaxed atomic add each, cheap enough for the hot
//! path because fan-out counts once per room message, not once per recipient); gauges are
//! read from the node when scraped.
//!
//! Names (all prefixed `roomcast_`):
//! - gauges, labelled `node`: `connections`, `rooms`, `users`, `queued_frames` and
//!   `queued_bytes` (what sessions hold, queued or being written), `broker_up`,
//!   `draining`, `worker_threads` (the runtime's, to confirm the `worker_threads` setting);
//! - counters, each present from start-up at zero (every label value too): `frames_in_total`,
//!   `messages_published_total`, `publish_repeats_total` (answered from a publish key),
//!   `deliveries_total`, `direct_messages_total`, `direct_dropped_total` (for a recipient holding
//!   half its budget), `slow_consumer_closes_total`, `closes_total{code}`,
//!   `auth_failures_total{reason}`, `rate_limited_total{kind}`, `publish_errors_total`,
//!   `proxy_header_errors_total{reason}` (`proxy_protocol`: `invalid`, `timeout`, `closed`),
//!   `resumes_total{recovered}` (joins with `resume`: `true` when the missed messages were
//!   replayed), `rebalance_shed_total{reason}` (sessions sent away to even out the cluster:
//!   `auto`, or `api` when an operator asked);
//! - histograms, with fixed buckets (`_bucket{le}`, `_sum`, `_count`) so that they add up across
//!   nodes (`histogram_quantile` over `sum by (le)`) and take constant memory:
//!   `broker_publish_seconds`; `delivery_seconds` (a room message's `ts` to its write on a
//!   recipient's socket, sampled: see `ws::latency`); `redis_publish_batch_size` (publications
//!   per Redis script call, single-Redis mode with batching) and `redis_subscribe_batch_size`
//!   (channels per SUBSCRIBE).
//!
//! **One node per process.** Every series carries a `node` label. Gauges are set per node at
//! each scrape; counters and histograms are the process's (the recorder is process-wide) and
//! get the `node` label of the first node built in the process, once, at install: so a
//! counter's hot path pays nothing for it. A process hosting several nodes (only tests do)
//! reports their counters summed under the first node's id.
//!
//! Every metric has a `# HELP` line (`COUNTERS` and `OTHERS` below). The standard `process_*`
//! metrics (memory, open files and their limit, CPU, threads) are read at each scrape.

use std::sync::{LazyLock, OnceLock};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_process::Collector;

use crate::node::Node;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder, once, labelling every series `node` =
/// `node` (gauges set their own). Later calls (more nodes in one process, as in tests) share
/// it, first node's label included. `None` if another recorder was installed first.
pub fn install(node: &str) -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = builder().map(|b| b.add_global_label("node", node));
            match built.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(%err, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// The recorder's handle, once [`install`] succeeded.
fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get().and_then(Option::as_ref)
}

/// Every counter, with what it counts (its `# HELP` line).
const COUNTERS: &[(&str, &str)] = &[
    (
        "roomcast_frames_in_total",
        "Messages received from clients.",
    ),
    (
        "roomcast_messages_published_total",
        "Messages ordered and published to rooms.",
    ),
    (
        "roomcast_publish_repeats_total",
        "Publishes answered with the offset their publish key already had; nothing published.",
    ),
    (
        "roomcast_deliveries_total",
        "Room messages queued to local members.",
    ),
    (
        "roomcast_direct_messages_total",
        "Direct messages accepted.",
    ),
    (
        "roomcast_direct_dropped_total",
        "Direct messages dropped for a recipient already holding half its outbound budget.",
    ),
    (
        "roomcast_slow_consumer_closes_total",
        "Sessions closed with 4000: outbound queue over its limits, or a write without progress.",
    ),
    (
        "roomcast_publish_errors_total",
        "Publishes the broker could not order (unavailable).",
    ),
    (
        "roomcast_closes_total",
        "Sessions closed by the server, by close code.",
    ),
    (
        "roomcast_auth_failures_total",
        "Refused tokens and origins, by reason.",
    ),
    (
        "roomcast_rate_limited_total",
        "Frames, requests and connections refused by a limit, by kind.",
    ),
    (
        "roomcast_proxy_header_errors_total",
        "Connections from trusted proxies closed for a missing, invalid or late PROXY header.",
    ),
    (
        "roomcast_resumes_total",
        "Joins with resume, by whether the missed messages were replayed (recovered).",
    ),
    (
        "roomcast_rebalance_shed_total",
        "Sessions sent away (goaway) to even out the cluster, by reason: auto, or api.",
    ),
    (
        "roomcast_jwks_refetches_limited_total",
        "Tokens with an unknown kid that fetched no JWKS, one having been fetched within auth.jwks_min_refetch_secs.",
    ),
    (
        "roomcast_deflate_frames_total",
        "Compressions of outgoing frames (permessage-deflate), by mode: shared (once per room frame, whatever the members), or context (once per member).",
    ),
    (
        "roomcast_deflate_bytes_saved_total",
        "Payload bytes compression kept off the wire, summed over every compressed frame sent.",
    ),
    (
        "roomcast_deflate_compressors_total",
        "Context-mode compressors made: one when a socket starts sending, again after its last was dropped as idle.",
    ),
];

/// The label values of the labelled counters, registered at zero with them.
const LABELLED: &[(&str, &str, &[&str])] = &[
    (
        "roomcast_closes_total",
        "code",
        &[
            "1001", "1002", "1007", "1008", "1009", "1011", "4000", "4001", "4003", "4008", "4029",
        ],
    ),
    (
        "roomcast_auth_failures_total",
        "reason",
        &[
            "token_missing",
            "token_invalid",
            "token_expired",
            "token_not_yet_valid",
            "token_too_large",
            "token_wrong_user",
            "origin_forbidden",
        ],
    ),
    (
        "roomcast_rate_limited_total",
        "kind",
        &[
            "inbound",
            "control",
            "fragment",
            "direct",
            "too_many_connections",
            "connect_rate_limited",
            "too_many_sessions",
            "too_many_pending_connections",
        ],
    ),
    (
        "roomcast_proxy_header_errors_total",
        "reason",
        &["invalid", "timeout", "closed"],
    ),
    ("roomcast_resumes_total", "recovered", &["true", "false"]),
    ("roomcast_rebalance_shed_total", "reason", &["auto", "api"]),
    (
        "roomcast_deflate_frames_total",
        "mode",
        &["shared", "context"],
    ),
];

/// Gauges and histograms, with what they show.
const OTHERS: &[(&str, &str)] = &[
    ("roomcast_connections", "Open WebSocket sessions."),
    ("roomcast_rooms", "Rooms with at least one local member."),
    ("roomcast_users", "Users with at least one local session."),
    (
        "roomcast_queued_frames",
        "Frames sessions hold for their clients, being written included.",
    ),
    (
        "roomcast_queued_bytes",
        "Bytes sessions hold for their clients, being written included.",
    ),
    (
        "roomcast_broker_up",
        "1 while the broker can complete writes (readiness), else 0.",
    ),
    ("roomcast_draining", "1 while the node shuts down."),
    ("roomcast_worker_threads", "Threads of the node's runtime."),
    (
        "roomcast_broker_publish_seconds",
        "Time the broker took to order a publish.",
    ),
    (
        "roomcast_delivery_seconds",
        "A room message's ts (publish accepted) to its write on a recipient's socket, sampled.",
    ),
    (
        "roomcast_redis_publish_batch_size",
        "Publications per Redis script call.",
    ),
    (
        "roomcast_redis_subscribe_batch_size",
        "Channels per Redis SUBSCRIBE.",
    ),
];

/// The standard process metrics under their usual names (`process_resident_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_cpu_seconds_total`, …), so the usual
/// dashboards and the alarm at 80 % of the file limit (docs/operations.md) work as they are.
static PROCESS: LazyLock<Collector> = LazyLock::new(|| Collector::new(""));

/// Gives every metric its `# HELP` text and registers every counter (each label value too) at
/// zero, so a dashboard or an alert sees 0, not a missing series, before the first event.
fn describe() {
    PROCESS.describe();
    for (name, help) in COUNTERS {
        metrics::describe_counter!(*name, *help);
        if !LABELLED.iter().any(|(labelled, _, _)| labelled == name) {
            metrics::counter!(*name).increment(0);
        }
    }
    for (name, label, values) in LABELLED {
        for value in *values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
    for (name, help) in OTHERS {
        if name.ends_with("_seconds") || name.ends_with("_size") {
            metrics::describe_histogram!(*name, *help);
        } else {
            metrics::describe_gauge!(*name, *help);
        }
    }
}

/// Publish latency buckets, seconds: from a local publish (well under a millisecond) to a
/// saturated Redis (its command timeout is 2 s).
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Delivery latency buckets, seconds: the publish buckets, on to past `socket.write_delay_ms`
/// and a slow reader's writes (closed after `limits.write_timeout_ms`, 10 s). Each sample is a
/// whole number of milliseconds (`ts` has no finer grain): 0 lands in the first bucket.
const DELIVERY_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Batch size buckets: powers of two up to past `redis.publish_batch_max`'s default of 128.
const COUNTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Histograms with buckets rather than the exporter's default summaries: a summary cannot be
/// added up across nodes, and its sketches keep growing with the spread of the values (after
/// a 30 s load of 2,000 users the node held 1.2 MB with summaries, 0.5 MB with buckets).
fn builder() -> Result<PrometheusBuilder, BuildError> {
    // A `Full` matcher is tried before any `Suffix` one.
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("roomcast_delivery_seconds".into()),
            DELIVERY_SECONDS,
        )?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), COUNTS)
}

/// Folds the histogram samples recorded since the last upkeep into their buckets. The
/// recorder keeps every sample until then, so a node that nobody scrapes must still run this
/// periodically, or it grows by 8 bytes per publish. Those samples also pinned the pages they
/// sat in: with this, the memory bench's node held 2.1 MB instead of 5.8 MB after everyone
/// left, and 15 MB of RSS instead of 34 MB. The node's housekeeping calls it every 5 s, and a
/// scrape too.
///
/// Folding frees the samples' blocks only through crossbeam-epoch, which runs deferred frees
/// as later pins advance its epoch. Once traffic stops nothing pins any more, and the last
/// blocks stayed allocated for good (312 KB in a heap profile taken 40 s after a 19,000-user
/// load left). A few pins right after the fold advance the epoch and free them.
pub fn upkeep() {
    if let Some(handle) = handle() {
        handle.run_upkeep();
        for _ in 0..4 {
            crossbeam_epoch::pin().flush();
        }
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn handler(State(node): State<Node>) -> Response {
    let Some(handle) = handle() else {
        return crate::http::json_error(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder owns this process",
        );
    };
    let stats = node.stats();
    let id = stats.node.clone();
    metrics::gauge!("roomcast_connections", "node" => id.clone()).set(stats.sessions as f64);
    metrics::gauge!("roomcast_rooms", "node" => id.clone()).set(stats.rooms as f64);
    metrics::gauge!("roomcast_users", "node" => id.clone()).set(stats.users as f64);
    let held = node.hub().held();
    metrics::gauge!("roomcast_queued_frames", "node" => id.clone()).set(held.frames as f64);
    metrics::gauge!("roomcast_queued_bytes", "node" => id.clone()).set(held.bytes as f64);
    metrics::gauge!("roomcast_broker_up", "node" => id.clone())
        .set(f64::from(u8::from(stats.broker_available)));
    metrics::gauge!("roomcast_draining", "node" => id.clone())
        .set(f64::from(u8::from(stats.draining)));
    metrics::gauge!("roomcast_worker_threads", "node" => id)
        .set(tokio::runtime::Handle::current().metrics().num_workers() as f64);
    PROCESS.collect();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
