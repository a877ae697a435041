//! `wss://` targets through a real TLS front end: haproxy terminating TLS with a certificate
//! from a throwaway CA, before a node, all on loopback. With `--insecure` a run over worker
//! processes is clean; with the CA trusted through `SSL_CERT_FILE` a run is clean with
//! verification on; trusting another CA, the run stops at the probe naming the certificate
//! problem and the ways out, within seconds.

mod common;

use common::tls::TlsFrontEnd;
use common::{
    FAIL_FAST, Server, assert_clean, assert_refused, run_binary_with, scenario_path, smoke_binary,
    smoke_binary_with,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_run_through_a_self_signed_front_end_is_clean() {
    let server = Server::start().await;
    let front = TlsFrontEnd::start(server.addr);
    let url = front.url("127.0.0.1");
    // Two worker processes: each must get the target and `--insecure` from the coordinator.
    let (_ran, r) = smoke_binary(&url, 2, &["--insecure"]).await;
    drop(front);
    server.stop().await;
    assert_clean(&r);
    assert_eq!(r.urls, [url]);
    assert_eq!((r.mode.as_str(), r.workers), ("processes", 2));
    assert_eq!(r.connections.ok, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_ca_verifies_without_insecure() {
    let server = Server::start().await;
    let front = TlsFrontEnd::start(server.addr);
    // By name: the certificate's DNS entry is checked, and `localhost` is resolved.
    let url = front.url("localhost");
    let env = [("SSL_CERT_FILE", front.ca.as_path())];
    let (_ran, r) = smoke_binary_with(&url, 1, &[], &env).await;
    drop(front);
    server.stop().await;
    assert_clean(&r);
    assert_eq!(r.urls, [url]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_stops_the_run_saying_so() {
    let server = Server::start().await;
    let front = TlsFrontEnd::start(server.addr);
    let url = front.url("127.0.0.1");
    let smoke = scenario_path("smoke");
    let env = [("SSL_CERT_FILE", front.other_ca.as_path())];
    let args = [smoke.to_str().unwrap(), "--url", &url];
    let ran = run_binary_with(&args, &env, FAIL_FAST).await;
    drop(front);
    server.stop().await;
    assert_refused(
        &ran,
        &[
            &format!("cannot reach {url}"),
            "certificate refused: invalid peer certificate: UnknownIssuer",
            "SSL_CERT_FILE",
            "--insecure",
        ],
    );
}
