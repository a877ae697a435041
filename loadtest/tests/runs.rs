//! Whole runs against real roomcast nodes started here, checked through the merged report:
//! the smoke scenario on one node and on two, churn with recovered resumes, and loss that the
//! tester must catch when the server's history is too short to resume from.

mod common;

use common::{Server, assert_clean, run, scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_scenario_against_one_node() {
    let server = Server::start().await;
    let s = scenario("smoke", &[server.url()]);
    let r = run(&s).await;
    assert_clean(&r);

    assert_eq!(r.users, 24);
    assert_eq!(r.connections.peak_concurrent, 24, "{}", r.table());
    assert_eq!(r.connections.connect_time.count, 24);
    // 4 rooms of 5: a message reaches at most the 5 members, the publisher included.
    assert_eq!(r.correctness.rooms, 4);
    let m = &r.messages;
    assert!(m.deliveries <= 5 * m.acked, "{}", r.table());
    assert!(
        m.deliveries >= 4 * m.acked,
        "rooms were full for all but the ramp\n{}",
        r.table()
    );
    assert_eq!(m.latency.count, m.deliveries, "every delivery timed");
    assert_eq!(m.ack_latency.count, m.acked);
    assert!(m.bytes_received > m.deliveries * 64, "padding arrived");
    // Nobody churns, so every direct message finds its recipient online.
    let d = &r.direct;
    assert!(d.sent > 0);
    assert_eq!((d.acked, d.received), (d.sent, d.sent), "{}", r.table());
    assert!(r.series.iter().any(|p| p.deliveries > 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_spread_over_two_nodes_are_accounted_per_node() {
    let (a, b) = (Server::start().await, Server::start().await);
    let mut s = scenario("smoke", &[a.url(), b.url()]);
    s.workers = 2;
    let r = run(&s).await;
    assert_clean(&r);
    // Without a shared broker each node has its own copy of each room (its own epoch).
    assert_eq!(r.correctness.rooms, 8, "{}", r.table());
    assert_eq!(r.workers, 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churned_users_resume_without_loss() {
    let server = Server::start().await;
    let mut s = scenario("churn-resume", &[server.url()]);
    s.users = 40;
    s.rooms[0].count = 4;
    s.duration_secs = 3.0;
    s.publish_per_sec = 5.0;
    s.churn_down_ms = 400;
    let r = run(&s).await;
    assert_clean(&r);
    let k = &r.connections;
    assert!(
        k.churn_disconnects >= 5,
        "half of 40 should churn\n{}",
        r.table()
    );
    assert_eq!(k.reconnects_ok, k.churn_disconnects, "{}", r.table());
    let c = &r.correctness;
    assert_eq!(c.resumes_recovered, k.churn_disconnects, "{}", r.table());
    assert_eq!(c.resumes_unrecovered, 0);
    // A room of 10 publishing 50 messages/s misses ~20 in 400 ms: the replay brings them.
    assert!(c.replayed > 0, "{}", r.table());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_counted_by_cause() {
    // A node that takes 5 connections per IP: the other users get 429 too_many_connections.
    let server = Server::with(|c| c.limits.max_connections_per_ip = 5).await;
    let mut s = scenario("smoke", &[server.url()]);
    s.users = 20;
    s.duration_secs = 1.0;
    let r = run(&s).await;
    let k = &r.connections;
    assert!(k.ok <= 5 && k.failed >= 15, "{}", r.table());
    assert_eq!(k.ok + k.failed, 20);
    assert_eq!(
        k.errors.get("429 too_many_connections"),
        Some(&k.failed),
        "{:?}",
        k.errors
    );
    let problems = r.problems(false);
    assert!(
        problems[0].contains("429 too_many_connections"),
        "{problems:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_is_detected_when_the_history_cannot_cover_a_resume() {
    // History of 1 message: a user away for 400 ms in a busy room cannot be caught up.
    let server = Server::with(|c| c.history.size = 1).await;
    let mut s = scenario("churn-resume", &[server.url()]);
    s.users = 20;
    s.rooms[0].count = 2;
    s.duration_secs = 2.5;
    s.publish_per_sec = 10.0;
    s.churn = 1.0;
    s.churn_down_ms = 400;
    let r = run(&s).await;
    let c = &r.correctness;
    assert!(c.resumes_unrecovered > 0, "{}", r.table());
    assert!(
        c.lost_unrecovered > 0 && c.lost >= c.lost_unrecovered,
        "{}",
        r.table()
    );
    assert!(
        c.rooms_with_problems > 0 && !c.problem_rooms.is_empty(),
        "{}",
        r.table()
    );
    let problems = r.problems(true);
    assert!(
        problems.iter().any(|p| p.ends_with("messages lost")),
        "{problems:?}"
    );
    // Without --expect-no-loss, loss alone does not fail the run.
    assert!(r.problems(false).is_empty(), "{:?}", r.problems(false));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_on_a_node_without_the_history_is_unrecovered_loss() {
    // Two separate nodes, no shared broker: a user that resumes on the other node finds another
    // history of its room (another epoch) and cannot be caught up.
    let (a, b) = (Server::start().await, Server::start().await);
    let mut s = scenario("churn-resume", &[a.url(), b.url()]);
    s.users = 20;
    s.rooms[0].count = 2;
    s.duration_secs = 2.5;
    s.publish_per_sec = 5.0;
    s.churn = 1.0;
    s.churn_down_ms = 300;
    s.resume_elsewhere = true;
    let r = run(&s).await;
    let c = &r.correctness;
    assert_eq!(r.connections.reconnects_ok, 20, "{}", r.table());
    assert_eq!(
        (c.resumes_recovered, c.resumes_unrecovered),
        (0, 20),
        "{}",
        r.table()
    );
    assert!(
        c.lost_unrecovered > 0 && c.lost >= c.lost_unrecovered,
        "{}",
        r.table()
    );
    assert_eq!((c.duplicates, c.out_of_order), (0, 0), "{}", r.table());
    a.stop().await;
    b.stop().await;
}
