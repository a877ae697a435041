//! The server API's test client: a node with API keys, requests sent with the key, and answers
//! read as status, headers and JSON body. Shared by tests/api.rs and tests/api_refusals.rs.

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use super::TestServer;

pub const KEY: &str = "test-api-key-0123456789";

pub async fn server() -> TestServer {
    TestServer::with(|c| c.api.keys = vec!["other-key-0123456789ab".into(), KEY.into()]).await
}

/// An HTTP client for one node's API, sending `KEY` unless told otherwise.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

/// Status, headers and JSON body of an answer.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts a JSON error `{"error": code, "message": …}` with `status`.
    pub fn error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"], code, "{}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(self.headers[CONTENT_TYPE], "application/json");
    }
}

impl Api {
    pub fn new(server: &TestServer) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.url("/api"),
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY)
    }

    pub async fn send(&self, request: RequestBuilder) -> Answer {
        let response = tokio::time::timeout(super::RECV_TIMEOUT, request.send())
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

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    /// POSTs `body` verbatim with `content_type`.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Answer {
        let request = self
            .request(Method::POST, path)
            .header(CONTENT_TYPE, content_type)
            .body(body.to_owned());
        self.send(request).await
    }
}

/// Every operation with a valid request, for checks that apply to all of them.
pub fn operations() -> Vec<(Method, &'static str, Option<Value>)> {
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

pub async fn epoch(api: &Api, room: &str) -> String {
    let answer = api.get(&format!("/rooms/{room}/history")).await;
    answer.body["epoch"].as_str().unwrap().to_owned()
}

pub fn history_path(room: &str, since: u64, epoch: &str) -> String {
    format!("/rooms/{room}/history?since={since}&epoch={epoch}")
}
