//! The tester against a node with authentication on (`[auth] secret`, HS256): with the node's
//! secret every user connects with its own token, in threads and in worker processes; a wrong
//! secret, none, or an empty one stops the run before any user starts, saying why.

mod common;

use common::{
    FAIL_FAST, Server, assert_clean, assert_refused, run, run_binary, scenario, smoke_binary,
};

/// The node's secret: HS256 on roomcast needs at least 32 bytes.
const SECRET: &str = "loadtest-auth-test-secret-0123456789";

async fn auth_node() -> Server {
    Server::with(|c| c.auth.secret = SECRET.into()).await
}

/// The binary against an authenticating node with `args`: it must stop at the probe, exit 1,
/// naming the URL and the node's refusal.
async fn refused_at_the_probe(args: &[&str], cause: &[&str]) {
    let server = auth_node().await;
    let url = server.url();
    let mut all = vec!["--url", url.as_str(), "--users", "4"];
    all.extend_from_slice(args);
    let ran = run_binary(&all, FAIL_FAST).await;
    let mut wanted = vec!["cannot reach", url.as_str()];
    wanted.extend_from_slice(cause);
    assert_refused(&ran, &wanted);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_scenario_with_the_nodes_secret_is_clean() {
    let server = auth_node().await;
    let mut s = scenario("smoke", &[server.url()]);
    s.jwt_secret = Some(SECRET.into());
    let r = run(&s).await;
    server.stop().await;
    assert_clean(&r);
    assert_eq!(r.users, 24);
    assert_eq!(r.connections.peak_concurrent, 24, "{}", r.table());
    assert_eq!(r.direct.received, r.direct.sent, "{}", r.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_stops_the_run_with_401_token_invalid() {
    refused_at_the_probe(
        &["--jwt-secret", "not-the-node-secret-but-as-long-as-it"],
        &["401", "token_invalid"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_stops_the_run_with_400_user_not_allowed() {
    refused_at_the_probe(&[], &["400", "user_not_allowed"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_reaches_every_worker_process() {
    // Worker processes get the scenario over a pipe: each must sign its own users' tokens.
    let server = auth_node().await;
    let (_, r) = smoke_binary(&server.url(), 2, &["--jwt-secret", SECRET]).await;
    assert_eq!((r.mode.as_str(), r.workers), ("processes", 2));
    assert_clean(&r);
    server.stop().await;
}

#[tokio::test]
async fn an_empty_secret_is_refused_at_start_up() {
    let ran = run_binary(&["--jwt-secret", "", "--users", "1"], FAIL_FAST).await;
    assert_refused(&ran, &["`jwt_secret`", "must not be empty"]);
}
