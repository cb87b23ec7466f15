//! What is on disk: a sharded map from key hash to object size.
//!
//! One entry costs the 16-byte hash, an 8-byte size and the map's own
//! overhead — about 30 bytes at the map's usual load — so a million objects
//! on disk cost tens of megabytes, not hundreds. Shards keep writers to
//! different keys off each other's locks; a lookup holds one shard's lock
//! for a single probe.

use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 64;

/// Key hash → bytes on disk.
pub struct Index {
    shards: Vec<Mutex<HashMap<u128, u64>>>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Index {
    fn shard(&self, key: u128) -> std::sync::MutexGuard<'_, HashMap<u128, u64>> {
        self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The size of `key`'s object, if one is on disk.
    pub fn get(&self, key: u128) -> Option<u64> {
        self.shard(key).get(&key).copied()
    }

    /// Record `key` with `size` bytes; returns the size it replaced.
    pub fn insert(&self, key: u128, size: u64) -> Option<u64> {
        self.shard(key).insert(key, size)
    }

    /// Forget `key`; returns its size if it was there.
    pub fn remove(&self, key: u128) -> Option<u64> {
        self.shard(key).remove(&key)
    }

    /// Objects and bytes recorded.
    pub fn totals(&self) -> (usize, u64) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            (n + s.len(), b + s.values().sum::<u64>())
        })
    }

    /// Reserve room for `n` more entries (recovery knows how many it found).
    pub fn reserve(&self, n: usize) {
        for s in &self.shards {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(n / SHARDS + 1);
        }
    }
}
