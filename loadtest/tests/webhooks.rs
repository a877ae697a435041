//! The load tester counting lifecycle webhooks: three roomcast processes on one Redis behind
//! haproxy (`scripts/cluster`) send to the tester's own receiver, and every user's
//! `user_online`/`user_offline` must match what the run did, with churn: away under the
//! debounce fires nothing, away well past it fires one offline and one online more.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{run, scenario};
use loadtest::webhooks::{Receiver, check};

const SECRET: &str = "loadtest-secret-0123456789";

async fn churn_run(churn_down_ms: u64, debounce_ms: u64) {
    let receiver = Receiver::start("127.0.0.1:0", SECRET.into()).await.unwrap();
    let url = receiver.url();
    let debounce = debounce_ms.to_string();
    let cluster = Cluster::up_with(
        3,
        &[
            ("ROOMCAST_WEBHOOKS__URL", url.as_str()),
            ("ROOMCAST_WEBHOOKS__SECRET", SECRET),
            ("ROOMCAST_WEBHOOKS__DEBOUNCE_MS", debounce.as_str()),
            ("ROOMCAST_WEBHOOKS__LINGER_MS", "50"),
            // A shed user reconnects: not a churn the truth knows.
            ("ROOMCAST_REBALANCE__ENABLED", "false"),
        ],
    );
    let mut s = scenario("smoke", &[cluster.ws_url()]);
    s.users = 60;
    s.rooms[0].count = 8;
    s.duration_secs = 4.0;
    s.churn = 0.5;
    s.churn_down_ms = churn_down_ms;
    let r = run(&s).await;
    assert!(r.connections.churn_disconnects >= 10, "{}", r.table());
    // Everyone closed at the end: their offlines come a debounce later.
    tokio::time::sleep(Duration::from_millis(debounce_ms + 3_000)).await;
    let tally = receiver.tally();
    let c = check(&tally, &r, &s, debounce_ms);
    // `unsure`: users drawn to churn that the run closed on first (the total below holds them).
    assert!(c.passed(), "{c:?}\n{}", r.table());
    assert_eq!(c.repeats, 0, "{c:?}");
    let churned = r.connections.churn_disconnects;
    let fires = u64::from(churn_down_ms > debounce_ms);
    // Per user an online and an offline, and per churn that fired one more of each; direct
    // messages to users away count as direct_undelivered on top.
    // The tester's own probe of the target is a user too, of no run.
    let ours = format!("lt{}-", r.run_id);
    let lifecycle: u64 = tally
        .counts
        .iter()
        .filter(|((kind, user), _)| kind.starts_with("user_") && user.starts_with(&ours))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(lifecycle, 2 * r.users + 2 * fires * churned, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_inside_the_debounce_fires_nothing_more() {
    churn_run(300, 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_past_the_debounce_fires_one_pair_more_each() {
    churn_run(2_500, 800).await;
}
