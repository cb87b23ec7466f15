//! [`ClockEviction`]: the store's eviction manager, a CLOCK over the
//! store's own index.
//!
//! pingora's `lru::Manager` keeps its own map and list node per object,
//! with the whole cache key in it: 112–126 bytes of RAM per object on
//! top of the store's index. This manager keeps nothing per object that
//! the index does not already hold: the index's slots carry a 2-bit CLOCK
//! counter next to the hash and size (see `index.rs`), so index and
//! eviction state together cost one 29-byte slot. It still is the
//! `EvictionManager` pingora's `HttpCache` drives — admit on a fill,
//! access on a hit, remove on a purge — and it alone decides the victims.
//!
//! # Keys and victims
//!
//! Objects are tracked by their cache key's `combined_bin()`, the hash the
//! store names them by (primary and Vary variance together; the user tag
//! is not part of it, as it is not part of the store's names). A victim is
//! returned as a `CompactCacheKey` whose `primary` is that hash and whose
//! `variance` is `None`: its `combined_bin()` is then the hash itself, so
//! `TieredStore::purge(PurgeTarget::Exact(victim))` removes exactly that
//! object — one Vary variant, not its siblings.
//!
//! # One table for lookups and eviction
//!
//! The store inserts an object into the index when it commits it, before
//! `finish` returns; the manager's `admit` then only records the size
//! pingora reports and runs the hand. The hand removes a victim from the
//! index under the shard lock that lookups take, so from that moment a
//! lookup does not find it on disk (the memory tier may still answer until
//! the caller's purge removes it and its files). A lookup that found the
//! index entry first and already opened the files reads the whole object:
//! removing a file does not cut short a reader that has it open. So a
//! lookup racing an eviction gets the whole object or a miss.
//!
//! Admitting or accessing an object the index does not hold does nothing:
//! the store holds every object it has committed, so such an object is not
//! on disk (its write failed, or it was just evicted) and tracking it
//! would count bytes that are not there. Entries with a storage-defined
//! id (`CacheEntryKey::Identified`) are not this store's and are ignored.
//!
//! # Restarts
//!
//! Nothing is kept apart from the index: the store saves the index, every
//! counter with it, at a clean stop (`TieredStore::save_index`) and takes it
//! back when it opens, so what was hot before a restart is hot after.
//! After an unclean stop the objects come back from the files, each at the
//! counter of a new one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora_cache::eviction::{CacheEntryKey, CacheEntryKeyRef, EvictionManager};
use pingora_cache::key::CompactCacheKey;
use pingora_error::Result;

use crate::index::{Index, Swept, HOTTEST};
use crate::tiers::hash_of;

/// Slots the hand examines per hold of a shard lock, so a lookup never
/// waits behind a long sweep.
const STEPS_PER_LOCK: usize = 1024;

/// Where the eviction hand stands: a shard, and a slot in it.
#[derive(Default)]
struct Hand {
    shard: usize,
    at: usize,
}

/// The eviction manager of a [`TieredStore`](crate::TieredStore), from
/// [`TieredStore::eviction`](crate::TieredStore::eviction): pass it to
/// `HttpCache::enable` with the store. Its weight limit starts as the
/// store's `disk_bytes` less the segment ring's `segment_bytes`, and
/// weight is bytes on disk (body and meta) of the objects kept in files:
/// the ring frees its own space (`crate::segments`).
///
/// Cheap and concurrent: `access` and `peek` take one index shard's lock
/// for one probe; `admit` runs the hand only when the store is over its
/// limit, one hand for the whole store (evictions are serialised, lookups
/// are not), holding one shard at a time for at most 1024 slots.
pub struct ClockEviction {
    index: Arc<Index>,
    limit: AtomicU64,
    hand: Mutex<Hand>,
    evicted_objects: AtomicUsize,
    evicted_bytes: AtomicU64,
}

/// The store's hash of an entry; `None` for an entry with a storage id,
/// which this store never hands out.
fn tracked(item: CacheEntryKeyRef<'_>) -> Option<u128> {
    match item {
        CacheEntryKeyRef::KeyOnly(key) => Some(hash_of(key)),
        CacheEntryKeyRef::Identified { .. } => None,
    }
}

/// The key a victim is returned as: its `combined_bin()` is `hash`.
fn victim(hash: u128) -> CacheEntryKey {
    CacheEntryKey::key_only(CompactCacheKey {
        primary: hash.to_be_bytes(),
        variance: None,
        user_tag: Box::from(""),
    })
}

impl ClockEviction {
    /// A manager over `index`, keeping it to `limit` bytes.
    pub(crate) fn new(index: Arc<Index>, limit: u64) -> ClockEviction {
        ClockEviction {
            index,
            limit: AtomicU64::new(limit),
            hand: Mutex::default(),
            evicted_objects: AtomicUsize::new(0),
            evicted_bytes: AtomicU64::new(0),
        }
    }

