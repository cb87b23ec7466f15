//! The memory tier: small, hot objects, bounded in bytes by a sharded LRU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;
use pingora_lru::Lru;

const SHARDS: usize = 16;

/// What one decoded header field costs beyond its name and value: its
/// `HeaderMap` entry and index slot and its case-map entry.
const FIELD_OVERHEAD: usize = 64;

/// An object held in memory: pingora's two meta blobs, the response header
/// already decoded, and the body.
///
/// pingora keeps the response header zstd-compressed in its header blob;
/// decoding it on every memory hit was the largest single cost of a hit in
/// the benchmark profile, so it is decoded once, when the object enters
/// memory, and cloned per hit.
pub struct MemObject {
    /// pingora's internal meta blob.
    pub internal: Bytes,
    /// pingora's header meta blob.
    pub header: Bytes,
    /// The body.
    pub body: Bytes,
    response: ResponseHeader,
    weight: usize,
}

/// The header blob of an empty response: decoding it is a raw zstd block,
/// nearly free, and the real header replaces it.
fn empty_header_blob() -> &'static [u8] {
    static BLOB: OnceLock<Vec<u8>> = OnceLock::new();
    BLOB.get_or_init(|| {
        let header = ResponseHeader::build(200, Some(0)).expect("a bare 200 builds");
        CacheMeta::new(SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH, 0, 0, header)
            .serialize()
            .expect("a bare 200 serializes")
            .1
    })
}

impl MemObject {
    /// Hold `body` with its meta blobs; `None` if the blobs do not decode.
    pub fn new(internal: Bytes, header: Bytes, body: Bytes) -> Option<MemObject> {
        let response = CacheMeta::deserialize(&internal, &header)
            .ok()?
            .response_header_copy();
        let decoded: usize = response
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + FIELD_OVERHEAD)
            .sum();
        let weight = internal.len() + header.len() + body.len() + decoded;
        Some(MemObject {
            internal,
            header,
            body,
            response,
            weight,
        })
    }

    /// The object's meta, as `CacheMeta::deserialize` of its blobs would
    /// give it, without decompressing the header.
    pub fn meta(&self) -> pingora_error::Result<CacheMeta> {
        let mut meta = CacheMeta::deserialize(&self.internal, empty_header_blob())?;
        *meta.response_header_mut() = self.response.clone();
        Ok(meta)
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
        let weight = object.weight;
        self.shard(key).insert(key, object);
        self.lru.admit(key as u64, key, weight);
        self.evict()
    }

    /// Evict down to the byte bound; returns how many objects went.
    fn evict(&self) -> usize {
        let evicted = self.lru.evict_to_limit();
        for (victim, _) in &evicted {
            self.shard(*victim).remove(victim);
        }
        evicted.len()
    }

    /// Replace the meta of `key`'s object, if it is in memory (a meta that
    /// does not decode drops the object instead). The check and the
    /// replacement hold the shard, so a concurrent removal is not undone.
    pub fn update_meta(&self, key: u128, internal: Bytes, header: Bytes) {
        let mut shard = self.shard(key);
        let Some(body) = shard.get(&key).map(|old| old.body.clone()) else {
            return;
        };
        match MemObject::new(internal, header, body) {
            Some(object) => {
                self.lru.admit(key as u64, key, object.weight);
                shard.insert(key, Arc::new(object));
            }
            None => {
                shard.remove(&key);
                self.lru.remove(key as u64);
            }
        }
        drop(shard);
        self.evict();
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

    fn blobs(meta: &CacheMeta) -> (Bytes, Bytes) {
        let (internal, header) = meta.serialize().unwrap();
        (internal.into(), header.into())
    }

    fn meta() -> CacheMeta {
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.append_header("Content-Type", "text/plain").unwrap();
        header.append_header("x-Mixed-Case", "kept").unwrap();
        let now = SystemTime::now();
        let mut meta = CacheMeta::new(now + std::time::Duration::from_secs(60), now, 5, 7, header);
        meta.set_variance([7u8; 16]);
        meta.set_epoch_override(now - std::time::Duration::from_secs(3));
        meta
    }

    fn object(n: usize) -> Arc<MemObject> {
        let (internal, header) = blobs(&meta());
        Arc::new(MemObject::new(internal, header, Bytes::from(vec![0u8; n])).unwrap())
    }

    #[test]
    fn meta_without_decompressing_equals_decoded_meta() {
        let original = meta();
        let (internal, header) = blobs(&original);
        let held = MemObject::new(internal.clone(), header.clone(), Bytes::new()).unwrap();
        let fast = held.meta().unwrap();
        let slow = CacheMeta::deserialize(&internal, &header).unwrap();
        assert_eq!(fast.serialize().unwrap(), slow.serialize().unwrap());
        assert_eq!(fast.variance(), Some([7u8; 16]));
        assert_eq!(fast.epoch_override(), original.epoch_override());
        assert_eq!(fast.updated(), original.updated());
        assert_eq!(fast.stale_if_error_sec(), 7);
        let mut wire = Vec::new();
        fast.response_header().header_to_h1_wire(&mut wire);
        assert!(String::from_utf8_lossy(&wire).contains("x-Mixed-Case: kept"));
    }

    #[test]
    fn undecodable_blobs_are_not_held() {
        assert!(MemObject::new(Bytes::from_static(b"junk"), Bytes::new(), Bytes::new()).is_none());
        let tier = MemoryTier::new(10_000);
        tier.insert(1, object(10));
        tier.update_meta(1, Bytes::from_static(b"junk"), Bytes::new());
        assert!(tier.get(1).is_none());
        assert_eq!(tier.totals(), (0, 0));
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
