//! [`TieredStore`]: the `pingora_cache::Storage` implementation.
//!
//! A lookup tries, in order: a write in progress for the key (so requests
//! collapsed behind a miss stream its body as it arrives), the memory tier,
//! then the disk index. Disk objects small enough are read whole, checked,
//! and promoted to memory; larger ones are streamed and checked block by
//! block. A file that fails a check is removed and the lookup is a miss.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::CacheKey;
use pingora_cache::storage::{
    HandleMiss, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::CacheMeta;
use pingora_error::{Error, ErrorType, Result};

use crate::catalog::{self, tags_in, Listed, OwnedSelector, Selector};
use crate::commit::Committer;
use crate::config::StoreConfig;
use crate::disk::format::MetaHeader;
use crate::disk::{BodyReader, DiskTier};
use crate::error::StoreError;
use crate::eviction::ClockEviction;
use crate::head;
use crate::hit::{DiskHit, Hit, MemoryHit, PartialHit, SharedStream};
use crate::index::{Index, Placed};
use crate::io::{self, Engine, IoEngine};
use crate::memory::{MemObject, MemoryTier};
use crate::miss::Miss;
use crate::observer::{StoreEvent, StoreObserver, Tier};
use crate::partial::{Partial, Partials};
use crate::purging::Purging;
use crate::reclaim;
use crate::recovery::{self, Recovering, Recovery};
use crate::segments::entry::Parts;
use crate::segments::{Loc, Segments};
use crate::sharded::Sharded;
use crate::shared::{NoSharedTier, SharedBody, SharedHit, SharedMeta, SharedTier};
use crate::snapshot;
use crate::space::Space;
use crate::tiers::{hash_of, Sharing, Tiers};
use crate::write::{Admitted, Writers};

/// Object locks, striped by hash (see `Tiers::hold`).
const OBJECT_LOCKS: usize = 256;

/// What reading an object from its files found.
enum Found {
    /// The body, read whole and checked, with its copy for memory or the
    /// shared tier if it has one.
    Whole(Bytes, Option<Arc<MemObject>>),
    /// A body to check block by block as it streams.
    Streamed(BodyReader),
}

/// pingora's meta from its internal blob and a header in either stored
/// form (`crate::head`); undecodable blobs are corruption.
fn decode_meta(internal: &[u8], header: &[u8]) -> Result<CacheMeta, StoreError> {
    head::decode(internal, header).map_err(|_| StoreError::Corrupt("undecodable cache meta"))
}

/// Deletes from the shared tier in flight during [`TieredStore::purge_all`].
const SHARED_DELETES: usize = 16;

/// How long saving the index waits for the writes in flight.
const SAVE_WAIT: Duration = Duration::from_secs(5);

/// A memory + disk storage backend for pingora-cache.
pub struct TieredStore {
    tiers: Arc<Tiers>,
    eviction: Arc<ClockEviction>,
    /// This store's claim on its directory, which its saved index carries.
    owner: u64,
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
    /// A file could be created and removed in the store directory
    /// (recreating the directory if it had been deleted).
    pub writable: Result<(), String>,
    /// Room on the store's filesystem; `None` if it cannot be read.
    pub space: Option<Space>,
    /// Why new objects are not being stored although the directory is
    /// writable: less than `min_free_percent` of the filesystem is free.
    pub low_space: Option<String>,
    /// Objects on disk.
    pub disk_objects: usize,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Objects in memory.
    pub memory_objects: usize,
    /// Bytes in memory.
    pub memory_bytes: usize,
    /// While the store is still walking its files after an unclean stop
    /// (objects not yet reached are misses), how far it has come.
    pub recovering: Option<Recovering>,
    /// Purges answered whose objects are still being removed from disk
    /// (lookups miss them already; the catalog's totals still count them).
    pub purging: usize,
    /// Why the shared tier is not being asked right now (its circuit
    /// breaker is open); `None` when it is in use or there is none. The
    /// store serves every response without it.
    pub shared_degraded: Option<String>,
}

impl TieredStore {
    /// Open the store in `config.dir`, ready to serve at once. After a
    /// clean stop ([`TieredStore::save_index`]) every object is indexed
    /// from the saved index; otherwise the files are walked in the
    /// background (see [`TieredStore::recovered`]) and objects come back
    /// as the walk reaches them, anything incomplete or corrupt removed.
    /// Blocking (it reads the saved index); run it at start-up. Every
    /// object is tracked by [`TieredStore::eviction`] once indexed.
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
        let disk = DiskTier::open(&config.dir, config.fsync, config.min_free_percent)?;
        let index = Arc::new(Index::default());
        let (catalog, fresh) = catalog::open(&config.dir.join("catalog"))?;
        let catalog = Arc::new(catalog);
        let (segments, ring_wiped) = match config.segment_regions() {
            0 => (None, false),
            regions => {
                let (ring, wiped) = Segments::open(
                    &config.dir,
                    regions,
                    config.segment_max_object.as_u64(),
                    config.fsync,
                )?;
                (Some(Arc::new(ring)), wiped)
            }
        };
        // A fresh catalog lists nothing, so no purge could find what a
        // saved index would serve: the walk brings each object back with
        // its entry, and the saved index is dropped unread. A ring laid
        // out anew holds nothing a saved index may point into.
        // A purge the last run did not carry out to its end: its objects
        // may still be on disk, and only the walk finds them.
        let unfinished = catalog.pending_purges()?;
        // A ring laid out anew numbers its entries from the start again.
        let ring_mark = if ring_wiped {
            catalog.set_ring_mark(0)?;
            0
        } else {
            catalog.ring_mark()?
        };
        let restored = if fresh || ring_wiped || !unfinished.is_empty() {
            snapshot::discard(&config.dir);
            false
        } else {
            snapshot::take(&config.dir, &index)
        };
        let owner = snapshot::claim(&config.dir)?;
        let walk = !restored;
        let eviction = Arc::new(ClockEviction::new(
            index.clone(),
            config
                .disk_bytes
                .as_u64()
                .saturating_sub(config.ring_bytes()),
        ));
        let memory_limit = usize::try_from(config.memory_bytes.as_u64()).unwrap_or(usize::MAX);
        let shared_write_concurrency = config.shared_write_concurrency;
        let tiers = Arc::new(Tiers {
            memory: MemoryTier::new(memory_limit),
            writers: Writers::new(config.write_concurrency),
            commits: {
                // A round's objects were cataloged with `Journal::Later`,
                // and its appends checked the ring file once.
                let (catalog, ring) = (catalog.clone(), segments.clone());
                Committer::start("store-commit", move || {
                    catalog.flush();
                    if let Some(ring) = &ring {
                        ring.recheck();
                    }
                })?
            },
            purging: Purging::start()?,
            engine: Engine::open(config.io_engine)?,
            config,
            disk,
            segments,
            index,
            catalog,
            partials: Partials::default(),
            observer,
            shared,
            sharing: Sharing::new(shared_write_concurrency),
            recovery: Recovery::new(walk, &unfinished),
            holds: Sharded::new(OBJECT_LOCKS),
        });
        let (for_thread, evicting) = (tiers.clone(), eviction.clone());
        std::thread::Builder::new()
            .name("store-recovery".into())
            .spawn(move || recovery::run(for_thread, evicting, walk, unfinished, ring_mark))
            .map_err(|e| StoreError::Io("start the recovery thread", e))?;
        if let Some(ring) = &tiers.segments {
            // A ring with entries to recover is started by the walk, once
            // it has scanned them.
            if !walk || ring.was_empty() {
                ring.start();
            }
            let for_thread = tiers.clone();
            std::thread::Builder::new()
                .name("store-reclaim".into())
                .spawn(move || reclaim::run(&for_thread))
                .map_err(|e| StoreError::Io("start the reclaim thread", e))?;
        }
        Ok(TieredStore {
            tiers,
            eviction,
            owner,
        })
    }

    /// Wait until the store's recovery thread is done: its files walked
    /// (if it opened without a saved index) and its catalog tidied and
    /// counted. From then on every object on disk is indexed and
    /// cataloged, and [`TieredStore::catalog_totals`] counts them. A store
    /// that opened from a saved index serves at once, without waiting for
    /// this.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn recovered(&self) {
        self.tiers.recovery.finished().await;
    }

    /// Save the index, counters included, for the next start to take back
    /// instead of walking the files: call it at a clean stop. It closes
    /// the store to writes first (every later miss is served, not stored),
    /// waits up to five seconds for the writes in flight, stops the segment
    /// ring's reclaimer, and makes the catalog durable. Blocking. Nothing is saved while the store is
    /// still recovering (its index is incomplete) or if writes did not
    /// finish: the next start then walks the files.
    pub fn save_index(&self) -> Result<(), StoreError> {
        let tiers = &self.tiers;
        if tiers.recovery.progress().is_some() {
            return Ok(());
        }
        // A 304's rewrite appends too, outside the write permits.
        if let Some(ring) = &tiers.segments {
            ring.stop_appends();
        }
        if !tiers.writers.close(SAVE_WAIT) {
            tracing::warn!(target: "edge_cdn_store", "writes still in flight; index not saved, the next start walks the files");
            return Ok(());
        }
        // A purge still recorded makes the next start walk the files.
        if !tiers.purging.wait_idle(Some(SAVE_WAIT)) {
            tracing::warn!(target: "edge_cdn_store", "purges still being carried out; the next start finishes them by walking the files");
        }
        // No region is freed from here on: the index stays as saved.
        let _reclaim_stopped = tiers.segments.as_ref().map(|ring| {
            ring.stop();
            ring.freeing()
        });
        tiers.catalog.persist()?;
        snapshot::save(&tiers.config.dir, &tiers.index, self.owner)
    }

    /// The store's eviction manager, to pass to `HttpCache::enable` with
    /// the store: it tracks every object on disk (those recovered at
    /// start included) in the store's own index, and keeps them within
    /// `disk_bytes`. Its victims are purged through
    /// [`Storage::purge`] with `PurgeType::Eviction`, as pingora does.
    pub fn eviction(&self) -> &ClockEviction {
        &self.eviction
    }

    /// Whether the disk tier is writable and how much room is left.
    /// Blocking (it touches the filesystem), and heals: a deleted store
    /// directory is recreated by the probe, and a deleted segment ring
    /// made anew.
    pub fn health(&self) -> Health {
        let disk = &self.tiers.disk;
        let writable = disk
            .probe()
            .and_then(|()| {
                self.tiers
                    .segments
                    .as_ref()
                    .map_or(Ok(()), |ring| ring.heal())
            })
            .map_err(|e| format!("{}: {e}", disk.dir().display()));
        let space = disk.space();
        let low_space = space.filter(|(_, low)| *low).map(|(space, _)| {
            format!(
                "{} of {} bytes free, under min_free_percent ({}%): new objects are served but not stored",
                space.free, space.total, self.tiers.config.min_free_percent
            )
        });
        let (disk_objects, disk_bytes) = self.tiers.index.totals();
        let (memory_objects, memory_bytes) = self.tiers.memory.totals();
        Health {
            recovering: self.tiers.recovery.progress(),
            purging: self.tiers.purging.running(),
            writable,
            space: space.map(|(space, _)| space),
            low_space,
            disk_objects,
            disk_bytes,
            memory_objects,
            memory_bytes,
            shared_degraded: self.tiers.shared.degraded(),
        }
    }

    /// Whether a committed object is stored for `key` (its Vary variant
    /// included): one index probe, no I/O, no change to recency. A write
    /// given up mid-body reports success to pingora (its readers still get
    /// every byte), so this is how a caller learns it was not stored.
    pub fn holds(&self, key: &CacheKey) -> bool {
        self.tiers.index.get(hash_of(key)).is_some()
    }

    /// Whether an object for `key` is being written now, so a lookup would
    /// follow the write: one map probe, no I/O.
    pub fn writing(&self, key: &CacheKey) -> bool {
        self.tiers.partials.get(hash_of(key), None).is_some()
    }

    /// Objects and bytes in the memory tier. Cheap: no filesystem access.
    pub fn memory_totals(&self) -> (usize, usize) {
        self.tiers.memory.totals()
    }

    /// The stored objects `selector` picks: every Vary variant of a primary
    /// key, every primary key under a prefix, or every object with a tag.
    /// Read from the catalog's database on the blocking pool: a scan of
    /// the matching index entries and one read per object. An error is
    /// the database failing to read; nothing is purged on a partial answer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn select(&'static self, selector: Selector<'_>) -> Result<Vec<Listed>, StoreError> {
        let selector = OwnedSelector::from(selector);
        let tiers = &self.tiers;
        io::blocking(move || {
            let before = tiers.purging.carried_out();
            let listed = tiers.catalog.select(&selector)?;
            tiers.unpurged(listed, before)
        })
        .await
    }

    /// [`TieredStore::select`], for a purge of what it returns: while the
    /// store is still walking its files, the selector is remembered first,
    /// and any object the walk recovers later that it picks is removed,
    /// so a purge misses nothing the catalog did not list yet.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: once called, the selector is remembered whether or not
    /// the selection is awaited, which only removes more.
    pub async fn select_for_purge(
        &'static self,
        selector: Selector<'_>,
    ) -> Result<Vec<Listed>, StoreError> {
        self.tiers.recovery.purging(&OwnedSelector::from(selector));
        self.select(selector).await
    }

    /// Invalidate `objects` (as a selection listed them): remove each from
    /// every tier, its shared tier copy too, as [`Storage::purge`] with
    /// `PurgeType::Invalidation` does one. It answers once they are out of
    /// memory and the index (every lookup misses them); their removal from
    /// disk and the catalog is recorded and carried out in the background,
    /// and a crash before it ends is finished by the next start (see
    /// `crate::purging`). Each removed is counted as a purge. Returns how
    /// many were stored here.
    ///
    /// # Cancel safety
    ///
    /// The shared tier's deletes, once spawned (16 at a time, before the
    /// local removal), finish; the local removal, once begun, is made whole
    /// whether or not the future is awaited.
    pub async fn purge_all(&'static self, objects: &[Listed]) -> usize {
        let tiers = &self.tiers;
        let mut hashes: Vec<u128> = objects.iter().map(|o| hash_of(&o.key)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        if tiers.shared.enabled() {
            for group in hashes.chunks(SHARED_DELETES) {
                // Spawned, not owned: a delete begun finishes even if this
                // future is dropped.
                let deletes: Vec<_> = group
                    .iter()
                    .map(|&hash| {
                        let shared = tiers.shared.clone();
                        tokio::spawn(async move {
                            if shared.delete(hash).await.is_err() {
                                tiers.observe(StoreEvent::SharedUnavailable);
                            }
                        })
                    })
                    .collect();
                for delete in deletes {
                    let _ = delete.await;
                }
            }
        }
        let removed = tiers.forget_all(hashes).await;
        for _ in 0..removed {
            tiers.observe(StoreEvent::Purge);
        }
        removed
    }

    /// Wait until every purge answered so far is carried out on disk: its
    /// objects' files, ring entries and catalog entries removed (see
    /// [`TieredStore::purge_all`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits (on the blocking pool).
    pub async fn purges_carried_out(&'static self) {
        let _ = io::blocking(move || Ok(self.tiers.purging.wait_idle(None))).await;
    }

    /// The engine disk hits read with (what the configured
    /// [`IoEngineChoice`](crate::IoEngineChoice) came to on this kernel).
    pub fn io_engine(&self) -> IoEngine {
        self.tiers.engine.kind()
    }

    /// Objects in the catalog, and distinct surrogate tags: two counters.
    pub fn catalog_totals(&self) -> (usize, usize) {
        self.tiers.catalog.totals()
    }

    /// One stored object as an operator inspects it: its meta (status,
    /// headers, freshness), where it is held, its size and tags. `None` if
    /// it is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn describe(&'static self, listed: &Listed) -> Option<Described> {
        let hash = hash_of(&listed.key);
        let tier = if self.tiers.memory.get(hash).is_some() {
            Tier::Memory
        } else {
            Tier::Disk
        };
        let size = self.tiers.index.get(hash)?;
        let meta = self.stored_meta(hash).await?;
        Some(Described { meta, tier, size })
    }

    /// After a local miss: the shared tier's copy, streamed to the client
    /// while it is stored locally. A slow or failing shared tier is a miss
    /// (fail open): its first answer — the meta, and whether the body is
    /// whole — must come within `shared_timeout`.
    async fn shared_lookup(
        &'static self,
        key: &CacheKey,
        hash: u128,
    ) -> Option<(CacheMeta, HitHandler)> {
        let tiers = &self.tiers;
        if !tiers.shared.enabled() {
            return None;
        }
        let found = tokio::time::timeout(tiers.config.shared_timeout, tiers.shared.get(hash)).await;
        let SharedHit { meta: shared, body } = match found {
            Ok(Ok(Some(hit))) => hit,
            Ok(Ok(None)) => return None,
            Ok(Err(_)) | Err(_) => {
                tiers.observe(StoreEvent::SharedUnavailable);
                return None;
            }
        };
        let meta = head::decode(&shared.internal, &shared.header).ok()?;
        tiers.observe(StoreEvent::Hit(Tier::Shared));
        let handler = match self.fill_from_shared(key, hash, &meta, &shared).await {
            Some((miss, follow)) => {
                tokio::spawn(Self::pump(tiers, miss, body, shared.body_len));
                Hit::Partial(follow).boxed()
            }
            None => Hit::Shared(SharedStream::new(body, shared.body_len)).boxed(),
        };
        Some((meta, handler))
    }

    /// Begin storing a shared tier's object locally, as if this server had
    /// fetched it: a [`Miss`] (admitted like any writer) that readers —
    /// this lookup's client first — follow as it is written. `None` if no
    /// writer is admitted or the write cannot begin; the body is then
    /// streamed without a local copy.
    ///
    /// # Cancel safety
    ///
    /// Dropped, the write is abandoned: its temporary file is removed and
    /// its permit released.
    async fn fill_from_shared(
        &'static self,
        key: &CacheKey,
        hash: u128,
        meta: &CacheMeta,
        shared: &SharedMeta,
    ) -> Option<(Box<Miss>, PartialHit)> {
        let tiers = &self.tiers;
        if shared.body_len > tiers.config.max_object_size.as_u64() {
            return None;
        }
        let admitted = self.admit_write().await.ok()?;
        let record = tiers.record(key, meta);
        let decoded = MemObject::decoded(
            shared.internal.clone(),
            shared.header.clone(),
            Bytes::new(),
            meta,
        );
        let miss =
            Box::new(Miss::new(tiers, hash, key, record, decoded, admitted).filling_from_shared());
        let partial = miss.partial()?;
        let weight = usize::try_from(shared.body_len).unwrap_or(usize::MAX);
        Some((miss, PartialHit::new(partial).counted(weight)))
    }

    /// Copy a shared tier's `body` of `len` bytes into `miss`, chunk by
    /// chunk, and commit it. A body that fails or is not exactly `len`
    /// bytes abandons the write: its readers get an error, not a short
    /// body. Runs as its own task, so the local copy completes even if the
    /// client that asked for it goes away.
    async fn pump(
        tiers: &'static Tiers,
        mut miss: Box<Miss>,
        mut body: Box<dyn SharedBody>,
        len: u64,
    ) {
        let mut got = 0u64;
        loop {
            match body.next_chunk().await {
                Ok(Some(chunk)) => {
                    got += chunk.len() as u64;
                    if got > len || miss.write_body(chunk, false).await.is_err() {
                        break;
                    }
                }
                Ok(None) if got == len => {
                    // A failed commit is counted by the miss; readers still
                    // get the whole body.
                    let _ = miss.finish().await;
                    return;
                }
                Ok(None) | Err(_) => break,
            }
        }
        tiers.observe(StoreEvent::SharedUnavailable);
        // Dropping the miss abandons the write and tells its readers.
    }

    /// Follow a write in progress: no I/O until it reads bytes that are in
    /// the temporary file.
    fn partial_hit(&'static self, partial: Arc<Partial>) -> Option<(CacheMeta, HitHandler)> {
        let meta = partial.meta.meta().ok()?;
        self.tiers.observe(StoreEvent::Hit(Tier::Partial));
        Some((meta, Hit::Partial(PartialHit::new(partial)).boxed()))
    }

    /// Leave to write one object: a write permit, and room on the disk.
    /// Whether the disk is under its free-space floor is known from the
    /// last write that began (or health check); only then is the disk
    /// asked again here, on the blocking pool, so storing resumes once
    /// room returns.
    async fn admit_write(&'static self) -> Result<Admitted, StoreError> {
        let tiers = &self.tiers;
        if tiers.disk.was_low() {
            io::blocking(move || tiers.disk.room())
                .await
                .inspect_err(|e| tiers.write_failed(e))?;
        }
        tiers.admit()
    }

    /// Read `hash`'s object from its files. Small bodies are read whole and
    /// checked here; large ones are checked as they stream.
    async fn disk_lookup(&'static self, hash: u128) -> Result<Option<(CacheMeta, HitHandler)>> {
        let tiers = &self.tiers;
        let verify_whole = tiers.config.verify_whole_below.as_u64();
        let started = Instant::now();
        let opened = io::blocking(move || {
            let Some(bytes) = tiers.disk.read_meta(hash)? else {
                return Ok(None);
            };
            let (header, blobs) = MetaHeader::decode(&bytes)?;
            let body = tiers.disk.open_body(hash, &header)?;
            let (internal, blob) = (
                Bytes::copy_from_slice(blobs.internal),
                Bytes::copy_from_slice(blobs.header),
            );
            let meta = decode_meta(&internal, &blob)?;
            let found = if body.len <= verify_whole {
                let whole = body.read_all()?;
                let object = self.promote(hash, None, (internal, blob), whole.clone(), &meta);
                Found::Whole(whole, object)
            } else {
                Found::Streamed(body)
            };
            Ok(Some((meta, found)))
        })
        .await;
        tiers.observe(StoreEvent::DiskLatency("open", started.elapsed()));
        let (meta, found) = match opened {
            Ok(Some(opened)) => opened,
            Ok(None) => {
                // Indexed but gone (removed behind our back): forget it.
                let gone = StoreError::Corrupt("object files gone");
                tiers.discard_at(hash, None, &gone).await;
                return Ok(None);
            }
            Err(e @ StoreError::Corrupt(_)) => {
                tiers.discard_at(hash, None, &e).await;
                return Ok(None);
            }
            Err(e) => return Err(e.into_pingora()),
        };
        let handler = match found {
            Found::Whole(body, object) => self.whole_hit(hash, body, object),
            Found::Streamed(body) => {
                tiers.observe(StoreEvent::Hit(Tier::Disk));
                tiers.share_once(hash, None, body.len);
                Hit::Disk(DiskHit::new(tiers, hash, body)).boxed()
            }
        };
        Ok(Some((meta, handler)))
    }

    /// A body read whole from disk at `loc` (`None`: in files): its copy
    /// for memory, if it is small enough for memory or the shared tier
    /// wants it, inserted into memory if small enough and the index still
    /// places the object there (checked under its lock: a purge or a move
    /// meanwhile must not leave memory serving it). If someone holds the
    /// lock (a write or purge of the object, or of another in its shard,
    /// doing file I/O) it is not promoted this time, so a runtime worker
    /// never waits for it; a later hit promotes it.
    fn promote(
        &self,
        hash: u128,
        loc: Option<Loc>,
        (internal, header): (Bytes, Bytes),
        body: Bytes,
        meta: &CacheMeta,
    ) -> Option<Arc<MemObject>> {
        let tiers = &self.tiers;
        let small = body.len() as u64 <= tiers.config.memory_max_object.as_u64();
        if !small && !tiers.shared.enabled() {
            return None;
        }
        let object = Arc::new(MemObject::decoded(internal, header, body, meta));
        let Some(_held) = tiers.try_hold(hash).filter(|_| small) else {
            return Some(object);
        };
        if tiers.index.placed(hash).map(|p| p.loc) == Some(loc) {
            tiers.memory.insert(hash, object.clone());
            tiers.observe(StoreEvent::Promotion);
        }
        Some(object)
    }

    /// A hit on a body read whole and checked: shared once, served from
    /// the bytes read.
    fn whole_hit(
        &'static self,
        hash: u128,
        body: Bytes,
        object: Option<Arc<MemObject>>,
    ) -> HitHandler {
        let tiers = &self.tiers;
        tiers.observe(StoreEvent::Hit(Tier::Disk));
        tiers.observe(StoreEvent::BytesRead(body.len() as u64));
        tiers.share_once(hash, object, body.len() as u64);
        Hit::Memory(MemoryHit::new(body)).boxed()
    }

    /// Read `hash`'s entry in the segment ring, checked whole. An entry
    /// that is not there whole (a crash tore it, or the ring reused its
    /// region) is a miss, and the object is removed if the index still
    /// places it there; if it moved meanwhile (a 304, a copy forward, a
    /// refill), it is read once more where it is now.
    async fn segment_lookup(&'static self, hash: u128) -> Result<Option<(CacheMeta, HitHandler)>> {
        let tiers = &self.tiers;
        let Some(ring) = &tiers.segments else {
            return Ok(None);
        };
        for _ in 0..2 {
            let Some(Placed {
                size,
                loc: Some(loc),
            }) = tiers.index.placed(hash)
            else {
                return Ok(None);
            };
            let started = Instant::now();
            let read = ring
                .read_with(&tiers.engine, loc, size, hash)
                .await
                .and_then(|entry| {
                    let meta = decode_meta(&entry.internal, &entry.meta_header)?;
                    let body = entry.body.clone();
                    let blobs = (entry.internal, entry.meta_header);
                    let object = self.promote(hash, Some(loc), blobs, body.clone(), &meta);
                    Ok((meta, body, object))
                });
            tiers.observe(StoreEvent::DiskLatency("open", started.elapsed()));
            match read {
                Ok((meta, body, object)) => {
                    return Ok(Some((meta, self.whole_hit(hash, body, object))))
                }
                Err(e @ StoreError::Corrupt(_)) => {
                    if tiers.discard_at(hash, Some(loc), &e).await {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into_pingora()),
            }
        }
        Ok(None)
    }

    /// Rewrite `hash`'s meta file, keeping its body: a 304 refresh or an
    /// expiry. The memory tier and the catalog are updated with the file,
    /// on the blocking pool, so a caller that stops waiting cannot leave
    /// them holding the old meta.
    async fn rewrite_meta(&'static self, hash: u128, meta: &CacheMeta) -> Result<bool> {
        let tiers = &self.tiers;
        let (internal, header) = head::encode(meta)?;
        let (internal, header) = (Bytes::from(internal), Bytes::from(header));
        let tags = tags_in(meta.headers(), &tiers.config.tag_headers);
        let written = io::blocking(move || {
            // Whole under the object's lock: a fill installing the same
            // key meanwhile must not pair its body with these headers.
            let _held = tiers.hold(hash);
            let rewritten = match tiers.index.placed(hash) {
                Some(Placed {
                    size,
                    loc: Some(loc),
                }) => self.rewrite_entry(hash, (loc, size), internal, header, tags),
                _ => self.rewrite_files(hash, internal, header, tags),
            };
            match rewritten {
                // Under the lock, so it is still the copy that failed.
                Err(e @ StoreError::Corrupt(_)) => {
                    tiers.corrupt_removed(hash, &e);
                    tiers.remove_held(hash, None);
                    Ok(false)
                }
                other => other,
            }
        })
        .await;
        written.map_err(StoreError::into_pingora)
    }

    /// [`TieredStore::rewrite_meta`] for an object in files: its meta file
    /// is written anew, and the index's size (the eviction weight) moves
    /// by what its length changed. Blocking; call it holding the object's
    /// lock.
    fn rewrite_files(
        &self,
        hash: u128,
        internal: Bytes,
        header: Bytes,
        tags: Vec<Box<str>>,
    ) -> Result<bool, StoreError> {
        let tiers = &self.tiers;
        let Some(bytes) = tiers.disk.read_meta(hash)? else {
            return Ok(false);
        };
        let (old, blobs) = MetaHeader::decode(&bytes)?;
        let new = MetaHeader {
            internal_len: internal.len() as u32,
            header_len: header.len() as u32,
            ..old
        };
        let len = tiers
            .disk
            .commit_meta(hash, &new, &internal, &header, blobs.key)?;
        let was = bytes.len() as u64;
        tiers
            .index
            .reweigh(hash, |size| (size + len).saturating_sub(was));
        tiers.memory.update_meta(hash, internal, header);
        Ok(self.retagged(hash, tags))
    }

    /// Record `hash`'s new tags after its meta was rewritten; if the
    /// catalog cannot, the object is removed (false). Blocking.
    fn retagged(&self, hash: u128, tags: Vec<Box<str>>) -> bool {
        match self.tiers.catalog.retag(&hash.to_be_bytes(), tags) {
            Ok(()) => true,
            Err(error) => {
                self.tiers.uncataloged(hash, error, None);
                false
            }
        }
    }

    /// [`TieredStore::rewrite_meta`] for an object in the segment ring: its
    /// entry at `loc` (`len` bytes) is appended again with the new meta
    /// blobs, and the old one removed. If the ring cannot take it now, the
    /// object is removed instead (false): it was stale, and a stale object
    /// the store cannot refresh is fetched again. Blocking; call it holding
    /// the object's lock.
    fn rewrite_entry(
        &self,
        hash: u128,
        (loc, len): (Loc, u64),
        internal: Bytes,
        header: Bytes,
        tags: Vec<Box<str>>,
    ) -> Result<bool, StoreError> {
        let tiers = &self.tiers;
        let ring = tiers
            .segments
            .as_ref()
            .ok_or(StoreError::Corrupt("no segment ring"))?;
        let old = ring.read(loc, len, hash)?;
        let parts = Parts {
            internal: &internal,
            header: &header,
            key: &old.key,
            body: std::slice::from_ref(&old.body),
        };
        // Kept until the catalog records the new tags.
        let Ok(appended) = ring.append(hash, &parts)? else {
            tiers.remove_held(hash, None);
            return Ok(false);
        };
        let (new, size) = (appended.loc, appended.len);
        let old = tiers.index.insert_at(hash, size, Some(new));
        tiers.drop_replaced(hash, old, Some(new));
        tiers.memory.update_meta(hash, internal, header);
        Ok(self.retagged(hash, tags))
    }

    /// The stored meta of `hash`, from memory or disk.
    async fn stored_meta(&'static self, hash: u128) -> Option<CacheMeta> {
        if let Some(object) = self.tiers.memory.get(hash) {
            return object.meta().ok();
        }
        let tiers = &self.tiers;
        if let Some(Placed {
            size,
            loc: Some(loc),
        }) = tiers.index.placed(hash)
        {
            let ring = tiers.segments.as_ref()?;
            let entry = ring.read_with(&tiers.engine, loc, size, hash).await.ok()?;
            return head::decode(&entry.internal, &entry.meta_header).ok();
        }
        let bytes = io::blocking(move || self.tiers.disk.read_meta(hash))
            .await
            .ok()??;
        let (_, blobs) = MetaHeader::decode(&bytes).ok()?;
        head::decode(blobs.internal, blobs.header).ok()
    }
}

