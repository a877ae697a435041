//! The demo chat page at `/` (with `demo = true`): a single HTML page and the browser client
//! module, compiled into the binary so a node needs no files beside it.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../clients/demo/index.html");
const CLIENT: &str = include_str!("../clients/js/roomcast.js");

/// `GET /`: the demo chat.
pub async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

/// `GET /roomcast.js`: the ES module client the page imports.
pub async fn client() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CLIENT,
    )
}
