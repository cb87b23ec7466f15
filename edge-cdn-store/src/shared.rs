//! The seam for a tier shared by the servers of a point of presence.
//!
//! After a local miss the store asks the shared tier, for at most
//! `shared_timeout`; a hit there streams to the client while it is stored
//! locally. Writes go to it per [`SharedWrites`]. The semantics:
//!
//! - **The local store is authoritative** for what it holds: the shared tier
//!   is consulted only on a local miss, and never overrides a local object.
//! - **Fail open.** A shared tier that errors or is slower than the timeout
//!   for its first answer (the object's meta, and whether its body is whole)
//!   is a miss: the request goes to the origin. Writes to it run in the
//!   background and their failures are only counted.
//! - **Invalidation reaches it, eviction does not.** Purging an object on
//!   purpose deletes it from the shared tier too; evicting it locally for
//!   space does not, since the other servers may still want it.
//! - **Streamed both ways.** A body goes to the tier and comes back from it
//!   as a [`SharedBody`], a chunk at a time, so an object up to
//!   `shared_max_object` never sits whole in memory on either side. A body
//!   that cannot be read whole is an error, never a clean short end: before
//!   the first byte the lookup is a miss, after it the response fails.
//! - **Expiry.** Each put carries the object's stale horizon (see
//!   [`stale_horizon`]); the tier may keep it no longer than that.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::CacheMeta;
use serde::Deserialize;

/// An object's metadata as the shared tier holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMeta {
    /// pingora's internal meta blob.
    pub internal: Bytes,
    /// The response header in either stored form (`crate::head`): a head,
    /// or pingora's blob as earlier versions shared it.
    pub header: Bytes,
    /// The body's length in bytes: a body that ends before or after it is
    /// an error.
    pub body_len: u64,
}

/// A body read a chunk at a time: from the shared tier on a hit, or from
/// the local store on a put.
#[async_trait]
pub trait SharedBody: Send + Sync {
    /// The next chunk of the body; `None` at its end. An implementation
    /// bounds each call in time and returns an error rather than a short
    /// body.
    ///
    /// # Cancel safety
    ///
    /// Not resumable: a call dropped before it completes may have consumed
    /// a chunk, so the body must then be dropped too (the store never
    /// resumes one).
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SharedError>;
}

/// An object found in the shared tier: its meta, and its body to stream.
pub struct SharedHit {
    /// The object's meta blobs and body length.
    pub meta: SharedMeta,
    /// The body, read as it is sent on.
    pub body: Box<dyn SharedBody>,
}

/// A body held in memory, handed out in chunks of at most `chunk` bytes
/// (slices of it, not copies).
pub struct BytesBody {
    data: Bytes,
    chunk: usize,
}

impl BytesBody {
    /// Hand out `data` in chunks of at most `chunk` bytes (at least one).
    pub fn new(data: Bytes, chunk: usize) -> BytesBody {
        BytesBody {
            data,
            chunk: chunk.max(1),
        }
    }
}

#[async_trait]
impl SharedBody for BytesBody {
    /// # Cancel safety
    ///
    /// Cancel safe: it never waits.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SharedError> {
        if self.data.is_empty() {
            return Ok(None);
        }
        let len = self.chunk.min(self.data.len());
        Ok(Some(self.data.split_to(len)))
    }
}

/// A shared tier failed; the store fails open.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The tier could not be reached or refused the command.
    #[error("shared tier unavailable: {0}")]
    Unavailable(String),
    /// The tier did not answer within its timeout.
    #[error("shared tier timed out")]
    Timeout,
    /// Recent calls failed, so this one was not attempted (see
    /// [`Breaker`](crate::Breaker)).
    #[error("shared tier circuit breaker is open")]
    BreakerOpen,
    /// The object is not whole: a chunk is missing (evicted, or replaced
    /// by a newer write) or has the wrong length.
    #[error("shared object incomplete: {0}")]
    Incomplete(String),
    /// The body being written to the tier could not be read locally.
    #[error("local body unreadable: {0}")]
    Source(String),
}

