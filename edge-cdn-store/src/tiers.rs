//! The parts of the store that lookups, hits and misses all use: the tiers,
//! the index and catalog, the writes in progress, the write permits, the
//! observer and the configuration — and the few operations that touch
//! several of them at once (admitting a writer, installing a committed
//! object, forgetting one).
//!
//! [`TieredStore`](crate::TieredStore) owns one [`Tiers`]; each hit and
//! miss handler borrows it. None of them imports another, so the handlers
//! depend on this module and not on the store.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora_cache::storage::PurgeType;
use pingora_cache::CacheMeta;
use tokio::sync::Semaphore;

use crate::catalog::{tags_in, Catalog, Journal, Listed, PurgeId, Record};
use crate::commit::Committer;
use crate::config::StoreConfig;
use crate::disk::format::MetaHeader;
use crate::disk::{BodyReader, DiskTier};
use crate::error::StoreError;
use crate::head;
use crate::index::{Index, Placed};
use crate::io::{self, Engine};
use crate::memory::{MemObject, MemoryTier};
use crate::observer::{StoreEvent, StoreObserver};
use crate::partial::Partials;
use crate::purging::Purging;
use crate::recovery::Recovery;
use crate::segments::{Loc, Segments};
use crate::sharded::Sharded;
use crate::shared::{
    stale_horizon, BytesBody, SharedBody, SharedError, SharedMeta, SharedTier, SharedWrites,
};
use crate::write::{Admitted, Writers};

/// A cache key's 128-bit hash, as every map and file name uses it.
pub fn hash_of(key: &impl CacheHashKey) -> u128 {
    u128::from_be_bytes(key.combined_bin())
}

/// The store's state, shared by the store and its handlers.
pub struct Tiers {
    /// The configuration the store was opened with.
    pub config: StoreConfig,
    /// The object files.
    pub disk: DiskTier,
    /// The segment ring small objects are appended to, if there is one.
    pub segments: Option<Arc<Segments>>,
    /// How disk hits read ring entries and body blocks.
    pub engine: Engine,
    /// What is on disk, by key hash, with each object's CLOCK counter
    /// (shared with the store's [`ClockEviction`](crate::ClockEviction)).
    pub index: Arc<Index>,
    /// Primary keys and tags of stored objects, for purging.
    pub catalog: Arc<Catalog>,
    /// Small, hot objects.
    pub memory: MemoryTier,
    /// Writes in progress, for collapsed readers.
    pub partials: Partials,
    /// Write permits.
    pub writers: Writers,
    /// The thread held misses are committed on.
    pub commits: Committer,
    /// Purges being carried out on disk.
    pub purging: Purging,
    /// Where events go.
    pub observer: Arc<dyn StoreObserver>,
    /// The tier shared with other servers, if any.
    pub shared: Arc<dyn SharedTier>,
    /// Writes to the shared tier in flight, and what was shared lately.
    pub sharing: Sharing,
    /// Where the background recovery of the files stands.
    pub recovery: Recovery,
    /// Per-object locks (striped by hash): see [`Tiers::hold`].
    pub holds: Sharded<()>,
}

/// What removing an object's copies from disk found and left.
#[derive(Clone, Copy, Debug, Default)]
pub struct Removed {
    /// A copy was there.
    pub stored: bool,
    /// A ring entry of it could be neither marked removed nor recorded
    /// for the next start to remove: it stays live on disk, where a walk
    /// after a crash would find it.
    pub lingering: bool,
}

/// Objects a purge's removal from disk ([`Tiers::forget_all`]) takes
/// per catalog batch, holding their locks.
const FORGET_BATCH: usize = 256;

/// Chunks a body held in memory is handed to the shared tier in.
const SHARE_CHUNK: usize = 256 * 1024;

/// Objects [`Tiers::share_once`] remembers having shared.
const RECENTLY_SHARED: usize = 8192;

/// The state of writes to the shared tier: a bound on those in flight,
/// and the objects shared lately on promotion, so a large object streamed
/// from disk again and again is shared once, not on every hit.
pub struct Sharing {
    permits: Arc<Semaphore>,
    recent: Mutex<(HashSet<u128>, VecDeque<u128>)>,
}