impl Drop for TieredStore {
    /// A walk still running stops at its next object, the reclaimer at its
    /// next region, and the commit and purge threads once they have run
    /// what is queued.
    fn drop(&mut self) {
        self.tiers.recovery.stop();
        self.tiers.commits.stop();
        self.tiers.purging.stop();
        if let Some(ring) = &self.tiers.segments {
            ring.stop();
        }
    }
}

#[async_trait]
impl Storage for TieredStore {
    /// A write in progress, the memory tier, the disk, then the shared tier.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A lookup dropped once a shared tier's hit has begun
    /// filling the local store leaves the fill running in its own task (it
    /// commits, or is abandoned on an error); dropped before, the local
    /// write is abandoned and nothing is left. One dropped while removing
    /// a corrupt object still removes its files; its skipped bookkeeping (a promotion to memory, forgetting a
    /// file removed behind the store's back) is redone by the next lookup.
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = hash_of(key);
        if let Some(hit) = self
            .tiers
            .partials
            .get(hash, None)
            .and_then(|partial| self.partial_hit(partial))
        {
            return Ok(Some(hit));
        }
        if let Some(object) = self.tiers.memory.get(hash) {
            if let Ok(meta) = object.meta() {
                self.tiers.observe(StoreEvent::Hit(Tier::Memory));
                return Ok(Some((
                    meta,
                    Hit::Memory(MemoryHit::new(object.body.clone())).boxed(),
                )));
            }
        }
        if let Some(placed) = self.tiers.index.placed(hash) {
            let found = match placed.loc {
                Some(_) => self.segment_lookup(hash).await?,
                None => self.disk_lookup(hash).await?,
            };
            if let Some(hit) = found {
                return Ok(Some(hit));
            }
        }
        if let Some(hit) = self.shared_lookup(key, hash).await {
            return Ok(Some(hit));
        }
        self.tiers.observe(StoreEvent::Miss);
        Ok(None)
    }

    /// The write `streaming_write_tag` names, for the request writing it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: as [`TieredStore::lookup`](Storage::lookup).
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
        let hit = match self.tiers.partials.get(hash_of(key), write_id) {
            Some(partial) => self.partial_hit(partial),
            None => None,
        };
        hit.map(Some)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "streaming write not found"))
    }

    /// Admit a writer and start its temporary file; refused with
    /// [`StoreError::Saturated`] when `write_concurrency` writes are in
    /// flight, and with [`StoreError::LowSpace`] (counted as a write
    /// failure) under the free-space floor. pingora serves a response
    /// whose miss handler was refused straight from the origin, uncached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while the temporary file is created, the file
    /// is removed and the permit released when that finishes.
    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let tiers = &self.tiers;
        let admitted = self.admit_write().await.map_err(StoreError::into_pingora)?;
        let hash = hash_of(key);
        // The head is written from `meta`'s header; nothing is compressed.
        let (internal, head) = head::encode(meta)?;
        let record = tiers.record(key, meta);
        let decoded = MemObject::decoded(internal.into(), head.into(), Bytes::new(), meta);
        Ok(Box::new(Miss::new(
            tiers, hash, key, record, decoded, admitted,
        )))
    }

    /// Remove an object from every tier (an invalidation also from the
    /// shared tier).
    ///
    /// # Cancel safety
    ///
    /// Dropped while the shared tier deletes, nothing local has changed;
    /// once the local removal starts, its files are removed whether or not
    /// the caller waits.
    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = hash_of(target.key());
        if matches!(purge_type, PurgeType::Invalidation) && self.tiers.shared.enabled() {
            // An invalidation is for every server; an eviction is only ours.
            if self.tiers.shared.delete(hash).await.is_err() {
                self.tiers.observe(StoreEvent::SharedUnavailable);
            }
        }
        if !self.tiers.forget(hash, purge_type).await {
            return Ok(PurgeOutcome::NotFound);
        }
        self.tiers.observe(match purge_type {
            PurgeType::Eviction => StoreEvent::Eviction,
            PurgeType::Invalidation => StoreEvent::Purge,
        });
        Ok(PurgeOutcome::Purged(None))
    }

    /// Keep an object but mark it stale. Its shared tier copy, which
    /// cannot be marked stale in place, is deleted: another server without
    /// a local copy then misses rather than serving it fresh.
    ///
    /// # Cancel safety
    ///
    /// The meta file, the memory tier and the catalog are updated in one
    /// task on the blocking pool: dropped, the rewrite completes whole or
    /// never starts.
    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = hash_of(target.key());
        if self.tiers.shared.enabled() && self.tiers.shared.delete(hash).await.is_err() {
            self.tiers.observe(StoreEvent::SharedUnavailable);
        }
        let Some(mut meta) = self.stored_meta(hash).await else {
            return Ok(PurgeOutcome::NotFound);
        };
        meta.expire_at(SystemTime::now());
        if !self.rewrite_meta(hash, &meta).await? {
            return Ok(PurgeOutcome::NotFound);
        }
        self.tiers.observe(StoreEvent::Purge);
        Ok(PurgeOutcome::Expired)
    }

    /// Rewrite an object's meta after a 304, keeping its body.
    ///
    /// # Cancel safety
    ///
    /// As [`TieredStore::expire`](Storage::expire).
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

