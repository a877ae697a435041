//! The server API (`/api`) against a real node: each endpoint's effect seen by real WebSocket
//! members, every refusal as a JSON error with its status, the OpenAPI document, and the API
//! on a two-node Redis cluster (publish, send, presence and disconnect across nodes).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::{RedisServer, unique_prefix, use_redis};
use common::{Client, TestServer, wait_ready};
use reqwest::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "test-api-key-0123456789";

async fn server() -> TestServer {
    TestServer::with(|c| c.api.keys = vec!["other-key-0123456789ab".into(), KEY.into()]).await
}

/// An HTTP client for one node's API, sending `KEY` unless told otherwise.
struct Api {
    http: reqwest::Client,
    base: String,
}

/// Status, headers and JSON body of an answer.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    /// Asserts a JSON error `{"error": code, "message": …}` with `status`.
    fn error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"], code, "{}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(self.headers[CONTENT_TYPE], "application/json");
    }
}

impl Api {
    fn new(server: &TestServer) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.url("/api"),
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY)
    }

    async fn send(&self, request: RequestBuilder) -> Answer {
        let response = tokio::time::timeout(common::RECV_TIMEOUT, request.send())
            .await
            .expect("API request timed out")
            .expect("API request failed");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    /// POSTs `body` verbatim with `content_type`.
    async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Answer {
        let request = self
            .request(Method::POST, path)
            .header(CONTENT_TYPE, content_type)
            .body(body.to_owned());
        self.send(request).await
    }
}

/// Every operation with a valid request, for checks that apply to all of them.
fn operations() -> Vec<(Method, &'static str, Option<Value>)> {
    let msg = json!({"data": 1});
    vec![
        (Method::POST, "/rooms/lobby/publish", Some(msg.clone())),
        (
            Method::POST,
            "/publish",
            Some(json!({"rooms": ["lobby"], "data": 1})),
        ),
        (Method::POST, "/users/bob/send", Some(msg)),
        (Method::GET, "/rooms/lobby/presence", None),
        (Method::GET, "/rooms/lobby/history", None),
        (Method::POST, "/users/bob/disconnect", None),
        (Method::GET, "/stats", None),
    ]
}

