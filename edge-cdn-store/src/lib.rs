//! A tiered memory + disk storage backend for `pingora-cache`.
//!
//! pingora-cache ships only an in-memory store "for testing". [`TieredStore`]
//! implements the whole `Storage` trait for production use:
//!
//! - **Tiers.** A byte-bounded memory tier for small, hot objects in front of
//!   a byte-bounded disk tier (bounded by the pingora eviction manager the
//!   store provides, [`ClockEviction`]; weight = bytes on disk).
//! - **Safe, recoverable files.** Two files per object named by the key's
//!   128-bit hash, written to a temporary file and renamed; a versioned
//!   header with lengths and checksums on each, and a checksum per 64 KiB
//!   body block. A truncated or corrupted file is detected, removed and
//!   treated as a miss; a restart keeps every object that was committed.
//! - **Serving at once after a restart.** A clean stop saves the index
//!   ([`TieredStore::save_index`]), which the next open takes back: every
//!   object is a hit from the first request. After a `kill -9` the store
//!   opens empty and walks its files in the background, objects turning
//!   from misses into hits as the walk reaches them, purges made meanwhile
//!   applied to what it finds ([`TieredStore::recovered`] waits for it).
//! - **Streaming partial writes.** Requests collapsed behind a miss read the
//!   body as it is written; a writer that gives up is an error to them, not
//!   a clean (truncated) end.
//! - **Never blocks the runtime.** File I/O runs on the blocking pool through
//!   one seam; at most `write_concurrency` objects are written at once (misses
//!   and shared-tier fills alike), and an object beyond that is served but
//!   not stored.
//! - **Cancel safe.** Dropping a store future mid-write removes the
//!   temporary file, releases the write permit and tells the readers
//!   following the write; each async method says what dropping it means.
//! - **A shared tier.** [`SharedTier`] is consulted after a local miss and
//!   written per [`SharedWrites`], bodies streamed in chunks both ways; it
//!   fails open to the origin. With the `redis` feature, [`RedisTier`]
//!   implements it on Redis or Redis Cluster, behind a circuit
//!   [`Breaker`].
//! - **A catalog for purging, on disk.** Each object's primary key bytes
//!   and surrogate tags (from `tag_headers`) are recorded in an embedded
//!   database on the cache disk (not in RAM), kept in its meta file too, and
//!   reconciled with the files after an unclean stop, so [`TieredStore::select`] finds
//!   every Vary variant of a URL, every key under a prefix, or every object
//!   with a tag — the hash-named files alone cannot answer that.
//! - **Its own eviction manager.** [`ClockEviction`] (from
//!   [`TieredStore::eviction`]) is a pingora `EvictionManager` that keeps
//!   its CLOCK counters in the store's index: index and eviction state
//!   cost one 21-byte slot per object (24–30 bytes with the table's free
//!   room), where pingora's `lru::Manager` alone costs over 100.
//! - **A full disk costs caching, never a response.** A write that fails
//!   (no space, a deleted directory) stops storing that object only: its
//!   partial file is removed, the failure counted by [`WriteFailure`], and
//!   the rest of the body reaches every reader following it from memory.
//!   Under `min_free_percent` free, no write begins; storing resumes by
//!   itself when room returns, and a deleted directory is recreated by the
//!   next write.
//! - **Observable.** A [`StoreObserver`] receives every event; Prometheus
//!   and `tracing` implementations are included. [`TieredStore::health`]
//!   says whether the disk is writable and how much room is left.

mod breaker;
mod catalog;
mod commit;
mod config;
mod disk;
mod error;
mod eviction;
mod head;
mod hit;
mod index;
mod io;
mod memory;
mod miss;
mod observer;
mod partial;
mod purging;
mod reclaim;
mod recovery;
#[cfg(feature = "redis")]
mod redis_tier;
mod segments;
mod sharded;
mod shared;
mod snapshot;
mod space;
mod store;
mod tiers;
mod uring;
mod write;

// The unit tests share the integration tests' helpers, which name the
// crate as a dependent does.
#[cfg(test)]
extern crate self as edge_cdn_store;
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_common;

pub use catalog::{tags_in, Listed, Selector, MAX_TAGS, MAX_TAG_LEN};
pub use config::StoreConfig;
pub use error::{StoreError, WriteFailure};
pub use eviction::ClockEviction;
pub use io::{IoEngine, IoEngineChoice};
pub use observer::{
    NoopObserver, PrometheusObserver, StoreEvent, StoreObserver, Tier, TracingObserver,
};
/// Internals exposed for the benchmarks only; not a stable API.
#[doc(hidden)]
pub mod __bench {
    pub use crate::catalog::{open as open_catalog, Catalog, Journal, OwnedSelector, Record};
    pub use crate::index::Index;
    pub use crate::snapshot::{claim as claim_index_dir, save as save_index, take as take_index};

    /// A manager over a bare index, as the store builds one.
    pub fn clock_eviction(
        index: std::sync::Arc<Index>,
        limit: u64,
    ) -> crate::eviction::ClockEviction {
        crate::eviction::ClockEviction::new(index, limit)
    }
}

pub use breaker::{Attempt, Breaker, BreakerState, SharedOp};
pub use recovery::{Recovering, MAX_PURGES};
#[cfg(feature = "redis")]
pub use redis_tier::{RedisConfig, RedisServers, RedisTier, RedisTierError};
pub use shared::{
    stale_horizon, BytesBody, NoSharedTier, SharedBody, SharedError, SharedHit, SharedMeta,
    SharedTier, SharedWrites,
};
pub use space::Space;
pub use store::{Described, Health, TieredStore};
