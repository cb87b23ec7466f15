//! The parts of the store that lookups, hits and misses all use: the tiers,
//! the index and catalog, the writes in progress, the write permits, the
//! observer and the configuration — and the few operations that touch
//! several of them at once (admitting a writer, installing a committed
//! object, forgetting one).
//!
//! [`TieredStore`](crate::TieredStore) owns one [`Tiers`]; each hit and
//! miss handler borrows it. None of them imports another, so the handlers
//! depend on this module and not on the store.

use std::sync::Arc;

use pingora_cache::key::{CacheHashKey, CacheKey};
use pingora_cache::CacheMeta;

use crate::catalog::{tags_in, Catalog, Record};
use crate::config::StoreConfig;
use crate::disk::DiskTier;
use crate::error::StoreError;
use crate::index::Index;
use crate::io;
use crate::memory::{MemObject, MemoryTier};
use crate::observer::{StoreEvent, StoreObserver};
use crate::partial::Partials;
use crate::shared::{SharedObject, SharedTier};
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
    /// What is on disk, by key hash.
    pub index: Index,
    /// Primary keys and tags of stored objects, for purging.
    pub catalog: Catalog,
    /// Small, hot objects.
    pub memory: MemoryTier,
    /// Writes in progress, for collapsed readers.
    pub partials: Partials,
    /// Write permits.
    pub writers: Writers,
    /// Where events go.
    pub observer: Arc<dyn StoreObserver>,
    /// The tier shared with other servers, if any.
    pub shared: Arc<dyn SharedTier>,
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

    /// Make a just-committed object of `size` bytes on disk findable: index
    /// it, catalog it, and hold it in memory if `held` (otherwise drop any
    /// older copy memory has). Called on the blocking pool, right after the
    /// commit, so a caller that stops waiting cannot leave a committed
    /// object on disk that nothing knows about.
    pub fn install_committed(
        &self,
        hash: u128,
        size: u64,
        record: Record,
        held: Option<Arc<MemObject>>,
    ) {
        self.index.insert(hash, size);
        self.catalog.insert(record);
        match held {
            Some(object) => {
                self.memory.insert(hash, object);
            }
            None => {
                self.memory.remove(hash);
            }
        }
    }

    /// Copy `object` to the shared tier in the background; a failure is
    /// only counted.
    pub fn share(&'static self, hash: u128, object: &MemObject) {
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

    /// Remove `hash` from every tier; returns whether it was stored.
    ///
    /// # Cancel safety
    ///
    /// The maps are updated before the first await and the files are
    /// removed on the blocking pool whether or not the caller waits.
    pub async fn forget(&'static self, hash: u128) -> bool {
        self.catalog.remove(&hash.to_be_bytes());
        let in_memory = self.memory.remove(hash);
        let in_index = self.index.remove(hash).is_some();
        let on_disk = io::blocking(move || Ok(self.disk.remove(hash)))
            .await
            .unwrap_or(false);
        in_memory || in_index || on_disk
    }

    /// A file failed its checks: remove the object so the next lookup is a
    /// clean miss.
    ///
    /// # Cancel safety
    ///
    /// As [`Tiers::forget`].
    pub async fn discard_corrupt(&'static self, hash: u128, error: &StoreError) {
        tracing::warn!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), %error, "corrupt cache object removed");
        self.observe(StoreEvent::Corrupt);
        self.forget(hash).await;
    }
}