    /// The bytes on disk beyond which objects are evicted.
    pub fn weight_limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Change the limit; the next admission evicts down to it.
    pub fn set_weight_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Evict until the store is within its limit, and return the victims
    /// for the caller to purge: what `admit` does after recording its
    /// object. The store calls it once it has recovered its objects (a
    /// store reopened with a smaller `disk_bytes` may be over it).
    pub fn evict_to_limit(&self) -> Vec<CacheEntryKey> {
        let limit = self.weight_limit();
        if self.index.file_bytes() <= limit {
            return Vec::new();
        }
        let mut hand = self.hand.lock().unwrap_or_else(|e| e.into_inner());
        let shards = self.index.shard_count();
        // Every lap takes one off every counter, so a victim is found
        // within HOTTEST + 1 laps of a non-empty index; more laps without
        // one mean there is nothing left to evict.
        let give_up = shards * (usize::from(HOTTEST) + 2);
        let mut fruitless = 0;
        let mut victims = Vec::new();
        while self.index.file_bytes() > limit && fruitless < give_up {
            let Hand { shard, at } = &mut *hand;
            match self.index.sweep(*shard, at, STEPS_PER_LOCK) {
                Swept::Victim(hash, size) => {
                    self.evicted_objects.fetch_add(1, Ordering::Relaxed);
                    self.evicted_bytes.fetch_add(size, Ordering::Relaxed);
                    victims.push(victim(hash));
                    fruitless = 0;
                }
                Swept::Passed => {
                    *shard = (*shard + 1) % shards;
                    *at = 0;
                    fruitless += 1;
                }
                Swept::Paused => {}
            }
        }
        victims
    }
}

#[async_trait]
impl EvictionManager for ClockEviction {
    /// Bytes of the objects kept in files: those it evicts.
    fn total_size(&self) -> usize {
        usize::try_from(self.index.file_bytes()).unwrap_or(usize::MAX)
    }

    fn total_items(&self) -> usize {
        self.index.totals().0
    }