impl Sharing {
    /// Room for `concurrency` writes at once.
    pub fn new(concurrency: usize) -> Sharing {
        Sharing {
            permits: Arc::new(Semaphore::new(concurrency)),
            recent: Mutex::default(),
        }
    }

    /// Remember `hash` as shared; false if it already was.
    fn first_time(&self, hash: u128) -> bool {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *recent;
        if !set.insert(hash) {
            return false;
        }
        order.push_back(hash);
        if order.len() > RECENTLY_SHARED {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

/// A committed body read back from disk for the shared tier, one checked
/// block at a time through the store's read engine.
struct DiskBody {
    tiers: &'static Tiers,
    reader: BodyReader,
    next: usize,
}

#[async_trait]
impl SharedBody for DiskBody {
    /// # Cancel safety
    ///
    /// Cancel safe: the position advances only when a block is returned.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SharedError> {
        if self.next >= self.reader.blocks() {
            return Ok(None);
        }
        let block = self
            .reader
            .block_with(&self.tiers.engine, self.next)
            .await
            .map_err(|e| SharedError::Source(e.to_string()))?;
        self.next += 1;
        Ok(Some(block))
    }
}

impl Tiers {
    /// Report `event`.
    pub fn observe(&self, event: StoreEvent) {
        self.observer.event(event);
    }

    /// Storing an object failed with `error`: count it by reason and say
    /// why. The response is served regardless.
    pub fn write_failed(&self, error: &StoreError) {
        let reason = error.write_failure();
        tracing::warn!(target: "edge_cdn_store", reason = reason.as_str(), %error, "object not stored");
        self.observe(StoreEvent::WriteFailed(reason));
    }

    /// Admit one writer, counting a refusal.
    pub fn admit(&self) -> Result<Admitted, StoreError> {
        self.writers
            .admit()
            .inspect_err(|_| self.observe(StoreEvent::Skipped))
    }

    /// What the catalog records for `key`'s object with `meta`.
    pub fn record(&self, key: &CacheKey, meta: &CacheMeta) -> Record {
        Record {
            key: key.to_compact(),
            primary_key: key.primary_key().into(),
            tags: tags_in(meta.headers(), &self.config.tag_headers),
        }
    }

    /// Make a just-committed object of `size` bytes on disk findable:
    /// catalog it, index it (at `loc` in the segment ring, or in its own
    /// files), and hold it in memory if `held` (otherwise drop any older
    /// copy memory has). Called off the worker (commit thread or blocking
    /// pool), right after the commit, so a caller that stops waiting cannot leave a committed
    /// object on disk that nothing knows about. An older copy the new one
    /// does not overwrite (in files when the new one is in the ring, or
    /// the other way round) is removed.
    ///
    /// The catalog comes first: if it cannot record the object, no purge
    /// could ever find it, so the object is removed again (files or entry,
    /// index, memory) and the error returned, as for any write that failed.
    /// `journal` says when its catalog entry reaches the OS.
    pub fn install_committed(
        &self,
        hash: u128,
        size: u64,
        record: Record,
        held: Option<Arc<MemObject>>,
        loc: Option<Loc>,
        journal: Journal,
    ) -> Result<(), StoreError> {
        let _held = self.hold(hash);
        if let Err(error) = self.catalog.insert(record, journal) {
            let written = Placed { size, loc };
            return Err(self.uncataloged(hash, error, Some(written)));
        }
        let old = self.index.insert_at(hash, size, loc);
        self.drop_replaced(hash, old, loc);
        match held {
            Some(object) => {
                self.memory.insert(hash, object);
            }
            None => {
                self.memory.remove(hash);
            }
        }
        Ok(())
    }

    /// Hold `hash`'s object lock: a commit's index and catalog updates, a
    /// removal, and the recovery walk's putting back of the object each
    /// happen whole under it, so none undoes another (see
    /// `crate::recovery`). Striped: unrelated objects rarely share one.
    pub fn hold(&self, hash: u128) -> std::sync::MutexGuard<'_, ()> {
        self.holds.lock(hash as usize)
    }

    /// [`Tiers::hold`] if no one holds it now: for a runtime worker, which
    /// must not wait behind file I/O done under the lock.
    pub fn try_hold(&self, hash: u128) -> Option<std::sync::MutexGuard<'_, ()>> {
        self.holds.try_lock(hash as usize)
    }

