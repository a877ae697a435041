//! The tester against a node with authentication on (`[auth] secret`, HS256): with the node's
//! secret every user connects with its own token, in threads and in worker processes; with a
//! wrong secret or none, every refusal is counted by cause in the report; an empty secret is
//! refused before anything starts.

mod common;

use common::{
    FAIL_FAST, Server, assert_clean, assert_refused, run, run_binary, scenario, smoke_binary,
};
use loadtest::Report;

/// The node's secret: HS256 on roomcast needs at least 32 bytes.
const SECRET: &str = "loadtest-auth-test-secret-0123456789";

async fn auth_node() -> Server {
    Server::with(|c| c.auth.secret = SECRET.into()).await
}

/// The smoke scenario, in-process, against a node with authentication, with `jwt_secret`.
async fn smoke_with_secret(jwt_secret: Option<&str>) -> Report {
    let server = auth_node().await;
    let mut s = scenario("smoke", &[server.url()]);
    s.jwt_secret = jwt_secret.map(str::to_string);
    let r = run(&s).await;
    server.stop().await;
    r
}

/// Every user was refused with `cause` (e.g. `401 token_invalid`), and the report says so in
/// its failure reasons, its error samples and its verdict.
fn assert_all_refused(r: &Report, cause: &str) {
    let k = &r.connections;
    assert_eq!((k.ok, k.failed), (0, r.users), "{}", r.table());
    assert_eq!(k.errors.get(cause), Some(&r.users), "{:?}", k.errors);
    assert!(
        r.error_samples.iter().any(|e| e.contains(cause)),
        "{:?}",
        r.error_samples
    );
    assert!(r.table().contains(cause), "{}", r.table());
    let problems = r.problems(false);
    assert!(
        problems[0].contains(&format!("{} of {} connections failed", r.users, r.users))
            && problems[0].contains(cause),
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_scenario_with_the_nodes_secret_is_clean() {
    let r = smoke_with_secret(Some(SECRET)).await;
    assert_clean(&r);
    assert_eq!(r.users, 24);
    assert_eq!(r.connections.peak_concurrent, 24, "{}", r.table());
    assert_eq!(r.direct.received, r.direct.sent, "{}", r.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_401_token_invalid_for_every_user() {
    let r = smoke_with_secret(Some("not-the-node-secret-but-as-long-as-it")).await;
    assert_all_refused(&r, "401 token_invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_refused_400_user_not_allowed_for_every_user() {
    let r = smoke_with_secret(None).await;
    assert_all_refused(&r, "400 user_not_allowed");
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
