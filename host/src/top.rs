//! The URLs with the most requests, bytes and misses lately: bounded
//! Space-Saving sketches (Metwally, Agrawal, El Abbadi 2005), never a map
//! that grows with traffic.
//!
//! Each measure keeps [`SHARDS`] sketches of [`PER_SHARD`] counters; a URL
//! always lands in the same shard, so the request path takes one short lock
//! on one shard per measure, and a shard's heavy hitters are exact up to
//! the sketch's error bound. Windows are a minute long; the answer merges
//! the last complete window with the current one, so it covers the last one
//! to two minutes and is never empty just after a window turns.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Shards per measure.
const SHARDS: usize = 16;
/// Counters per shard: 512 URLs tracked per measure in all.
pub const PER_SHARD: usize = 32;
/// Seconds per window.
const WINDOW: u64 = 60;

/// What the URLs are ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Requests answered.
    Requests,
    /// Body bytes sent.
    Bytes,
    /// Requests that went to the origin.
    Misses,
}

impl Measure {
    /// Every measure, in the order the sketches are kept.
    pub const ALL: [Measure; 3] = [Measure::Requests, Measure::Bytes, Measure::Misses];

    /// Its name in `/top`.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Requests => "requests",
            Measure::Bytes => "bytes",
            Measure::Misses => "misses",
        }
    }
}

/// One URL's count.
struct Counter {
    /// The URL's hash: compared before the URL, so a scan of a shard
    /// compares strings only for the URL it finds.
    hash: u64,
    url: Arc<str>,
    count: u64,
}

/// One shard: at most [`PER_SHARD`] counters.
#[derive(Default)]
struct Sketch {
    counters: Vec<Counter>,
}

/// The URL one request counts, as [`Sketch::add`] takes it: its hash, its
/// two parts, and the joined string once a measure has made it (the other
/// measures share it rather than each allocating their own).
struct Url<'a> {
    hash: u64,
    host: &'a str,
    target: &'a str,
    joined: Option<Arc<str>>,
}

impl Url<'_> {
    fn is(&self, counter: &Counter) -> bool {
        let url = &*counter.url;
        counter.hash == self.hash
            && url.len() == self.host.len() + self.target.len()
            && url.starts_with(self.host)
            && &url[self.host.len()..] == self.target
    }

    fn joined(&mut self) -> Arc<str> {
        let (host, target) = (self.host, self.target);
        self.joined
            .get_or_insert_with(|| format!("{host}{target}").into())
            .clone()
    }
}

impl Sketch {
    /// Count `weight` for `url`: its counter if tracked, a new one while
    /// there is room, else the smallest counter's place (Space-Saving: the
    /// newcomer inherits the count it displaces, so a heavy hitter is never
    /// undercounted).
    fn add(&mut self, url: &mut Url<'_>, weight: u64) {
        if let Some(counter) = self.counters.iter_mut().find(|c| url.is(c)) {
            counter.count += weight;
            return;
        }
        let mut counter = Counter {
            hash: url.hash,
            url: url.joined(),
            count: weight,
        };
        if self.counters.len() < PER_SHARD {
            self.counters.push(counter);
        } else if let Some(smallest) = self.counters.iter_mut().min_by_key(|c| c.count) {
            counter.count += smallest.count;
            *smallest = counter;
        }
    }
}

/// The current and the last complete window of one shard.
#[derive(Default)]
struct Windows {
    current: Sketch,
    last: Sketch,
}

/// The sketches of every measure.
pub struct TopUrls {
    shards: [[Mutex<Windows>; SHARDS]; Measure::ALL.len()],
    /// The current window's number (Unix seconds / [`WINDOW`]).
    window: AtomicU64,
    hasher: foldhash::fast::RandomState,
}