#[tokio::test]
async fn publish_reaches_every_member() {
    let server = server().await;
    let api = Api::new(&server);
    let (mut alice, mut bob) = (server.connect("alice").await, server.connect("bob").await);
    alice.join("lobby").await;
    bob.join("lobby").await;

    let answer = api
        .post("/rooms/lobby/publish", json!({"data": {"text": "hi"}}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, json!({"room": "lobby", "offset": 1}));
    for member in [&mut alice, &mut bob] {
        let m = member.recv_message().await;
        assert_eq!(
            (&m["room"], &m["offset"], &m["from"], &m["data"]),
            (
                &json!("lobby"),
                &json!(1),
                &json!("server"),
                &json!({"text": "hi"})
            )
        );
    }

    // `from` names the sender; `data` may be any JSON, null included, and is not re-encoded.
    let raw = r#"{"from":"ops","data":{"b" : [1, 2.50], "a":null}}"#;
    let answer = api
        .post_raw("/rooms/lobby/publish", "application/json", raw)
        .await;
    assert_eq!(answer.body["offset"], 2, "{}", answer.body);
    let m = alice.recv_message().await;
    assert_eq!((&m["from"], &m["offset"]), (&json!("ops"), &json!(2)));
    let path = history_path("lobby", 1, &epoch(&api, "lobby").await);
    let history = api.request(Method::GET, &path).send().await.unwrap();
    let history = history.text().await.unwrap();
    assert!(
        history.contains(r#""data":{"b" : [1, 2.50], "a":null}"#),
        "{history}"
    );
    let answer = api
        .post("/rooms/lobby/publish", json!({"data": null}))
        .await;
    assert_eq!(answer.body["offset"], 3);
    assert_eq!(bob.recv_message().await["offset"], 2);
    assert_eq!(bob.recv_message().await["data"], Value::Null);
}

#[tokio::test]
async fn publish_to_many_rooms_answers_per_room() {
    let server = server().await;
    let api = Api::new(&server);
    let (mut alice, mut bob) = (server.connect("alice").await, server.connect("bob").await);
    alice.join("r1").await;
    bob.join("r2").await;
    bob.publish("r2", json!("earlier")).await;
    bob.recv_message().await;

    let answer = api
        .post(
            "/publish",
            json!({"rooms": ["r1", "r2", "nobody-here"], "data": {"n": 7}, "from": "deploy-bot"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({"results": [
            {"room": "r1", "offset": 1},
            {"room": "r2", "offset": 2},
            {"room": "nobody-here", "offset": 1},
        ]})
    );
    let (a, b) = (alice.recv_message().await, bob.recv_message().await);
    assert_eq!(
        (&a["room"], &a["from"], &a["data"]),
        (&json!("r1"), &json!("deploy-bot"), &json!({"n": 7}))
    );
    assert_eq!((&b["room"], &b["offset"]), (&json!("r2"), &json!(2)));
}

#[tokio::test]
async fn send_reaches_every_session_of_the_user() {
    let server = server().await;
    let api = Api::new(&server);
    let (mut bob1, mut bob2) = (server.connect("bob").await, server.connect("bob").await);
    let mut carol = server.connect("carol").await;

    let answer = api
        .post(
            "/users/bob/send",
            json!({"data": {"text": "psst"}, "from": "alice"}),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body, json!({"user": "bob"}));
    for bob in [&mut bob1, &mut bob2] {
        let d = bob.recv_type("direct").await;
        assert_eq!(
            (&d["from"], &d["data"]),
            (&json!("alice"), &json!({"text": "psst"}))
        );
    }
    let answer = api.post("/users/bob/send", json!({"data": [1, 2]})).await;
    assert_eq!(answer.status, 202);
    assert_eq!(bob1.recv_type("direct").await["from"], "server");
    // Accepted even when nobody is there to receive it.
    assert_eq!(
        api.post("/users/nobody/send", json!({"data": 1}))
            .await
            .status,
        202
    );
    carol.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn presence_lists_the_users_in_a_room() {
    let server = server().await;
    let api = Api::new(&server);
    let answer = api.get("/rooms/lobby/presence").await;
    assert_eq!(answer.body, json!({"room": "lobby", "users": []}));
    let mut clients = Vec::new();
    for user in ["bob", "alice", "bob"] {
        let mut c = server.connect(user).await;
        c.join("lobby").await;
        clients.push(c);
    }
    let answer = api.get("/rooms/lobby/presence").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        json!({"room": "lobby", "users": ["alice", "bob"]})
    );
}

async fn epoch(api: &Api, room: &str) -> String {
    let answer = api.get(&format!("/rooms/{room}/history")).await;
    answer.body["epoch"].as_str().unwrap().to_owned()
}

fn history_path(room: &str, since: u64, epoch: &str) -> String {
    format!("/rooms/{room}/history?since={since}&epoch={epoch}")
}

#[tokio::test]
async fn history_returns_the_messages_after_since() {
    let server = server().await;
    let api = Api::new(&server);
    let mut alice = server.connect("alice").await;
    alice.join("lobby").await;
    let mut seen = Vec::new();
    for i in 1..=3 {
        api.post("/rooms/lobby/publish", json!({"data": {"i": i}}))
            .await;
        seen.push(alice.recv_message().await);
    }

    let answer = api.get("/rooms/lobby/history").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let epoch = answer.body["epoch"].as_str().unwrap().to_owned();
    assert_eq!(answer.body["top"], 3);
    assert_eq!(answer.body["messages"], json!([]));
    assert!(answer.body.get("recovered").is_none(), "{}", answer.body);

    let answer = api.get(&history_path("lobby", 1, &epoch)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["recovered"], true);
    assert_eq!(answer.body["epoch"], epoch.as_str());
    // Exactly the frames the member received, as JSON objects.
    assert_eq!(answer.body["messages"], json!(seen[1..]));

    let answer = api.get(&history_path("lobby", 3, &epoch)).await;
    assert_eq!(
        (&answer.body["recovered"], &answer.body["messages"]),
        (&json!(true), &json!([]))
    );
    for (since, epoch) in [(1, "0000000000000000"), (9, epoch.as_str())] {
        let answer = api.get(&history_path("lobby", since, epoch)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["recovered"], false, "{}", answer.body);
        assert_eq!(answer.body["messages"], json!([]));
        assert_eq!(answer.body["top"], 3);
    }
}

#[tokio::test]
async fn disconnect_closes_every_session_of_the_user_with_4003() {
    let server = server().await;
    let api = Api::new(&server);
    let (mut a1, mut a2) = (server.connect("alice").await, server.connect("alice").await);
    let mut bob = server.connect("bob").await;
    bob.join("lobby").await;

    let answer = api.post("/users/alice/disconnect", Value::Null).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body, json!({"user": "alice"}));
    assert_eq!(a1.expect_close().await, 4003);
    assert_eq!(a2.expect_close().await, 4003);
    // Nobody else is touched.
    api.post("/rooms/lobby/publish", json!({"data": 1})).await;
    assert_eq!(bob.recv_message().await["data"], 1);
}

#[tokio::test]
async fn stats_counts_this_node() {
    let server = server().await;
    let api = Api::new(&server);
    let mut alice = server.connect("alice").await;
    alice.join("lobby").await;
    let answer = api.get("/stats").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        json!({"node": alice.welcome["node"], "sessions": 1, "rooms": 1, "users": 1,
               "draining": false, "broker_available": true})
    );
}

#[tokio::test]
async fn every_operation_needs_a_configured_key() {
    let server = server().await;
    let api = Api::new(&server);
    let url = |path: &str| format!("{}{path}", api.base);
    for (method, path, body) in operations() {
        let bare = api.http.request(method.clone(), url(path));
        let bare = match &body {
            Some(body) => bare.json(body),
            None => bare,
        };
        let wrong_key = bare
            .try_clone()
            .unwrap()
            .bearer_auth("test-api-key-0123456780");
        let prefix = bare.try_clone().unwrap().bearer_auth("test-api-key");
        let basic = bare.try_clone().unwrap().basic_auth("admin", Some(KEY));
        let no_scheme = bare.try_clone().unwrap().header(AUTHORIZATION, KEY);
        for request in [bare, wrong_key, prefix, basic, no_scheme] {
            let answer = api.send(request).await;
            answer.error(401, "unauthorized");
            assert_eq!(
                answer.headers[WWW_AUTHENTICATE], "Bearer",
                "{method} {path}"
            );
        }
        // Both configured keys work; the scheme is case-insensitive.
        let ok = api.http.request(method.clone(), url(path));
        let ok = match &body {
            Some(body) => ok.json(body),
            None => ok,
        };
        for auth in [
            "bearer test-api-key-0123456789",
            "Bearer other-key-0123456789ab",
        ] {
            let answer = api
                .send(ok.try_clone().unwrap().header(AUTHORIZATION, auth))
                .await;
            assert!(answer.status < 300, "{method} {path}: {}", answer.body);
        }
    }
}

#[tokio::test]
async fn no_configured_key_means_no_access() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    api.get("/stats").await.error(401, "unauthorized");
    // The document stays readable, without a key.
    let doc = reqwest::get(server.url("/api/openapi.json")).await.unwrap();
    assert_eq!(doc.status(), 200);
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let server = server().await;
    let api = Api::new(&server);
    let json = "application/json";
    for (body, code) in [
        ("", "bad_json"),
        ("not json", "bad_json"),
        ("{\"data\": 1", "bad_json"),
        ("{\"data\": 1} trailing", "bad_json"),
        ("[{\"text\": \"hi\"}]", "bad_json"),
        ("\"data\"", "bad_json"),
        ("{}", "bad_request"),
        ("{\"from\": \"ops\"}", "bad_request"),
        ("{\"data\": 1, \"form\": \"ops\"}", "bad_request"),
        ("{\"data\": 1, \"from\": 5}", "bad_request"),
        ("{\"data\": 1, \"from\": null}", "bad_request"),
    ] {
        for path in ["/rooms/lobby/publish", "/users/bob/send"] {
            let answer = api.post_raw(path, json, body).await;
            assert_eq!(
                answer.body["error"], code,
                "{path} {body:?}: {}",
                answer.body
            );
            answer.error(400, code);
        }
    }
    for (body, code) in [
        (json!({"rooms": "lobby", "data": 1}), "bad_request"),
        (json!({"rooms": [], "data": 1}), "bad_request"),
        (json!({"rooms": ["a", "b", "a"], "data": 1}), "bad_request"),
        (json!({"rooms": ["a"]}), "bad_request"),
        (json!({"rooms": [1], "data": 1}), "bad_request"),
    ] {
        api.post("/publish", body).await.error(400, code);
    }
    let too_many: Vec<String> = (0..101).map(|i| format!("r{i}")).collect();
    api.post("/publish", json!({"rooms": too_many, "data": 1}))
        .await
        .error(400, "bad_request");
}

#[tokio::test]
async fn bodies_must_be_declared_json() {
    let server = server().await;
    let api = Api::new(&server);
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonp",
    ] {
        api.post_raw("/rooms/lobby/publish", content_type, r#"{"data":1}"#)
            .await
            .error(415, "unsupported_media_type");
    }
    let no_type = api
        .request(Method::POST, "/users/bob/send")
        .body(r#"{"data":1}"#);
    api.send(no_type).await.error(415, "unsupported_media_type");
    let answer = api
        .post_raw(
            "/rooms/lobby/publish",
            "application/json; charset=utf-8",
            r#"{"data":1}"#,
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// Sends a raw HTTP/1.1 request and returns the whole answer (the server closes after it).
async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(common::RECV_TIMEOUT, stream.read_to_end(&mut answer));
    // A server that refuses early may reset the connection after answering.
    let _ = read.await.expect("no answer in time");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let server = TestServer::with(|c| {
        c.api.keys = vec![KEY.into()];
        c.api.max_body_bytes = 1024;
    })
    .await;
    let api = Api::new(&server);
    let fits = format!(r#"{{"data":"{}"}}"#, "x".repeat(1024 - 11));
    assert_eq!(fits.len(), 1024);
    let answer = api
        .post_raw("/rooms/lobby/publish", "application/json", &fits)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let over = format!(r#"{{"data":"{}"}}"#, "x".repeat(1024 - 10));
    for path in ["/rooms/lobby/publish", "/publish", "/users/bob/send"] {
        api.post_raw(path, "application/json", &over)
            .await
            .error(413, "payload_too_large");
    }

    // Without a Content-Length: refused once the chunks pass the limit.
    let chunk = "x".repeat(600);
    let request = format!(
        "POST /api/rooms/lobby/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    let answer = raw_http(server.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(r#""error":"payload_too_large""#),
        "{answer}"
    );
}

#[tokio::test]
async fn invalid_names_are_400() {
    let server = server().await;
    let api = Api::new(&server);
    let long = "r".repeat(129);
    let msg = json!({"data": 1});
    for room in [
        "a%20b",
        "slash%2Froom",
        "%C3%BCn%C3%AF",
        "star*",
        long.as_str(),
    ] {
        api.post(&format!("/rooms/{room}/publish"), msg.clone())
            .await
            .error(400, "invalid_room");
        api.get(&format!("/rooms/{room}/presence"))
            .await
            .error(400, "invalid_room");
        api.get(&format!("/rooms/{room}/history"))
            .await
            .error(400, "invalid_room");
    }
    for user in ["a%20b", "b%7Bc%7D", long.as_str()] {
        api.post(&format!("/users/{user}/send"), msg.clone())
            .await
            .error(400, "invalid_user");
        api.post(&format!("/users/{user}/disconnect"), Value::Null)
            .await
            .error(400, "invalid_user");
    }
    for from in ["", "a b", long.as_str()] {
        let body = json!({"data": 1, "from": from});
        api.post("/rooms/lobby/publish", body.clone())
            .await
            .error(400, "invalid_user");
        api.post("/users/bob/send", body)
            .await
            .error(400, "invalid_user");
    }
    api.post("/publish", json!({"rooms": ["ok", "not ok"], "data": 1}))
        .await
        .error(400, "invalid_room");
    // Nothing was published by the refused multi-room request.
    assert_eq!(api.get("/rooms/ok/history").await.body["top"], 0);
    api.post(
        "/publish",
        json!({"rooms": ["ok"], "data": 1, "from": "x y"}),
    )
    .await
    .error(400, "invalid_user");
}

#[tokio::test]
async fn bad_since_or_epoch_is_400() {
    let server = server().await;
    let api = Api::new(&server);
    let epoch = epoch(&api, "lobby").await;
    for query in [
        "since=1".to_owned(),
        format!("epoch={epoch}"),
        format!("since=abc&epoch={epoch}"),
        format!("since=-1&epoch={epoch}"),
        format!("since=1.5&epoch={epoch}"),
        format!("since=9223372036854775808&epoch={epoch}"),
        format!("since=99999999999999999999999&epoch={epoch}"),
        "since=1&epoch=".to_owned(),
        "since=1&epoch=a%20b".to_owned(),
        format!("since=1&epoch={}", "e".repeat(129)),
    ] {
        let answer = api.get(&format!("/rooms/lobby/history?{query}")).await;
        assert_eq!(
            answer.body["error"], "bad_query",
            "{query}: {}",
            answer.body
        );
        answer.error(400, "bad_query");
    }
    // The largest accepted `since` is simply ahead of the room.
    let answer = api
        .get(&history_path("lobby", i64::MAX as u64, &epoch))
        .await;
    assert_eq!(answer.body["recovered"], false, "{}", answer.body);
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = server().await;
    let api = Api::new(&server);
    for path in [
        "/nope",
        "/rooms/lobby",
        "/users/bob",
        "/rooms/a/b/publish",
        "/",
        "",
    ] {
        let answer = api.get(path).await;
        assert_eq!(answer.status, 404, "GET {path}: {}", answer.body);
        answer.error(404, "not_found");
        api.post(path, json!({"data": 1}))
            .await
            .error(404, "not_found");
    }
    // An empty segment still matches the route: the name is what is wrong.
    let answer = api.post("/rooms//publish", json!({"data": 1})).await;
    answer.error(400, "invalid_room");
    // Before authentication: the paths are public in the OpenAPI document anyway.
    let bare = api.http.get(format!("{}/nope", api.base));
    api.send(bare).await.error(404, "not_found");
    for (method, path, allow) in [
        (Method::GET, "/rooms/lobby/publish", "POST"),
        (Method::DELETE, "/publish", "POST"),
        (Method::POST, "/rooms/lobby/presence", "GET,HEAD"),
        (Method::PUT, "/stats", "GET,HEAD"),
        (Method::POST, "/openapi.json", "GET,HEAD"),
    ] {
        let answer = api.send(api.request(method.clone(), path)).await;
        answer.error(405, "method_not_allowed");
        assert_eq!(answer.headers[ALLOW], allow, "{method} {path}");
    }
}

#[tokio::test]
async fn openapi_document_is_served_without_a_key() {
    let server = server().await;
    let response = reqwest::get(server.url("/api/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc, serde_json::to_value(roomcast::api::openapi()).unwrap());
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path, _) in operations() {
        let template = path.replace("lobby", "{room}").replace("bob", "{user}");
        let op = &paths[&template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(op["responses"]["401"].is_object(), "{method} {path}");
    }
    for name in ["BadRequest", "Unauthorized", "NotFound", "MethodNotAllowed"] {
        assert!(doc["components"]["responses"][name].is_object(), "{name}");
    }
    for name in [
        "PayloadTooLarge",
        "UnsupportedMediaType",
        "Unavailable",
        "Internal",
    ] {
        assert!(doc["components"]["responses"][name].is_object(), "{name}");
    }
}

/// Two nodes on one private Redis, API enabled on both.
async fn two_nodes(redis: &RedisServer) -> (TestServer, TestServer) {
    let prefix = unique_prefix();
    let start = |id: &'static str| {
        let prefix = prefix.clone();
        TestServer::with(move |c| {
            use_redis(c, redis, &prefix);
            c.node_id = Some(id.into());
            c.api.keys = vec![KEY.into()];
        })
    };
    let (a, b) = (start("n-a").await, start("n-b").await);
    wait_ready(&a.url(""), 200).await;
    wait_ready(&b.url(""), 200).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_api_on_one_node_reaches_members_on_the_other() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis).await;
    let api = Api::new(&a);
    let mut on_b = b.connect("alice").await;
    let mut on_a = a.connect("carol").await;
    on_b.join("lobby").await;
    on_a.join("lobby").await;

    let answer = api
        .post("/rooms/lobby/publish", json!({"data": {"text": "from A"}}))
        .await;
    assert_eq!(answer.body, json!({"room": "lobby", "offset": 1}));
    for member in [&mut on_b, &mut on_a] {
        let m = member.recv_message().await;
        assert_eq!(
            (&m["offset"], &m["data"]),
            (&json!(1), &json!({"text": "from A"}))
        );
    }
    // The other node's API continues the same order.
    let answer = Api::new(&b)
        .post("/publish", json!({"rooms": ["lobby"], "data": 2}))
        .await;
    assert_eq!(answer.body["results"][0]["offset"], 2);
    assert_eq!(on_a.recv_message().await["offset"], 2);
    assert_eq!(on_b.recv_message().await["offset"], 2);

    let users = api.get("/rooms/lobby/presence").await.body["users"].clone();
    assert_eq!(users, json!(["alice", "carol"]));

    let answer = api.post("/users/alice/send", json!({"data": "psst"})).await;
    assert_eq!(answer.status, 202);
    assert_eq!(on_b.recv_type("direct").await["data"], "psst");

    let history = api.get("/rooms/lobby/history").await.body;
    let since0 = api
        .get(&history_path(
            "lobby",
            0,
            history["epoch"].as_str().unwrap(),
        ))
        .await;
    assert_eq!(since0.body["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_disconnect_closes_sessions_on_every_node() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis).await;
    let mut alice_a = a.connect("alice").await;
    let mut alice_b = b.connect("alice").await;
    let mut bob_b = b.connect("bob").await;
    bob_b.join("lobby").await;

    let answer = Api::new(&a)
        .post("/users/alice/disconnect", Value::Null)
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(alice_a.expect_close().await, 4003);
    assert_eq!(alice_b.expect_close().await, 4003);
    Api::new(&a)
        .post("/rooms/lobby/publish", json!({"data": "still here"}))
        .await;
    assert_eq!(bob_b.recv_message().await["data"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_unavailable_is_503_and_nothing_is_published() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let server = TestServer::with(|c| {
        use_redis(c, &redis, &prefix);
        c.api.keys = vec![KEY.into()];
        c.redis.command_timeout_ms = 500;
    })
    .await;
    wait_ready(&server.url(""), 200).await;
    let api = Api::new(&server);
    let mut bob: Client = server.connect("bob").await;
    bob.join("lobby").await;
    redis.kill();

    let msg = json!({"data": 1});
    for answer in [
        api.post("/rooms/lobby/publish", msg.clone()).await,
        api.post("/users/bob/send", msg).await,
        api.get("/rooms/lobby/presence").await,
        api.get("/rooms/lobby/history").await,
        api.post("/users/bob/disconnect", Value::Null).await,
    ] {
        answer.error(503, "unavailable");
        assert_eq!(answer.headers[RETRY_AFTER], "1");
    }
    let answer = api
        .post("/publish", json!({"rooms": ["lobby", "other"], "data": 1}))
        .await;
    assert_eq!(answer.status, 200);
    for (i, room) in ["lobby", "other"].iter().enumerate() {
        let result = &answer.body["results"][i];
        assert_eq!(
            (&result["room"], &result["error"]),
            (&json!(room), &json!("unavailable"))
        );
        assert!(result.get("offset").is_none(), "{result}");
    }
    let stats = api.get("/stats").await.body;
    assert_eq!(stats["broker_available"], false, "{stats}");
    bob.expect_silence(Duration::from_millis(200)).await;
}
