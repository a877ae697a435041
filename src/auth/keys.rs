//! The keys a token may be verified with: each with its `kid` and the only algorithms it
//! accepts, built from the configuration or from a JWKS document; and which of them a token's
//! header selects.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;

use crate::config::{Auth, ConfigError, JwtAlgorithm};

/// One verification key. Its algorithms come from the configuration or from the JWK, never
/// from the token, so a token cannot choose HS256 with a public key as the secret.
pub(super) struct Key {
    pub kid: Option<String>,
    pub decoding: DecodingKey,
    pub validation: Validation,
}

impl Key {
    pub fn new(
        kid: Option<String>,
        decoding: DecodingKey,
        algorithms: &[Algorithm],
        leeway: u64,
    ) -> Self {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.to_vec();
        validation.leeway = leeway;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            kid,
            decoding,
            validation,
        }
    }
}

/// The keys from the configuration, in the order tokens without a `kid` try them:
/// `secret`, `public_key_file`, then `secrets`. Reads the PEM file.
pub(super) fn configured(config: &Auth) -> Result<Vec<Key>, ConfigError> {
    let leeway = config.leeway_secs;
    let mut keys = Vec::new();
    if config.algorithm == JwtAlgorithm::HS256 && !config.secret.is_empty() {
        let decoding = DecodingKey::from_secret(config.secret.as_bytes());
        keys.push(Key::new(None, decoding, &[Algorithm::HS256], leeway));
    }
    if config.algorithm != JwtAlgorithm::HS256 {
        // `Auth::validate` refused RS256/ES256 with a secret but no file.
        if let Some(path) = &config.public_key_file {
            keys.push(pem_key(config.algorithm, path, leeway)?);
        }
    }
    for entry in &config.secrets {
        let decoding = DecodingKey::from_secret(entry.secret.as_bytes());
        keys.push(Key::new(
            entry.kid.clone(),
            decoding,
            &[Algorithm::HS256],
            leeway,
        ));
    }
    Ok(keys)
}

fn pem_key(
    algorithm: JwtAlgorithm,
    path: &std::path::Path,
    leeway: u64,
) -> Result<Key, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: "auth.public_key_file",
        reason: format!("{}: {reason}", path.display()),
    };
    let pem = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    let (decoding, algorithm) = if algorithm == JwtAlgorithm::RS256 {
        (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256)
    } else {
        (DecodingKey::from_ec_pem(&pem), Algorithm::ES256)
    };
    let decoding = decoding.map_err(|e| invalid(e.to_string()))?;
    Ok(Key::new(None, decoding, &[algorithm], leeway))
}

/// Why a JWKS document gave no keys. A fetch that ends here keeps the keys the node had.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no usable key in the JWKS (skipped: {0})")]
    NoUsableKey(String),
}

/// `{"keys": [...]}`, each entry parsed on its own so that one key of a kind roomcast does not
/// know (an encryption key, a P-521 curve) does not reject the whole set.
#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWKS document; keys it cannot use are skipped and named in the log.
pub(super) fn from_jwks(document: &[u8], leeway: u64) -> Result<Vec<Key>, JwksError> {
    let raw: RawSet = serde_json::from_slice(document)?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for value in raw.keys {
        let kid = value
            .get("kid")
            .and_then(|k| k.as_str())
            .unwrap_or("(none)")
            .to_owned();
        match serde_json::from_value::<Jwk>(value)
            .map_err(|e| e.to_string())
            .and_then(|jwk| from_jwk(&jwk, leeway))
        {
            Ok(key) => keys.push(key),
            Err(reason) => {
                tracing::debug!(%kid, %reason, "JWKS key skipped");
                skipped.push(format!("{kid}: {reason}"));
            }
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey(skipped.join("; ")));
    }
    Ok(keys)
}

fn from_jwk(jwk: &Jwk, leeway: u64) -> Result<Key, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use: enc)".into());
    }
    let family = family(&jwk.algorithm)?;
    let algorithms = match jwk.common.key_algorithm {
        None => family.to_vec(),
        Some(alg) => match Algorithm::try_from(alg) {
            Ok(alg) if family.contains(&alg) => vec![alg],
            _ => return Err(format!("alg {alg} does not fit the key type")),
        },
    };
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    Ok(Key::new(
        jwk.common.key_id.clone(),
        decoding,
        &algorithms,
        leeway,
    ))
}