#[cfg(test)]
mod tests {
    use bytesize::ByteSize;
    use pingora_cache::storage::PurgeOutcome;

    use crate::test_common::{
        body, child_crashing, child_phase, get, invalidate, key, open, put_with, tagged,
    };
    use crate::{Selector, StoreConfig};

    /// A ring large enough for every object here, and a memory tier too
    /// small for them.
    fn config(dir: &std::path::Path) -> StoreConfig {
        StoreConfig {
            disk_bytes: ByteSize::mib(256),
            segment_bytes: Some(ByteSize::mib(24)),
            memory_max_object: ByteSize::kib(1),
            ..crate::test_common::config(dir)
        }
    }

    /// The test below's objects, by tag: two purged by tag, one by key.
    const TAGS: [&str; 6] = ["gone", "gone", "one", "kept", "kept", "kept"];

    /// The test below's child: fill, fail the ring's writes, purge by tag
    /// and by key, check the purges answered, and crash.
    fn purge_with_failing_marks(dir: &std::path::Path) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = open(config(dir));
            for (i, tag) in TAGS.iter().enumerate() {
                let data = body(2_000, i as u8);
                put_with(store, &key(&format!("/{i}")), &tagged(tag), &data).await;
            }
            for i in 0..TAGS.len() {
                let hash = crate::tiers::hash_of(&key(&format!("/{i}")));
                let placed = store.tiers.index.placed(hash).unwrap();
                assert!(placed.loc.is_some(), "object {i} is in the ring");
            }
            store.tiers.segments.as_ref().unwrap().fail_writes(true);

