//! The join cache: (user, room) pairs the backend allowed recently, so a client that leaves
//! and joins again (or reconnects) within `proxy.join_cache_ms` does not cost a call. Allows
//! only: a denial is asked again every time, so a backend that changes its mind to "yes" is
//! heard at once. Bounded by `proxy.join_cache_entries`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct JoinCache {
    ttl: Duration,
    max: usize,
    /// `user \0 room` (neither may hold a NUL) → when the allow stops counting.
    entries: Mutex<HashMap<String, Instant>>,
}

impl JoinCache {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(user: &str, room: &str) -> String {
        let mut key = String::with_capacity(user.len() + room.len() + 1);
        key.push_str(user);
        key.push('\0');
        key.push_str(room);
        key
    }

    /// Whether `user` was allowed into `room` within the TTL.
    pub fn allowed(&self, user: &str, room: &str, now: Instant) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let key = Self::key(user, room);
        let mut entries = self.entries.lock();
        match entries.get(&key) {
            Some(&until) if until > now => true,
            Some(_) => {
                entries.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Remembers an allow. When full, drops the expired entries first; if that frees nothing,
    /// this allow is not remembered (the next join asks again).
    pub fn remember(&self, user: &str, room: &str, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= self.max {
            entries.retain(|_, until| *until > now);
            if entries.len() >= self.max {
                return;
            }
        }
        entries.insert(Self::key(user, room), now + self.ttl);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_expire_and_the_bound_holds() {
        let cache = JoinCache::new(Duration::from_secs(1), 2);
        let t0 = Instant::now();
        assert!(!cache.allowed("a", "r", t0));
        cache.remember("a", "r", t0);
        assert!(cache.allowed("a", "r", t0));
        assert!(!cache.allowed("a", "s", t0) && !cache.allowed("b", "r", t0));
        cache.remember("b", "r", t0);
        cache.remember("c", "r", t0);
        assert_eq!(cache.len(), 2, "full: the third is not remembered");
        assert!(!cache.allowed("c", "r", t0));
        let later = t0 + Duration::from_secs(2);
        assert!(!cache.allowed("a", "r", later));
        cache.remember("c", "r", later);
        assert!(cache.allowed("c", "r", later));
        assert!(cache.len() <= 2);
    }

    #[test]
    fn off_when_ttl_is_zero() {
        let cache = JoinCache::new(Duration::ZERO, 10);
        cache.remember("a", "r", Instant::now());
        assert!(!cache.allowed("a", "r", Instant::now()));
    }
}