/// The algorithms a key of this type may verify when the JWK names none.
fn family(params: &AlgorithmParameters) -> Result<&'static [Algorithm], String> {
    use Algorithm::*;
    match params {
        AlgorithmParameters::RSA(_) => Ok(&[RS256, RS384, RS512, PS256, PS384, PS512]),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(&[ES256]),
            EllipticCurve::P384 => Ok(&[ES384]),
            ref other => Err(format!("curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Ok(&[EdDSA])
        }
        AlgorithmParameters::OctetKey(_) => Ok(&[HS256, HS384, HS512]),
        _ => Err("key type not supported".into()),
    }
}

/// The keys a token's header selects.
pub(super) enum Selected<'a> {
    /// Try these in order; the first whose signature matches decides.
    Keys(Vec<&'a Key>),
    /// The token names a `kid` that no key has: worth fetching the JWKS again.
    UnknownKid,
}

/// `configured` keys come before fetched ones, so a configured key wins a `kid` both have.
/// With a `kid`: the keys with that `kid`. Without one: the node's only key, else every key
/// without a `kid`. `legacy_single`: with no JWKS, a node whose one key has no `kid` uses it
/// whatever `kid` the token names, as before keys had ids.
pub(super) fn select<'a>(
    header: &Header,
    configured: &'a [Key],
    fetched: &'a [Key],
    legacy_single: bool,
) -> Selected<'a> {
    let all = || configured.iter().chain(fetched);
    let only = (configured.len() + fetched.len() == 1)
        .then(|| all().next())
        .flatten();
    match header.kid.as_deref() {
        Some(kid) => {
            let keys: Vec<&Key> = all().filter(|k| k.kid.as_deref() == Some(kid)).collect();
            match only {
                _ if !keys.is_empty() => Selected::Keys(keys),
                Some(key) if legacy_single && key.kid.is_none() => Selected::Keys(vec![key]),
                _ => Selected::UnknownKid,
            }
        }
        None => match only {
            Some(key) => Selected::Keys(vec![key]),
            None => Selected::Keys(all().filter(|k| k.kid.is_none()).collect()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oct(kid: Option<&str>) -> Key {
        let decoding = DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        Key::new(kid.map(Into::into), decoding, &[Algorithm::HS256], 0)
    }

    fn header(kid: Option<&str>) -> Header {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(Into::into);
        header
    }

    fn kids(selected: Selected<'_>) -> Option<Vec<Option<&str>>> {
        match selected {
            Selected::Keys(keys) => Some(keys.iter().map(|k| k.kid.as_deref()).collect()),
            Selected::UnknownKid => None,
        }
    }

    #[test]
    fn a_kid_selects_its_key_and_without_one_the_kidless_keys_are_tried() {
        let configured = [oct(None), oct(Some("a"))];
        let fetched = [oct(Some("a")), oct(Some("b"))];
        let pick = |kid| kids(select(&header(kid), &configured, &fetched, false));
        assert_eq!(
            pick(Some("a")),
            Some(vec![Some("a"), Some("a")]),
            "configured first"
        );
        assert_eq!(pick(Some("b")), Some(vec![Some("b")]));
        assert_eq!(pick(Some("c")), None);
        assert_eq!(pick(None), Some(vec![None]));
        // One key: it, for a token without kid; for one with another kid only if the key has
        // no kid and no JWKS is configured.
        let one = [oct(Some("a"))];
        assert_eq!(
            kids(select(&header(None), &one, &[], false)),
            Some(vec![Some("a")])
        );
        assert_eq!(kids(select(&header(Some("z")), &one, &[], true)), None);
        let legacy = [oct(None)];
        assert_eq!(
            kids(select(&header(Some("z")), &legacy, &[], true)),
            Some(vec![None])
        );
        assert_eq!(kids(select(&header(Some("z")), &legacy, &[], false)), None);
    }

    #[test]
    fn a_jwks_keeps_the_keys_it_can_use_and_refuses_a_set_with_none() {
        let document = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "good", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"},
            {"kty": "oct", "kid": "enc", "use": "enc", "k": "c2VjcmV0"},
            {"kty": "oct", "kid": "mismatch", "alg": "RS256", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "unknown", "kid": "other"},
            "not even an object",
        ]});
        let keys = from_jwks(document.to_string().as_bytes(), 0).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("good")]);
        assert_eq!(keys[0].validation.algorithms, [Algorithm::HS256]);

        let none = serde_json::json!({"keys": [{"kty": "oct", "use": "enc", "k": "c2VjcmV0"}]});
        let err = from_jwks(none.to_string().as_bytes(), 0).err().unwrap();
        assert!(matches!(err, JwksError::NoUsableKey(_)), "{err}");
        assert!(matches!(from_jwks(b"{}", 0), Err(JwksError::Json(_))));
    }
}
