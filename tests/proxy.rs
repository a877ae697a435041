//! The proxies (`[proxy]`, docs/backend.md) against a real backend process: the Python script
//! tests/backend/proxy_backend.py on a free loopback port, which verifies every signature,
//! records every request and answers by path. Killed by the test to take the backend down.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, TestServer};
use roomcast::Config;
use roomcast::config::{OnFailure, ProxyRoute};
use serde_json::{Value, json};

mod common;

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

/// The backend script as a process; killed when dropped.
struct Backend {
    child: Child,
    base: String,
}

impl Backend {
    fn start() -> Self {
        Self::with_secret(SECRET)
    }

    /// A backend that verifies signatures with `secret`.
    fn with_secret(secret: &str) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/backend/proxy_backend.py"
        );
        let mut child = Command::new("python3")
            .args([script, "0", secret])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): these tests need Python 3"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the backend printed no port: {line:?}"));
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn route(&self, room: &str, path: &str, timeout_ms: u64) -> ProxyRoute {
        ProxyRoute {
            room: room.into(),
            url: self.url(path),
            timeout_ms,
        }
    }

    async fn requests(&self) -> Vec<Value> {
        let got = reqwest::get(self.url("/requests")).await.unwrap();
        got.json::<Vec<Value>>().await.unwrap()
    }

    /// The recorded requests to `path`, each checked to have carried a valid signature.
    async fn signed_requests(&self, path: &str) -> Vec<Value> {
        let all = self.requests().await;
        let on_path: Vec<Value> = all.into_iter().filter(|r| r["path"] == path).collect();
        for r in &on_path {
            assert_eq!(r["signature_ok"], true, "unsigned or forged: {r}");
        }
        on_path.into_iter().map(|r| r["body"].clone()).collect()
    }

    async fn post(&self, path: &str, body: Value) {
        let client = reqwest::Client::new();
        let sent = client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(sent.status().is_success());
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn proxied(config: &mut Config, on_failure: OnFailure) {
    config.proxy.secret = Some(SECRET.into());
    config.proxy.on_failure = on_failure;
}

async fn try_join(client: &mut Client, room: &str) -> Value {
    client.request(json!({"type": "join", "room": room})).await
}

/// The value of the series `name` with every one of `labels` (`kind="join"`), summed over
/// the rest: the recorder is the test process's, shared by the tests running in it.
async fn metric(server: &TestServer, name: &str, labels: &[&str]) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn assert_error(reply: &Value, code: &str) {
    assert_eq!(reply["type"], "error", "expected {code}: {reply}");
    assert_eq!(reply["code"], code, "{reply}");
}

#[tokio::test]
async fn a_join_is_asked_at_the_moment_of_joining() {
    let backend = Backend::start();
    let server = TestServer::with(|c| {
        proxied(c, OnFailure::Deny);
        c.proxy.join = vec![backend.route("team:*", "/join", 5_000)];
    })
    .await;
    let mut alice = server.connect("alice").await;
    let mut mallory = server.connect("mallory").await;
    alice.join("team:red").await;
    backend
        .post(
            "/control",
            json!({"deny_users": ["mallory"], "deny_rooms": ["team:blue"]}),
        )
        .await;
    let denied = try_join(&mut mallory, "team:red").await;
    assert_error(&denied, "denied");
    assert_eq!(denied["app_code"], "not_allowed");
    assert_eq!(denied["message"], "not in this room");
    assert_error(&try_join(&mut alice, "team:blue").await, "denied");
    // Decided when asked: the backend's rules changed, the next join hears it.
    backend.post("/control", json!({"deny_rooms": []})).await;
    alice.join("team:blue").await;
    // No pattern matched: no call.
    mallory.join("lobby").await;
    // A denied join left mallory out: a publish there is refused as for any non-member.
    assert_error(
        &mallory.try_publish("team:red", json!("x")).await,
        "not_member",
    );
    let joins = backend.signed_requests("/join").await;
    let asked: Vec<(&str, &str)> = joins
        .iter()
        .map(|b| (b["user"].as_str().unwrap(), b["room"].as_str().unwrap()))
        .collect();
    assert_eq!(
        asked,
        [
            ("alice", "team:red"),
            ("mallory", "team:red"),
            ("alice", "team:blue"),
            ("alice", "team:blue")
        ]
    );
}

#[tokio::test]
async fn the_join_cache_keeps_allows_only() {
    let backend = Backend::start();
    let server = TestServer::with(|c| {
        proxied(c, OnFailure::Deny);
        c.proxy.join = vec![backend.route("*", "/join", 5_000)];
        c.proxy.join_cache_ms = 60_000;
    })
    .await;
    let mut alice = server.connect("alice").await;
    for _ in 0..3 {
        alice.join("r").await;
        alice.request(json!({"type": "leave", "room": "r"})).await;
    }
    backend
        .post("/control", json!({"deny_users": ["bob"]}))
        .await;
    let mut bob = server.connect("bob").await;
    for _ in 0..2 {
        assert_error(&try_join(&mut bob, "r").await, "denied");
    }
    assert_eq!(backend.signed_requests("/join").await.len(), 1 + 2);
}

#[tokio::test]
async fn a_publish_is_replaced_or_refused_by_the_backend() {
    let backend = Backend::start();
    let server = TestServer::with(|c| {
        proxied(c, OnFailure::Deny);
        c.proxy.publish = vec![backend.route("chat:*", "/publish", 5_000)];
    })
    .await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.join("chat:1").await;
    bob.join("chat:1").await;

    let offset = alice
        .publish("chat:1", json!({"action": "replace", "text": "hi"}))
        .await;
    for member in [&mut alice, &mut bob] {
        let message = member.recv_message().await;
        assert_eq!(message["offset"], offset);
        assert_eq!(message["data"], json!({"replaced": true, "text": "hi"}));
        assert_eq!(message["id"], "msg-1");
        assert_eq!(message["from"], "alice");
    }

    let refused = alice.try_publish("chat:1", json!({"action": "deny"})).await;
    assert_error(&refused, "denied");
    assert_eq!(refused["app_code"], "spam");
    assert_eq!(refused["message"], "no spam here");

    // Allowed as sent: no id, the client's data.
    let next = alice.publish("chat:1", json!({"text": "plain"})).await;
    assert_eq!(next, offset + 1, "the refused publish took no offset");
    for member in [&mut alice, &mut bob] {
        let message = member.recv_message().await;
        assert_eq!(message["data"], json!({"text": "plain"}), "{message}");
        assert!(message.get("id").is_none(), "{message}");
    }
    bob.expect_silence(Duration::from_millis(300)).await;

    // History carries the backend's id too.
    let mut carol = server.connect("carol").await;
    let joined = carol.join("chat:1").await;
    carol
        .request(json!({"type": "leave", "room": "chat:1"}))
        .await;
    let rejoin = json!({"type": "join", "room": "chat:1", "epoch": joined["epoch"], "since": 0});
    assert_eq!(carol.request(rejoin).await["recovered"], true);
    let replayed = carol.recv_message().await;
    assert_eq!(replayed["id"], "msg-1");

    let denied = ["kind=\"publish\"", "outcome=\"deny\""];
    assert!(metric(&server, "roomcast_proxy_calls_total", &denied).await >= 1.0);
    assert!(
        metric(
            &server,
            "roomcast_proxy_seconds_count",
            &["kind=\"publish\""]
        )
        .await
            >= 3.0
    );
    let published = backend.signed_requests("/publish").await;
    assert_eq!(published.len(), 3);
    assert_eq!(published[0]["user"], "alice");
    assert_eq!(published[0]["room"], "chat:1");
    assert_eq!(
        published[0]["data"],
        json!({"action": "replace", "text": "hi"})
    );
}

#[tokio::test]
async fn the_connect_proxy_sets_the_user_or_refuses() {
    let backend = Backend::start();
    let server = TestServer::with(|c| {
        proxied(c, OnFailure::Deny);
        c.proxy.connect.url = Some(backend.url("/connect"));
        c.proxy.join = vec![backend.route("home:*", "/join", 5_000)];
        c.limits.max_rooms_per_connection = 3;
    })
    .await;
    let url = |token: &str| format!("ws://{}/ws?token={token}", server.addr);
    // The join proxy would refuse home:carol; rooms the connect answer names are not asked about.
    backend
        .post("/control", json!({"deny_rooms": ["home:carol"]}))
        .await;
    let mut carol = Client::try_connect(url("set:carol")).await.unwrap();
    assert_eq!(carol.welcome["user"], "carol");
    assert_eq!(carol.welcome["info"], json!({"plan": "gold"}));
    let joined = carol.recv_type("joined").await;
    assert_eq!(joined["room"], "home:carol");
    assert!(backend.signed_requests("/join").await.is_empty());
    // A user that breaks the name rule is a bad answer: on_failure (deny) refuses.
    let bad = Client::try_connect(url("set:not!valid"))
        .await
        .err()
        .expect("refused");
    assert_eq!(bad.status, 503);
    assert_eq!(bad.body["error"], "backend_unavailable");

    let refused = Client::try_connect(url("deny"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body["error"], "denied");
    assert_eq!(refused.body["app_code"], "4403");
    assert_eq!(refused.body["message"], "banned");

    // No change asked: the user the node found.
    // Past the room limit: one error for the rest, not one per room.
    let mut many = Client::try_connect(url("many:5")).await.unwrap();
    for i in 0..3 {
        assert_eq!(many.recv_type("joined").await["room"], format!("r{i}"));
    }
    let full = many.recv_type("error").await;
    assert_eq!(full["code"], "too_many_rooms");
    assert!(
        full["message"]
            .as_str()
            .unwrap()
            .starts_with("2 rooms from r3 on"),
        "{full}"
    );
    many.expect_silence(Duration::from_millis(200)).await;

    let dave = server.connect("dave").await;
    assert_eq!(dave.user(), "dave");
    assert!(dave.welcome.get("info").is_none());

    let asked = backend.signed_requests("/connect").await;
    assert_eq!(asked.len(), 5);
    assert_eq!(asked[0]["token"], "set:carol");
    assert_eq!(asked[0]["client"], "127.0.0.1");
    assert_eq!(asked[4]["user"], "dave");
    assert_eq!(asked[4]["authenticated"], false);
}

/// Joins `team:*` (join proxy) and publishes to `chat:*` (publish proxy) with the backend
/// dead: what `policy` says, and never an ack for a publish that did not happen.
async fn backend_down(policy: OnFailure) {
    let mut backend = Backend::start();
    let server = TestServer::with(|c| {
        proxied(c, policy);
        c.proxy.join = vec![backend.route("team:*", "/join", 2_000)];
        c.proxy.publish = vec![backend.route("chat:*", "/publish", 2_000)];
        c.proxy.connect.url = Some(backend.url("/connect"));
    })
    .await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.join("chat:1").await;
    bob.join("chat:1").await;
    backend.kill();

    let started = Instant::now();
    let join = try_join(&mut alice, "team:red").await;
    let publish = alice.try_publish("chat:1", json!({"text": "hi"})).await;
    let connect = Client::try_connect(server.ws_url("carol")).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    match policy {
        OnFailure::Deny => {
            assert_error(&join, "backend_unavailable");
            assert_error(&publish, "backend_unavailable");
            let refused = connect.err().expect("the upgrade is refused");
            assert_eq!(refused.status, 503);
            assert_eq!(refused.body["error"], "backend_unavailable");
            // Nothing was published: no member gets anything.
            bob.expect_silence(Duration::from_millis(500)).await;
            alice.expect_silence(Duration::from_millis(100)).await;
        }
        OnFailure::Allow => {
            assert_eq!(join["type"], "joined", "{join}");
            assert_eq!(publish["type"], "ack", "{publish}");
            let message = bob.recv_message().await;
            assert_eq!(message["data"], json!({"text": "hi"}));
            assert_eq!(connect.unwrap().user(), "carol");
        }
    }
}

#[tokio::test]
async fn a_dead_backend_denies_by_default_with_no_false_ack() {
    backend_down(OnFailure::Deny).await;
}

#[tokio::test]
async fn a_dead_backend_lets_everything_through_under_allow() {
    backend_down(OnFailure::Allow).await;
}

#[tokio::test]
async fn a_backend_past_its_timeout_gets_the_policy_in_time() {
    let backend = Backend::start();
    for policy in [OnFailure::Deny, OnFailure::Allow] {
        let server = TestServer::with(|c| {
            proxied(c, policy);
            c.proxy.join = vec![backend.route("slow:*", "/hang", 300)];
            c.proxy.publish = vec![backend.route("slow:*", "/hang", 300)];
        })
        .await;
        let mut alice = server.connect("alice").await;
        let started = Instant::now();
        let join = try_join(&mut alice, "slow:1").await;
        // Within the timeout plus a generous margin for a loaded machine, not the 60 s hang.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        match policy {
            OnFailure::Deny => assert_error(&join, "backend_unavailable"),
            OnFailure::Allow => {
                assert_eq!(join["type"], "joined", "{join}");
                let publish = alice.try_publish("slow:1", json!(1)).await;
                assert_eq!(publish["type"], "ack", "{publish}");
            }
        }
    }
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_backend() {
    let backend = Backend::with_secret("another-secret-the-node-does-not-know!!");
    let server = TestServer::with(|c| {
        proxied(c, OnFailure::Deny);
        c.proxy.join = vec![backend.route("*", "/join", 5_000)];
    })
    .await;
    let mut alice = server.connect("alice").await;
    assert_error(&try_join(&mut alice, "r").await, "backend_unavailable");
    let seen = backend.requests().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["signature_ok"], false);
}

#[tokio::test]
async fn calls_past_max_concurrency_fail_at_once() {
    let backend = Backend::start();
    let server = TestServer::with(|c| {
        proxied(c, OnFailure::Deny);
        c.proxy.join = vec![backend.route("slow:*", "/hang", 10_000)];
        c.proxy.max_concurrency = 2;
    })
    .await;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut client = server.connect(&format!("held{i}")).await;
        client
            .send_json(json!({"type": "join", "room": format!("slow:{i}"), "id": 1}))
            .await;
        held.push(client);
    }
    // Both calls reach the backend before the excess is sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.requests().await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the held joins never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    for i in 0..3 {
        let mut extra = server.connect(&format!("extra{i}")).await;
        assert_error(&try_join(&mut extra, "slow:x").await, "backend_unavailable");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        backend.requests().await.len(),
        2,
        "the excess never reached the backend"
    );
    backend.post("/release", json!({})).await;
    for client in &mut held {
        assert_eq!(client.recv_type("joined").await["id"], 1);
    }
}

