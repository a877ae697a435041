//! `[webhooks]`: lifecycle events (`user_online`, `user_offline`, `room_occupied`,
//! `room_vacated`, `direct_undelivered`) POSTed to the application's backend, signed, batched
//! and retried. Off while `url` is empty. See docs/webhooks.md.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

/// Every event kind a node can send, as named in `webhooks.events` and in the event JSON.
pub const EVENT_KINDS: [&str; 5] = [
    "user_online",
    "user_offline",
    "room_occupied",
    "room_vacated",
    "direct_undelivered",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Webhooks {
    /// Where batches are POSTed (`http://` or `https://`). Default empty: webhooks off.
    pub url: String,
    /// The HMAC-SHA256 key that signs every request (`X-Roomcast-Signature`). Required with
    /// `url`; at least 16 bytes, so a signature cannot be guessed.
    pub secret: String,
    /// The kinds sent; the others are tracked (so the debounce still applies) but dropped.
    /// Default: all five.
    pub events: Vec<String>,
    /// A user (or room) whose last session (member) goes and who comes back within this many
    /// milliseconds fires nothing: neither the offline (vacated) event nor a second online
    /// (occupied). Default 5000: a page reload or a network switch is not an offline.
    pub debounce_ms: u64,
    /// Most events per POST. Default 100.
    pub batch_max: usize,
    /// How often a node looks for events to send when the last look found fewer than a full
    /// batch: the most an event waits to be batched with others. Default 200 ms.
    pub linger_ms: u64,
    /// How long one POST may take before it counts as failed. Default 5000 ms.
    pub timeout_ms: u64,
    /// Tries per event, the first included, before it is dropped and counted as a dead letter
    /// (`roomcast_webhook_dead_letters_total`). Default 8.
    pub max_attempts: u32,
    /// The wait before the first retry; each further retry waits twice as long, up to
    /// `backoff_max_ms`. Default 500 ms.
    pub backoff_ms: u64,
    /// The longest wait between two tries. Default 60000 ms.
    pub backoff_max_ms: u64,
    /// Most events waiting (debounced or not yet delivered) across the cluster; an event past
    /// it is dropped and counted (`roomcast_webhook_events_dropped_total`), so a backend down
    /// for long cannot fill Redis. Default 100000.
    pub queue_capacity: usize,
}

impl Default for Webhooks {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: String::new(),
            events: EVENT_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            debounce_ms: 5_000,
            batch_max: 100,
            linger_ms: 200,
            timeout_ms: 5_000,
            max_attempts: 8,
            backoff_ms: 500,
            backoff_max_ms: 60_000,
            queue_capacity: 100_000,
        }
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl Webhooks {
    /// Whether webhooks are on.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(invalid(
                "webhooks.url",
                "must start with http:// or https://",
            ));
        }
        if self.secret.len() < 16 {
            return Err(invalid("webhooks.secret", "must be at least 16 bytes"));
        }
        if let Some(kind) = self
            .events
            .iter()
            .find(|k| !EVENT_KINDS.contains(&k.as_str()))
        {
            return Err(invalid(
                "webhooks.events",
                format!("unknown event {kind:?}; known: {}", EVENT_KINDS.join(", ")),
            ));
        }
        positive("webhooks.linger_ms", self.linger_ms)?;
        positive("webhooks.timeout_ms", self.timeout_ms)?;
        positive("webhooks.backoff_ms", self.backoff_ms)?;
        positive("webhooks.max_attempts", self.max_attempts.into())?;
        if !(1..=1_000).contains(&self.batch_max) {
            return Err(invalid("webhooks.batch_max", "must be 1 to 1000"));
        }
        if self.backoff_max_ms < self.backoff_ms {
            return Err(invalid(
                "webhooks.backoff_max_ms",
                "must be at least webhooks.backoff_ms",
            ));
        }
        positive("webhooks.queue_capacity", self.queue_capacity as u64)?;
        Ok(())
    }

    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// How long a batch taken for sending stays invisible to the other nodes: a node that dies
    /// mid-POST has its batch sent again by another once this passes (the at-least-once window;
    /// event ids let the backend drop the repeat).
    pub fn hold(&self) -> Duration {
        2 * self.timeout() + Duration::from_secs(1)
    }

    /// The wait after the `attempt`-th failed try (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(20);
        Duration::from_millis(
            self.backoff_ms
                .saturating_mul(factor)
                .min(self.backoff_max_ms),
        )
    }
}

/// Webhooks decide their events in one place: the memory engine's node, or a single Redis.
/// Not in Redis Cluster mode, whose scripts cannot span the events' shared keys.
pub(super) fn validate_engine(config: &super::Config) -> Result<(), ConfigError> {
    let cluster =
        config.broker == super::BrokerKind::Redis && !config.redis.cluster_nodes.is_empty();
    if config.webhooks.enabled() && cluster {
        return Err(invalid(
            "webhooks.url",
            "webhooks are not supported with redis.cluster_nodes (Redis Cluster)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> Webhooks {
        Webhooks {
            url: "http://127.0.0.1:9/hook".into(),
            secret: "0123456789abcdef".into(),
            ..Webhooks::default()
        }
    }

    #[test]
    fn validation_names_the_key() {
        assert!(Webhooks::default().validate().is_ok());
        assert!(on().validate().is_ok());
        let key = |w: Webhooks| match w.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            key(Webhooks {
                url: "ftp://x".into(),
                ..on()
            }),
            "webhooks.url"
        );
        assert_eq!(
            key(Webhooks {
                secret: "short".into(),
                ..on()
            }),
            "webhooks.secret"
        );
        let events = vec!["user_gone".to_owned()];
        assert_eq!(key(Webhooks { events, ..on() }), "webhooks.events");
        assert_eq!(
            key(Webhooks {
                batch_max: 0,
                ..on()
            }),
            "webhooks.batch_max"
        );
        assert_eq!(
            key(Webhooks {
                backoff_max_ms: 1,
                ..on()
            }),
            "webhooks.backoff_max_ms"
        );
        assert_eq!(
            key(Webhooks {
                queue_capacity: 0,
                ..on()
            }),
            "webhooks.queue_capacity"
        );
    }

    #[test]
    fn redis_cluster_mode_is_refused_naming_the_url() {
        let mut config = super::super::Config {
            webhooks: on(),
            ..Default::default()
        };
        assert!(
            config.validate().is_ok(),
            "the memory engine takes webhooks"
        );
        config.broker = super::super::BrokerKind::Redis;
        config.redis.cluster_nodes = vec!["redis://127.0.0.1:7000".into()];
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "webhooks.url"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let w = Webhooks {
            backoff_ms: 100,
            backoff_max_ms: 1_000,
            ..on()
        };
        let waits: Vec<u64> = (1..=6).map(|a| w.backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
    }
}