            let listed = store.select_for_purge(Selector::Tag("gone")).await.unwrap();
            assert_eq!(store.purge_all(&listed).await, 2);
            let purged = invalidate(store, &key("/2").to_compact()).await;
            assert!(matches!(purged, PurgeOutcome::Purged(_)));
            store.purges_carried_out().await;
            for i in 0..3 {
                assert!(get(store, &format!("/{i}")).await.is_none(), "{i} purged");
            }
            std::process::abort();
        });
    }

    /// A purge whose ring entries cannot be marked removed (the disk fails
    /// the write) still answers and is a miss at once; each such entry is
    /// recorded as purged as of when it was written, so the walk after a
    /// crash removes it instead of serving a purged object again,
    /// uncataloged.
    #[test]
    fn purged_ring_entries_that_cannot_be_marked_removed_stay_purged_after_a_crash() {
        let test = "store::tests::purged_ring_entries_that_cannot_be_marked_removed_stay_purged_after_a_crash";
        if let Some((_, dir)) = child_phase() {
            return purge_with_failing_marks(&dir);
        }
        let dir = tempfile::tempdir().unwrap();
        child_crashing(test, "crash", dir.path());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = open(config(dir.path()));
            store.recovered().await;
            for (i, tag) in TAGS.iter().enumerate() {
                let found = get(store, &format!("/{i}")).await.is_some();
                assert_eq!(found, *tag == "kept", "object {i} after the crash");
            }
            assert_eq!(store.health().disk_objects, 3);
            assert!(store
                .select(Selector::Tag("gone"))
                .await
                .unwrap()
                .is_empty());
            assert_eq!(store.catalog_totals(), (3, 1));
        });
    }

    /// A selection whose scan read entries that a purge then removed from
    /// the catalog, and stopped hiding, before the selection checked them,
    /// does not list them (a tag purge in `./x test` once matched 1131
    /// objects of which 1001 were stored); an object filled again after
    /// its purge is listed.
    #[tokio::test]
    async fn a_purge_carried_out_while_a_selection_scans_is_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(config(dir.path()));
        for i in 0..10 {
            put_with(store, &key(&format!("/{i}")), &tagged("t"), &body(100, i)).await;
        }
        let tiers = &store.tiers;
        let before = tiers.purging.carried_out();
        let scanned = tiers
            .catalog
            .select(&crate::catalog::OwnedSelector::Tag("t".into()))
            .unwrap();
        assert_eq!(scanned.len(), 10);
        let purged = &scanned[..4];
        assert_eq!(store.purge_all(purged).await, 4);
        store.purges_carried_out().await;
        assert!(!tiers.purging.hides(crate::tiers::hash_of(&purged[0].key)));
        assert_eq!(tiers.unpurged(scanned.clone(), before).unwrap().len(), 6);

        let refilled = key(std::str::from_utf8(&purged[0].primary_key).unwrap());
        put_with(store, &refilled, &tagged("t"), &body(100, 0)).await;
        assert_eq!(tiers.unpurged(scanned, before).unwrap().len(), 7);
    }

    /// A fill keeps its response header as text (`crate::head`), not
    /// compressed: in the ring entry it writes, which the walk after a
    /// restart reads back.
    #[tokio::test]
    async fn a_fill_stores_its_response_header_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let data = body(2_000, 3);
        {
            let store = open(config(dir.path()));
            put_with(store, &key("/text"), &tagged("a b"), &data).await;
            let hash = crate::tiers::hash_of(&key("/text"));
            let placed = store.tiers.index.placed(hash).unwrap();
            let ring = store.tiers.segments.as_ref().unwrap();
            let entry = ring.read(placed.loc.unwrap(), placed.size, hash).unwrap();
            assert!(entry.meta_header.starts_with(b"HTTP/1.1 200 OK\r\n"));
            assert!(String::from_utf8_lossy(&entry.meta_header).contains("surrogate-key: a b\r\n"));
        }
        let store = crate::test_common::reopen(config(dir.path())).await;
        let (meta, read) = get(store, "/text").await.unwrap();
        assert_eq!(read, data);
        assert_eq!(meta.headers()["surrogate-key"], "a b");
    }

    /// Objects stored before the store kept headers as text carry pingora's
    /// zstd header blob: the walk after a restart reads their tags, they
    /// are hits with their headers, and a revalidation rewrites them with
    /// a head.
    #[tokio::test]
    async fn objects_stored_with_pingoras_header_blob_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let (old, data, k) = (tagged("old"), body(2_000, 9), key("/old"));
        let (internal, blob) = old.serialize().unwrap();
        let hash = crate::tiers::hash_of(&k);
        let encoded = crate::disk::encode_key(&k);
        let tag_fields = &config(dir.path()).tag_headers;
        let record = crate::disk::record_of(&encoded, &internal, &blob, tag_fields).unwrap();
        assert_eq!(record.tags, vec![Box::<str>::from("old")]);
        {
            let store = open(config(dir.path()));
            let parts = crate::segments::entry::Parts {
                internal: &internal,
                header: &blob,
                key: &encoded,
                body: std::slice::from_ref(&data),
            };
            let ring = store.tiers.segments.as_ref().unwrap();
            let appended = ring.append(hash, &parts).unwrap().unwrap();
            store
                .tiers
                .install_committed(
                    hash,
                    appended.len,
                    record,
                    None,
                    Some(appended.loc),
                    crate::catalog::Journal::Now,
                )
                .unwrap();
        }
        let store = crate::test_common::reopen(config(dir.path())).await;
        let (meta, read) = get(store, "/old").await.unwrap();
        assert_eq!(read, data);
        assert_eq!(meta.headers()["surrogate-key"], "old");
        let listed = store.select_for_purge(Selector::Tag("old")).await.unwrap();
        assert_eq!(listed.len(), 1);

        let span = pingora_cache::trace::Span::inactive().handle();
        let refreshed = tagged("new");
        assert!(
            pingora_cache::storage::Storage::update_meta(store, &k, &refreshed, &span)
                .await
                .unwrap()
        );
        let placed = store.tiers.index.placed(hash).unwrap();
        let ring = store.tiers.segments.as_ref().unwrap();
        let entry = ring.read(placed.loc.unwrap(), placed.size, hash).unwrap();
        assert!(crate::head::is_head(&entry.meta_header));
        let (meta, read) = get(store, "/old").await.unwrap();
        assert_eq!(read, data);
        assert_eq!(meta.headers()["surrogate-key"], "new");
    }

    /// Objects the test below stores: its ring's first two regions hold
    /// about 550 of them, the third, the head, the rest.
    const IN_RING: usize = 650;

    /// The test below's children: fill the ring into its third region and
    /// crash once the catalog's mark covers the first two (`fill`); open
    /// with the first and the third (the head) unreadable, check that
    /// their objects did not come back, and crash again (`unreadable`).
    fn unreadable_child(phase: &str, dir: &std::path::Path) {
        use std::sync::atomic::Ordering;
        use std::time::{Duration, Instant};
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            if phase == "unreadable" {
                crate::segments::UNREADABLE.store(0b101, Ordering::Relaxed);
            }
            let store = open(config(dir));
            store.recovered().await;
            let tiers = &store.tiers;
            if phase == "fill" {
                for i in 0..IN_RING {
                    let name = format!("/r/{i}");
                    put_with(store, &key(&name), &tagged("r"), &body(30_000, i as u8)).await;
                }
                let ring = tiers.segments.as_ref().unwrap();
                // The mark is written as the head enters a region.
                let head = ring.scan(2, false).unwrap().entries[0].0.seq;
                let deadline = Instant::now() + Duration::from_secs(30);
                while tiers.catalog.ring_mark().unwrap() < head {
                    assert!(Instant::now() < deadline, "the ring's mark was not written");
                    std::thread::sleep(Duration::from_millis(10));
                }
            } else {
                assert!(get(store, "/r/0").await.is_none(), "unreadable");
                assert!(get(store, "/r/300").await.is_some());
                let last = format!("/r/{}", IN_RING - 1);
                assert!(get(store, &last).await.is_none(), "in the unreadable head");
                assert_eq!(store.catalog_totals().0, store.health().disk_objects);
            }
            std::process::abort();
        });
    }

    /// A region the walk after a crash cannot read is retired: its
    /// objects, below the catalog's mark, lose their catalog entries with
    /// the walk (they are not stored), so a later walk that reads the
    /// region again must not bring them back, where no purge could find
    /// them. An unreadable head region does not stop the store opening;
    /// the readable region's objects come back, cataloged.
    #[test]
    fn a_region_unreadable_to_the_walk_brings_nothing_back_uncataloged_later() {
        let test =
            "store::tests::a_region_unreadable_to_the_walk_brings_nothing_back_uncataloged_later";
        if let Some((phase, dir)) = child_phase() {
            return unreadable_child(&phase, &dir);
        }
        let dir = tempfile::tempdir().unwrap();
        child_crashing(test, "fill", dir.path());
        child_crashing(test, "unreadable", dir.path());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = crate::test_common::reopen(config(dir.path())).await;
            let mut stored = 0;
            for i in 0..IN_RING {
                stored += usize::from(get(store, &format!("/r/{i}")).await.is_some());
            }
            assert!(get(store, "/r/0").await.is_none(), "in a retired region");
            let last = format!("/r/{}", IN_RING - 1);
            assert!(get(store, &last).await.is_none(), "in the retired head");
            assert!(get(store, "/r/300").await.is_some(), "readable");
            assert_eq!(store.health().disk_objects, stored);
            let listed = store.select(Selector::Tag("r")).await.unwrap();
            assert_eq!(listed.len(), stored, "every stored object is cataloged");
            assert_eq!(store.catalog_totals().0, stored);
        });
    }

    /// The test below's child: fill two regions of the ring, make the
    /// first unreadable, and fill on until the head has come round to it.
    fn unreadable_to_the_reclaimer(dir: &std::path::Path) {
        use std::sync::atomic::Ordering;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = open(config(dir));
            store.recovered().await;
            let name = |i: usize| format!("/f/{i}");
            let fill = |range: std::ops::Range<usize>| async move {
                for i in range {
                    put_with(store, &key(&name(i)), &tagged("f"), &body(30_000, i as u8)).await;
                }
            };
            // About 277 objects fill a region.
            fill(0..500).await;
            crate::segments::UNREADABLE.store(1, Ordering::Relaxed);
            fill(500..1_000).await;
            assert!(
                get(store, &name(0)).await.is_none(),
                "dropped with its region"
            );
            let last = crate::tiers::hash_of(&key(&name(999)));
            let placed = store.tiers.index.placed(last).unwrap().loc;
            assert_eq!(placed.map(|loc| loc.region), Some(0), "the head came round");
            assert!(get(store, &name(999)).await.is_some());
            let listed = store.select(Selector::Tag("f")).await.unwrap();
            assert_eq!(listed.len(), store.health().disk_objects);
        });
    }

    /// A region the reclaimer cannot read is retired and its objects are
    /// dropped (from the index, memory and catalog): the head goes on
    /// through it, rather than the ring stopping there for ever and every
    /// new object going to files.
    #[test]
    fn a_region_the_reclaimer_cannot_read_costs_only_its_objects() {
        let test = "store::tests::a_region_the_reclaimer_cannot_read_costs_only_its_objects";
        if let Some((_, dir)) = child_phase() {
            return unreadable_to_the_reclaimer(&dir);
        }
        let dir = tempfile::tempdir().unwrap();
        crate::test_common::child(test, "fill", dir.path(), false);
    }
}
