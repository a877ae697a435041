//! The demo chat page at `/` (with `demo = true`) and the browser client module at
//! `/roomcast.js` (with `serve_client = true`), compiled into the binary so a node needs no
//! files beside it.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../clients/demo/index.html");
const CLIENT: &str = include_str!("../clients/js/roomcast.js");

/// `GET /`: the demo chat.
pub async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

/// `GET /roomcast.js`: the ES module client, which the page and web apps import.
pub async fn client() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CLIENT,
    )
}
