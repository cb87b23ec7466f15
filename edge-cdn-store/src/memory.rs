//! The memory tier: small, hot objects, bounded in bytes by a sharded LRU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pingora_lru::Lru;

const SHARDS: usize = 16;

/// An object held in memory: pingora's two meta blobs and the body.
pub struct MemObject {
    /// pingora's internal meta blob.
    pub internal: Bytes,
    /// pingora's header meta blob.
    pub header: Bytes,
    /// The body.
    pub body: Bytes,
}

impl MemObject {
    fn weight(&self) -> usize {
        self.internal.len() + self.header.len() + self.body.len()
    }
}

/// Objects in memory, bounded by total weight.
pub struct MemoryTier {
    objects: Vec<Mutex<HashMap<u128, Arc<MemObject>>>>,
    lru: Lru<u128, SHARDS>,
}

impl MemoryTier {
    /// A tier holding at most `limit` bytes.
    pub fn new(limit: usize) -> MemoryTier {
        MemoryTier {
            objects: (0..SHARDS).map(|_| Mutex::default()).collect(),
            lru: Lru::with_capacity(limit, 1024),
        }
    }

    fn shard(&self, key: u128) -> std::sync::MutexGuard<'_, HashMap<u128, Arc<MemObject>>> {
        self.objects[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The object for `key`, marking it recently used.
    pub fn get(&self, key: u128) -> Option<Arc<MemObject>> {
        let found = self.shard(key).get(&key).cloned();
        if found.is_some() {
            self.lru.promote(key as u64);
        }
        found
    }

    /// Keep `object` under `key`; returns how many objects this evicted.
    pub fn insert(&self, key: u128, object: Arc<MemObject>) -> usize {
        let weight = object.weight();
        self.shard(key).insert(key, object);
        self.lru.admit(key as u64, key, weight);
        let evicted = self.lru.evict_to_limit();
        for (victim, _) in &evicted {
            self.shard(*victim).remove(victim);
        }
        evicted.len()
    }

    /// Replace the meta of `key`'s object, if it is in memory.
    pub fn update_meta(&self, key: u128, internal: Bytes, header: Bytes) {
        let mut shard = self.shard(key);
        if let Some(old) = shard.get(&key) {
            let body = old.body.clone();
            shard.insert(
                key,
                Arc::new(MemObject {
                    internal,
                    header,
                    body,
                }),
            );
        }
    }

    /// Drop `key`; returns whether it was held.
    pub fn remove(&self, key: u128) -> bool {
        self.lru.remove(key as u64);
        self.shard(key).remove(&key).is_some()
    }

    /// Objects and bytes held.
    pub fn totals(&self) -> (usize, usize) {
        (self.lru.len(), self.lru.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(n: usize) -> Arc<MemObject> {
        Arc::new(MemObject {
            internal: Bytes::new(),
            header: Bytes::new(),
            body: Bytes::from(vec![0u8; n]),
        })
    }

    #[test]
    fn bounded_by_bytes() {
        let tier = MemoryTier::new(10_000);
        for k in 0..100u128 {
            tier.insert(k, object(1000));
        }
        let (n, bytes) = tier.totals();
        assert!(bytes <= 10_000, "{bytes}");
        assert!(n <= 10);
        let held = (0..100u128).filter(|k| tier.get(*k).is_some()).count();
        assert_eq!(held, n, "the map and the LRU agree");
    }
}
