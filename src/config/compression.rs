//! `[compression]`: WebSocket permessage-deflate (RFC 7692), what the server answers to a
//! client's offer and how it compresses.
//!
//! The defaults come from `scripts/bench deflate` (docs/BENCHMARKS.md, "Compression"): shared
//! mode cost no server CPU against compression off (fewer bytes to write paid for the one
//! compression per room frame) and no memory per idle connection beyond its terms; context mode
//! roughly doubled the savings on chat lines for up to 28 % more CPU per delivery, so it is
//! opt-in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

/// How the server compresses what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressionMode {
    /// Every message compressed on its own (`server_no_context_takeover`): a room frame is
    /// compressed once, and the same compressed bytes go to every member that negotiated it.
    /// No compression state per connection.
    Shared,
    /// Context takeover with a small window: each message may refer back to the ones before it
    /// on the same socket, which compresses short chat lines several times better, at the price
    /// of one compression per member and a compressor per busy socket (dropped when idle).
    Context,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Compression {
    /// Whether the server accepts a client's permessage-deflate offer. Default true:
    /// clients that offer nothing are unaffected, and in `shared` mode an idle socket holds
    /// nothing more.
    pub enabled: bool,
    /// `shared` or `context` (see [`CompressionMode`]). Default `shared` (measured, see the module doc): one
    /// compression per room frame whatever the room's size.
    pub mode: CompressionMode,
    /// Frames shorter than this are sent uncompressed. Default 128 bytes: a 150–300-byte
    /// chat line compressed on its own still saves about an eighth (1.14× in the benchmark);
    /// below 128 bytes it saves a few bytes at most.
    pub min_bytes: usize,
    /// zlib level, 1 (fastest) to 9 (smallest). Default 1: JSON compresses well
    /// even at the fastest level.
    pub level: u32,
    /// `context` mode: the window the server compresses with, as `server_max_window_bits`
    /// (9–15; a client's offer may ask for less). It is also what a sending socket holds:
    /// `2^window_bits` bytes. Default 10 (1 KiB): chat lines repeat mostly within
    /// the last few messages.
    pub window_bits: u8,
    /// `context` mode: a socket that sent nothing for this long drops its compressor (its memory
    /// goes back), and the next message starts a fresh one. Default 10 s.
    pub idle_ms: u64,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: CompressionMode::Shared,
            min_bytes: 128,
            level: 1,
            window_bits: 10,
            idle_ms: 10_000,
        }
    }
}

impl Compression {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=9).contains(&self.level) {
            return Err(ConfigError::Invalid {
                key: "compression.level",
                reason: format!("must be 1 to 9 (zlib levels), not {}", self.level),
            });
        }
        if !(9..=15).contains(&self.window_bits) {
            return Err(ConfigError::Invalid {
                key: "compression.window_bits",
                reason: format!(
                    "must be 9 to 15 (RFC 7692's 8 is not supported by zlib), not {}",
                    self.window_bits
                ),
            });
        }
        positive("compression.idle_ms", self.idle_ms)
    }

    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use figment::providers::Env;

    use super::super::{Config, Overrides};
    use super::*;

    fn load(toml: &str) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Config::load_with_env(
            Some(file.path()),
            &Overrides::default(),
            Env::raw().only(&[]),
        )
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("[compression]\nlevel = 0\n", "compression.level"),
            ("[compression]\nlevel = 10\n", "compression.level"),
            (
                "[compression]\nwindow_bits = 8\n",
                "compression.window_bits",
            ),
            (
                "[compression]\nwindow_bits = 16\n",
                "compression.window_bits",
            ),
            ("[compression]\nidle_ms = 0\n", "compression.idle_ms"),
            ("[compression]\nmode = \"zstd\"\n", "compression.mode"),
            ("[compression]\nlevels = 1\n", "levels"),
        ] {
            let err = load(toml).unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        let c =
            load("[compression]\nmode = \"context\"\nwindow_bits = 9\nenabled = false\n").unwrap();
        assert_eq!(c.compression.mode, CompressionMode::Context);
        assert_eq!(c.compression.window_bits, 9);
        assert!(!c.compression.enabled);
    }
}
