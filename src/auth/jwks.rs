//! The JWKS cache: the keys last fetched, shared by every verification (read without waiting),
//! replaced by a background task on a schedule and, at most once per
//! `auth.jwks_min_refetch_secs`, when a token names an unknown `kid`. One fetch at a time; a
//! failed fetch keeps the keys the node had.
//!
//! Metrics: `roomcast_jwks_fetches_total{trigger, outcome}`, `roomcast_jwks_keys`,
//! `roomcast_jwks_refetches_limited_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::fetch::{FetchError, Source};
use super::keys::{self, JwksError, Key};
use crate::config::{Auth, ConfigError};

/// The cache and the task refreshing it. Dropping it stops the task.
pub(super) struct Jwks {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

struct Shared {
    source: Source,
    keys: RwLock<Arc<Vec<Key>>>,
    /// Fetches finished, successful or not: a verification that waited for the fetch lock
    /// sees whether one ran meanwhile, and then only looks again.
    fetches: AtomicU64,
    /// Held for the whole of a fetch, so there is one at a time.
    fetch: Arc<Mutex<Refetch>>,
    leeway: u64,
    every: Duration,
    min_refetch: Duration,
}

/// When an unknown `kid` last caused a fetch.
struct Refetch {
    last: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

impl Jwks {
    /// Starts the cache for `source`. A file is read now, and a bad one is a configuration
    /// error naming `auth.jwks_file`; a URL is fetched by the task at once, and verifications
    /// that need a key meanwhile wait for that first fetch. Must run inside a Tokio runtime.
    pub fn start(source: Source, config: &Auth) -> Result<Self, ConfigError> {
        let initial = match source.read_now() {
            Some(document) => {
                let keys = document
                    .map_err(RefreshError::from)
                    .and_then(|d| Ok(keys::from_jwks(&d, config.leeway_secs)?))
                    .map_err(|e| ConfigError::Invalid {
                        key: source.key(),
                        reason: e.to_string(),
                    })?;
                metrics::gauge!("roomcast_jwks_keys").set(keys.len() as f64);
                keys
            }
            None => Vec::new(),
        };
        let shared = Arc::new(Shared {
            fetches: AtomicU64::new(0),
            keys: RwLock::new(Arc::new(initial)),
            fetch: Arc::new(Mutex::new(Refetch { last: None })),
            leeway: config.leeway_secs,
            every: Duration::from_secs(config.jwks_refresh_secs),
            min_refetch: Duration::from_secs(config.jwks_min_refetch_secs),
            source,
        });
        // Taken here, not in the task, so that no verification can fetch before the first one.
        let first = (!shared.source.is_file()).then(|| {
            shared
                .fetch
                .clone()
                .try_lock_owned()
                .expect("a new lock is free")
        });
        let stop = CancellationToken::new();
        tokio::spawn(refresh_on_schedule(shared.clone(), stop.clone(), first));
        Ok(Self {
            shared,
            _stop: stop.drop_guard(),
        })
    }

    /// The keys now. The lock is held only to clone the `Arc`.
    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.shared.keys.read().clone()
    }

    /// Called for a token whose `kid` no key has. Fetches again unless an unknown `kid` already
    /// did within `auth.jwks_min_refetch_secs`; waits for a fetch under way instead of starting
    /// another. True when the keys may have changed since the caller looked.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        let shared = &self.shared;
        let seen = shared.fetches.load(Ordering::Acquire);
        let mut refetch = shared.fetch.lock().await;
        if shared.fetches.load(Ordering::Acquire) != seen {
            return true;
        }
        if refetch
            .last
            .is_some_and(|last| last.elapsed() < shared.min_refetch)
        {
            metrics::counter!("roomcast_jwks_refetches_limited_total").increment(1);
            return false;
        }
        refetch.last = Some(Instant::now());
        shared.refresh("unknown_kid").await
    }
}

impl Shared {
    /// Fetches and installs the keys; the caller holds the fetch lock. False when the fetch
    /// failed and the old keys stay.
    async fn refresh(&self, trigger: &'static str) -> bool {
        let result = match self.source.fetch().await {
            Ok(document) => keys::from_jwks(&document, self.leeway).map_err(RefreshError::from),
            Err(err) => Err(err.into()),
        };
        self.fetches.fetch_add(1, Ordering::Release);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("roomcast_jwks_fetches_total", "trigger" => trigger, "outcome" => outcome)
            .increment(1);
        match result {
            Ok(keys) => {
                self.install(keys);
                true
            }
            Err(err) => {
                let count = self.keys.read().len();
                tracing::warn!(source = self.source.key(), %err, trigger, kept = count, "JWKS fetch failed; keeping the keys the node had");
                false
            }
        }
    }

    fn install(&self, keys: Vec<Key>) {
        let kids = |keys: &[Key]| -> Vec<String> {
            keys.iter()
                .map(|k| k.kid.clone().unwrap_or_default())
                .collect()
        };
        let new_kids = kids(&keys);
        metrics::gauge!("roomcast_jwks_keys").set(keys.len() as f64);
        let old = std::mem::replace(&mut *self.keys.write(), Arc::new(keys));
        if kids(&old) != new_kids {
            tracing::info!(kids = ?new_kids, "JWKS keys changed");
        }
    }
}

/// The first fetch (for a URL, holding the lock taken by `start`), then one every
/// `auth.jwks_refresh_secs`; after a failure the next comes after
/// `auth.jwks_min_refetch_secs` instead.
async fn refresh_on_schedule(
    shared: Arc<Shared>,
    stop: CancellationToken,
    first: Option<OwnedMutexGuard<Refetch>>,
) {
    let mut ok = true;
    if let Some(_held) = first {
        match stop.run_until_cancelled(shared.refresh("start")).await {
            Some(result) => ok = result,
            None => return,
        }
    }
    loop {
        let wait = if ok {
            shared.every
        } else {
            shared.min_refetch.min(shared.every)
        };
        let next = async {
            tokio::time::sleep(wait).await;
            let _held = shared.fetch.lock().await;
            shared.refresh("schedule").await
        };
        match stop.run_until_cancelled(next).await {
            Some(result) => ok = result,
            None => return,
        }
    }
}
