//! The storage seam: the one place that chooses where cached objects live.
//!
//! Today that is pingora-cache's in-tree [`MemCache`], bounded by pingora's
//! LRU eviction manager (weight = body bytes). The tiered `edge-cdn-store`
//! replaces it here and nowhere else: the proxy only sees [`CacheStore`].

use std::time::Duration;

use pingora_cache::eviction::{lru, EvictionManager};
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::predictor::{CacheablePredictor, Predictor};
use pingora_cache::{CacheKey, CacheOptionOverrides, HttpCache, MemCache, Storage};

use crate::config;

use super::freshness::reason;

/// LRU shards: enough that admissions on different keys rarely contend.
const EVICTION_SHARDS: usize = 16;
/// Predictor shards and per-shard capacity for remembering uncacheable keys.
const PREDICTOR_SHARDS: usize = 16;
const PREDICTOR_SHARD_CAPACITY: usize = 4096;

/// Everything a request needs to use the cache, built once and shared.
pub struct CacheStore {
    storage: &'static (dyn Storage + Sync),
    eviction: &'static (dyn EvictionManager + Sync),
    lock: &'static CacheKeyLockImpl,
    predictor: &'static (dyn CacheablePredictor + Sync),
    lock_wait_timeout: Duration,
    max_object_size: usize,
}

/// Totals read from the eviction manager, for metrics and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Objects currently admitted.
    pub objects: usize,
    /// Body bytes currently admitted.
    pub bytes: usize,
    /// Objects evicted since start.
    pub evicted_objects: usize,
    /// Bytes evicted since start.
    pub evicted_bytes: usize,
}

impl CacheStore {
    /// The in-memory store sized by `[cache]`. Lives for the whole process,
    /// as pingora-cache requires `'static` parts.
    pub fn in_memory(cfg: &config::Cache) -> &'static CacheStore {
        let size = usize::try_from(cfg.size.as_u64()).unwrap_or(usize::MAX);
        // Preallocate for objects of ~16 KiB on average.
        let capacity = (size / 16384 / EVICTION_SHARDS).clamp(64, 65536);
        let eviction = lru::Manager::<EVICTION_SHARDS>::with_capacity(size, capacity);
        let predictor = Predictor::<PREDICTOR_SHARDS>::new(
            PREDICTOR_SHARD_CAPACITY,
            // Reasons that belong to one request or one response, not to the
            // URL: remembering them would bypass the cache for everyone.
            Some(|why| why == reason::AUTHORIZATION.as_str() || why == reason::STATUS.as_str()),
        );
        Box::leak(Box::new(CacheStore {
            storage: Box::leak(Box::new(MemCache::new())),
            eviction: Box::leak(Box::new(eviction)),
            lock: Box::leak(CacheLock::new_boxed(cfg.lock_age_timeout)),
            predictor: Box::leak(Box::new(predictor)),
            lock_wait_timeout: cfg.lock_timeout,
            max_object_size: usize::try_from(cfg.max_object_size.as_u64()).unwrap_or(usize::MAX),
        }))
    }

    /// Turn caching on for one request, with request collapsing and the size cap.
    pub fn enable(&'static self, cache: &mut HttpCache) {
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(self.lock_wait_timeout);
        cache.enable(
            self.storage,
            Some(self.eviction),
            Some(self.predictor),
            Some(self.lock),
            Some(overrides),
        );
        cache.set_max_file_size_bytes(self.max_object_size);
    }

    /// Remove the entry for `key` and all its Vary variants (RFC 9111 §4.4
    /// invalidation). Returns whether anything was removed.
    pub async fn invalidate(&'static self, key: CacheKey) -> pingora_error::Result<bool> {
        let mut cache = HttpCache::new();
        cache.enable(self.storage, Some(self.eviction), None, None, None);
        cache.set_cache_key(key);
        cache.purge().await
    }

    /// Sizes and eviction totals.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            objects: self.eviction.total_items(),
            bytes: self.eviction.total_size(),
            evicted_objects: self.eviction.evicted_items(),
            evicted_bytes: self.eviction.evicted_size(),
        }
    }

    /// Whether the store can take writes. The memory tier always can; the
    /// disk tier will report its directory's state here.
    pub fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}
