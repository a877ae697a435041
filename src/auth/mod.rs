//! Who is connecting: JWT verification (HS256 with a shared secret, RS256/ES256 with a public
//! key), the permissions a token carries (rooms, direct messages), the origin allow-list, and
//! the one parser of `Authorization: Bearer` that the WebSocket and the API share.
//!
//! Every refusal maps to one stable [`AuthError`] code; the reason behind `token_invalid`
//! (bad signature, wrong algorithm, `alg: none`, malformed, missing `sub`) is logged at debug
//! level and never told to the client.

mod pattern;

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{Auth, ConfigError, JwtAlgorithm, no_key_file};
use crate::protocol::valid_name;
pub use pattern::Permissions;

/// Why a connection or a `refresh` was refused. The string codes are part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required")]
    Missing,
    #[error("the token is invalid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is too large")]
    TooLarge,
    #[error("the token belongs to another user")]
    WrongUser,
}

impl AuthError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Invalid => "token_invalid",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::TooLarge => "token_too_large",
            Self::WrongUser => "token_wrong_user",
        }
    }
}

/// A verified connection: the user and what it may do, until when.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: Arc<str>,
    pub permissions: Arc<Permissions>,
    /// Unix seconds after which the session must have refreshed (`exp` + leeway).
    pub expires_at: Option<u64>,
}

/// The claims roomcast reads. Others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// `{"join": [patterns], "publish": [patterns]}`; absent: every room.
    #[serde(default)]
    rooms: Option<RoomClaims>,
    /// Users this one may send direct messages to (patterns). Absent: anyone, unless the token
    /// restricts rooms, and then nobody: an issuer who limits where a user may speak has not
    /// thought of direct messages, and a token that allows nothing must not reach everyone.
    #[serde(default)]
    direct: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RoomClaims {
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

impl Claims {
    fn permissions(&self) -> Permissions {
        let Some(rooms) = &self.rooms else {
            return Permissions::new(None, None, self.direct.as_deref());
        };
        let direct = self.direct.as_deref().unwrap_or_default();
        Permissions::new(Some(&rooms.join), Some(&rooms.publish), Some(direct))
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive (RFC
/// 7235); surrounding white space is dropped; an empty token is none.
pub fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Verifies tokens as configured; `None` inside means authentication is off.
pub struct Verifier {
    key: Option<(DecodingKey, Validation)>,
    max_token_bytes: usize,
    leeway: u64,
    allowed_origins: Vec<String>,
}

impl Verifier {
    /// Builds the verifier, reading the public key file if one is configured.
    pub fn new(config: &Auth) -> Result<Self, ConfigError> {
        config.validate()?;
        let key = if config.enabled() {
            let (key, algorithm) = decoding_key(config)?;
            let mut validation = Validation::new(algorithm);
            validation.leeway = config.leeway_secs;
            validation.validate_nbf = true;
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "sub"]);
            Some((key, validation))
        } else {
            None
        };
        Ok(Self {
            key,
            max_token_bytes: config.max_token_bytes,
            leeway: config.leeway_secs,
            allowed_origins: config.allowed_origins.clone(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    /// Whether a browser from `origin` may connect. Non-browser clients send no origin.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            Some(origin) if !self.allowed_origins.is_empty() => {
                self.allowed_origins.iter().any(|o| o == origin)
            }
            _ => true,
        }
    }

    /// Verifies `token` and returns who it names. Only call when [`Verifier::enabled`].
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Some((key, validation)) = &self.key else {
            return Err(AuthError::Invalid);
        };
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        // RFC 7515 §4.1.11: a `crit` header names extensions the verifier must understand, and
        // roomcast understands none.
        if jsonwebtoken::decode_header(token).is_ok_and(|h| h.crit.is_some()) {
            tracing::debug!("token refused: crit header");
            return Err(AuthError::Invalid);
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|err| {
            let refused = match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid,
            };
            tracing::debug!(%err, code = refused.code(), "token refused");
            refused
        })?;
        let claims = data.claims;
        if !valid_name(&claims.sub) {
            tracing::debug!("token refused: sub is not a valid user name");
            return Err(AuthError::Invalid);
        }
        Ok(Identity {
            permissions: Arc::new(claims.permissions()),
            user: Arc::from(claims.sub),
            expires_at: Some(claims.exp.saturating_add(self.leeway)),
        })
    }
}

fn decoding_key(config: &Auth) -> Result<(DecodingKey, Algorithm), ConfigError> {
    let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
    match config.algorithm {
        // The secret's length was checked by `Auth::validate`.
        JwtAlgorithm::HS256 => Ok((
            DecodingKey::from_secret(config.secret.as_bytes()),
            Algorithm::HS256,
        )),
        JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
            let path = config.public_key_file.as_ref().ok_or_else(no_key_file)?;
            let pem = std::fs::read(path)
                .map_err(|e| invalid("auth.public_key_file", format!("{}: {e}", path.display())))?;
            let (key, algorithm) = if config.algorithm == JwtAlgorithm::RS256 {
                (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256)
            } else {
                (DecodingKey::from_ec_pem(&pem), Algorithm::ES256)
            };
            let key = key
                .map_err(|e| invalid("auth.public_key_file", format!("{}: {e}", path.display())))?;
            Ok((key, algorithm))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_tokens_in_any_case() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
    }

    fn claims(json: serde_json::Value) -> Permissions {
        serde_json::from_value::<Claims>(json)
            .unwrap()
            .permissions()
    }

    #[test]
    fn direct_messages_follow_the_direct_claim_and_a_rooms_claim_closes_them_by_default() {
        let open = claims(serde_json::json!({"sub": "a", "exp": 1}));
        assert!(open.may_send_to("anyone") && open.may_join("any"));
        let listed =
            claims(serde_json::json!({"sub": "a", "exp": 1, "direct": ["bob", "support:*"]}));
        assert!(listed.may_send_to("bob") && listed.may_send_to("support:7"));
        assert!(!listed.may_send_to("carol"));
        assert!(listed.may_join("any"), "no rooms claim: every room");
        let rooms_only =
            claims(serde_json::json!({"sub": "a", "exp": 1, "rooms": {"join": [], "publish": []}}));
        assert!(!rooms_only.may_send_to("bob") && !rooms_only.may_join("lobby"));
        let none = claims(serde_json::json!({"sub": "a", "exp": 1, "direct": []}));
        assert!(!none.may_send_to("bob"));
    }
}
