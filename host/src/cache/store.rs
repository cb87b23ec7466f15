//! The storage seam: the one place that chooses where cached objects live.
//!
//! Objects live in `edge-cdn-store`'s [`TieredStore`] (a memory tier in front
//! of a disk tier), bounded by the store's own pingora eviction manager,
//! [`ClockEviction`] (a CLOCK kept in the store's index; weight = bytes on
//! disk, limit = `store.disk_bytes`). The proxy only sees [`CacheStore`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use edge_cdn_store::{
    BreakerState, ClockEviction, Described, Health, Listed, NoSharedTier, PrometheusObserver,
    RedisTier, Selector, SharedTier, StoreError, StoreEvent, StoreObserver, TieredStore,
    WriteFailure,
};
use futures_util::StreamExt;
use http::HeaderMap;
use pingora_cache::eviction::EvictionManager;
use pingora_cache::key::CacheHashKey;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::predictor::{CacheablePredictor, Predictor};
use pingora_cache::storage::{
    HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_cache::trace::Span;
use pingora_cache::{CacheEntryKey, CacheKey, CacheMeta, CacheOptionOverrides, HttpCache};
use pingora_http::ResponseHeader;

use crate::config;

use super::freshness::reason;

/// Predictor shards and per-shard capacity for remembering uncacheable keys.
const PREDICTOR_SHARDS: usize = 16;
const PREDICTOR_SHARD_CAPACITY: usize = 4096;
/// Where, inside the store directory, eviction state was saved before the
/// store saved its index itself (pingora's `lru.data.*`, then the CLOCK
/// counters): removed at start, it is never read.
const OLD_EVICTION_STATE: &str = "eviction";
/// Objects expired at once by a soft purge: enough to keep the disk busy,
/// few enough that a purge of thousands leaves blocking threads for the
/// proxy's own I/O. (A hard purge goes in batches: `TieredStore::purge_all`.)
const PURGE_CONCURRENCY: usize = 16;

/// The stored response field that carries the surrogate tags a policy set.
/// It is a tag field of the store and never sent downstream.
pub const POLICY_TAGS: &str = "stavka-tags";

/// The store's events as the host exports them: the store's own
/// `edge_store_*` families, and `stavka_cache_write_failures_total` by
/// reason — objects whose storing failed (a full disk, a deleted
/// directory) while their responses were served whole. Separate from
/// `stavka_cache_stores_abandoned_total`, which counts requests that gave
/// up storing for reasons of their own.
struct Observer {
    store: PrometheusObserver,
    write_failures: [prometheus::IntCounter; WriteFailure::ALL.len()],
}

impl Observer {
    fn new(registry: &prometheus::Registry) -> anyhow::Result<Observer> {
        let family = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "stavka_cache_write_failures_total",
                "Objects not stored because writing them failed, by reason; their responses were served.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(family.clone()))?;
        Ok(Observer {
            store: PrometheusObserver::new(registry)?,
            write_failures: WriteFailure::ALL.map(|r| family.with_label_values(&[r.as_str()])),
        })
    }
}

impl StoreObserver for Observer {
    fn event(&self, event: StoreEvent) {
        if let StoreEvent::WriteFailed(reason) = event {
            if let Some(i) = WriteFailure::ALL.iter().position(|r| *r == reason) {
                self.write_failures[i].inc();
            }
        }
        self.store.event(event);
    }
}

/// The shared tier on the Redis `shared` names. It connects lazily: a
/// Redis that is down now only makes lookups fail open (and opens the
/// breaker) until it is up.
fn open_shared(
    shared: &config::Shared,
    observer: Arc<dyn StoreObserver>,
) -> anyhow::Result<Arc<RedisTier>> {
    let _entered = super::purge_bus::runtime().enter();
    let tier = RedisTier::new(&shared.redis_config(), observer).context("shared")?;
    tracing::info!(servers = %shared.servers_for_log(), "shared tier on Redis");
    Ok(Arc::new(tier))
}

/// What a purge does to each object it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeMode {
    /// Remove it: the next request is a miss.
    Hard,
    /// Mark it stale, keeping it: the next request revalidates, and
    /// stale-if-error can still serve it if the origin fails.
    Soft,
}

