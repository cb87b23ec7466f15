//! [`TieredStore`]: the `pingora_cache::Storage` implementation.
//!
//! A lookup tries, in order: a write in progress for the key (so requests
//! collapsed behind a miss stream its body as it arrives), the memory tier,
//! then the disk index. Disk objects small enough are read whole, checked,
//! and promoted to memory; larger ones are streamed and checked block by
//! block. A file that fails a check is removed and the lookup is a miss.

use std::any::Any;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::key::{CacheHashKey, CacheKey};
use pingora_cache::storage::{
    HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::CacheMeta;
use pingora_error::{Error, ErrorType, Result};
use tokio::sync::Semaphore;

use crate::catalog::{tags_in, Catalog, Listed, Record, Selector};
use crate::config::StoreConfig;
use crate::disk::format::MetaHeader;
use crate::disk::{encode_key, DiskTier, Recovered};
use crate::error::StoreError;
use crate::hit::{DiskHit, MemoryHit, PartialHit};
use crate::index::Index;
use crate::io;
use crate::memory::{MemObject, MemoryTier};
use crate::miss::Miss;
use crate::observer::{StoreEvent, StoreObserver, Tier};
use crate::partial::{Partial, Partials};
use crate::shared::{NoSharedTier, SharedObject, SharedTier, SharedWrites};

/// A memory + disk storage backend for pingora-cache.
pub struct TieredStore {
    config: StoreConfig,
    disk: DiskTier,
    index: Index,
    catalog: Catalog,
    memory: MemoryTier,
    partials: Partials,
    writes: Arc<Semaphore>,
    next_write: AtomicU64,
    observer: Arc<dyn StoreObserver>,
    shared: Arc<dyn SharedTier>,
    recovered: Mutex<Vec<Recovered>>,
}

/// A stored object, as [`TieredStore::describe`] finds it.
#[derive(Debug)]
pub struct Described {
    /// Its meta: response header and freshness.
    pub meta: CacheMeta,
    /// The fastest tier holding it (memory objects are on disk too).
    pub tier: Tier,
    /// Bytes on disk, body and meta.
    pub size: u64,
}

/// Whether the store can take writes, and how full it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// A file could be created and removed in the store directory.
    pub writable: Result<(), String>,
    /// Bytes free on the store's filesystem.
    pub free_bytes: u64,
    /// Objects on disk.
    pub disk_objects: usize,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Objects in memory.
    pub memory_objects: usize,
    /// Bytes in memory.
    pub memory_bytes: usize,
}

fn hash_of(key: &impl CacheHashKey) -> u128 {
    u128::from_be_bytes(key.combined_bin())
}

impl TieredStore {
    /// Open the store in `config.dir`: rebuild the index from the files
    /// there, removing anything incomplete or corrupt. Blocking; run it at
    /// start-up, before serving. The recovered objects wait in
    /// [`TieredStore::take_recovered`] for the eviction manager.
    pub fn open(
        config: StoreConfig,
        observer: Arc<dyn StoreObserver>,
    ) -> Result<TieredStore, StoreError> {
        TieredStore::open_with_shared(config, observer, Arc::new(NoSharedTier))
    }

    /// [`TieredStore::open`], with a shared tier behind the local one.
    pub fn open_with_shared(
        config: StoreConfig,
        observer: Arc<dyn StoreObserver>,
        shared: Arc<dyn SharedTier>,
    ) -> Result<TieredStore, StoreError> {
        let disk = DiskTier::open(&config.dir, config.fsync)?;
        let found = disk.recover(&config.tag_headers);
        let index = Index::default();
        index.reserve(found.len());
        let catalog = Catalog::default();
        let mut recovered = Vec::with_capacity(found.len());
        for (object, record) in found {
            index.insert(object.hash, object.size);
            catalog.insert(record);
            recovered.push(object);
        }
        let memory_limit = usize::try_from(config.memory_bytes.as_u64()).unwrap_or(usize::MAX);
        Ok(TieredStore {
            memory: MemoryTier::new(memory_limit),
            writes: Arc::new(Semaphore::new(config.write_concurrency)),
            config,
            disk,
            index,
            catalog,
            partials: Partials::default(),
            next_write: AtomicU64::new(1),
            observer,
            shared,
            recovered: Mutex::new(recovered),
        })
    }