    /// An object was just indexed at `loc` in place of `old`: remove the
    /// old copy if the new one did not overwrite it (a commit in files
    /// overwrites files by renaming; a ring entry overwrites nothing).
    /// Blocking; call it holding [`Tiers::hold`].
    pub fn drop_replaced(&self, hash: u128, old: Option<Placed>, loc: Option<Loc>) {
        match (old.map(|old| old.loc), loc) {
            (Some(Some(old)), _) if Some(old) != loc => {
                self.remove_entry(old, hash);
            }
            (Some(None), Some(_)) => {
                self.disk.remove(hash);
            }
            _ => {}
        }
    }

    /// Mark a ring entry removed. If the mark cannot be written, the entry
    /// stays live on disk, where a walk after a crash would find it, until
    /// the ring reuses its region: a purge of the object as of when the
    /// entry was written is recorded instead, and never ended by this run,
    /// so the next start walks and removes that entry (and no later copy).
    /// Returns false (logged) if neither could be written.
    fn remove_entry(&self, loc: Loc, hash: u128) -> bool {
        let Some(ring) = &self.segments else {
            return true;
        };
        let Err(unmarked) = ring.remove(loc, hash) else {
            return true;
        };
        let hash_hex = format!("{hash:032x}");
        match self.catalog.purge_begun(unmarked.written, &[hash]) {
            Ok(_) => {
                tracing::warn!(target: "edge_cdn_store", hash = %hash_hex, error = %unmarked.error, "segment entry not marked removed; the next start removes it");
                true
            }
            Err(error) => {
                tracing::warn!(target: "edge_cdn_store", hash = %hash_hex, error = %unmarked.error, record = %error, "segment entry not marked removed nor recorded; a crash may bring it back");
                self.observe(StoreEvent::CatalogFailed);
                false
            }
        }
    }

    /// Remove `hash` from memory, the index, the disk (its files, or its
    /// ring entry, and the entry at `earlier` if the caller already took it
    /// out of the index) and then the catalog. In that order, so a crash
    /// between the two never leaves a ring entry the walk takes as
    /// cataloged without its catalog entry; and if the entry could be
    /// neither marked removed nor recorded ([`Removed::lingering`]), the
    /// catalog entry stays, for the walk that may bring the entry back.
    /// Blocking; call it holding [`Tiers::hold`].
    pub fn remove_held(&self, hash: u128, earlier: Option<Placed>) -> Removed {
        self.memory.remove(hash);
        let now = self.index.take(hash);
        let removed = self.remove_copies(hash, [earlier, now]);
        if !removed.lingering {
            self.uncatalog(&[hash.to_be_bytes()]);
        }
        removed
    }

    /// Remove the catalog entries of objects just removed, in one batch.
    /// A failure is counted and logged: the entries are harmless until the
    /// next start reconciles them away (a purge selecting one finds no
    /// object). Blocking; call it holding the objects' locks.
    pub fn uncatalog(&self, hashes: &[HashBinary]) {
        self.recovery.uncataloging(hashes);
        if let Err(error) = self.catalog.remove_all(hashes) {
            tracing::warn!(target: "edge_cdn_store", objects = hashes.len(), %error, "catalog entries of removed objects left");
            self.observe(StoreEvent::CatalogFailed);
        }
    }

    /// Remove the ring entries among `placed`, and the files unless every
    /// copy known was in the ring.
    fn remove_copies(&self, hash: u128, placed: [Option<Placed>; 2]) -> Removed {
        let mut removed = Removed::default();
        let mut files = placed.iter().all(Option::is_none);
        for found in placed.into_iter().flatten() {
            match found.loc {
                Some(loc) => {
                    removed.lingering |= !self.remove_entry(loc, hash);
                    removed.stored = true;
                }
                None => files = true,
            }
        }
        if files {
            removed.stored |= self.disk.remove(hash);
        }
        removed
    }

