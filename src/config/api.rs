//! `[api]`: the server API for the application's own backend.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

/// The server API under `/api`, for the application's own backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    /// Keys accepted as `Authorization: Bearer <key>`. Default none: the API answers 401.
    pub keys: Vec<String>,
    /// Largest request body, bytes (413 beyond). Default 1 MiB.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive (408 beyond). Default 10 s: a body sent a
    /// byte at a time must not hold a connection forever.
    pub body_timeout_ms: u64,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            max_body_bytes: 1024 * 1024,
            body_timeout_ms: 10_000,
        }
    }
}

impl Api {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("api.max_body_bytes", self.max_body_bytes as u64)?;
        positive("api.body_timeout_ms", self.body_timeout_ms)?;
        if self.keys.iter().any(|k| k.len() < 16) {
            return Err(ConfigError::Invalid {
                key: "api.keys",
                reason: "every key must be at least 16 characters".into(),
            });
        }
        Ok(())
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}
