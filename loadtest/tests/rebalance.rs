//! Rebalancing end to end on `scripts/cluster`: users connect through haproxy to two
//! instances, a third is added (`scripts/cluster scale 3`), and the loaded instances shed
//! sessions to it (`goaway`, reconnect, resume) at their bounded rate until each holds its
//! share. The load tester must see every message once and in order throughout.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, assert_resumed_without_loss, passed_report, repo};
use common::run_binary;

const USERS: usize = 600;
/// `rebalance.max_shed_per_sec` for the instances.
const RATE: f64 = 40.0;

fn within_tenth_of_mean(counts: &[f64]) -> bool {
    let mean = counts.iter().sum::<f64>() / counts.len() as f64;
    counts.iter().all(|c| (c - mean).abs() <= mean * 0.10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_instance_gets_its_share_and_the_users_lose_nothing() {
    let cluster = Cluster::up_with(
        2,
        &[
            ("ROOMCAST_REBALANCE__INTERVAL_MS", "500"),
            ("ROOMCAST_REBALANCE__MAX_SHED_PER_SEC", "40"),
        ],
    );
    let json = cluster.dir.path().join("report.json");
    let json_arg = json.to_str().unwrap().to_owned();
    let scenario = repo().join("loadtest/scenarios/rebalance.toml");
    let (scenario, url) = (scenario.to_str().unwrap().to_owned(), cluster.ws_url());
    let users = USERS.to_string();
    let load = tokio::spawn(async move {
        let args = [
            scenario.as_str(),
            "--url",
            &url,
            "--users",
            &users,
            "--ramp",
            "300",
            "--rooms",
            "60",
            "--room-size",
            "10",
            "--publish-rate",
            "1",
            "--duration",
            "20",
            "--json",
            &json_arg,
            "--expect-no-loss",
            "-q",
        ];
        run_binary(&args, Duration::from_secs(120)).await
    });

    // Every user on the two instances, then the third.
    let connections = |n: usize| -> Vec<f64> {
        (1..=n)
            .map(|i| cluster.metric(i, "roomcast_connections"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while connections(2).iter().sum::<f64>() < USERS as f64 {
        assert!(
            Instant::now() < deadline,
            "users did not connect: {:?}",
            connections(2)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::block_in_place(|| cluster.cmd(&["scale", "3"]));
    let began = Instant::now();
    let deadline = began + Duration::from_secs(20);
    let balanced = loop {
        let counts = connections(3);
        if counts.iter().sum::<f64>() == USERS as f64 && within_tenth_of_mean(&counts) {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "not balanced within 20 s: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = began.elapsed();
    let shed: f64 = (1..=3)
        .map(|i| cluster.metric(i, "roomcast_rebalance_shed_total"))
        .sum();

    let ran = load.await.unwrap();
    let report = passed_report(&ran, &json);
    let (c, conn) = (&report["correctness"], &report["connections"]);
    println!(
        "rebalance: {USERS} users, balanced {took:?} after the third instance started: {:?}; \
         {shed} shed; {} reconnects, {} resumes recovered, lost {}, duplicates {}, out of order {}",
        balanced,
        conn["reconnects_ok"],
        c["resumes_recovered"],
        c["lost"],
        c["duplicates"],
        c["out_of_order"]
    );
    // Two loaded instances, each shedding at most RATE a second (plus one tick at each end).
    assert!(
        shed <= 2.0 * (RATE * took.as_secs_f64() + 2.0),
        "{shed} sheds in {took:?}"
    );
    assert!(
        shed >= USERS as f64 / 3.0 * 0.9,
        "{shed} sheds moved the share"
    );
    assert_resumed_without_loss(&report);
    cluster.cmd(&["down"]);
}
