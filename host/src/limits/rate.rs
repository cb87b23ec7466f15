//! Token buckets by key (a client address, a policy's own key), in
//! sharded maps of bounded size, so a flood of new keys costs a bounded
//! amount of memory (the least useful buckets are dropped first: full
//! ones, which are what a new key would get anyway).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Shards, so callers on different cores rarely share a lock.
const SHARDS: usize = 16;
/// Buckets per shard: 65,536 keys in all.
pub const PER_SHARD: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The rate and burst it was last asked with (a policy may give each
    /// key its own).
    rate: f64,
    burst: f64,
}

impl Bucket {
    /// Add what its rate earned since the last look, up to its burst.
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
    }
}

/// Token buckets by key: client addresses by default.
#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
    hasher: RandomState,
}

impl<K> Default for RateLimiter<K> {
    fn default() -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// Whether `key` may have one more at `now`, at `rate` per second with
    /// `burst` at once; takes a token if so.
    pub fn allow<Q>(&self, key: &Q, rate: f64, burst: u32, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let burst = f64::from(burst);
        let shard = self.hasher.hash_one(key) as usize % SHARDS;
        let mut buckets = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match buckets.get_mut(key) {
            Some(bucket) => bucket,
            None => {
                if buckets.len() >= PER_SHARD {
                    make_room(&mut buckets, now);
                }
                buckets.entry(key.to_owned()).or_insert(Bucket {
                    tokens: burst,
                    at: now,
                    rate,
                    burst,
                })
            }
        };
        bucket.rate = rate;
        bucket.burst = burst;
        bucket.refill(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Buckets held, for tests of the bound.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drop the full buckets (a new one would be the same); if that frees
/// nothing, drop an eighth of the shard, so a flood of new addresses pays
/// this walk once per eighth, not per request.
fn make_room<K: Hash + Eq + Clone>(buckets: &mut HashMap<K, Bucket>, now: Instant) {
    buckets.retain(|_, b| {
        b.refill(now);
        b.tokens < b.burst
    });
    if buckets.len() >= PER_SHARD {
        let drop: Vec<K> = buckets.keys().take(PER_SHARD / 8).cloned().collect();
        for key in drop {
            buckets.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let allowed = (0..15).filter(|_| limiter.allow(&ip, 10.0, 10, t0)).count();
        assert_eq!(allowed, 10, "the burst");
        assert!(!limiter.allow(&ip, 10.0, 10, t0));
        assert!(
            limiter.allow(&ip, 10.0, 10, t0 + Duration::from_millis(100)),
            "one token a tenth of a second"
        );
        assert!(!limiter.allow(&ip, 10.0, 10, t0 + Duration::from_millis(100)));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiter.allow(&other, 10.0, 10, t0), "addresses are apart");
    }

    #[test]
    fn a_million_addresses_stay_within_the_bound() {
        let limiter = RateLimiter::default();
        let now = Instant::now();
        for i in 0..1_000_000u32 {
            limiter.allow(&IpAddr::from(i.to_be_bytes()), 1.0, 5, now);
        }
        assert!(limiter.len() <= SHARDS * PER_SHARD, "{}", limiter.len());
    }
}