#[tokio::test]
async fn api_publishes_are_not_sent_to_the_publish_proxy() {
    let backend = Backend::start();
    let server = TestServer::with(|c| {
        proxied(c, OnFailure::Deny);
        c.proxy.publish = vec![backend.route("chat:*", "/publish", 5_000)];
        c.api.keys = vec![common::api::KEY.into()];
    })
    .await;
    let mut bob = server.connect("bob").await;
    bob.join("chat:1").await;
    let answer = reqwest::Client::new()
        .post(server.url("/api/rooms/chat:1/publish"))
        .bearer_auth(common::api::KEY)
        .json(&json!({"data": {"action": "deny"}, "from": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let message = bob.recv_message().await;
    assert_eq!(message["data"], json!({"action": "deny"}));
    assert!(backend.requests().await.is_empty());
}

/// Through Redis and across two nodes: the replaced data and the backend's id reach a member on
/// the other node, and a refused publish takes no offset there either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_publish_crosses_nodes_through_redis_with_its_id() {
    use common::redis::{RedisServer, unique_prefix, use_redis};
    let backend = Backend::start();
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for id in ["p0", "p1"] {
        let node = TestServer::with(|c| {
            use_redis(c, &redis, &prefix);
            c.node_id = Some(id.into());
            proxied(c, OnFailure::Deny);
            c.proxy.publish = vec![backend.route("chat:*", "/publish", 5_000)];
        })
        .await;
        common::wait_ready(&node.url(""), 200).await;
        nodes.push(node);
    }
    let mut alice = nodes[0].connect("alice").await;
    let mut bob = nodes[1].connect("bob").await;
    alice.join("chat:r").await;
    bob.join("chat:r").await;
    let refused = alice.try_publish("chat:r", json!({"action": "deny"})).await;
    assert_error(&refused, "denied");
    let offset = alice
        .publish("chat:r", json!({"action": "replace", "text": "x"}))
        .await;
    assert_eq!(offset, 1, "the refused publish took no offset");
    let message = bob.recv_message().await;
    assert_eq!(message["data"], json!({"replaced": true, "text": "x"}));
    assert!(
        message["id"].as_str().unwrap().starts_with("msg-"),
        "{message}"
    );
}

/// Answers the node must not take: a redirect (not followed) and one longer than
/// `proxy.max_response_bytes`; both are failures, so `deny` refuses.
#[tokio::test]
async fn redirects_and_oversized_answers_are_failures() {
    let backend = Backend::start();
    let server = TestServer::with(|c| {
        proxied(c, OnFailure::Deny);
        c.proxy.join = vec![
            backend.route("redirect:*", "/redirect", 5_000),
            backend.route("big:*", "/big", 5_000),
        ];
        c.proxy.max_response_bytes = 4096;
    })
    .await;
    let mut alice = server.connect("alice").await;
    assert_error(
        &try_join(&mut alice, "redirect:1").await,
        "backend_unavailable",
    );
    assert_error(&try_join(&mut alice, "big:1").await, "backend_unavailable");
    let paths: Vec<Value> = backend
        .requests()
        .await
        .iter()
        .map(|r| r["path"].clone())
        .collect();
    assert_eq!(
        paths,
        ["/redirect", "/big"],
        "the redirect was not followed to /join"
    );
}

/// With authentication on, the connect proxy is asked after the token is verified: it sees the
/// token's user as authenticated and the token itself; a bad token is refused before it is
/// asked anything.
#[tokio::test]
async fn with_authentication_the_connect_proxy_sees_the_verified_user() {
    use jsonwebtoken::{EncodingKey, Header};
    const JWT_SECRET: &str = "jwt-secret-for-the-proxy-test-0123456789";
    let backend = Backend::start();
    let server = TestServer::with(|c| {
        proxied(c, OnFailure::Deny);
        c.proxy.connect.url = Some(backend.url("/connect"));
        c.auth.secret = JWT_SECRET.into();
    })
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let token = jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": "erin", "exp": exp}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let erin = Client::try_connect(format!("ws://{}/ws?token={token}", server.addr))
        .await
        .unwrap();
    assert_eq!(erin.user(), "erin");
    let forged = Client::try_connect(format!("ws://{}/ws?token=forged", server.addr)).await;
    assert_eq!(forged.err().expect("refused").status, 401);
    let asked = backend.signed_requests("/connect").await;
    assert_eq!(asked.len(), 1, "the forged token never reached the backend");
    assert_eq!(asked[0]["user"], "erin");
    assert_eq!(asked[0]["authenticated"], true);
    assert_eq!(asked[0]["token"], token);
}
