//! `[auth]`: who may connect, and with which token: one key (`secret` or `public_key_file`),
//! several HS256 secrets for a rotation (`secrets`), and a JWKS (`jwks_url` or `jwks_file`).

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

/// Who may connect. Off (anyone, user from `?user=`) unless a key is set (`secret`,
/// `public_key_file`, `secrets`, `jwks_url` or `jwks_file`); then every connection needs a
/// valid JWT whose `sub` is the user. Keys are picked by the token's `kid` (docs/security.md,
/// "Keys and rotation").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// The algorithm of `secret` / `public_key_file`: `HS256` (shared `secret`), `RS256` or
    /// `ES256` (`public_key_file`). Default `HS256`. `secrets` are HS256 and JWKS keys say
    /// their own algorithm.
    pub algorithm: JwtAlgorithm,
    /// Shared secret for HS256, a key without a `kid`. Default empty (none).
    pub secret: String,
    /// PEM public key for RS256/ES256, a key without a `kid`. Default none.
    pub public_key_file: Option<PathBuf>,
    /// More HS256 secrets, each with an optional `kid`, so that a new secret can be added
    /// before the issuer switches to it and the old one removed after its tokens expire.
    /// Default empty.
    pub secrets: Vec<HsSecret>,
    /// A JWKS document (`https://issuer.example.com/.well-known/jwks.json`) fetched at start,
    /// every `jwks_refresh_secs`, and when a token names a `kid` not in it. Default none.
    pub jwks_url: Option<String>,
    /// The same, from a local file (a mounted secret or config map). Default none; at most
    /// one of `jwks_url` and `jwks_file`.
    pub jwks_file: Option<PathBuf>,
    /// How often the JWKS is fetched again, seconds. Default 300: an issuer publishes a new key
    /// well before it signs with it, and a key removed stops working within this time.
    pub jwks_refresh_secs: u64,
    /// Least time between two fetches caused by an unknown `kid`, seconds. Default 10: tokens
    /// with made-up `kid`s must not turn the node into a flood against the issuer; a failed
    /// scheduled fetch is retried after this time too.
    pub jwks_min_refetch_secs: u64,
    /// Longest a JWKS fetch may take, connect to last byte, milliseconds. Default 5000.
    pub jwks_timeout_ms: u64,
    /// Longest token accepted, in bytes. Default 4096: real tokens are well under 1 KiB.
    pub max_token_bytes: usize,
    /// Clock skew tolerated on `exp` and `nbf`, seconds. Default 5.
    pub leeway_secs: u64,
    /// Origins browsers may connect from (`https://chat.example.com`). Default empty: any.
    pub allowed_origins: Vec<String>,
}

/// One entry of `auth.secrets`: `{ kid = "2025-06", secret = "…" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsSecret {
    /// The `kid` tokens signed with this secret carry. None: tried for tokens without a `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// At least 32 bytes, as `auth.secret`.
    pub secret: String,
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
            secrets: Vec::new(),
            jwks_url: None,
            jwks_file: None,
            jwks_refresh_secs: 300,
            jwks_min_refetch_secs: 10,
            jwks_timeout_ms: 5000,
            max_token_bytes: 4096,
            leeway_secs: 5,
            allowed_origins: Vec::new(),
        }
    }
}

/// HS256 secrets shorter than this are refused: a short secret can be brute-forced offline from
/// any one token.
const MIN_SECRET_BYTES: usize = 32;

