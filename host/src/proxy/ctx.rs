//! Per-request state carried between pingora's phases.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pingora_cache::NoCacheReason;

use super::decisions::PolicyDecisions;
use crate::cache::status::{CacheStatus, Fwd};
use crate::pool::{Picked, Pool};
use crate::shutdown::InFlightGuard;
use crate::sites::Site;

/// What one request has learned so far. Created empty by `new_ctx`.
pub struct RequestCtx {
    /// When the request arrived.
    pub started: Instant,
    /// The request's host, normalised once (see [`crate::host_name`]) for
    /// routing, the cache key, invalidation and the access log; `None` when
    /// the request named none.
    pub host: Option<String>,
    /// The site its Host routed to; `None` until `request_filter` ran, and
    /// for requests answered locally because no site matched.
    pub site: Option<Arc<Site>>,
    /// When the request went to the origin (wall clock for RFC 9111 age
    /// arithmetic, monotonic for latency).
    pub sent_upstream: Option<(SystemTime, Instant)>,
    /// Time to the origin's response header.
    pub origin_ttfb: Option<Duration>,
    /// The origin's response status.
    pub upstream_status: Option<u16>,
    /// The origin's `Age`, to pass on when the response is forwarded.
    pub origin_age: Option<http::HeaderValue>,
    /// RFC 9111 §4.2.3 corrected initial age of the origin's response.
    pub initial_age: Duration,
    /// The header fields of the origin's 304, to merge into the stored
    /// response when it is refreshed.
    pub not_modified: Option<http::HeaderMap>,
    /// Set by `cache_miss`: why this request is the one going forward.
    pub miss: Option<Fwd>,
    /// Set by the hit filter: an entry was found and it was stale.
    pub found_stale: bool,
    /// The storage decision for the origin's response.
    pub store_decision: Option<Result<(), NoCacheReason>>,
    /// The status that made us serve stale-if-error (RFC 5861 §4).
    pub stale_error_status: Option<u16>,
    /// What the response said in `Cache-Status`, kept for the access log.
    pub cache_status: Option<CacheStatus>,
    /// The site's policy module and what it decided, when the site has one.
    pub policy: Option<PolicyDecisions>,
    /// What the slice engine had to do with this request.
    pub slice: SliceRole,
    /// Stores the blocks of an adopted response as its body passes.
    pub tee: Option<crate::slice::Tee>,
    /// Request body bytes received so far, against `limits.max_body_bytes`.
    pub request_body_bytes: u64,
    /// The client's address: the connection's, or what a trusted edge
    /// said in `tier.client_header`.
    pub client: Option<IpAddr>,
    /// The pool member this request went to last, and its pool.
    pub upstream: Option<(Arc<Pool>, Picked)>,
    /// The members this request tried, in order: a request that cannot
    /// connect to one tries one it has not tried.
    pub tried: Vec<SocketAddr>,
    /// How deep a prefetch this request is, when this process sent it
    /// (see [`crate::prefetch`]); `None` for a client's request.
    pub prefetch_depth: Option<u8>,
    /// Counts this request as in flight until the context is dropped.
    _in_flight: InFlightGuard,
}

/// What the slice engine had to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceRole {
    /// Nothing.
    None,
    /// It served the request from blocks; pingora's cache was not used.
    Served,
    /// The origin's whole response was too large to store whole and became
    /// a sliced object: later requests are served from blocks.
    Adopted,
}

impl RequestCtx {
    /// A context for a request that just arrived.
    pub fn new(in_flight: InFlightGuard) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            host: None,
            site: None,
            sent_upstream: None,
            origin_ttfb: None,
            upstream_status: None,
            origin_age: None,
            initial_age: Duration::ZERO,
            not_modified: None,
            miss: None,
            found_stale: false,
            store_decision: None,
            stale_error_status: None,
            cache_status: None,
            policy: None,
            slice: SliceRole::None,
            tee: None,
            _in_flight: in_flight,
            request_body_bytes: 0,
            client: None,
            upstream: None,
            tried: Vec::new(),
            prefetch_depth: None,
        }
    }
}