impl Default for TopUrls {
    fn default() -> Self {
        TopUrls {
            shards: std::array::from_fn(|_| std::array::from_fn(|_| Mutex::default())),
            window: AtomicU64::new(window_now()),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

fn window_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / WINDOW)
}

impl TopUrls {
    /// Count one answered request for `host` + `target`: `bytes` of body,
    /// and whether it went to the origin.
    pub fn record(&self, host: &str, target: &str, bytes: u64, miss: bool) {
        self.turn();
        let mut hasher = self.hasher.build_hasher();
        hasher.write(host.as_bytes());
        hasher.write(target.as_bytes());
        let hash = hasher.finish();
        let shard = hash as usize % SHARDS;
        let mut url = Url {
            hash,
            host,
            target,
            joined: None,
        };
        for (measure, weight) in Measure::ALL.iter().zip([1, bytes, u64::from(miss)]) {
            if weight > 0 {
                self.lock(*measure, shard).current.add(&mut url, weight);
            }
        }
    }

    /// The `n` URLs with the highest counts of `measure` over the last one
    /// to two minutes, highest first.
    pub fn top(&self, measure: Measure, n: usize) -> Vec<(String, u64)> {
        self.turn();
        let mut merged: Vec<(String, u64)> = Vec::new();
        for shard in 0..SHARDS {
            let windows = self.lock(measure, shard);
            for Counter { url, count, .. } in windows
                .last
                .counters
                .iter()
                .chain(&windows.current.counters)
            {
                match merged.iter_mut().find(|(u, _)| u.as_str() == &**url) {
                    Some(entry) => entry.1 += count,
                    None => merged.push((url.to_string(), *count)),
                }
            }
        }
        merged.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        merged.truncate(n);
        merged
    }

    /// Counters held in all, for the bound's test.
    #[cfg(test)]
    fn held(&self) -> usize {
        (0..SHARDS)
            .flat_map(|shard| Measure::ALL.map(|m| (m, shard)))
            .map(|(m, shard)| {
                let w = self.lock(m, shard);
                w.current.counters.len() + w.last.counters.len()
            })
            .sum()
    }

    /// Start a new window once a minute has turned: the current one becomes
    /// the last. One thread wins the turn; the others carry on.
    fn turn(&self) {
        let now = window_now();
        let seen = self.window.load(Ordering::Relaxed);
        if now == seen
            || self
                .window
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for measure in Measure::ALL {
            for shard in 0..SHARDS {
                let mut windows = self.lock(measure, shard);
                let current = std::mem::take(&mut windows.current);
                // A window that saw nothing leaves the last one as it is.
                windows.last = if now == seen + 1 {
                    current
                } else {
                    Sketch::default()
                };
            }
        }
    }

    fn lock(&self, measure: Measure, shard: usize) -> std::sync::MutexGuard<'_, Windows> {
        self.shards[measure as usize][shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_hitters_rise_above_a_long_tail_and_memory_stays_bounded() {
        let top = TopUrls::default();
        for i in 0..1_000_000u64 {
            top.record("example.com", &format!("/tail/{i}"), 10, false);
            if i % 100 == 0 {
                top.record("example.com", "/hot", 1000, true);
            }
            if i % 250 == 0 {
                top.record("example.com", "/warm", 1, false);
            }
        }
        assert!(top.held() <= 2 * SHARDS * PER_SHARD * Measure::ALL.len());
        let requests = top.top(Measure::Requests, 2);
        assert_eq!(requests[0].0, "example.com/hot");
        assert!(requests[0].1 >= 10_000, "never undercounted: {requests:?}");
        assert_eq!(requests[1].0, "example.com/warm");
        assert_eq!(top.top(Measure::Bytes, 1)[0].0, "example.com/hot");
        let misses = top.top(Measure::Misses, 5);
        assert_eq!(misses, [("example.com/hot".to_owned(), 10_000)]);
    }

    #[test]
    fn measures_are_indexed_in_order() {
        for (i, m) in Measure::ALL.into_iter().enumerate() {
            assert_eq!(m as usize, i);
        }
    }
}
