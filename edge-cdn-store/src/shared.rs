//! The seam for a tier shared by the servers of a point of presence.
//!
//! After a local miss the store asks the shared tier, for at most
//! `shared_timeout`; a hit there is stored locally and served. Writes go to
//! it per [`SharedWrites`]. The semantics:
//!
//! - **The local store is authoritative** for what it holds: the shared tier
//!   is consulted only on a local miss, and never overrides a local object.
//! - **Fail open.** A shared tier that errors or is slower than the timeout
//!   is a miss: the request goes to the origin. Writes to it run in the
//!   background and their failures are only counted.
//! - **Invalidation reaches it, eviction does not.** Purging an object on
//!   purpose deletes it from the shared tier too; evicting it locally for
//!   space does not, since the other servers may still want it.
//! - **Small objects only.** It carries whole objects in memory, so only
//!   objects up to `memory_max_object` are written to it.

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

/// An object as the shared tier holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedObject {
    /// pingora's internal meta blob.
    pub internal: Bytes,
    /// pingora's header meta blob.
    pub header: Bytes,
    /// The whole body.
    pub body: Bytes,
}

/// A shared tier failed; the store fails open.
#[derive(Debug, thiserror::Error)]
#[error("shared tier: {0}")]
pub struct SharedError(pub String);

/// A tier shared by several stores (a PoP-wide cache). Keys are the
/// 128-bit cache key hashes.
#[async_trait]
pub trait SharedTier: Send + Sync {
    /// The object for `hash`, if the tier has it.
    async fn get(&self, hash: u128) -> Result<Option<SharedObject>, SharedError>;
    /// Store `object` under `hash`.
    async fn put(&self, hash: u128, object: SharedObject) -> Result<(), SharedError>;
    /// Delete `hash` (an invalidation reached this server).
    async fn delete(&self, hash: u128) -> Result<(), SharedError>;
    /// Whether this tier exists at all; the store skips every call when not.
    fn enabled(&self) -> bool {
        true
    }
}

/// No shared tier: the default.
pub struct NoSharedTier;

#[async_trait]
impl SharedTier for NoSharedTier {
    async fn get(&self, _hash: u128) -> Result<Option<SharedObject>, SharedError> {
        Ok(None)
    }
    async fn put(&self, _hash: u128, _object: SharedObject) -> Result<(), SharedError> {
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
    /// Every object small enough, when it is committed locally.
    #[default]
    WriteThrough,
    /// Only objects read again locally (promoted to memory): the hot ones.
    OnPromotion,
}