/// What a purge selects, in the cache key's terms (so every node applies
/// it the same way, whatever its sites say about a URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeSelector {
    /// A URL's primary key: its Vary variants, and its blocks when sliced.
    Url(Vec<u8>),
    /// Primary keys starting with these bytes.
    Prefix(Vec<u8>),
    /// A surrogate tag.
    Tag(String),
}

impl PurgeSelector {
    /// `url`, `prefix` or `tag`.
    pub fn kind(&self) -> &'static str {
        match self {
            PurgeSelector::Url(_) => "url",
            PurgeSelector::Prefix(_) => "prefix",
            PurgeSelector::Tag(_) => "tag",
        }
    }
}

/// Everything a request needs to use the cache, built once and shared.
pub struct CacheStore {
    storage: &'static TieredStore,
    eviction: &'static ClockEviction,
    lock: &'static CacheKeyLockImpl,
    predictor: &'static (dyn CacheablePredictor + Sync),
    lock_wait_timeout: Duration,
    max_object_size: usize,
    tag_fields: Vec<String>,
    disk_capacity: u64,
    memory_capacity: u64,
    /// The shared tier, when `[shared]` configures one.
    shared: Option<Arc<RedisTier>>,
}

/// Totals for metrics: the eviction manager's view of the disk tier and
/// the memory tier's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Objects currently admitted.
    pub objects: usize,
    /// Bytes currently admitted.
    pub bytes: usize,
    /// Objects evicted since start.
    pub evicted_objects: usize,
    /// Bytes evicted since start.
    pub evicted_bytes: usize,
    /// Objects in the memory tier.
    pub memory_objects: usize,
    /// Bytes in the memory tier.
    pub memory_bytes: usize,
    /// Bytes the disk tier may hold (`store.disk_bytes`).
    pub disk_capacity: u64,
    /// Bytes the memory tier may hold (`store.memory_bytes`).
    pub memory_capacity: u64,
}