    /// The catalog could not record what `hash`'s object now is (a new
    /// object, `written` but not yet indexed, or new tags): remove the
    /// object from every tier, so a purge that cannot see it cannot miss
    /// it either. Blocking. Returns `error`.
    pub fn uncataloged(
        &self,
        hash: u128,
        error: StoreError,
        written: Option<Placed>,
    ) -> StoreError {
        tracing::warn!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), %error, "catalog not updated; object removed");
        self.observe(StoreEvent::CatalogFailed);
        self.memory.remove(hash);
        let indexed = self.index.take(hash);
        self.remove_copies(hash, [indexed, written]);
        error
    }

    /// Copy `hash`'s committed object of `body_len` bytes to the shared
    /// tier in the background, if it is at most `shared_max_object` and
    /// fewer than `shared_write_concurrency` copies are in flight: from
    /// `held` if memory has it, else streamed from its disk file. Its TTL
    /// there is its stale horizon; an object past it is not shared. A
    /// failure is only counted.
    pub fn share(&'static self, hash: u128, held: Option<Arc<MemObject>>, body_len: u64) {
        if !self.shared.enabled() || body_len > self.config.shared_max_object.as_u64() {
            return;
        }
        let Ok(permit) = self.sharing.permits.clone().try_acquire_owned() else {
            tracing::debug!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), "shared-tier writes saturated; not shared");
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let Some((meta, body)) = self.share_source(hash, held).await else {
                return;
            };
            let Some(ttl) = head::decode(&meta.internal, &meta.header)
                .ok()
                .and_then(|decoded| stale_horizon(&decoded, SystemTime::now()))
            else {
                return;
            };
            let len = meta.body_len;
            match self.shared.put(hash, meta, ttl, body).await {
                Ok(()) => self.observe(StoreEvent::SharedPut(len)),
                Err(error) => {
                    tracing::debug!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), %error, "not shared");
                    self.observe(StoreEvent::SharedUnavailable);
                }
            }
        });
    }

    /// [`Tiers::share`] for a read of an object already stored (on
    /// promotion): only if it was not shared lately.
    pub fn share_once(&'static self, hash: u128, held: Option<Arc<MemObject>>, body_len: u64) {
        if self.config.shared_writes == SharedWrites::OnPromotion
            && self.shared.enabled()
            && body_len <= self.config.shared_max_object.as_u64()
            && self.sharing.first_time(hash)
        {
            self.share(hash, held, body_len);
        }
    }

    /// The meta and body of `hash`'s committed object, for the shared tier.
    async fn share_source(
        &'static self,
        hash: u128,
        held: Option<Arc<MemObject>>,
    ) -> Option<(SharedMeta, Box<dyn SharedBody>)> {
        if let Some(object) = held {
            let meta = SharedMeta {
                internal: object.internal.clone(),
                header: object.head.clone(),
                body_len: object.body.len() as u64,
            };
            return Some((
                meta,
                Box::new(BytesBody::new(object.body.clone(), SHARE_CHUNK)),
            ));
        }
        let opened = io::blocking(move || {
            let Some(bytes) = self.disk.read_meta(hash)? else {
                return Ok(None);
            };
            let (header, blobs) = MetaHeader::decode(&bytes)?;
            let reader = self.disk.open_body(hash, &header)?;
            Ok(Some((
                Bytes::copy_from_slice(blobs.internal),
                Bytes::copy_from_slice(blobs.header),
                reader,
            )))
        })
        .await;
        let (internal, header, reader) = opened.ok()??;
        let meta = SharedMeta {
            internal,
            header,
            body_len: reader.len,
        };
        let body = DiskBody {
            tiers: self,
            reader,
            next: 0,
        };
        Some((meta, Box::new(body)))
    }

    /// Remove `hash` from every tier; returns whether it was stored. An
    /// invalidation made while the walk runs is remembered and recorded
    /// until the walk is done (see `crate::recovery`): its ring entry may
    /// not be indexed yet. An eviction is not: an evicted object that
    /// comes back is harmless.
    ///
    /// # Cancel safety
    ///
    /// The maps are updated before the first await; the catalog entry and
    /// the files are removed on the blocking pool whether or not the
    /// caller waits.
    pub async fn forget(&'static self, hash: u128, purge_type: PurgeType) -> bool {
        let walking =
            matches!(purge_type, PurgeType::Invalidation) && self.recovery.forgetting(hash);
        let in_memory = self.memory.remove(hash);
        let indexed = self.index.take(hash);
        let in_index = indexed.is_some();
        let on_disk = io::blocking(move || {
            let _held = self.hold(hash);
            // Recorded before the catalog entry goes: a crash in between
            // must find the record, or the walk would index the entry
            // uncataloged.
            let record = walking.then(|| self.catalog.purge_begun(SystemTime::now(), &[hash]));
            let removed = self.remove_held(hash, indexed);
            match record {
                Some(Ok(id)) => self.purge_carried_out(id, removed.lingering),
                Some(Err(error)) => {
                    tracing::warn!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), %error, "purge not recorded; a crash before the walk is done may bring the object back");
                    self.observe(StoreEvent::CatalogFailed);
                }
                None => {}
            }
            Ok(removed.stored)
        })
        .await
        .unwrap_or(false);
        in_memory || in_index || on_disk
    }

    /// Remove the objects of `hashes` (distinct) from every tier, as
    /// [`Tiers::forget`] does one, but answering once they are out of
    /// memory and the index: their removal from disk and the catalog is
    /// recorded first and carried out in the background (see
    /// `crate::purging`). Returns how many were stored (in memory or
    /// indexed).
    ///
    /// # Cancel safety
    ///
    /// Once called, the purge is made whole on the blocking pool whether
    /// or not the caller waits.
    pub async fn forget_all(&'static self, hashes: Vec<u128>) -> usize {
        io::blocking(move || Ok(self.purge_taken(hashes)))
            .await
            .unwrap_or(0)
    }

    /// [`Tiers::forget_all`]'s work. Blocking.
    fn purge_taken(&'static self, hashes: Vec<u128>) -> usize {
        let begun = self.purging.begin(hashes);
        let hashes = begun.hashes();
        let mut stored = 0;
        let mut taken: Vec<(u128, Option<Placed>)> = Vec::with_capacity(hashes.len());
        for batch in hashes.chunks(FORGET_BATCH) {
            // Under their locks: the recovery walk puts an object back
            // whole under its lock, so it either sees this purge (see
            // `crate::recovery`) or put the object back before this takes
            // it; an object indexed after this is a fill, not the purge's.
            let _held = self.holds.lock_all(batch.iter().map(|&hash| hash as usize));
            for &hash in batch {
                let in_memory = self.memory.remove(hash);
                let placed = self.index.take(hash);
                stored += usize::from(in_memory || placed.is_some());
                taken.push((hash, placed));
            }
        }
        // Timed after the takes: a fill written before this was either
        // taken or is no longer the purge's (it was installed after).
        let record = self.catalog.purge_begun(SystemTime::now(), hashes);
        let recorded = record.is_ok();
        let work = move || {
            let mut lingering = false;
            for batch in taken.chunks(FORGET_BATCH) {
                lingering |= self.remove_taken(batch);
            }
            match record {
                Ok(id) => self.purge_carried_out(id, lingering),
                Err(error) => {
                    tracing::warn!(target: "edge_cdn_store", objects = taken.len(), %error, "purge not recorded; carried out before answering");
                    self.observe(StoreEvent::CatalogFailed);
                }
            }
            // The purge ends here, or wherever the work stops (a panic).
            drop(begun);
        };
        if recorded {
            self.purging.carry_out(work);
        } else {
            // Unrecorded, a crash in the background would bring the
            // objects back: the purge answers only once they are gone.
            work();
        }
        stored
    }

    /// Remove from disk the copies a purge took out of the index (`None`:
    /// it did not know of one), and their catalog entries, in one batch,
    /// holding their locks. An object indexed again since (a fill after
    /// the purge) keeps its new copy and catalog entry; only the purged
    /// copy goes, if the new one did not overwrite it. Returns whether a
    /// purged ring entry of an object not indexed again could be neither
    /// marked removed nor recorded (it then keeps its catalog entry, as
    /// [`Tiers::remove_held`] says why). Blocking.
    fn remove_taken(&self, taken: &[(u128, Option<Placed>)]) -> bool {
        let _held = self
            .holds
            .lock_all(taken.iter().map(|(hash, _)| *hash as usize));
        let mut gone = Vec::with_capacity(taken.len());
        let mut lingering = false;
        for &(hash, purged) in taken {
            match self.index.placed(hash) {
                Some(now) => self.drop_replaced(hash, purged, now.loc),
                None if self.remove_copies(hash, [purged, None]).lingering => lingering = true,
                None => gone.push(hash.to_be_bytes()),
            }
        }
        self.uncatalog(&gone);
        lingering
    }

    /// Of `listed`, read from the catalog by a scan begun when `before`
    /// purges had been carried out ([`Purging::carried_out`]), the objects
    /// no purge took since: an object purged and still being removed from
    /// disk is gone already, unless filled again since (indexed). A purge
    /// carried out after the scan began may have removed entries the scan
    /// had read, and stopped hiding them before they were checked here: if
    /// one was, each listed object that is not indexed is looked up in the
    /// catalog again. An error is the catalog failing to read. Blocking.
    pub fn unpurged(&self, listed: Vec<Listed>, before: u64) -> Result<Vec<Listed>, StoreError> {
        let kept: Vec<(u128, Listed)> = listed
            .into_iter()
            .map(|object| (hash_of(&object.key), object))
            .filter(|&(hash, _)| !self.purging.hides(hash) || self.index.get(hash).is_some())
            .collect();
        // Read after every object above was checked: a purge that ended
        // meanwhile moved it.
        let raced = self.purging.carried_out() != before;
        let mut cataloged = Vec::with_capacity(kept.len());
        for (hash, object) in kept {
            if !raced
                || self.index.get(hash).is_some()
                || self.catalog.get(&hash.to_be_bytes())?.is_some()
            {
                cataloged.push(object);
            }
        }
        Ok(cataloged)
    }

    /// The purge recorded as `id` is carried out: drop its record, unless
    /// a ring entry of it could be neither marked removed nor recorded on
    /// its own (`lingering`: the record stays, so the next start walks the
    /// ring and removes the entry instead of bringing a purged object
    /// back) or the walk runs (it keeps the record until it is done: see
    /// `crate::recovery`). Blocking.
    fn purge_carried_out(&self, id: PurgeId, lingering: bool) {
        if lingering {
            tracing::warn!(target: "edge_cdn_store", "purge left recorded: ring entries of it could not be marked removed, and the next start removes them");
        } else if !self.recovery.keep_record(id) {
            if let Err(error) = self.catalog.purge_done(id) {
                tracing::warn!(target: "edge_cdn_store", %error, "purge carried out but still recorded; the next start walks the files");
            }
        }
    }

    /// `hash`'s copy at `loc` (`None`: its files) failed its checks, or
    /// was not there: remove the object, so the next lookup is a clean
    /// miss, if the index still places it there. A copy that moved
    /// meanwhile (a refill, a 304's rewrite, a copy forward in the ring) is
    /// not this one's business. Returns whether the object was removed.
    ///
    /// # Cancel safety
    ///
    /// Once begun on the blocking pool, the removal completes whether or
    /// not the caller waits.
    pub async fn discard_at(
        &'static self,
        hash: u128,
        loc: Option<Loc>,
        error: &StoreError,
    ) -> bool {
        let removed = io::blocking(move || {
            let _held = self.hold(hash);
            if self.index.placed(hash).map(|p| p.loc) != Some(loc) {
                return Ok(false);
            }
            self.remove_held(hash, None);
            Ok(true)
        })
        .await
        .unwrap_or(false);
        if removed {
            self.corrupt_removed(hash, error);
        }
        removed
    }

    /// Say that `hash`'s object failed its checks (`error`) and was removed.
    pub fn corrupt_removed(&self, hash: u128, error: &StoreError) {
        tracing::warn!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), %error, "corrupt cache object removed");
        self.observe(StoreEvent::Corrupt);
    }
}