    /// The objects found at start, once: the caller admits them to its
    /// eviction manager so they are tracked (and evictable) before they are
    /// next read.
    pub fn take_recovered(&self) -> Vec<Recovered> {
        std::mem::take(&mut *self.recovered.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the disk tier is writable and how much room is left.
    /// Blocking (it touches the filesystem).
    pub fn health(&self) -> Health {
        let probe = self.disk.dir().join("tmp").join(".health");
        let writable = File::create(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| format!("{}: {e}", self.disk.dir().display()));
        let (disk_objects, disk_bytes) = self.index.totals();
        let (memory_objects, memory_bytes) = self.memory.totals();
        Health {
            writable,
            free_bytes: free_bytes(self.disk.dir()),
            disk_objects,
            disk_bytes,
            memory_objects,
            memory_bytes,
        }
    }

    /// Objects and bytes in the memory tier. Cheap: no filesystem access.
    pub fn memory_totals(&self) -> (usize, usize) {
        self.memory.totals()
    }

    pub(crate) fn observe(&self, event: StoreEvent) {
        self.observer.event(event);
    }

    pub(crate) fn disk(&self) -> &DiskTier {
        &self.disk
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// What the catalog records for `response`'s object under `key`.
    fn record(&self, key: &CacheKey, meta: &CacheMeta) -> Record {
        Record {
            key: key.to_compact(),
            primary_key: key.primary_key().into(),
            tags: tags_in(meta.headers(), &self.config.tag_headers),
        }
    }

    /// The stored objects `selector` picks: every Vary variant of a primary
    /// key, every primary key under a prefix, or every object with a tag.
    /// Cheap for a key or a tag; a prefix walks the catalog one shard at a
    /// time, never holding a lock the request path waits on for long.
    pub fn select(&self, selector: Selector<'_>) -> Vec<Listed> {
        self.catalog.select(selector)
    }

    /// Objects in the catalog, and distinct surrogate tags.
    pub fn catalog_totals(&self) -> (usize, usize) {
        self.catalog.totals()
    }

    /// One stored object as an operator inspects it: its meta (status,
    /// headers, freshness), where it is held, its size and tags. `None` if
    /// it is gone.
    pub async fn describe(&'static self, listed: &Listed) -> Option<Described> {
        let hash = hash_of(&listed.key);
        let tier = if self.memory.get(hash).is_some() {
            Tier::Memory
        } else {
            Tier::Disk
        };
        let size = self.index.get(hash)?;
        let meta = self.stored_meta(hash).await?;
        Some(Described { meta, tier, size })
    }

    pub(crate) fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    pub(crate) fn partials(&self) -> &Partials {
        &self.partials
    }

    pub(crate) fn shared_writes(&self) -> SharedWrites {
        self.config.shared_writes
    }

    /// Copy `object` to the shared tier in the background; a failure is
    /// only counted.
    pub(crate) fn share(&'static self, hash: u128, object: &MemObject) {
        if !self.shared.enabled() {
            return;
        }
        let object = SharedObject {
            internal: object.internal.clone(),
            header: object.header.clone(),
            body: object.body.clone(),
        };
        tokio::spawn(async move {
            if self.shared.put(hash, object).await.is_err() {
                self.observe(StoreEvent::SharedUnavailable);
            }
        });
    }

    /// After a local miss: the shared tier's copy, stored locally and
    /// served. A slow or failing shared tier is a miss (fail open).
    async fn shared_lookup(
        &'static self,
        key: &CacheKey,
        hash: u128,
    ) -> Option<(CacheMeta, HitHandler)> {
        if !self.shared.enabled() {
            return None;
        }
        let object =
            match tokio::time::timeout(self.config.shared_timeout, self.shared.get(hash)).await {
                Ok(Ok(Some(object))) => object,
                Ok(Ok(None)) => return None,
                Ok(Err(_)) | Err(_) => {
                    self.observe(StoreEvent::SharedUnavailable);
                    return None;
                }
            };
        let meta = CacheMeta::deserialize(&object.internal, &object.header).ok()?;
        // Keep it locally too, as if this server had fetched it.
        let local = object.clone();
        let key_blob = encode_key(key);
        let record = self.record(key, &meta);
        let stored = io::blocking(move || {
            let mut writer = self.disk.begin(hash)?;
            writer.write(&local.body)?;
            writer.commit(&self.disk, &local.internal, &local.header, &key_blob)
        })
        .await;
        if let Ok((body_len, meta_len)) = stored {
            self.index.insert(hash, body_len + meta_len);
            self.catalog.insert(record);
            if body_len <= self.memory_max_object() {
                let held = MemObject::decoded(
                    object.internal.clone(),
                    object.header.clone(),
                    object.body.clone(),
                    &meta,
                );
                self.memory.insert(hash, Arc::new(held));
            }
        }
        self.observe(StoreEvent::Hit(Tier::Shared));
        Some((meta, Box::new(MemoryHit::new(object.body))))
    }

    pub(crate) fn max_object_size(&self) -> u64 {
        self.config.max_object_size.as_u64()
    }

    pub(crate) fn memory_max_object(&self) -> u64 {
        self.config.memory_max_object.as_u64()
    }

    /// A file failed its checks: remove the object so the next lookup is a
    /// clean miss.
    pub(crate) async fn discard_corrupt(&'static self, hash: u128, error: &StoreError) {
        tracing::warn!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), %error, "corrupt cache object removed");
        self.observe(StoreEvent::Corrupt);
        self.forget(hash).await;
    }

    /// Remove `hash` from every tier; returns whether it was stored.
    async fn forget(&'static self, hash: u128) -> bool {
        self.catalog.remove(&hash.to_be_bytes());
        let in_memory = self.memory.remove(hash);
        let in_index = self.index.remove(hash).is_some();
        let on_disk = io::blocking(move || Ok(self.disk.remove(hash)))
            .await
            .unwrap_or(false);
        in_memory || in_index || on_disk
    }

    /// Follow a write in progress. Opening its temporary file is file I/O,
    /// so it runs on the blocking pool like every other.
    async fn partial_hit(&'static self, partial: Arc<Partial>) -> Option<(CacheMeta, HitHandler)> {
        let meta = CacheMeta::deserialize(&partial.internal, &partial.header).ok()?;
        let temp = partial.temp.clone();
        let file = io::blocking(move || {
            File::open(temp).map_err(|e| StoreError::Io("open partial body", e))
        })
        .await
        .ok()?;
        self.observe(StoreEvent::Hit(Tier::Partial));
        Some((meta, Box::new(PartialHit::new(partial, file))))
    }

    /// Read `hash`'s object from disk. Small bodies are read whole and
    /// checked here; large ones are checked as they stream.
    async fn disk_lookup(&'static self, hash: u128) -> Result<Option<(CacheMeta, HitHandler)>> {
        let verify_whole = self.config.verify_whole_below.as_u64();
        let started = Instant::now();
        let opened = io::blocking(move || {
            let Some(bytes) = self.disk.read_meta(hash)? else {
                return Ok(None);
            };
            let (meta, blobs) = MetaHeader::decode(&bytes)?;
            let body = self.disk.open_body(hash, &meta)?;
            let whole = if body.len <= verify_whole {
                Some(body.read_all()?)
            } else {
                None
            };
            Ok(Some((
                Bytes::copy_from_slice(blobs.internal),
                Bytes::copy_from_slice(blobs.header),
                body,
                whole,
            )))
        })
        .await;
        self.observe(StoreEvent::DiskLatency("open", started.elapsed()));
        let (internal, header, body, whole) = match opened {
            Ok(Some(found)) => found,
            Ok(None) => {
                // Indexed but gone (removed behind our back): forget it.
                self.index.remove(hash);
                return Ok(None);
            }
            Err(e @ StoreError::Corrupt(_)) => {
                self.discard_corrupt(hash, &e).await;
                return Ok(None);
            }
            Err(e) => return Err(e.into_pingora()),
        };
        let meta = match CacheMeta::deserialize(&internal, &header) {
            Ok(meta) => meta,
            Err(_) => {
                self.discard_corrupt(hash, &StoreError::Corrupt("undecodable cache meta"))
                    .await;
                return Ok(None);
            }
        };
        self.observe(StoreEvent::Hit(Tier::Disk));
        let handler: HitHandler = match whole {
            Some(body) => {
                self.observe(StoreEvent::BytesRead(body.len() as u64));
                if body.len() as u64 <= self.memory_max_object() {
                    let object =
                        Arc::new(MemObject::decoded(internal, header, body.clone(), &meta));
                    self.memory.insert(hash, object.clone());
                    self.observe(StoreEvent::Promotion);
                    if self.shared_writes() == SharedWrites::OnPromotion {
                        self.share(hash, &object);
                    }
                }
                Box::new(MemoryHit::new(body))
            }
            None => Box::new(DiskHit::new(self, hash, body)),
        };
        Ok(Some((meta, handler)))
    }

    /// Rewrite `hash`'s meta file, keeping its body: a 304 refresh or an expiry.
    async fn rewrite_meta(&'static self, hash: u128, meta: &CacheMeta) -> Result<bool> {
        let (internal, header) = meta.serialize()?;
        let (internal, header) = (Bytes::from(internal), Bytes::from(header));
        let (i, h) = (internal.clone(), header.clone());
        let written = io::blocking(move || {
            let Some(bytes) = self.disk.read_meta(hash)? else {
                return Ok(false);
            };
            let (old, blobs) = MetaHeader::decode(&bytes)?;
            let new = MetaHeader {
                internal_len: i.len() as u32,
                header_len: h.len() as u32,
                ..old
            };
            self.disk.commit_meta(hash, &new, &i, &h, blobs.key)?;
            Ok(true)
        })
        .await;
        match written {
            Ok(true) => {
                self.memory.update_meta(hash, internal, header);
                self.catalog.retag(
                    &hash.to_be_bytes(),
                    tags_in(meta.headers(), &self.config.tag_headers),
                );
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e @ StoreError::Corrupt(_)) => {
                self.discard_corrupt(hash, &e).await;
                Ok(false)
            }
            Err(e) => Err(e.into_pingora()),
        }
    }

    /// The stored meta of `hash`, from memory or disk.
    async fn stored_meta(&'static self, hash: u128) -> Option<CacheMeta> {
        if let Some(object) = self.memory.get(hash) {
            return object.meta().ok();
        }
        let bytes = io::blocking(move || self.disk.read_meta(hash))
            .await
            .ok()??;
        let (_, blobs) = MetaHeader::decode(&bytes).ok()?;
        CacheMeta::deserialize(blobs.internal, blobs.header).ok()
    }
}

/// Free bytes on the filesystem holding `dir` (0 if unknown).
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid NUL-terminated string and `stat` points to
    // writable memory of the right type; statvfs writes only into it.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    stat.f_bavail.saturating_mul(stat.f_frsize)
}

