//! API-key authentication: `Authorization: Bearer <key>` checked against `api.keys` in
//! constant time. An extractor rather than a layer because it needs the node's configuration,
//! which only exists once the router has its state.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::node::Node;

/// Proof that the request carried a configured API key. Put it first in a handler's arguments so
/// an unauthenticated request is refused before its path or body is even looked at.
pub struct ApiKey;

impl FromRequestParts<Node> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Node) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| crate::auth::bearer(value.as_bytes()));
        match presented {
            Some(key) if key_matches(&node.config().api.keys, key) => Ok(ApiKey),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// Compares `presented` with every key, without stopping at the first match, so the time
/// taken says nothing about which key (or how much of one) matched.
fn key_matches(keys: &[String], presented: &[u8]) -> bool {
    keys.iter()
        .fold(false, |found, key| found | ct_eq(key.as_bytes(), presented))
}

/// Equality whose duration depends only on the lengths. Lengths are not secret: keys are
/// random and at least 16 characters (checked by `Config::validate`).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimizer from turning the fold back into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_a_configured_key() {
        let keys = vec![
            "k1-0123456789abcdef".to_owned(),
            "k2-0123456789abcdef".into(),
        ];
        assert!(key_matches(&keys, b"k1-0123456789abcdef"));
        assert!(key_matches(&keys, b"k2-0123456789abcdef"));
        assert!(!key_matches(&keys, b"k3-0123456789abcdef"));
        assert!(!key_matches(&keys, b"k1-0123456789abcde"));
        assert!(!key_matches(&[], b"anything-at-all-1234"));
    }
}