impl CacheStore {
    /// Open the store: with the index the last clean stop saved, or empty
    /// while the store walks its files in the background (objects not yet
    /// reached are misses; `/readyz` says how far it is). Either way the
    /// store evicts down to `disk_bytes` if it shrank. Runs once at
    /// start-up, before serving, and blocks.
    pub fn open(
        cache: &config::Cache,
        store: &edge_cdn_store::StoreConfig,
        shared: Option<&config::Shared>,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<&'static CacheStore> {
        let observer: Arc<dyn StoreObserver> =
            Arc::new(Observer::new(registry).context("store metrics")?);
        let mut store = store.clone();
        let tier = match shared {
            Some(shared) => {
                shared.apply_to(&mut store);
                Some(open_shared(shared, observer.clone())?)
            }
            None => None,
        };
        if !store
            .tag_headers
            .iter()
            .any(|f| f.eq_ignore_ascii_case(POLICY_TAGS))
        {
            store.tag_headers.push(POLICY_TAGS.to_owned());
        }
        let store = &store;
        let started = std::time::Instant::now();
        let storage: &'static TieredStore = Box::leak(Box::new(
            TieredStore::open_with_shared(
                store.clone(),
                observer,
                match &tier {
                    Some(tier) => tier.clone() as Arc<dyn SharedTier>,
                    None => Arc::new(NoSharedTier),
                },
            )
            .with_context(|| format!("store.dir: cannot open {}", store.dir.display()))?,
        ));
        let eviction = storage.eviction();
        let _ = std::fs::remove_dir_all(store.dir.join(OLD_EVICTION_STATE));
        tracing::info!(
            dir = %store.dir.display(),
            objects = eviction.total_items(),
            took_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        let predictor = Predictor::<PREDICTOR_SHARDS>::new(
            PREDICTOR_SHARD_CAPACITY,
            // Reasons that belong to one request or one response, not to the
            // URL: remembering them would bypass the cache for everyone.
            Some(|why| why == reason::AUTHORIZATION.as_str() || why == reason::STATUS.as_str()),
        );
        Ok(Box::leak(Box::new(CacheStore {
            storage,
            eviction,
            lock: Box::leak(CacheLock::new_boxed(cache.lock_age_timeout)),
            predictor: Box::leak(Box::new(predictor)),
            lock_wait_timeout: cache.lock_timeout,
            max_object_size: usize::try_from(store.max_object_size.as_u64()).unwrap_or(usize::MAX),
            tag_fields: store.tag_headers.clone(),
            disk_capacity: store.disk_bytes.as_u64(),
            memory_capacity: store.memory_bytes.as_u64(),
            shared: tier,
        })))
    }

    /// The shared tier's circuit breaker, when there is a shared tier.
    pub fn shared_breaker(&self) -> Option<BreakerState> {
        self.shared.as_deref().map(RedisTier::breaker_state)
    }

    /// The stored objects a purge selects; an error when the store's
    /// catalog cannot be read.
    pub async fn select_by(
        &'static self,
        selector: &PurgeSelector,
    ) -> Result<Vec<Listed>, StoreError> {
        match selector {
            PurgeSelector::Url(primary) => self.select_url(primary).await,
            PurgeSelector::Prefix(prefix) => {
                self.storage
                    .select_for_purge(Selector::Prefix(prefix))
                    .await
            }
            PurgeSelector::Tag(tag) => self.storage.select_for_purge(Selector::Tag(tag)).await,
        }
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

    /// Remove everything stored for the URL whose primary key is
    /// `primary`: all its Vary variants, or its blocks (RFC 9111 §4.4
    /// invalidation). Returns how many were removed.
    pub async fn invalidate(&'static self, primary: &[u8]) -> usize {
        match self.select_url(primary).await {
            Ok(objects) => self.purge(objects, PurgeMode::Hard).await,
            Err(error) => {
                tracing::warn!(%error, "invalidation not applied: the store's catalog did not read");
                0
            }
        }
    }

    /// Every object stored for the URL whose primary key is `primary`,
    /// to purge: its Vary variants and, when it is sliced, its blocks and
    /// their record (see [`super::key::slice_prefix`]).
    async fn select_url(&'static self, primary: &[u8]) -> Result<Vec<Listed>, StoreError> {
        let hash = CacheKey::new(primary.to_vec(), "").primary_bin();
        let mut objects = self
            .storage
            .select_for_purge(Selector::Primary(&hash))
            .await?;
        let blocks = super::key::slice_prefix(primary);
        objects.extend(
            self.storage
                .select_for_purge(Selector::Prefix(&blocks))
                .await?,
        );
        Ok(objects)
    }

    /// The entry stored under `key`, for code that uses the store directly
    /// (the slice engine) rather than through pingora's `HttpCache`. A
    /// store that fails to read is a miss.
    pub async fn lookup(&'static self, key: &CacheKey) -> Option<(CacheMeta, HitHandler)> {
        let span = Span::inactive().handle();
        match self.storage.lookup(key, &span).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e, "store lookup failed: a miss");
                None
            }
        }
    }

    /// Begin writing `key`'s entry, described by `meta`; `None` when the
    /// store refuses (saturated, full): the caller serves without storing.
    /// Readers that look `key` up meanwhile follow the write.
    pub async fn begin_write(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
    ) -> Option<MissHandler> {
        let span = Span::inactive().handle();
        self.storage.get_miss_handler(key, meta, &span).await.ok()
    }

    /// Finish a write begun by [`CacheStore::begin_write`] and count the
    /// entry in the eviction manager, evicting others if it needs the
    /// room. Returns whether the entry was stored.
    pub async fn commit(
        &'static self,
        key: &CacheKey,
        write: MissHandler,
        fresh_until: SystemTime,
    ) -> bool {
        let size = match write.finish().await {
            Ok(MissFinishType::Created(size)) if size > 0 => size,
            _ => return false,
        };
        let victims =
            self.eviction
                .admit(CacheEntryKey::key_only(key.to_compact()), size, fresh_until);
        if !victims.is_empty() {
            let storage = self.storage;
            tokio::spawn(async move {
                let span = Span::inactive().handle();
                for victim in &victims {
                    let _ = storage
                        .purge(PurgeTarget::Exact(victim), PurgeType::Eviction, &span)
                        .await;
                }
            });
        }
        true
    }

    /// Tell the eviction manager `key`'s entry (of about `size` bytes) was
    /// used, as pingora does for its own hits.
    pub fn touch(&self, key: &CacheKey, size: usize, fresh_until: SystemTime) {
        let entry = CacheEntryKey::key_only(key.to_compact());
        self.eviction.access(&entry, size, fresh_until);
    }

    /// The stored objects `selector` picks (see [`TieredStore::select`]),
    /// read on the blocking pool.
    pub async fn select(&'static self, selector: Selector<'_>) -> Result<Vec<Listed>, StoreError> {
        self.storage.select(selector).await
    }

    /// Purge `objects`; returns how many were still there to purge. A
    /// hard purge removes them in batches (see
    /// [`TieredStore::purge_all`]: the store's index is the eviction
    /// manager's table, so they leave it too); a soft one expires them a
    /// few at a time. Runs on the caller's runtime and the blocking pool,
    /// so a purge of thousands does not hold up the proxy's workers.
    pub async fn purge(&'static self, objects: Vec<Listed>, mode: PurgeMode) -> usize {
        match mode {
            PurgeMode::Hard => self.storage.purge_all(&objects).await,
            PurgeMode::Soft => {
                futures_util::stream::iter(objects)
                    .map(|object| self.expire_one(object))
                    .buffer_unordered(PURGE_CONCURRENCY)
                    .filter(|done| std::future::ready(*done))
                    .count()
                    .await
            }
        }
    }

    async fn expire_one(&'static self, object: Listed) -> bool {
        let span = Span::inactive().handle();
        let target = PurgeTarget::Active(&object.key);
        match self.storage.expire(target, &span).await {
            Ok(PurgeOutcome::Expired) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "purge failed");
                false
            }
        }
    }

    /// Remove the tag fields from a response going downstream.
    pub fn strip_tags(&self, resp: &mut ResponseHeader) {
        for field in &self.tag_fields {
            resp.remove_header(field.as_str());
        }
    }

    /// A stored object as the inspector shows it, if it is still there.
    pub async fn describe(&'static self, object: &Listed) -> Option<Described> {
        self.storage.describe(object).await
    }

    /// Whether a committed object is stored for `key`; see
    /// [`TieredStore::holds`](edge_cdn_store::TieredStore::holds).
    pub fn holds(&self, key: &CacheKey) -> bool {
        self.storage.holds(key)
    }

    /// Whether an entry for `key` is being written now; see
    /// [`TieredStore::writing`](edge_cdn_store::TieredStore::writing).
    pub fn writing(&self, key: &CacheKey) -> bool {
        self.storage.writing(key)
    }

    /// How disk hits read ring entries and body blocks.
    pub fn io_engine(&self) -> edge_cdn_store::IoEngine {
        self.storage.io_engine()
    }

    /// Objects in the catalog, and distinct surrogate tags.
    pub fn catalog_totals(&self) -> (usize, usize) {
        self.storage.catalog_totals()
    }

    /// The surrogate tags of a stored response, from every tag field.
    pub fn tags(&self, headers: &HeaderMap) -> Vec<String> {
        edge_cdn_store::tags_in(headers, &self.tag_fields)
            .into_iter()
            .map(String::from)
            .collect()
    }

    /// Sizes and eviction totals. Cheap: no filesystem access.
    pub fn stats(&self) -> StoreStats {
        let (memory_objects, memory_bytes) = self.storage.memory_totals();
        StoreStats {
            objects: self.eviction.total_items(),
            bytes: self.eviction.total_size(),
            evicted_objects: self.eviction.evicted_items(),
            evicted_bytes: self.eviction.evicted_size(),
            memory_objects,
            memory_bytes,
            disk_capacity: self.disk_capacity,
            memory_capacity: self.memory_capacity,
        }
    }

    /// Whether the disk tier can take writes (a deleted directory is
    /// recreated first), the room on its filesystem, and whether that is
    /// under `store.min_free_percent`. Touches the filesystem: call it from
    /// a blocking context.
    pub fn health(&self) -> Health {
        self.storage.health()
    }

    /// Save the store's index, so the next start serves every object at
    /// once instead of walking the files. Called on shutdown, once nothing
    /// is served any more. Blocking.
    pub fn save_index(&self) {
        let started = std::time::Instant::now();
        match self.storage.save_index() {
            Ok(()) => tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "store index saved"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "store index not saved: the next start walks the files")
            }
        }
    }
}
