//! Every refusal of the server API (`/api`) against a real node: a missing or wrong key, malformed
//! and undeclared bodies, bodies over the limit, invalid names and positions, unknown paths and
//! wrong methods, each as a JSON error with its status.

mod common;

use std::net::SocketAddr;

use common::TestServer;
use common::api::{Api, KEY, epoch, history_path, operations, server};
use reqwest::Method;
use reqwest::header::{ALLOW, AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
