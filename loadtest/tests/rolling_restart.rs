//! End to end on `scripts/cluster`: Redis, three roomcast processes and haproxy. The load
//! tester runs users through haproxy while every instance is restarted in turn (SIGTERM drain,
//! then a fresh start). Users on a draining instance get close 1001, reconnect through the
//! balancer and resume; the report must show zero lost, duplicated or out-of-order messages.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, assert_resumed_without_loss, passed_report, repo};
use common::run_binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_through_haproxy_loses_nothing() {
    let cluster = Cluster::up(3);
    let url = cluster.ws_url();
    let json = cluster.dir.path().join("report.json");
    let json_arg = json.to_str().unwrap().to_owned();
    let scenario = repo().join("loadtest/scenarios/churn-resume.toml");
    let scenario = scenario.to_str().unwrap().to_owned();
    let load = tokio::spawn(async move {
        let args = [
            scenario.as_str(),
            "--url",
            &url,
            "--users",
            "300",
            "--ramp",
            "300",
            "--rooms",
            "30",
            "--room-size",
            "10",
            "--publish-rate",
            "2",
            "--churn",
            "0",
            "--duration",
            "14",
            "--json",
            &json_arg,
            "--expect-no-loss",
            "-q",
        ];
        run_binary(&args, Duration::from_secs(90)).await
    });

    // Restart every instance in turn while the users publish.
    let restarts = {
        let cluster = &cluster;
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            for i in 1..=3 {
                let n = i.to_string();
                tokio::task::block_in_place(|| cluster.cmd(&["restart", &n]));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    restarts.await;
    let ran = load.await.unwrap();
    println!("{}", ran.stdout);

    let report = passed_report(&ran, &json);
    let c = &report["correctness"];
    let m = &report["messages"];
    let conn = &report["connections"];
    println!(
        "rolling restart: {} users, {} acked, {} deliveries, {} drained by restarts, {} reconnects, {} resumes recovered, lost {}, duplicates {}, out of order {}",
        report["users"],
        m["acked"],
        m["deliveries"],
        conn["server_drains"],
        conn["reconnects_ok"],
        c["resumes_recovered"],
        c["lost"],
        c["duplicates"],
        c["out_of_order"]
    );
    assert_eq!(conn["ok"], 300, "every user connected");
    assert!(m["acked"].as_u64().unwrap() > 1000, "traffic flowed");
    // The restarts really hit users (close 1001), and they came back and resumed.
    assert!(conn["server_drains"].as_u64().unwrap() >= 150, "{conn}");
    assert!(c["resumes_recovered"].as_u64().unwrap() >= 150, "{c}");
    assert_resumed_without_loss(&report);
    cluster.cmd(&["down"]);
}
