//! The Grafana dashboard (deploy/grafana/roomcast.json) and the alert rules
//! (deploy/prometheus/alerts.yml) against a real Prometheus: Debian's `prometheus` scrapes two
//! roomcast processes sharing one Redis every second while clients join, publish and resume
//! through both; every query of the dashboard must then return data, every alert rule must
//! evaluate without error, counters must carry each node's `node` label, and `promtool` must
//! accept the rules, their unit tests (deploy/prometheus/alerts_test.yml) and the example
//! configuration.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Client;
use common::process::Process;
use common::prometheus::{PROMTOOL, Prometheus, require_prometheus};
use common::redis::{RedisServer, redis_env, unique_prefix};
use common::wait_ready;
use serde_json::{Value, json};

/// The whole test's bound; it takes about 10 s.
const BOUND: Duration = Duration::from_secs(55);
/// How long the queries may take to all return data (scrapes every second, 10 s windows).
const DATA_DEADLINE: Duration = Duration::from_secs(30);
/// What Grafana puts for the dashboard's variables: every node (the "All" value), and a
/// rate window of 10 s (Grafana's `$__rate_interval` is at least 4 scrape intervals, here 4 s).
const VARIABLES: &[(&str, &str)] = &[("$node", ".+"), ("$__rate_interval", "10s")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alert_rules_work_against_a_real_prometheus() {
    require_prometheus();
    tokio::time::timeout(BOUND, run())
        .await
        .unwrap_or_else(|_| panic!("the Prometheus test took longer than {BOUND:?}"));
}

async fn run() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let env = redis_env(&redis, &prefix);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let nodes = [
        Process::start_with_env(&["--node-id", "n-a"], &env),
        Process::start_with_env(&["--node-id", "n-b"], &env),
    ];
    for node in &nodes {
        wait_ready(&format!("http://{}", node.addr), 200).await;
    }
    let targets: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let mut prometheus = Prometheus::start(&targets, &[deploy("prometheus/alerts.yml")]);
    prometheus.wait_ready(Duration::from_secs(15)).await;

    resume_twice(&nodes).await;
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn(chat(
        nodes[0].ws_url("alice"),
        nodes[1].ws_url("bob"),
        running.clone(),
    ));

    let exprs = dashboard_queries();
    assert!(
        exprs.len() >= 15,
        "only {} queries in the dashboard",
        exprs.len()
    );
    every_query_returns_data(&prometheus, &exprs).await;
    counters_carry_each_nodes_label(&prometheus).await;
    for recovered in ["true", "false"] {
        let expr = format!("sum(roomcast_resumes_total{{recovered=\"{recovered}\"}})");
        let result = prometheus.query(&expr).await.unwrap();
        assert_eq!(result[0]["value"][1], "1", "{expr}: {result:?}");
    }
    every_rule_evaluates(&prometheus).await;

    running.store(false, Ordering::Relaxed);
    load.await.expect("the load task failed");
    promtool(&["check", "rules", &deploy_str("prometheus/alerts.yml")]);
    promtool(&["test", "rules", &deploy_str("prometheus/alerts_test.yml")]);
    promtool(&["check", "config", &deploy_str("prometheus/prometheus.yml")]);
}

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn deploy_str(path: &str) -> String {
    deploy(path).display().to_string()
}

/// A resume that is recovered (the missed message replayed, on the other node) and one that is
/// not (an epoch the room never had), so both `recovered` values have data.
async fn resume_twice(nodes: &[Process; 2]) {
    let mut carol = Client::connect(&nodes[0].ws_url("carol")).await;
    let joined = carol.join("lobby").await;
    let (epoch, since) = (joined["epoch"].clone(), joined["offset"].clone());
    carol.close().await;
    let mut dave = Client::connect(&nodes[0].ws_url("dave")).await;
    dave.join("lobby").await;
    dave.publish("lobby", json!("missed by carol")).await;
    let mut carol = Client::connect(&nodes[1].ws_url("carol")).await;
    for (epoch, recovered) in [(epoch, true), (json!("not-an-epoch"), false)] {
        let reply = carol
            .request(json!({"type": "join", "room": "lobby", "epoch": epoch, "since": since}))
            .await;
        assert_eq!(reply["recovered"], recovered, "{reply}");
        carol
            .request(json!({"type": "leave", "room": "lobby"}))
            .await;
    }
}

