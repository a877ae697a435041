//! Who is connecting: JWT verification (HS256 with a shared secret, RS256/ES256 with a public
//! key), the room permissions a token carries, and the origin allow-list.
//!
//! Every refusal maps to one stable [`AuthError`] code; the reason behind `token_invalid`
//! (bad signature, wrong algorithm, `alg: none`, malformed, missing `sub`) is logged at debug
//! level and never told to the client.

mod pattern;

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{Auth, ConfigError, JwtAlgorithm};
use crate::protocol::valid_name;
pub use pattern::RoomPatterns;

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
    pub rooms: Arc<RoomPatterns>,
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
}

#[derive(Debug, Deserialize)]
struct RoomClaims {
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
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
        let rooms = match claims.rooms {
            None => RoomPatterns::any(),
            Some(r) => RoomPatterns::new(&r.join, &r.publish),
        };
        Ok(Identity {
            user: Arc::from(claims.sub),
            rooms: Arc::new(rooms),
            expires_at: Some(claims.exp.saturating_add(self.leeway)),
        })
    }
}

fn decoding_key(config: &Auth) -> Result<(DecodingKey, Algorithm), ConfigError> {
    let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
    match config.algorithm {
        JwtAlgorithm::HS256 => {
            if config.secret.len() < 32 {
                return Err(invalid(
                    "auth.secret",
                    "HS256 needs a secret of at least 32 bytes".into(),
                ));
            }
            Ok((
                DecodingKey::from_secret(config.secret.as_bytes()),
                Algorithm::HS256,
            ))
        }
        JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
            let Some(path) = &config.public_key_file else {
                return Err(invalid(
                    "auth.public_key_file",
                    "RS256 and ES256 need a PEM public key file".into(),
                ));
            };
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
