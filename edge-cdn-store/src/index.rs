//! What is on disk: a sharded map from key hash to object size.
//!
//! A bucket is the 16-byte hash stored as bytes (a `u128` key would force
//! 16-byte alignment and pad every bucket to 32) and a 4-byte size: 21 bytes
//! with the map's control byte. With the map's power-of-two capacity that is
//! about 44 bytes per object at a million objects (`benches/memory.rs`). Shards keep writers to
//! different keys off each other's locks; a lookup holds one shard's lock
//! for a single probe.

use std::collections::HashMap;
use std::sync::MutexGuard;

use crate::sharded::Sharded;

const SHARDS: usize = 64;

/// Key hash → bytes on disk.
pub struct Index {
    shards: Sharded<HashMap<[u8; 16], u32>>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: Sharded::new(SHARDS),
        }
    }
}

impl Index {
    fn shard(&self, key: u128) -> MutexGuard<'_, HashMap<[u8; 16], u32>> {
        self.shards.lock(key as usize)
    }

    /// The size of `key`'s object, if one is on disk.
    pub fn get(&self, key: u128) -> Option<u64> {
        self.shard(key)
            .get(&key.to_be_bytes())
            .map(|s| u64::from(*s))
    }

    /// Record `key` with `size` bytes (objects are at most 4 GiB: see
    /// `StoreConfig::max_object_size`); returns the size it replaced.
    pub fn insert(&self, key: u128, size: u64) -> Option<u64> {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        self.shard(key)
            .insert(key.to_be_bytes(), size)
            .map(u64::from)
    }

    /// Forget `key`; returns its size if it was there.
    pub fn remove(&self, key: u128) -> Option<u64> {
        self.shard(key).remove(&key.to_be_bytes()).map(u64::from)
    }

    /// Objects and bytes recorded.
    pub fn totals(&self) -> (usize, u64) {
        self.shards.each().fold((0, 0), |(n, b), s| {
            (
                n + s.len(),
                b + s.values().map(|v| u64::from(*v)).sum::<u64>(),
            )
        })
    }

    /// Reserve room for `n` more entries (recovery knows how many it found).
    pub fn reserve(&self, n: usize) {
        for mut shard in self.shards.each() {
            shard.reserve(n / self.shards.count() + 1);
        }
    }
}
