//! The server API under `/api`: the application's own backend publishes, sends, inspects and
//! disconnects, authenticated by API keys. Documented by its OpenAPI document.

use axum::Router;

use crate::node::Node;

/// Routes mounted at `/api`.
pub fn router() -> Router<Node> {
    Router::new()
}
