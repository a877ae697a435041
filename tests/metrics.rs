//! `/metrics` reports what the node is doing, in the Prometheus text format: gauges read at
//! scrape time and counters that move with traffic, slow consumers and refusals.

mod common;

use std::time::Duration;

use common::{Client, Ended, TestServer};
use serde_json::json;

/// The value of the first sample named as `wanted` (`name` or `name{label="value",...}`) and
/// carrying at least its labels, in any order: every series also has a `node` label.
fn sample(text: &str, wanted: &str) -> Option<f64> {
    let (name, labels) = split_series(wanted);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (n, have) = split_series(series);
            n == name && labels.iter().all(|label| have.contains(label))
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// `name{a="1",b="2"}` into its name and its `a="1"` label pairs.
fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, rest)) => {
            let inner = rest.strip_suffix('}').unwrap_or(rest);
            let labels = inner
                .split("\",")
                .map(|l| l.trim_end_matches('"'))
                .collect();
            (name, labels)
        }
        None => (series, Vec::new()),
    }
}

async fn scrape(server: &TestServer) -> String {
    let response = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/plain"), "{kind}");
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_follow_traffic() {
    let server = TestServer::with(|c| c.node_id = Some("n-metrics".into())).await;
    let before = scrape(&server).await;
    let deliveries_before = sample(&before, "roomcast_deliveries_total").unwrap_or(0.0);
    let published_before = sample(&before, "roomcast_messages_published_total").unwrap_or(0.0);
    let sampled_before = sample(&before, "roomcast_delivery_seconds_count").unwrap_or(0.0);

    let mut a = server.connect("a").await;
    let mut b = server.connect("b").await;
    a.join("room").await;
    b.join("room").await;
    for i in 0..10 {
        a.publish("room", json!(i)).await;
    }
    for _ in 0..10 {
        b.recv_message().await;
    }
    let text = scrape(&server).await;
    assert_eq!(
        sample(&text, "roomcast_connections{node=\"n-metrics\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "roomcast_rooms{node=\"n-metrics\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "roomcast_users{node=\"n-metrics\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "roomcast_broker_up{node=\"n-metrics\"}"),
        Some(1.0)
    );
    // Counters are process-wide (tests share the process), so compare with before.
    let deliveries = sample(&text, "roomcast_deliveries_total").unwrap();
    assert!(
        deliveries - deliveries_before >= 20.0,
        "{deliveries_before} -> {deliveries}"
    );
    let published = sample(&text, "roomcast_messages_published_total").unwrap();
    assert!(published - published_before >= 10.0);
    // A histogram with buckets (they add up across nodes), every publish counted in the last.
    let under_2_5_s = sample(&text, "roomcast_broker_publish_seconds_bucket{le=\"2.5\"}").unwrap();
    let all = sample(&text, "roomcast_broker_publish_seconds_bucket{le=\"+Inf\"}").unwrap();
    assert!(under_2_5_s >= 10.0 && all >= under_2_5_s, "{text}");
    // Delivery latency is sampled (at most one write a millisecond per thread): some of the
    // writes to a and b were, and fell in buckets that reach past the write timeout.
    let sampled = sample(&text, "roomcast_delivery_seconds_count").unwrap();
    assert!(sampled > sampled_before, "{sampled_before} -> {sampled}");
    let under_10_s = sample(&text, "roomcast_delivery_seconds_bucket{le=\"10\"}").unwrap();
    assert_eq!(under_10_s, sampled, "{text}");
    assert!(sample(&text, "roomcast_frames_in_total").unwrap() >= 12.0);
}

#[tokio::test]
async fn slow_consumers_and_refusals_are_counted() {
    let server = TestServer::with(|c| {
        c.limits.outbound_queue = 200;
        c.limits.max_connections_per_user = 1;
    })
    .await;
    let before = scrape(&server).await;
    let slow_before = sample(&before, "roomcast_slow_consumer_closes_total").unwrap_or(0.0);
    let limited_before = sample(
        &before,
        "roomcast_rate_limited_total{kind=\"too_many_sessions\"}",
    )
    .unwrap_or(0.0);

    let mut publisher = server.connect("pub").await;
    let mut stalled = Client::connect_small_buffer(&server.ws_url("stalled")).await;
    publisher.join("r").await;
    stalled.join("r").await;
    let payload = "x".repeat(8 * 1024);
    for _ in 0..2_000 {
        let reply = publisher
            .request(json!({"type": "publish", "room": "r", "data": payload}))
            .await;
        assert_eq!(reply["type"], "ack");
        let text = scrape(&server).await;
        if sample(&text, "roomcast_slow_consumer_closes_total").unwrap_or(0.0) > slow_before {
            break;
        }
    }
    assert!(Client::try_connect(server.ws_url("pub")).await.is_err());
    let text = scrape(&server).await;
    assert!(
        sample(&text, "roomcast_slow_consumer_closes_total").unwrap() > slow_before,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "roomcast_rate_limited_total{kind=\"too_many_sessions\"}"
        )
        .unwrap()
            > limited_before
    );
    let (_, ended) = stalled.read_to_end(Duration::from_secs(10)).await;
    assert_eq!(ended, Ended::Closed(4000));
}

#[tokio::test]
async fn auth_failures_are_counted_by_reason() {
    let server = TestServer::with(|c| c.auth.secret = "x".repeat(32)).await;
    let key = "roomcast_auth_failures_total{reason=\"token_missing\"}";
    let before = sample(&scrape(&server).await, key).unwrap_or(0.0);
    let refused = Client::try_connect(format!("ws://{}/ws", server.addr)).await;
    assert_eq!(refused.err().unwrap().status, 401);
    let after = sample(&scrape(&server).await, key).unwrap();
    assert!(after > before, "{before} -> {after}");
}

/// Joins with `resume` are counted by outcome: `recovered="true"` when the missed messages
/// were replayed, `"false"` when they could not be (here, an epoch the room never had).
#[tokio::test]
async fn resumes_are_counted_by_whether_they_recovered() {
    let server = TestServer::start().await;
    let key = |recovered| format!("roomcast_resumes_total{{recovered=\"{recovered}\"}}");
    let before = scrape(&server).await;
    let mut a = server.connect("a").await;
    let joined = a.join("room").await;
    a.publish("room", json!(1)).await;
    a.request(json!({"type": "leave", "room": "room"})).await;
    for (epoch, recovered) in [(joined["epoch"].clone(), true), (json!("other"), false)] {
        let join = json!({"type": "join", "room": "room",
            "epoch": epoch, "since": joined["offset"]});
        let reply = a.request(join).await;
        assert_eq!(reply["recovered"], recovered, "{reply}");
        a.request(json!({"type": "leave", "room": "room"})).await;
    }
    let after = scrape(&server).await;
    for recovered in [true, false] {
        let (was, is) = (
            sample(&before, &key(recovered)),
            sample(&after, &key(recovered)),
        );
        assert_eq!(is, was.map(|n| n + 1.0), "{recovered}: {after}");
    }
}

/// Every counter is there from the start (at zero before its first event, each label value
/// too), the process's memory, open files, file limit and CPU are there, every series carries
/// a `node` label, and every metric has its `# HELP` text: an alert on a rate, or a dashboard
/// panel, sees 0 instead of no series. Before, counters appeared only after their first event
/// and there were no process metrics.
#[tokio::test]
async fn every_counter_is_present_from_the_start_and_every_metric_has_help() {
    let server = TestServer::start().await;
    let text = scrape(&server).await;
    for counter in [
        "roomcast_frames_in_total",
        "roomcast_messages_published_total",
        "roomcast_publish_repeats_total",
        "roomcast_deliveries_total",
        "roomcast_direct_messages_total",
        "roomcast_direct_dropped_total",
        "roomcast_slow_consumer_closes_total",
        "roomcast_publish_errors_total",
        "roomcast_closes_total{code=\"4029\"}",
        "roomcast_auth_failures_total{reason=\"token_invalid\"}",
        "roomcast_rate_limited_total{kind=\"too_many_pending_connections\"}",
        "roomcast_proxy_header_errors_total{reason=\"timeout\"}",
        "roomcast_resumes_total{recovered=\"true\"}",
        "roomcast_resumes_total{recovered=\"false\"}",
        "roomcast_rebalance_shed_total{reason=\"auto\"}",
        "roomcast_rebalance_shed_total{reason=\"api\"}",
        "roomcast_proxy_calls_total{kind=\"join\",outcome=\"overloaded\"}",
        "roomcast_proxy_cache_hits_total",
    ] {
        assert!(
            sample(&text, counter).is_some(),
            "{counter} missing:\n{text}"
        );
    }
    // The process's own figures, for dashboards and the file-limit alarm.
    for process in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
    ] {
        let value = sample(&text, process).unwrap_or_else(|| panic!("{process} missing"));
        assert!(value >= 0.0, "{process} = {value}");
    }
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1_000_000.0);
    assert!(sample(&text, "process_open_fds").unwrap() >= 1.0);
    // Every series, counters, histograms and process metrics included, names its node.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(line.contains("node=\""), "no node label: {line}");
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP text"
        );
    }
}
