//! The signature on every request the node sends the application's backend (proxy calls, and
//! webhook batches, src/webhooks), so the backend can tell the node's calls from anyone else's:
//! `X-Roomcast-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, keyed with
//! `proxy.secret` or `webhooks.secret`, and the timestamp in `X-Roomcast-Timestamp` (unix seconds
//! for proxy calls, milliseconds for webhooks: docs/backend.md, docs/webhooks.md). Signing the
//! timestamp with the body lets the backend refuse a replayed request by its age.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-roomcast-signature";
pub const TIMESTAMP_HEADER: &str = "x-roomcast-timestamp";

/// `sha256=` and the lowercase hex HMAC of `timestamp.body`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in digest {
        out.push(char::from_digit(u32::from(byte >> 4), 16).expect("a nibble"));
        out.push(char::from_digit(u32::from(byte & 15), 16).expect("a nibble"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_known_hmac() {
        // RFC 4231 test case 2 ("Jefe"), over "what do ya want for nothing?" split as the
        // signature splits it: timestamp digits, a dot, the body.
        let sig = signature(b"Jefe", 0, b"what do ya want for nothing?");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), 7 + 64);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        let want = mac.finalize().into_bytes();
        let hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sig, format!("sha256={hex}"));
        assert_ne!(sig, signature(b"Jefe", 1, b"what do ya want for nothing?"));
    }

    /// The value a backend computes with `openssl dgst -sha256 -hmac key` over `1.{}`.
    #[test]
    fn signature_matches_a_known_value() {
        assert_eq!(
            signature(b"key", 1, b"{}"),
            "sha256=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
