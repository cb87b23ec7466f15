//! The memory tier: small, hot objects, bounded in bytes by a sharded LRU.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use bytes::Bytes;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;
use pingora_lru::Lru;

use crate::sharded::Sharded;

const SHARDS: usize = 16;

/// Header fields a memory hit parses on its fast path; an object with more
/// takes the slow path (pingora's own decoding), which has no such limit.
const FAST_FIELDS: usize = 64;

/// An object held in memory: pingora's two meta blobs, the response
/// header's fields uncompressed, and the body.
///
/// pingora keeps the response header zstd-compressed in its header blob,
/// and decompressing it on every memory hit was the largest single cost of
/// a hit in the benchmark profile. Keeping the decoded `ResponseHeader`
/// instead cost about 1.4 KB per object (two `HeaderMap`s); keeping the
/// fields in HTTP/1 wire form costs their length, and parsing them with
/// `httparse` per hit, names and values pointing into that buffer, keeps
/// most of the gain (store bench, eight fields: 2.7 µs decoding, 1.0 µs
/// cloning, 1.6 µs parsing). The internal blob is decoded alone
/// (`CacheMeta::from_internal`, a vendored addition): decoding it through
/// `CacheMeta::deserialize` needs a header blob, and even an empty one is a
/// zstd frame to decompress.
pub struct MemObject {
    /// pingora's internal meta blob.
    pub internal: Bytes,
    /// pingora's header meta blob.
    pub header: Bytes,
    /// The body.
    pub body: Bytes,
    status: u16,
    /// The header fields as `name: value\r\n` lines and a final `\r\n`.
    fields: Bytes,
}

impl MemObject {
    /// Hold `body` with its meta blobs; `None` if the blobs do not decode.
    pub fn new(internal: Bytes, header: Bytes, body: Bytes) -> Option<MemObject> {
        let meta = CacheMeta::deserialize(&internal, &header).ok()?;
        Some(MemObject::decoded(internal, header, body, &meta))
    }

    /// Hold `body` with its meta blobs, which the caller has decoded as
    /// `meta` already.
    pub fn decoded(internal: Bytes, header: Bytes, body: Bytes, meta: &CacheMeta) -> MemObject {
        let response = meta.response_header();
        let mut fields = Vec::new();
        response.header_to_h1_wire(&mut fields);
        fields.extend_from_slice(b"\r\n");
        MemObject {
            internal,
            header,
            body,
            status: response.status.as_u16(),
            fields: fields.into(),
        }
    }

    /// This object's meta with `body`: what a write in progress, which
    /// holds its meta decoded with an empty body, keeps in memory once the
    /// body is whole. Nothing is decoded again.
    pub fn with_body(&self, body: Bytes) -> MemObject {
        MemObject {
            internal: self.internal.clone(),
            header: self.header.clone(),
            body,
            status: self.status,
            fields: self.fields.clone(),
        }
    }

    fn weight(&self) -> usize {
        self.internal.len() + self.header.len() + self.fields.len() + self.body.len()
    }

    /// The object's meta, as `CacheMeta::deserialize` of its blobs gives it.
    pub fn meta(&self) -> pingora_error::Result<CacheMeta> {
        match self.response() {
            Some(response) => CacheMeta::from_internal(&self.internal, response),
            None => CacheMeta::deserialize(&self.internal, &self.header),
        }
    }

    /// The response header from the wire-form fields, built as pingora's
    /// header decoding builds it; names and values share the fields' buffer.
    fn response(&self) -> Option<ResponseHeader> {
        let mut storage = [httparse::EMPTY_HEADER; FAST_FIELDS];
        let httparse::Status::Complete((_, fields)) =
            httparse::parse_headers(&self.fields, &mut storage).ok()?
        else {
            return None;
        };
        let mut response = ResponseHeader::build(self.status, Some(fields.len())).ok()?;
        for field in fields {
            let value = pingora_http::header_value_from_raw(self.fields.slice_ref(field.value));
            let name = self.fields.slice_ref(field.name.as_bytes());
            response.append_header(name, value).ok()?;
        }
        Some(response)
    }
}

/// Objects in memory, bounded by total weight.
pub struct MemoryTier {
    objects: Sharded<HashMap<u128, Arc<MemObject>>>,
    lru: Lru<u128, SHARDS>,
}

impl MemoryTier {
    /// A tier holding at most `limit` bytes.
    pub fn new(limit: usize) -> MemoryTier {
        MemoryTier {
            objects: Sharded::new(SHARDS),
            lru: Lru::with_capacity(limit, 1024),
        }
    }

    fn shard(&self, key: u128) -> MutexGuard<'_, HashMap<u128, Arc<MemObject>>> {
        self.objects.lock(key as usize)
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
                self.lru.admit(key as u64, key, object.weight());
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
    use std::time::SystemTime;

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
    fn more_fields_than_the_fast_path_parses_take_the_slow_path() {
        let mut header = ResponseHeader::build(203, None).unwrap();
        for i in 0..FAST_FIELDS + 10 {
            header.append_header(format!("x-field-{i}"), "v").unwrap();
        }
        let now = SystemTime::now();
        let original = CacheMeta::new(now, now, 0, 0, header);
        let (internal, header) = blobs(&original);
        let held = MemObject::new(internal, header, Bytes::new()).unwrap();
        assert!(held.response().is_none());
        let meta = held.meta().unwrap();
        assert_eq!(meta.serialize().unwrap(), original.serialize().unwrap());
        assert_eq!(meta.response_header().status.as_u16(), 203);
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
