//! The HTTP side of opening a WebSocket (RFC 6455 §4.2): checks the request, answers 101, and
//! hands the raw connection to a [`WebSocket`] once hyper lets go of it.
//!
//! roomcast does this itself rather than through axum's `WebSocketUpgrade`, because that one
//! yields only a tungstenite stream, whose per-socket write buffer is what [`WebSocket`] avoids.
//! The checks and their status codes are the same as axum's.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use thiserror::Error;
use tokio_util::task::TaskTracker;

use super::SUBPROTOCOL;
use super::deflate::{self, Agreed};
use crate::config::Compression;
use crate::http::json_error;
use crate::net::header_tokens;

/// A valid WebSocket handshake request, not yet answered.
pub struct Handshake {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    /// Whether the client offered [`SUBPROTOCOL`], which the answer then selects.
    offers_subprotocol: bool,
    /// The client's `Sec-WebSocket-Extensions` values, read by [`Self::negotiate`].
    extensions: Vec<HeaderValue>,
    /// The extension the answer agrees to, once negotiated.
    agreed: Option<Agreed>,
}

/// Why a request to the WebSocket endpoint is not a handshake; answered `not_websocket`.
#[derive(Debug, Error)]
pub enum NotWebSocket {
    #[error("the handshake must use GET")]
    MethodNotGet,
    #[error("`Connection` header did not include `upgrade`")]
    ConnectionHeader,
    #[error("`Upgrade` header did not include `websocket`")]
    UpgradeHeader,
    #[error("`Sec-WebSocket-Version` header did not include `13`")]
    Version,
    #[error("`Sec-WebSocket-Key` header missing, or not 16 bytes in base64")]
    Key,
    #[error("the `{0}` header appears more than once")]
    Duplicate(&'static str),
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            Self::MethodNotGet => (StatusCode::METHOD_NOT_ALLOWED, "not_websocket"),
            Self::NotUpgradable => (StatusCode::UPGRADE_REQUIRED, "not_websocket"),
            Self::Duplicate(_) => (StatusCode::BAD_REQUEST, "duplicate_header"),
            _ => (StatusCode::BAD_REQUEST, "not_websocket"),
        };
        json_error(status, code, &self.to_string())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = NotWebSocket;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(NotWebSocket::MethodNotGet);
        }
        let headers = &parts.headers;
        // With two values, which one would a check read, and which one would a proxy or the
        // application behind it read? Refused rather than guessed (one `Origin` allowed and one
        // not got through before).
        for name in SINGLE_HEADERS {
            if headers.get_all(name).iter().nth(1).is_some() {
                return Err(NotWebSocket::Duplicate(name));
            }
        }
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(NotWebSocket::ConnectionHeader);
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(NotWebSocket::UpgradeHeader);
        }
        if !has_token(headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(NotWebSocket::Version);
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|key| valid_key(key.as_bytes()))
            .ok_or(NotWebSocket::Key)?
            .clone();
        // Subprotocol names compare exactly, unlike the header tokens above.
        let offers_subprotocol =
            header_tokens(headers, header::SEC_WEBSOCKET_PROTOCOL).any(|p| p == SUBPROTOCOL);
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(NotWebSocket::NotUpgradable)?;
        let extensions = headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .cloned()
            .collect();
        Ok(Self {
            key,
            on_upgrade,
            offers_subprotocol,
            extensions,
            agreed: None,
        })
    }
}

impl Handshake {
    /// Agrees to the client's first acceptable permessage-deflate offer under `config`, which
    /// the answer then states; `None` (no extension in the answer) when compression is off or
    /// no offer is acceptable. Hand the result to the socket
    /// ([`super::socket::WebSocket::with_deflate`]).
    pub fn negotiate(&mut self, config: &Compression) -> Option<Agreed> {
        let values = self.extensions.iter().filter_map(|v| v.to_str().ok());
        self.agreed = deflate::negotiate(values, config);
        self.agreed
    }

    /// Answers 101, selecting [`SUBPROTOCOL`] if the client offered it. Once hyper hands over
    /// the connection, `serve` runs on it as a task of `tasks`; if the upgrade fails, `serve`
    /// is dropped unrun (with whatever it holds).
    pub fn accept<F, Fut>(self, tasks: &TaskTracker, serve: F) -> Response
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let mut response = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
            ],
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
        );
        if self.offers_subprotocol {
            let value = HeaderValue::from_static(SUBPROTOCOL);
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        if let Some(agreed) = &self.agreed {
            let value = HeaderValue::from_str(&agreed.response()).expect("ASCII parameters");
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
        let on_upgrade = self.on_upgrade;
        let spawner = tasks.clone();
        // The connection's own task is spawned apart from this one: a task that awaited the
        // upgrade first would keep the upgrade's state for the socket's whole life.
        tasks.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    spawner.spawn(serve(upgraded));
                }
                Err(err) => tracing::debug!(%err, "upgrade failed"),
            }
        });
        response
    }
}

/// Headers that must appear at most once: the ones a security decision reads.
const SINGLE_HEADERS: [&str; 5] = [
    "origin",
    "authorization",
    "sec-websocket-key",
    "sec-websocket-version",
    "host",
];

/// RFC 6455 §4.2.1: the key is 16 bytes in base64, which is 22 characters of the alphabet and
/// `==`.
fn valid_key(key: &[u8]) -> bool {
    let is_base64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    key.len() == 24 && key.ends_with(b"==") && key[..22].iter().all(is_base64)
}

/// Whether a comma-separated header has `token`, in any case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    header_tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_sixteen_bytes_of_base64() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(valid_key(b"AAAAAAAAAAAAAAAAAAAA+/=="));
        for bad in [
            &b""[..],
            b"x",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZQ===",
            b"dGhlIHNhbXBsZSBub25j!Q==",
            b"dGhlIHNhbXBsZSBub25jZSE=",
        ] {
            assert!(!valid_key(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