    fn evicted_size(&self) -> usize {
        usize::try_from(self.evicted_bytes.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    fn evicted_items(&self) -> usize {
        self.evicted_objects.load(Ordering::Relaxed)
    }

    /// Record `size` for a committed object (the store indexed it when it
    /// committed), then evict down to the limit.
    fn admit(&self, item: CacheEntryKey, size: usize, _: SystemTime) -> Vec<CacheEntryKey> {
        if let Some(hash) = tracked((&item).into()) {
            self.index.reweigh(hash, |_| size as u64);
        }
        self.evict_to_limit()
    }

    /// Add `delta` to a stored object's weight (up to `max_weight`, never
    /// shrinking it), then evict down to the limit.
    fn increment_weight(
        &self,
        item: &CacheEntryKey,
        delta: usize,
        max_weight: Option<usize>,
    ) -> Vec<CacheEntryKey> {
        if let Some(hash) = tracked(item.into()) {
            self.index.reweigh(hash, |weight| {
                let grown = weight.saturating_add(delta as u64);
                match max_weight.map(|m| m as u64) {
                    Some(max) if weight >= max => weight,
                    Some(max) => grown.min(max),
                    None => grown,
                }
            });
        }
        self.evict_to_limit()
    }

    /// Forget an object the caller has purged from the store (the purge
    /// has already removed it from the index; this is then a no-op).
    fn remove(&self, item: CacheEntryKeyRef<'_>) {
        if let Some(hash) = tracked(item) {
            self.index.remove(hash);
        }
    }

    /// A hit: one more on the object's counter. False, and nothing
    /// tracked, if the store does not hold it.
    fn access(&self, item: &CacheEntryKey, _: usize, _: SystemTime) -> bool {
        tracked(item.into()).is_some_and(|hash| self.index.touch(hash))
    }

    fn peek(&self, item: &CacheEntryKey) -> bool {
        tracked(item.into()).is_some_and(|hash| self.index.get(hash).is_some())
    }

    /// Nothing to save apart from the store's index, which the store
    /// saves itself, counters included (`TieredStore::save_index`).
    async fn save(&self, _dir_path: &str) -> Result<()> {
        Ok(())
    }

    /// Nothing to load: the store takes its saved index back, counters
    /// included, when it opens.
    async fn load(&self, _dir_path: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::eviction::lru;
    use pingora_cache::key::CacheHashKey;
    use pingora_cache::key::CacheKey;

    fn spread(i: u64) -> u128 {
        u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ 0x5851_F42D
    }

    fn manager(limit: u64) -> ClockEviction {
        ClockEviction::new(Arc::new(Index::default()), limit)
    }

    fn entry(hash: u128) -> CacheEntryKey {
        victim(hash)
    }

    /// What the store and pingora do for a fill: index, then admit.
    fn fill(m: &ClockEviction, hash: u128, size: u64) -> Vec<CacheEntryKey> {
        m.index.insert(hash, size);
        m.admit(entry(hash), size as usize, SystemTime::now())
    }

    #[test]
    fn a_victim_names_exactly_the_variant_it_evicts() {
        let mut key = CacheKey::new("/page", "site");
        key.set_variance_key(*b"accept-encoding:");
        let hash = hash_of(&key);
        let back = victim(hash);
        assert_eq!(back.key().combined_bin(), key.combined_bin());
        assert_ne!(back.key().combined_bin(), key.primary_bin());
        let m = manager(u64::MAX);
        m.index.insert(hash, 10);
        assert!(m.peek(&CacheEntryKey::key_only(key.to_compact())));
        assert!(m.peek(&back), "the victim's key finds the same slot");
    }

    #[test]
    fn victims_keep_the_store_within_its_limit() {
        let m = manager(1000);
        let mut victims = 0;
        for i in 0..100 {
            victims += fill(&m, spread(i), 100).len();
            assert!(m.total_size() <= 1000, "{} at {i}", m.total_size());
        }
        assert_eq!(m.total_items(), 10);
        assert_eq!(victims, 90);
        assert_eq!((m.evicted_items(), m.evicted_size()), (90, 9000));
    }

    #[test]
    fn admitting_what_the_store_does_not_hold_tracks_nothing() {
        let m = manager(1000);
        assert!(m.admit(entry(spread(1)), 10, SystemTime::now()).is_empty());
        assert!(!m.access(&entry(spread(1)), 10, SystemTime::now()));
        assert!(m.increment_weight(&entry(spread(1)), 0, None).is_empty());
        assert_eq!(m.total_items(), 0);
        assert!(!m.peek(&entry(spread(1))));
    }

    #[test]
    fn identified_entries_are_not_this_stores() {
        let m = manager(u64::MAX);
        m.index.insert(spread(1), 10);
        let key = victim(spread(1)).into_key();
        let identified = CacheEntryKey::identified(key, pingora_cache::CacheEntryId::new(7));
        assert!(!m.peek(&identified));
        m.remove((&identified).into());
        assert_eq!(
            m.total_items(),
            1,
            "a key-only object is not removed by an id"
        );
    }

    #[test]
    fn increment_weight_respects_the_max_hint() {
        let m = manager(u64::MAX);
        m.index.insert(spread(1), 10);
        m.increment_weight(&entry(spread(1)), 5, None);
        assert_eq!(m.index.get(spread(1)), Some(15));
        m.increment_weight(&entry(spread(1)), 50, Some(20));
        assert_eq!(m.index.get(spread(1)), Some(20));
        m.increment_weight(&entry(spread(1)), 50, Some(12));
        assert_eq!(m.index.get(spread(1)), Some(20), "never shrunk by the hint");
    }

    #[test]
    fn a_lowered_limit_evicts_at_the_next_admission() {
        let m = manager(u64::MAX);
        for i in 0..50 {
            fill(&m, spread(i), 10);
        }
        m.set_weight_limit(200);
        assert_eq!(m.evict_to_limit().len(), 30);
        assert_eq!(m.total_size(), 200);
    }

    #[test]
    fn a_store_over_its_limit_with_nothing_evictable_stops() {
        let m = manager(0);
        assert!(m.evict_to_limit().is_empty());
    }

    #[test]
    fn a_hot_set_survives_a_scan_that_flushes_an_lru() {
        // Room for 100 objects of 10 bytes: 100 stored, 20 of them read
        // twice, then a scan of 100 objects read once.
        let clock = manager(1000);
        let lru = lru::Manager::<1>::with_capacity(1000, 256);
        let now = SystemTime::now();
        for i in 0..100 {
            fill(&clock, spread(i), 10);
            lru.admit(entry(spread(i)), 10, now);
        }
        for _ in 0..2 {
            for i in 0..20 {
                assert!(clock.access(&entry(spread(i)), 10, now));
                assert!(lru.access(&entry(spread(i)), 10, now));
            }
        }
        for i in 1000..1100 {
            fill(&clock, spread(i), 10);
            lru.admit(entry(spread(i)), 10, now);
        }
        let kept = |m: &dyn EvictionManager| (0..20).filter(|i| m.peek(&entry(spread(*i)))).count();
        assert_eq!(kept(&clock), 20, "CLOCK keeps the hot set");
        assert_eq!(kept(&lru), 0, "LRU lost it to the scan");
        assert_eq!(clock.total_size(), 1000);
    }

    #[test]
    fn concurrent_admits_and_accesses_keep_the_totals_true() {
        let m = manager(50_000);
        let now = SystemTime::now();
        let victims: Vec<CacheEntryKey> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let m = &m;
                    s.spawn(move || {
                        let mut victims = Vec::new();
                        for i in 0..5_000u64 {
                            victims.extend(fill(m, spread((t << 32) | i), 10 + i % 90));
                            m.access(&entry(spread((t << 32) | (i / 2))), 0, now);
                        }
                        victims
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        let stored: u64 = 4 * (0..5_000u64).map(|i| 10 + i % 90).sum::<u64>();
        assert!(m.total_size() <= 50_000);
        assert_eq!(m.total_items() + m.evicted_items(), 20_000);
        assert_eq!((m.total_size() + m.evicted_size()) as u64, stored);
        assert_eq!(victims.len(), m.evicted_items());
        assert!(
            victims.iter().all(|v| !m.peek(v)),
            "a victim is no longer indexed"
        );
    }
}