impl Auth {
    /// What can be checked without reading a key file or fetching the JWKS;
    /// `auth::Verifier::new` reads them at start-up and names the key when it cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("auth.max_token_bytes", self.max_token_bytes as u64)?;
        positive("auth.jwks_refresh_secs", self.jwks_refresh_secs)?;
        positive("auth.jwks_min_refetch_secs", self.jwks_min_refetch_secs)?;
        positive("auth.jwks_timeout_ms", self.jwks_timeout_ms)?;
        self.validate_single_key()?;
        self.validate_secrets()?;
        self.validate_jwks()
    }

    /// `algorithm` with `secret` / `public_key_file`, as before `secrets` and JWKS existed.
    fn validate_single_key(&self) -> Result<(), ConfigError> {
        let short_secret = ("auth.secret", "HS256 needs a secret of at least 32 bytes");
        let (key, reason) = match self.algorithm {
            JwtAlgorithm::HS256 if !self.secret.is_empty() => {
                if self.secret.len() >= MIN_SECRET_BYTES {
                    return Ok(());
                }
                short_secret
            }
            // A PEM file under HS256 is a forgotten `algorithm`, not a key to ignore.
            JwtAlgorithm::HS256 if self.public_key_file.is_some() => short_secret,
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256
                if self.public_key_file.is_none() && !self.secret.is_empty() =>
            {
                return Err(no_key_file());
            }
            _ => return Ok(()),
        };
        Err(invalid(key, reason))
    }

    fn validate_secrets(&self) -> Result<(), ConfigError> {
        let mut kids = HashSet::new();
        for entry in &self.secrets {
            if entry.secret.len() < MIN_SECRET_BYTES {
                return Err(invalid(
                    "auth.secrets",
                    "each secret needs at least 32 bytes",
                ));
            }
            match entry.kid.as_deref() {
                Some("") => return Err(invalid("auth.secrets", "a kid may not be empty")),
                Some(kid) if !kids.insert(kid) => {
                    return Err(invalid("auth.secrets", "two secrets have the same kid"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn validate_jwks(&self) -> Result<(), ConfigError> {
        if self.jwks_url.is_some() && self.jwks_file.is_some() {
            return Err(invalid(
                "auth.jwks_file",
                "set either auth.jwks_url or auth.jwks_file, not both",
            ));
        }
        let Some(url) = &self.jwks_url else {
            return Ok(());
        };
        let (scheme, rest) = url.split_once("://").unwrap_or_default();
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if !matches!(scheme, "http" | "https") || host.is_empty() {
            return Err(invalid(
                "auth.jwks_url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        Ok(())
    }

    /// Whether connections must present a token.
    pub fn enabled(&self) -> bool {
        !self.secret.is_empty()
            || self.public_key_file.is_some()
            || !self.secrets.is_empty()
            || self.jwks_url.is_some()
            || self.jwks_file.is_some()
    }
}

fn invalid(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// RS256 and ES256 without `public_key_file`.
pub fn no_key_file() -> ConfigError {
    invalid(
        "auth.public_key_file",
        "RS256 and ES256 need a PEM public key file",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(auth: &Auth) -> Option<&'static str> {
        match auth.validate() {
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            Err(other) => panic!("{other}"),
            Ok(()) => None,
        }
    }

    fn secret(kid: Option<&str>, secret: &str) -> HsSecret {
        HsSecret {
            kid: kid.map(Into::into),
            secret: secret.into(),
        }
    }

    const LONG: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn secrets_need_32_bytes_and_distinct_non_empty_kids() {
        let mut auth = Auth {
            secrets: vec![secret(Some("a"), LONG), secret(None, LONG)],
            ..Auth::default()
        };
        assert_eq!(key_of(&auth), None);
        assert!(auth.enabled());
        auth.secrets.push(secret(Some("b"), "short"));
        assert_eq!(key_of(&auth), Some("auth.secrets"));
        auth.secrets[2] = secret(Some("a"), LONG);
        assert_eq!(key_of(&auth), Some("auth.secrets"));
        auth.secrets[2] = secret(Some(""), LONG);
        assert_eq!(key_of(&auth), Some("auth.secrets"));
    }

    #[test]
    fn jwks_needs_one_source_with_an_http_url_and_positive_intervals() {
        let url = |u: &str| Auth {
            jwks_url: Some(u.into()),
            ..Auth::default()
        };
        assert_eq!(key_of(&url("https://issuer.example.com/jwks.json")), None);
        assert_eq!(key_of(&url("http://127.0.0.1:8080/jwks")), None);
        assert!(url("http://127.0.0.1/jwks").enabled());
        for bad in [
            "ftp://x/jwks",
            "https://",
            "issuer.example.com/jwks",
            "https:///x",
        ] {
            assert_eq!(key_of(&url(bad)), Some("auth.jwks_url"), "{bad}");
        }
        let both = Auth {
            jwks_file: Some("/etc/jwks.json".into()),
            ..url("https://x/jwks")
        };
        assert_eq!(key_of(&both), Some("auth.jwks_file"));
        let never = Auth {
            jwks_min_refetch_secs: 0,
            ..url("https://x/jwks")
        };
        assert_eq!(key_of(&never), Some("auth.jwks_min_refetch_secs"));
        // JWKS alone: `algorithm` (for `secret`/`public_key_file`) asks for nothing.
        let rs = Auth {
            algorithm: JwtAlgorithm::RS256,
            ..url("https://x/jwks")
        };
        assert_eq!(key_of(&rs), None);
    }

    #[test]
    fn the_single_key_rules_are_unchanged() {
        let short = Auth {
            secret: "short".into(),
            ..Auth::default()
        };
        assert_eq!(key_of(&short), Some("auth.secret"));
        let pem_under_hs256 = Auth {
            public_key_file: Some("/k.pem".into()),
            ..Auth::default()
        };
        assert_eq!(key_of(&pem_under_hs256), Some("auth.secret"));
        let rs_without_file = Auth {
            algorithm: JwtAlgorithm::RS256,
            secret: LONG.into(),
            ..Auth::default()
        };
        assert_eq!(key_of(&rs_without_file), Some("auth.public_key_file"));
        assert!(!Auth::default().enabled());
    }
}
