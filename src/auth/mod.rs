//! Who is connecting: JWT verification (HS256 secrets, an RS256/ES256 public key, and a JWKS
//! fetched from a URL or read from a file, keys picked by `kid`), the permissions a token
//! carries (rooms, direct messages), the origin allow-list, and the one parser of
//! `Authorization: Bearer` that the WebSocket and the API share.
//!
//! Every refusal maps to one stable [`AuthError`] code; the reason behind `token_invalid`
//! (bad signature, wrong algorithm, `alg: none`, malformed, missing `sub`) is logged at debug
//! level and never told to the client.

mod fetch;
mod jwks;
mod keys;
mod pattern;

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;

use crate::config::{Auth, ConfigError};
use crate::protocol::valid_name;
use fetch::Source;
use jwks::Jwks;
use keys::Selected;
pub use pattern::{Permissions, matches as pattern_matches};

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
    keys: Option<Keys>,
    max_token_bytes: usize,
    leeway: u64,
    allowed_origins: Vec<String>,
}

/// The configured keys and, with `auth.jwks_url` or `auth.jwks_file`, the JWKS cache.
struct Keys {
    configured: Vec<keys::Key>,
    jwks: Option<Jwks>,
}

/// Why a token was refused before the claims are looked at, or that a fetch may help.
enum Refusal {
    Auth(AuthError),
    UnknownKid,
}

impl Verifier {
    /// Builds the verifier, reading the public key file and the JWKS file if configured; with
    /// `auth.jwks_url` it starts the task that fetches it (so it must run inside a Tokio
    /// runtime) and verifications wait for the first fetch.
    pub fn new(config: &Auth) -> Result<Self, ConfigError> {
        config.validate()?;
        let keys = if config.enabled() {
            let configured = keys::configured(config)?;
            let jwks = match Source::from_config(config)? {
                Some(source) => Some(Jwks::start(source, config)?),
                None => None,
            };
            Some(Keys { configured, jwks })
        } else {
            None
        };
        Ok(Self {
            keys,
            max_token_bytes: config.max_token_bytes,
            leeway: config.leeway_secs,
            allowed_origins: config.allowed_origins.clone(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.keys.is_some()
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
    /// Returns at once unless the token names a `kid` no key has: then it waits for a JWKS
    /// fetch (see `auth.jwks_min_refetch_secs`) and looks once more.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Some(keys) = &self.keys else {
            return Err(AuthError::Invalid);
        };
        let claims = match self.verify_now(keys, token) {
            Ok(claims) => claims,
            Err(Refusal::Auth(refused)) => return Err(refused),
            Err(Refusal::UnknownKid) => {
                let jwks = keys.jwks.as_ref().ok_or(AuthError::Invalid)?;
                // Boxed: a fetch's future is large and rare, and this one is part of every
                // session's task (`refresh`).
                if !Box::pin(jwks.refetch_for_unknown_kid()).await {
                    tracing::debug!("token refused: unknown kid, no new keys");
                    return Err(AuthError::Invalid);
                }
                self.verify_now(keys, token)
                    .map_err(|refusal| match refusal {
                        Refusal::Auth(refused) => refused,
                        Refusal::UnknownKid => {
                            tracing::debug!("token refused: unknown kid");
                            AuthError::Invalid
                        }
                    })?
            }
        };
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

    /// The token's claims, checked against the keys it selects as they are now.
    fn verify_now(&self, keys: &Keys, token: &str) -> Result<Claims, Refusal> {
        if token.len() > self.max_token_bytes {
            return Err(Refusal::Auth(AuthError::TooLarge));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|err| {
            tracing::debug!(%err, "token refused: bad header");
            Refusal::Auth(AuthError::Invalid)
        })?;
        // RFC 7515 §4.1.11: a `crit` header names extensions the verifier must understand, and
        // roomcast understands none.
        if header.crit.is_some() {
            tracing::debug!("token refused: crit header");
            return Err(Refusal::Auth(AuthError::Invalid));
        }
        let fetched = keys.jwks.as_ref().map(Jwks::keys);
        let fetched = fetched.as_deref().map_or(&[][..], Vec::as_slice);
        let legacy_single = keys.jwks.is_none();
        match keys::select(&header, &keys.configured, fetched, legacy_single) {
            Selected::UnknownKid => Err(Refusal::UnknownKid),
            Selected::Keys(candidates) => decode(token, &candidates).map_err(Refusal::Auth),
        }
    }
}

/// The claims under the first candidate whose signature matches. Once a signature matches,
/// that key's answer (expired, missing claim…) is the answer.
fn decode(token: &str, candidates: &[&keys::Key]) -> Result<Claims, AuthError> {
    let mut last = None;
    for key in candidates {
        match jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation) {
            Ok(data) => return Ok(data.claims),
            Err(err) if not_this_key(err.kind()) => last = Some(err),
            Err(err) => return Err(refused(&err)),
        }
    }
    match last {
        Some(err) => Err(refused(&err)),
        None => {
            tracing::debug!("token refused: no key for it");
            Err(AuthError::Invalid)
        }
    }
}

/// Errors that say the key does not fit the token, so another candidate may.
fn not_this_key(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
    )
}

fn refused(err: &jsonwebtoken::errors::Error) -> AuthError {
    let refused = match err.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        _ => AuthError::Invalid,
    };
    tracing::debug!(%err, code = refused.code(), "token refused");
    refused
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
