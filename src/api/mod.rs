//! The server API under `/api`: the application's own backend publishes, sends, inspects and
//! disconnects, authenticated by API keys. Calls only the node, so it works the same on every
//! node of a cluster. Documented by its OpenAPI document, `GET /api/openapi.json`, generated
//! from the handlers below; docs/api.md is the guide.
//!
//! # Layout
//! - [`auth`]: the `Bearer` API-key check (an extractor every handler takes first).
//! - [`extract`]: JSON bodies, path names and query strings, rejected as JSON errors.
//! - [`error`]: the typed errors, their statuses and codes.
//! - [`rooms`], [`users`], [`stats`]: the endpoints; [`message`]: their shared body.
//! - [`doc`]: the OpenAPI frame and the shared error responses.

mod auth;
mod doc;
mod error;
mod extract;
mod message;
mod rooms;
mod shed;
mod stats;
mod users;

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::node::Node;
use error::ApiError;

/// Routes mounted at `/api`.
pub fn router() -> Router<Node> {
    let (api, doc) = documented().split_for_parts();
    // Encoded once; every request gets a clone of the same bytes.
    let doc = Bytes::from(doc.to_json().expect("the OpenAPI document serializes"));
    api.route(
        "/openapi.json",
        get(move || async move { ([(CONTENT_TYPE, "application/json")], doc) }),
    )
    .fallback(not_found)
    // Last: it only applies to the routes added before it.
    .method_not_allowed_fallback(method_not_allowed)
}

/// The OpenAPI document, as served at `/api/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().into_openapi()
}

/// Every documented operation: each handler's route and its part of the document together.
fn documented() -> OpenApiRouter<Node> {
    OpenApiRouter::with_openapi(doc::ApiDoc::openapi())
        .routes(routes!(rooms::publish))
        .routes(routes!(rooms::publish_many))
        .routes(routes!(rooms::presence))
        .routes(routes!(rooms::history))
        .routes(routes!(users::send))
        .routes(routes!(users::disconnect))
        .routes(routes!(stats::stats))
        .routes(routes!(shed::shed))
}

async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

/// axum adds the `Allow` header to whatever this returns.
async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(super::openapi()).unwrap()
    }

    fn patterns<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(p)) = map.get("pattern") {
                    found.push(p);
                }
                map.values().for_each(|v| patterns(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| patterns(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_name_pattern_is_the_naming_rule() {
        let doc = document();
        let mut found = Vec::new();
        patterns(&doc, &mut found);
        assert!(found.len() >= 5, "{found:?}");
        for pattern in found {
            assert_eq!(pattern, super::extract::NAME_PATTERN);
        }
    }

    #[test]
    fn every_operation_documents_its_errors() {
        let doc = document();
        assert_eq!(doc["security"][0]["api_key"], serde_json::json!([]));
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 8);
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                for status in ["401", "404"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
                if op.get("requestBody").is_some() {
                    for status in ["400", "413", "415"] {
                        assert!(responses.contains_key(status), "{method} {path}: {status}");
                    }
                }
                for (status, response) in responses {
                    if let Some(target) = response["$ref"].as_str() {
                        let name = target.rsplit('/').next().unwrap();
                        assert!(
                            doc["components"]["responses"][name].is_object(),
                            "{method} {path} {status}: {target}"
                        );
                    }
                }
            }
        }
    }
}