/// Alice (node a) publishes every 20 ms until `running` turns false; Bob (node b) reads each
/// message, through Redis, so both nodes publish, deliver, and write.
async fn chat(alice: String, bob: String, running: Arc<AtomicBool>) {
    let mut alice = Client::connect(&alice).await;
    let mut bob = Client::connect(&bob).await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    let mut n = 0;
    while running.load(Ordering::Relaxed) {
        alice.publish("lobby", json!({"n": n})).await;
        let message = bob.recv_message().await;
        assert_eq!(message["from"], "alice", "{message}");
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(n > 50, "only {n} messages published");
}

/// Every `expr` of every panel target, with the dashboard's variables as Grafana fills them.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/roomcast.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is not JSON");
    let mut exprs = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        // Collapsed rows hold their panels inside.
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let mut expr = target["expr"]
                .as_str()
                .expect("a target without expr")
                .to_owned();
            for (name, value) in VARIABLES {
                expr = expr.replace(name, value);
            }
            assert!(!expr.contains('$'), "an unknown variable in {expr}");
            exprs.push(expr);
        }
    }
    exprs
}

/// Polls until every query has returned at least one sample with a number (not NaN), or fails
/// naming those that did not and what they returned.
async fn every_query_returns_data(prometheus: &Prometheus, exprs: &[String]) {
    let deadline = tokio::time::Instant::now() + DATA_DEADLINE;
    let mut waiting: Vec<(&String, String)> = exprs.iter().map(|e| (e, String::new())).collect();
    while !waiting.is_empty() {
        for (expr, last) in &mut waiting {
            *last = match prometheus.query(expr).await {
                Ok(result) if result.iter().any(has_number) => String::new(),
                Ok(result) => format!("no number yet: {result:?}"),
                Err(err) => format!("error: {err}"),
            };
        }
        waiting.retain(|(_, last)| !last.is_empty());
        if waiting.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dashboard queries without data after {DATA_DEADLINE:?}:\n{}\nprometheus log:\n{}",
            waiting
                .iter()
                .map(|(e, why)| format!("  {e}\n    {why}"))
                .collect::<Vec<_>>()
                .join("\n"),
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A sample of an instant vector: `{"metric": {...}, "value": [time, "number"]}`.
fn has_number(sample: &Value) -> bool {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(|v| !v.is_nan())
}

/// Counters and histograms are labelled with the node that counted, like the gauges.
async fn counters_carry_each_nodes_label(prometheus: &Prometheus) {
    for metric in [
        "roomcast_deliveries_total",
        "roomcast_resumes_total",
        "roomcast_delivery_seconds_count",
        "process_open_fds",
    ] {
        let result = prometheus
            .query(&format!("count by (node) ({metric})"))
            .await
            .unwrap();
        let mut labels: Vec<&str> = result
            .iter()
            .filter_map(|s| s["metric"]["node"].as_str())
            .collect();
        labels.sort_unstable();
        assert_eq!(labels, ["n-a", "n-b"], "{metric}: {result:?}");
    }
}

/// Every alert rule has been evaluated on the real data without an error.
async fn every_rule_evaluates(prometheus: &Prometheus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rules: Value = reqwest::get(format!("{}/api/v1/rules", prometheus.base()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let all: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert_eq!(all.len(), alert_count(), "rules loaded: {rules}");
        if all.iter().all(|r| r["health"] == "ok") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rules not all healthy: {rules}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The alerts deploy/prometheus/alerts.yml defines.
fn alert_count() -> usize {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    text.lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count()
}

/// Runs `promtool` with `args` and asserts it succeeded, showing what it said.
fn promtool(args: &[&str]) {
    let output = Command::new(PROMTOOL)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {PROMTOOL}: {err}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {}:\n{said}",
        args.join(" ")
    );
    println!("promtool {}: ok", args.join(" "));
}
