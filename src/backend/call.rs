//! One proxy call on the wire: POST the signed JSON body, read a bounded answer within the
//! timeout, and parse `{"result": …}` or `{"error": {"code", "message"}}`. Anything else is a
//! [`Failure`], which the caller turns into `proxy.on_failure`.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::sign::{SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};

/// Longest backend code and message carried to a client, bytes: they go into an error frame.
const MAX_CODE_BYTES: usize = 64;
const MAX_MESSAGE_BYTES: usize = 512;

/// Why the backend gave no decision. The label is the metric's `outcome`.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("unreachable: {0}")]
    Unreachable(reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("not a valid answer: {0}")]
    BadAnswer(String),
    #[error("every call slot (proxy.max_concurrency) is taken")]
    Overloaded,
}

impl Failure {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::Status(_) => "bad_status",
            Self::BadAnswer(_) => "bad_answer",
            Self::Overloaded => "overloaded",
        }
    }
}

/// The backend's refusal, as the client will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: String,
    pub message: String,
}

/// What a call returned: the kind's `result` object, or a refusal.
pub enum Answer<T> {
    Result(T),
    Denied(Denial),
}

#[derive(Deserialize)]
struct Envelope<T> {
    result: Option<T>,
    error: Option<WireDenial>,
}

#[derive(Deserialize)]
struct WireDenial {
    code: Code,
    #[serde(default)]
    message: String,
}

/// A code may be a string or a number (Centrifugo-style backends answer numbers).
#[derive(Deserialize)]
#[serde(untagged)]
enum Code {
    Text(String),
    Number(u64),
}

/// POSTs `body` to `url` signed with `secret`; the answer within `timeout`, at most `max_bytes`.
pub async fn post<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    kind: &'static str,
    secret: &[u8],
    body: Vec<u8>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Answer<T>, Failure> {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(secret, timestamp, &body))
        .header(TIMESTAMP_HEADER, timestamp)
        .header("x-roomcast-proxy", kind)
        .timeout(timeout)
        .body(body);
    // The whole exchange, body read included, within the timeout.
    let exchange = async {
        let mut response = request.send().await.map_err(classify)?;
        if !response.status().is_success() {
            return Err(Failure::Status(response.status().as_u16()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if bytes.len() + chunk.len() > max_bytes {
                return Err(Failure::BadAnswer(format!("longer than {max_bytes} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    let millis = timeout.as_millis() as u64;
    let bytes = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Failure::Timeout(millis))??;
    parse(&bytes)
}

fn classify(err: reqwest::Error) -> Failure {
    if err.is_timeout() {
        // The client's own timeout is the same as ours; either may fire first.
        Failure::Timeout(0)
    } else {
        Failure::Unreachable(err)
    }
}

/// `{"result": T}` or `{"error": {"code", "message"}}`, exactly one of them.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<Answer<T>, Failure> {
    let envelope: Envelope<T> =
        serde_json::from_slice(bytes).map_err(|e| Failure::BadAnswer(e.to_string()))?;
    match (envelope.result, envelope.error) {
        (Some(result), None) => Ok(Answer::Result(result)),
        (None, Some(WireDenial { code, message })) => {
            let code = match code {
                Code::Text(text) => text,
                Code::Number(n) => n.to_string(),
            };
            if code.is_empty() || code.len() > MAX_CODE_BYTES {
                return Err(Failure::BadAnswer(format!(
                    "error.code must be 1 to {MAX_CODE_BYTES} bytes"
                )));
            }
            let message = truncate(message, MAX_MESSAGE_BYTES);
            Ok(Answer::Denied(Denial { code, message }))
        }
        _ => Err(Failure::BadAnswer(
            "expected exactly one of `result` and `error`".into(),
        )),
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Empty {}

    #[test]
    fn answers_parse_or_fail() {
        assert!(matches!(
            parse::<Empty>(br#"{"result":{}}"#),
            Ok(Answer::Result(_))
        ));
        match parse::<Empty>(br#"{"error":{"code":1001,"message":"no"}}"#) {
            Ok(Answer::Denied(d)) => {
                assert_eq!((d.code.as_str(), d.message.as_str()), ("1001", "no"))
            }
            _ => panic!("expected a denial"),
        }
        match parse::<Empty>(br#"{"error":{"code":"spam"}}"#) {
            Ok(Answer::Denied(d)) => {
                assert_eq!((d.code.as_str(), d.message.as_str()), ("spam", ""))
            }
            _ => panic!("expected a denial"),
        }
        for bad in [
            &br#"{}"#[..],
            br#"{"result":{},"error":{"code":"x"}}"#,
            br#"{"error":{"code":""}}"#,
            br#"{"error":{"message":"no code"}}"#,
            b"not json",
            br#"[1]"#,
        ] {
            assert!(matches!(parse::<Empty>(bad), Err(Failure::BadAnswer(_))));
        }
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let cut = truncate("é".repeat(400), MAX_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_MESSAGE_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