#[async_trait]
impl Storage for TieredStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = hash_of(key);
        if let Some(partial) = self.partials.get(hash, None) {
            if let Some(hit) = self.partial_hit(partial).await {
                return Ok(Some(hit));
            }
        }
        if let Some(object) = self.memory.get(hash) {
            if let Ok(meta) = object.meta() {
                self.observe(StoreEvent::Hit(Tier::Memory));
                return Ok(Some((meta, Box::new(MemoryHit::new(object.body.clone())))));
            }
        }
        if self.index.get(hash).is_some() {
            if let Some(hit) = self.disk_lookup(hash).await? {
                return Ok(Some(hit));
            }
        }
        if let Some(hit) = self.shared_lookup(key, hash).await {
            return Ok(Some(hit));
        }
        self.observe(StoreEvent::Miss);
        Ok(None)
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(tag) = streaming_write_tag else {
            return self.lookup(key, trace).await;
        };
        let write_id = <[u8; 8]>::try_from(tag).map(u64::from_be_bytes).ok();
        // pingora panics on `None` here: the writer just created this write,
        // so its absence is an error, not a miss.
        let hit = match self.partials.get(hash_of(key), write_id) {
            Some(partial) => self.partial_hit(partial).await,
            None => None,
        };
        hit.map(Some)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "streaming write not found"))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            self.observe(StoreEvent::Skipped);
            return Err(StoreError::Saturated.into_pingora());
        };
        let hash = hash_of(key);
        let (internal, header) = meta.serialize()?;
        let writer = io::blocking(move || self.disk.begin(hash))
            .await
            .map_err(|e| {
                self.observe(StoreEvent::Error("begin"));
                e.into_pingora()
            })?;
        let write_id = self.next_write.fetch_add(1, Ordering::Relaxed);
        let partial = Arc::new(Partial::new(
            write_id,
            Bytes::from(internal),
            Bytes::from(header),
            writer.temp_path().to_path_buf(),
        ));
        self.partials.insert(hash, partial.clone());
        Ok(Box::new(Miss {
            store: self,
            hash,
            partial,
            writer: Some(writer),
            key: encode_key(key),
            record: Some(self.record(key, meta)),
            small: Some(BytesMut::new()),
            last: None,
            write_tag: write_id.to_be_bytes(),
            _permit: permit,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = hash_of(target.key());
        if matches!(purge_type, PurgeType::Invalidation) && self.shared.enabled() {
            // An invalidation is for every server; an eviction is only ours.
            if self.shared.delete(hash).await.is_err() {
                self.observe(StoreEvent::SharedUnavailable);
            }
        }
        if !self.forget(hash).await {
            return Ok(PurgeOutcome::NotFound);
        }
        self.observe(match purge_type {
            PurgeType::Eviction => StoreEvent::Eviction,
            PurgeType::Invalidation => StoreEvent::Purge,
        });
        Ok(PurgeOutcome::Purged(None))
    }

    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = hash_of(target.key());
        let Some(mut meta) = self.stored_meta(hash).await else {
            return Ok(PurgeOutcome::NotFound);
        };
        meta.expire_at(SystemTime::now());
        if !self.rewrite_meta(hash, &meta).await? {
            return Ok(PurgeOutcome::NotFound);
        }
        self.observe(StoreEvent::Purge);
        Ok(PurgeOutcome::Expired)
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        self.rewrite_meta(hash_of(key), meta).await
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}