/// A tier shared by several stores (a PoP-wide cache). Keys are the
/// 128-bit cache key hashes.
#[async_trait]
pub trait SharedTier: Send + Sync {
    /// The object for `hash`, if the tier has it whole: its meta, and a body
    /// to stream. A tier that can tell a body is incomplete before the first
    /// chunk answers `None`, so the lookup is a clean miss.
    ///
    /// # Cancel safety
    ///
    /// The store drops the call at `shared_timeout`; an implementation must
    /// leave nothing behind but counters.
    async fn get(&self, hash: u128) -> Result<Option<SharedHit>, SharedError>;

    /// Store an object under `hash`: `meta`, then `body` read to its end
    /// (exactly `meta.body_len` bytes, or the put fails). The tier keeps it
    /// at most `ttl` (the object's stale horizon), and never lets a reader
    /// see it before it is whole: an older object stays readable until
    /// this one replaces it.
    ///
    /// # Cancel safety
    ///
    /// A put dropped midway publishes nothing; what it wrote expires.
    async fn put(
        &self,
        hash: u128,
        meta: SharedMeta,
        ttl: Duration,
        body: Box<dyn SharedBody>,
    ) -> Result<(), SharedError>;

    /// Delete `hash` (an invalidation reached this server).
    ///
    /// # Cancel safety
    ///
    /// Dropped, the object may or may not be deleted.
    async fn delete(&self, hash: u128) -> Result<(), SharedError>;

    /// Whether this tier exists at all; the store skips every call when not.
    fn enabled(&self) -> bool {
        true
    }

    /// Why the tier is not being asked right now (its circuit breaker is
    /// open), for readiness reports; `None` when it is in use.
    fn degraded(&self) -> Option<String> {
        None
    }
}

/// No shared tier: the default.
pub struct NoSharedTier;

#[async_trait]
impl SharedTier for NoSharedTier {
    async fn get(&self, _hash: u128) -> Result<Option<SharedHit>, SharedError> {
        Ok(None)
    }
    async fn put(
        &self,
        _hash: u128,
        _meta: SharedMeta,
        _ttl: Duration,
        _body: Box<dyn SharedBody>,
    ) -> Result<(), SharedError> {
        Ok(())
    }
    async fn delete(&self, _hash: u128) -> Result<(), SharedError> {
        Ok(())
    }
    fn enabled(&self) -> bool {
        false
    }
}

/// When objects are written to the shared tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharedWrites {
    /// Every object up to `shared_max_object`, when it is committed locally.
    #[default]
    WriteThrough,
    /// Only objects read again locally (a disk hit: promoted to memory, or
    /// streamed from disk): the hot ones.
    OnPromotion,
}

/// How long after `now` an object with `meta` may still be served at all:
/// fresh, then stale while revalidating or on error, whichever window is
/// longer. `None` when that time has passed: such an object is not worth
/// sharing.
pub fn stale_horizon(meta: &CacheMeta, now: SystemTime) -> Option<Duration> {
    let stale = meta
        .stale_while_revalidate_sec()
        .max(meta.stale_if_error_sec());
    let until = meta.fresh_until() + Duration::from_secs(stale.into());
    until.duration_since(now).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::ResponseHeader;

    #[tokio::test]
    async fn bytes_body_hands_out_bounded_slices() {
        let mut body = BytesBody::new(Bytes::from_static(b"abcdefg"), 3);
        let mut chunks = Vec::new();
        while let Some(chunk) = body.next_chunk().await.unwrap() {
            chunks.push(chunk);
        }
        assert_eq!(chunks, [&b"abc"[..], b"def", b"g"]);
    }

    #[test]
    fn the_stale_horizon_is_freshness_plus_the_longer_stale_window() {
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 30, 90, header.clone());
        let ttl = stale_horizon(&meta, now).unwrap();
        assert!(ttl > Duration::from_secs(149) && ttl <= Duration::from_secs(150));
        let gone = CacheMeta::new(now - Duration::from_secs(60), now, 10, 0, header);
        assert_eq!(stale_horizon(&gone, now), None);
    }
}
