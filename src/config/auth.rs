//! `[auth]`: who may connect, and with which token.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

/// Who may connect. Off (anyone, user from `?user=`) unless `secret` or `public_key_file` is
/// set; then every connection needs a valid JWT whose `sub` is the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// `HS256` (shared `secret`), `RS256` or `ES256` (`public_key_file`). Default `HS256`.
    pub algorithm: JwtAlgorithm,
    /// Shared secret for HS256. Default empty (authentication off).
    pub secret: String,
    /// PEM public key for RS256/ES256. Default none.
    pub public_key_file: Option<PathBuf>,
    /// Longest token accepted, in bytes. Default 4096: real tokens are well under 1 KiB.
    pub max_token_bytes: usize,
    /// Clock skew tolerated on `exp` and `nbf`, seconds. Default 5.
    pub leeway_secs: u64,
    /// Origins browsers may connect from (`https://chat.example.com`). Default empty: any.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::HS256,
            secret: String::new(),
            public_key_file: None,
            max_token_bytes: 4096,
            leeway_secs: 5,
            allowed_origins: Vec::new(),
        }
    }
}

impl Auth {
    /// What can be checked without reading the key file; `auth::Verifier::new` reads it at
    /// start-up and names `auth.public_key_file` when it cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("auth.max_token_bytes", self.max_token_bytes as u64)?;
        if !self.enabled() {
            return Ok(());
        }
        let (key, reason) = match self.algorithm {
            JwtAlgorithm::HS256 if self.secret.len() < 32 => {
                ("auth.secret", "HS256 needs a secret of at least 32 bytes")
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 if self.public_key_file.is_none() => {
                return Err(no_key_file());
            }
            _ => return Ok(()),
        };
        Err(ConfigError::Invalid {
            key,
            reason: reason.into(),
        })
    }

    /// Whether connections must present a token.
    pub fn enabled(&self) -> bool {
        !self.secret.is_empty() || self.public_key_file.is_some()
    }
}

/// RS256 and ES256 without `public_key_file`.
pub fn no_key_file() -> ConfigError {
    ConfigError::Invalid {
        key: "auth.public_key_file",
        reason: "RS256 and ES256 need a PEM public key file".into(),
    }
}
