//! What a connection presents to a node with authentication on: an HS256 JWT naming the
//! simulated user, signed with the scenario's `jwt_secret`, as an `Authorization` header value.
//! No I/O; `target` puts the header on the handshake.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::InvalidHeaderValue;

/// Signs one token per connection. HS256 only: an RS256/ES256 node verifies with a public key,
/// and tokens for it would need the issuer's private key, which the tester does not take.
pub struct Credentials {
    key: EncodingKey,
    header: Header,
    validity: Duration,
}

/// The claims roomcast reads (docs/security.md). No `rooms` claim: every room is allowed, so
/// any scenario's layout works.
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// Why no token could be made for a user.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("signing the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("the token is not a valid header value: {0}")]
    Header(#[from] InvalidHeaderValue),
}

impl Credentials {
    /// Tokens signed with `secret`, each valid for `validity` from the moment it is made.
    pub fn hs256(secret: &str, validity: Duration) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::new(Algorithm::HS256),
            validity,
        }
    }

    /// `Bearer <jwt>` for `user`.
    pub fn authorization(&self, user: &str) -> Result<HeaderValue, TokenError> {
        Ok(HeaderValue::from_str(&format!(
            "Bearer {}",
            self.token(user)?
        ))?)
    }

    fn token(&self, user: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            sub: user,
            iat: now,
            exp: now + self.validity.as_secs(),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Decoded {
        sub: String,
        iat: u64,
        exp: u64,
    }

    #[test]
    fn token_names_the_user_and_outlasts_the_validity() {
        let secret = "0123456789abcdef0123456789abcdef";
        let c = Credentials::hs256(secret, Duration::from_secs(7200));
        let header = c.authorization("lt1-u7").unwrap();
        let token = header.to_str().unwrap().strip_prefix("Bearer ").unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let key = DecodingKey::from_secret(secret.as_bytes());
        let claims = jsonwebtoken::decode::<Decoded>(token, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims.sub, "lt1-u7");
        assert_eq!(claims.exp - claims.iat, 7200);
        // Another secret does not verify it.
        let other = DecodingKey::from_secret(b"another secret, also 32 bytes long");
        assert!(jsonwebtoken::decode::<Decoded>(token, &other, &validation).is_err());
    }
}
