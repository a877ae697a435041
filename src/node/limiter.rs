//! Inbound rate limiting per connection: a token bucket, plus a strike count so a client that
//! ignores `rate_limited` replies is eventually closed (4029) instead of costing a reply each.

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    strikes: u32,
    close_after: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Drop the frame and answer `rate_limited`.
    Limited,
    /// Too many limited frames in a row: close the socket.
    Abuse,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32, burst: u32, close_after: u32) -> Self {
        Self {
            rate_per_sec: rate_per_sec.into(),
            burst: burst.into(),
            tokens: burst.into(),
            last: Instant::now(),
            strikes: 0,
            close_after,
        }
    }

    /// Whether the bucket has refilled to its burst (nothing to remember about this client).
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate_per_sec >= self.burst
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            return Verdict::Allow;
        }
        self.strikes += 1;
        if self.strikes >= self.close_after {
            Verdict::Abuse
        } else {
            Verdict::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_then_abuse() {
        let mut bucket = TokenBucket::new(10, 3, 4);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.check(now), Verdict::Allow);
        }
        assert_eq!(bucket.check(now), Verdict::Limited);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            bucket.check(Instant::now()),
            Verdict::Allow,
            "one token refilled"
        );
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.check(now), Verdict::Limited);
        }
        assert_eq!(bucket.check(now), Verdict::Abuse);
    }
}
