//! A run that cannot happen must say why, quickly, with exit code 1: a broken scenario file, a
//! malformed URL, source addresses that cannot reach a target, a port nobody listens on, a port
//! that never answers. (TLS refusals: tests/tls.rs.)

mod common;

use std::io::Write;
use std::time::Duration;

use common::{FAIL_FAST, assert_refused, run_binary, scenario_path};
use loadtest::{RunError, RunOptions, Scenario, ScenarioError};

fn scenario_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[tokio::test]
async fn malformed_toml_names_the_file_and_the_line() {
    let file = scenario_file("users = 10\nrooms = [[[\n");
    let path = file.path().to_str().unwrap();
    let ran = run_binary(&[path], FAIL_FAST).await;
    assert_refused(&ran, &[path, "line 2"]);
}

#[tokio::test]
async fn unknown_key_is_named() {
    let file = scenario_file("users = 10\npublish_rate = 3.0\n");
    let ran = run_binary(&[file.path().to_str().unwrap()], FAIL_FAST).await;
    assert_refused(&ran, &["unknown field `publish_rate`"]);
    // Keys inside a table too.
    let err = Scenario::from_toml("[[rooms]]\ncount = 1\nsize = 2\nmembers = 3\n").unwrap_err();
    assert!(err.to_string().contains("members"), "{err}");
}

#[tokio::test]
async fn out_of_range_value_names_the_key() {
    let file = scenario_file("users = 0\n");
    let ran = run_binary(&[file.path().to_str().unwrap()], FAIL_FAST).await;
    assert_refused(&ran, &["`users`"]);
    let ran = run_binary(&["--users", "5", "--churn", "1.5"], FAIL_FAST).await;
    assert_refused(&ran, &["`churn`"]);
}

#[tokio::test]
async fn missing_scenario_file_is_reported() {
    let ran = run_binary(&["/nonexistent/scenario.toml"], FAIL_FAST).await;
    assert_refused(&ran, &["cannot read scenario /nonexistent/scenario.toml"]);
}

#[tokio::test]
async fn malformed_urls_are_refused_before_any_connection() {
    let ran = run_binary(&["--url", "http://127.0.0.1:8080/ws"], FAIL_FAST).await;
    assert_refused(&ran, &["not a ws:// or wss:// URL"]);
    let ran = run_binary(&["--url", "wss://127.0.0.1:99999/ws"], FAIL_FAST).await;
    assert_refused(&ran, &["invalid port", "wss://127.0.0.1:99999/ws"]);
    // The same rules hold in a scenario file, whatever the flags.
    let file = scenario_file("urls = [\"ws://127.0.0.1:1/ws\", \"wss://:443/ws\"]\n");
    let ran = run_binary(&[file.path().to_str().unwrap()], FAIL_FAST).await;
    assert_refused(
        &ran,
        &["scenario key `urls`", "`wss://:443/ws` names no host"],
    );
}

#[tokio::test]
async fn source_addresses_are_refused_for_a_target_off_this_machine() {
    // An address literal is not resolved, and the rule is checked before the probe: no packet
    // leaves this machine.
    let url = "ws://10.0.0.1:8080/ws";
    let ran = run_binary(&["--url", url, "--source-ips", "4"], FAIL_FAST).await;
    assert_refused(
        &ran,
        &["scenario key `source_ips`", &format!("cannot reach {url}")],
    );
}

#[tokio::test]
async fn unreachable_port_fails_fast_with_the_url() {
    // A port that was free a moment ago: nothing listens, so the connection is refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}/ws");
    let ran = run_binary(
        &["--url", &url, "--users", "10", "--workers", "2"],
        FAIL_FAST,
    )
    .await;
    assert_refused(&ran, &[&format!("cannot reach {url}"), "refused"]);

    // The library says the same, as a typed error.
    let mut s = Scenario::from_file(&scenario_path("smoke")).unwrap();
    s.urls = vec![url.clone()];
    match loadtest::run(&s, RunOptions::default()).await {
        Err(RunError::Unreachable { url: u, .. }) => assert_eq!(u, url),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_port_that_never_answers_times_out_in_bounded_time() {
    // Listening but never accepting: TCP completes through the backlog, the WebSocket
    // handshake never does.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", silent.local_addr().unwrap());
    let file = scenario_file(&format!(
        "urls = [\"{url}\"]\nusers = 5\nconnect_timeout_ms = 1000\n"
    ));
    let ran = run_binary(&[file.path().to_str().unwrap()], FAIL_FAST).await;
    assert_refused(
        &ran,
        &[&format!("cannot reach {url}"), "timed out after 1000 ms"],
    );
    assert!(ran.took < Duration::from_secs(5), "took {:?}", ran.took);
    drop(silent);
}

#[tokio::test]
async fn too_many_users_for_one_process_are_refused() {
    let mut s = Scenario {
        users: 50_000,
        urls: vec!["ws://127.0.0.1:1/ws".into()],
        ..Scenario::default()
    };
    // The library runs workers as threads of one process, which one open-files cap bounds.
    match loadtest::run(&s, RunOptions::default()).await {
        Err(RunError::TooManyInProcess { users: 50_000 }) => {}
        other => panic!("expected TooManyInProcess, got {other:?}"),
    }
    s.workers = 2;
    assert!(matches!(
        s.validate(),
        Err(ScenarioError::Invalid { key: "workers", .. })
    ));
}
