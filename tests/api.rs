//! The server API (`/api`) against a real node: each endpoint's effect seen by real WebSocket
//! members, the OpenAPI document, and the API on a two-node Redis cluster (publish, send,
//! presence and disconnect across nodes). Refusals are in tests/api_refusals.rs.

mod common;

use std::time::Duration;

use common::api::{Api, KEY, epoch, history_path, operations, server};
use common::redis::{RedisServer, unique_prefix, use_redis};
use common::{Client, TestServer, wait_ready};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

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

/// A publish key makes an API retry safe, on one room and on many: the same key answers the
/// first offsets and publishes nothing; a malformed key is refused.
#[tokio::test]
async fn a_publish_retried_with_its_key_is_answered_with_the_first_offset() {
    let server = server().await;
    let api = Api::new(&server);
    let mut bob = server.connect("bob").await;
    bob.join("r1").await;
    for _ in 0..2 {
        let answer = api
            .post(
                "/rooms/r1/publish",
                json!({"data": "once", "key": "deploy-81"}),
            )
            .await;
        assert_eq!(
            answer.body,
            json!({"room": "r1", "offset": 1}),
            "{}",
            answer.body
        );
    }
    for _ in 0..2 {
        let answer = api
            .post(
                "/publish",
                json!({"rooms": ["r1", "r2"], "data": "many", "key": "deploy-82"}),
            )
            .await;
        let offsets: Vec<Value> = answer.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["offset"].clone())
            .collect();
        assert_eq!(offsets, [json!(2), json!(1)], "{}", answer.body);
    }
    assert_eq!(bob.recv_message().await["data"], "once");
    assert_eq!(bob.recv_message().await["data"], "many");
    bob.expect_silence(Duration::from_millis(200)).await;
    api.post("/rooms/r1/publish", json!({"data": 1, "key": "a b"}))
        .await
        .error(400, "bad_request");
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
