//! Where the JWKS document comes from: an HTTP(S) URL or a local file, read whole, bounded in
//! size and (for the URL) in time.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Auth, ConfigError};

/// Largest JWKS document read. An issuer's set is a few KiB; a larger answer is a mistake or an
/// attack, not keys.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a fetch gave no document. The node keeps the keys it had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("cannot read the file: {0}")]
    File(#[from] std::io::Error),
}

pub(super) enum Source {
    Url {
        client: reqwest::Client,
        url: String,
    },
    File(PathBuf),
}

impl Source {
    /// The configured source, if any. Builds the HTTP client (no I/O).
    pub fn from_config(config: &Auth) -> Result<Option<Self>, ConfigError> {
        if let Some(path) = &config.jwks_file {
            return Ok(Some(Self::File(path.clone())));
        }
        let Some(url) = &config.jwks_url else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.jwks_timeout_ms))
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("roomcast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Invalid {
                key: "auth.jwks_url",
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(Some(Self::Url {
            client,
            url: url.clone(),
        }))
    }

    /// The configuration key that names this source, for messages.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Url { .. } => "auth.jwks_url",
            Self::File(_) => "auth.jwks_file",
        }
    }

    pub fn is_file(&self) -> bool {
        matches!(self, Self::File(_))
    }

    /// The document. Cancel safe: dropping the future abandons the request.
    pub async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        match self {
            Self::Url { client, url } => fetch_url(client, url).await,
            Self::File(path) => {
                let path = path.clone();
                // A local read, but on a network file system it can stall: not on a worker.
                tokio::task::spawn_blocking(move || read_file(&path))
                    .await
                    .map_err(|e| FetchError::File(std::io::Error::other(e)))?
            }
        }
    }

    /// The file's document, read now (at start-up, before serving).
    pub fn read_now(&self) -> Option<Result<Vec<u8>, FetchError>> {
        match self {
            Self::File(path) => Some(read_file(path)),
            Self::Url { .. } => None,
        }
    }
}

async fn fetch_url(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FetchError> {
    let mut response = client.get(url).send().await?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, FetchError> {
    use std::io::Read;
    let mut body = Vec::new();
    let file = std::fs::File::open(path)?;
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut body)?;
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(FetchError::TooLarge);
    }
    Ok(body)
}
