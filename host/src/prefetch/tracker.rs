//! Which prefetched objects were used: a prefetched object hit by a real
//! request before it went stale was worth fetching; one that went stale
//! (or was evicted, and so never hit) unused was wasted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{Outcome, PrefetchMetrics};

/// Prefetched objects tracked at once; past it new ones are not tracked
/// (they are still counted as fetched, never as used or wasted).
const CAPACITY: usize = 65_536;
/// How often stale entries are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Tracked {
    module: Arc<str>,
    fresh_until: SystemTime,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<u128, Tracked>,
    swept: Option<SystemTime>,
}

/// Prefetched objects not yet used, by cache key (primary hash).
pub struct Tracker {
    entries: Mutex<Entries>,
    metrics: PrefetchMetrics,
}

impl Tracker {
    pub(super) fn new(metrics: PrefetchMetrics) -> Tracker {
        Tracker {
            entries: Mutex::default(),
            metrics,
        }
    }

    /// `module` prefetched the object under `key`, fresh until
    /// `fresh_until`.
    pub fn stored(&self, key: u128, module: &Arc<str>, fresh_until: SystemTime) {
        let mut entries = self.lock(SystemTime::now());
        if entries.by_key.len() < CAPACITY || entries.by_key.contains_key(&key) {
            entries.by_key.insert(
                key,
                Tracked {
                    module: module.clone(),
                    fresh_until,
                },
            );
        }
    }

    /// A real request was served the object under `key`: `true` the first
    /// time after it was prefetched (counted as used).
    pub fn served(&self, key: u128) -> bool {
        let Some(tracked) = self.lock(SystemTime::now()).by_key.remove(&key) else {
            return false;
        };
        self.metrics.count(&tracked.module, Outcome::Used);
        true
    }

    /// Count what went stale unused, and return the entries, swept at
    /// most once per [`SWEEP_EVERY`].
    fn lock(&self, now: SystemTime) -> std::sync::MutexGuard<'_, Entries> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let due = entries
            .swept
            .is_none_or(|at| now.duration_since(at).unwrap_or_default() >= SWEEP_EVERY);
        if due {
            entries.swept = Some(now);
            let metrics = &self.metrics;
            entries.by_key.retain(|_, t| {
                let fresh = t.fresh_until > now;
                if !fresh {
                    metrics.count(&t.module, Outcome::Wasted);
                }
                fresh
            });
        }
        entries
    }

    /// Objects tracked now (after counting the stale ones), for `/stats`.
    pub fn tracked(&self) -> usize {
        self.lock(SystemTime::now()).by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_once_and_wasted_when_stale_unused() {
        let registry = prometheus::Registry::new();
        let metrics = PrefetchMetrics::new(&registry);
        let tracker = Tracker::new(metrics.clone());
        let module: Arc<str> = "hls".into();
        let now = SystemTime::now();
        tracker.stored(1, &module, now + Duration::from_secs(60));
        tracker.stored(2, &module, now - Duration::from_secs(1));
        assert!(tracker.served(1));
        assert!(!tracker.served(1), "counted once");
        // The stale one is swept on the next look.
        tracker.entries.lock().unwrap().swept = None;
        assert_eq!(tracker.tracked(), 0);
        assert_eq!(metrics.totals("hls"), [("used", 1), ("wasted", 1)]);
    }
}
