//! Large objects as fixed-size blocks.
//!
//! A sliced object is stored as a record (its identity — validator,
//! length, block size — its response header and its freshness) and blocks,
//! each its own store entry keyed by the object's key and the block's
//! index (see [`crate::cache::key::slice_block`]), so eviction works per
//! block and a range request fetches only the blocks it covers. Requests
//! reach the engine from the proxy's `request_filter` ([`Engine::takes`]):
//! any request for an object with a record, and range requests for objects
//! not stored whole. pingora's own cache is not involved: it has no notion
//! of part of an object.

mod ahead;
mod flights;
mod identity;
mod origin;
pub mod range;
mod serve;
mod tee;

use std::sync::Arc;

use http::{header, Method};
use pingora_core::connectors::http::Connector;
use pingora_http::{RequestHeader, ResponseHeader};

pub use origin::Upstream;
pub use serve::Target;
pub use tee::Tee;

use crate::cache::freshness::FreshnessRules;
use crate::cache::key;
use crate::cache::store::CacheStore;
use crate::config;
use crate::metrics::Metrics;
use flights::Flights;

/// A site's policy, where it decides whether and how an origin response is
/// stored: the slice engine consults it as pingora's path does.
#[async_trait::async_trait]
pub trait Judge: Send {
    /// Show the policy the origin's response, once per request; its header
    /// edits are applied to `resp`.
    async fn consult(&mut self, resp: &mut ResponseHeader) -> pingora_error::Result<()>;

    /// Its decision for `resp` (the header as it will be stored), or
    /// `None` to leave it to HTTP caching.
    fn verdict(
        &self,
        resp: &ResponseHeader,
        now: std::time::SystemTime,
    ) -> Option<pingora_cache::RespCacheable>;
}

/// Serves sliced objects: one per proxy.
pub struct Engine {
    store: &'static CacheStore,
    connector: Connector,
    flights: &'static Flights,
    unread: ahead::Unread,
    /// The configured block size and read-ahead.
    defaults: Settings,
    threshold: u64,
    rules: FreshnessRules,
    cache_name: String,
    metrics: Arc<Metrics>,
}

impl Engine {
    /// An engine for `settings`, storing in `store`.
    pub fn new(
        settings: &config::Slice,
        store: &'static CacheStore,
        rules: FreshnessRules,
        cache_name: String,
        metrics: Arc<Metrics>,
    ) -> Engine {
        Engine {
            store,
            connector: Connector::new(None),
            flights: Box::leak(Box::default()),
            unread: ahead::Unread::default(),
            defaults: Settings {
                block: settings.block_size.as_u64(),
                read_ahead: settings.read_ahead,
            },
            threshold: settings.threshold.as_u64(),
            rules,
            cache_name,
            metrics,
        }
    }

    /// Whether `req` for the object whose primary key is `primary` is
    /// served from blocks: a `GET` or `HEAD` of an object with a record,
    /// or a `GET` with `Range` of an object not stored whole. One or two
    /// index probes, no I/O.
    pub fn takes(&self, req: &RequestHeader, object: &ObjectKey) -> bool {
        if !matches!(req.method, Method::GET | Method::HEAD) {
            return false;
        }
        if self.store.holds(&object.record()) {
            return true;
        }
        let whole = pingora_cache::CacheKey::new(object.primary.clone(), object.site.as_str());
        req.method == Method::GET
            && req.headers.contains_key(header::RANGE)
            && !self.store.holds(&whole)
    }

    /// The configured block size and read-ahead, for a request its policy
    /// does not change them for.
    pub fn defaults(&self) -> Settings {
        self.defaults
    }

    /// Settings a policy asked for: a block of `block_kib` KiB and
    /// `read_ahead` blocks, each within the bounds `[slice]` has (and the
    /// configured value where it gave none).
    pub fn settings(&self, block_kib: Option<u32>, read_ahead: Option<u32>) -> Settings {
        let (min, max) = (
            config::slice::MIN_BLOCK.as_u64(),
            config::slice::MAX_BLOCK.as_u64(),
        );
        Settings {
            block: block_kib.map_or(self.defaults.block, |k| {
                (u64::from(k) * 1024).clamp(min, max)
            }),
            read_ahead: read_ahead.map_or(self.defaults.read_ahead, |n| {
                n.min(config::slice::MAX_READ_AHEAD)
            }),
        }
    }

    /// Whether a whole response is too large to be stored whole: it goes
    /// to its client uncached, and [`Engine::adopt`] makes later requests
    /// for it come here.
    pub fn too_large(&self, resp: &ResponseHeader) -> bool {
        resp.status == http::StatusCode::OK
            && resp
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|len| len > self.threshold)
    }
}

/// How one request's object is sliced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Block size in bytes (for an object not yet sliced; a sliced one
    /// keeps its own).
    pub block: u64,
    /// Blocks fetched past the end of the request's range.
    pub read_ahead: u32,
}

/// The cache keys of one sliced object.
#[derive(Debug, Clone)]
pub struct ObjectKey {
    /// The object's primary cache key bytes.
    pub primary: Vec<u8>,
    /// Its site's name: the keys' namespace.
    pub site: String,
}

impl ObjectKey {
    /// The key of its record.
    fn record(&self) -> pingora_cache::CacheKey {
        key::slice_identity(&self.primary, &self.site)
    }

    /// The key of block `index`.
    fn block(&self, index: u64) -> pingora_cache::CacheKey {
        key::slice_block(&self.primary, &self.site, index)
    }
}
