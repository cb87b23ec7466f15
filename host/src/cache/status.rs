//! The `Cache-Status` response field (RFC 9211).
//!
//! One entry per response, for this cache only: `stavka; hit; ttl=42`,
//! `stavka; fwd=uri-miss; fwd-status=200; stored`, and so on. Downstream
//! caches append their own entries after ours.

use pingora_cache::NoCacheReason;

use super::outcome::{Outcome, Source};
use crate::error_kind::ErrorKind;

/// Why the request went forward (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// The cache was configured not to handle this request.
    Bypass,
    /// A response existed for the URI but could not be used (forced miss,
    /// collapsed fill abandoned).
    Miss,
    /// The cache held no response for the URI.
    UriMiss,
    /// The cache held responses for the URI, but none for these Vary values.
    VaryMiss,
    /// The stored response was stale and had to be validated or refetched.
    Stale,
    /// Part of the response was stored (blocks of a sliced object) and the
    /// rest came from the origin.
    Partial,
}

impl Fwd {
    /// The token RFC 9211 gives this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Miss => "miss",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Partial => "partial",
        }
    }
}

/// What this cache did for one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from cache without going forward.
    pub hit: bool,
    /// Went forward, and why.
    pub fwd: Option<Fwd>,
    /// The status the next hop answered (or the error status we produced
    /// when it did not answer at all).
    pub fwd_status: Option<u16>,
    /// Remaining freshness in seconds; negative when stale.
    pub ttl: Option<i64>,
    /// The response was stored.
    pub stored: bool,
    /// The request waited for another request's fetch of the same object.
    pub collapsed: bool,
    /// A short implementation-specific note (RFC 9211 §2.8).
    pub detail: Option<Detail>,
    /// For a sliced object, how many of the blocks the response covers
    /// were stored when it began; written as the detail when there is no
    /// other (`detail=slice-3/5-hit`).
    pub slice: Option<SliceBlocks>,
}

/// Blocks of a sliced object a response covers, and how many were stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceBlocks {
    /// Blocks in the store when the response began.
    pub hit: u64,
    /// Blocks another request was fetching then (a read-ahead, say): they
    /// are followed, not fetched again.
    pub in_flight: u64,
    /// Blocks the response covers.
    pub total: u64,
}

/// The implementation-specific `detail` of RFC 9211 §2.8: why the response
/// is what it is when the other parameters cannot say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// A stale response served while it revalidates in the background (RFC 5861 §3).
    StaleWhileRevalidate,
    /// A stale response served because the origin failed (RFC 5861 §4).
    StaleIfError,
    /// No site serves the request's host.
    UnknownHost,
    /// The site's policy answered with a response of its own.
    PolicyResponse,
    /// pingora's predictor remembered the URI as uncacheable.
    PredictedUncacheable,
    /// The response was not stored, and why.
    NotStored(NoCacheReason),
    /// The request failed.
    Error(ErrorKind),
    /// A plain-HTTP request was sent to HTTPS (the site's `https_redirect`).
    HttpsRedirect,
    /// The client ran into one of `[limits]`.
    Limit(crate::limits::Limit),
    /// The request had already passed through this node (RFC 8586).
    LoopDetected,
    /// A hit on an object a policy prefetched (`prefetch.fetch`).
    Prefetched,
}

impl Detail {
    /// The token written after `detail=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Detail::StaleWhileRevalidate => "stale-while-revalidate",
            Detail::StaleIfError => "stale-if-error",
            Detail::UnknownHost => "unknown-host",
            Detail::PolicyResponse => "policy-response",
            Detail::PredictedUncacheable => "predicted-uncacheable",
            Detail::NotStored(reason) => not_stored_detail(reason),
            Detail::Error(kind) => kind.as_str(),
            Detail::HttpsRedirect => "https-redirect",
            Detail::Limit(limit) => limit.as_str(),
            Detail::LoopDetected => "loop-detected",
            Detail::Prefetched => "prefetched",
        }
    }
}

/// A short name for why the cache was not used.
fn not_stored_detail(reason: NoCacheReason) -> &'static str {
    match reason {
        NoCacheReason::OriginNotCache => "origin-not-cacheable",
        NoCacheReason::ResponseTooLarge | NoCacheReason::PredictedResponseTooLarge => "too-large",
        NoCacheReason::StorageError => "storage-error",
        NoCacheReason::InternalError => "internal-error",
        NoCacheReason::Deferred => "deferred",
        NoCacheReason::UpstreamError => "origin-error",
        NoCacheReason::CacheLockGiveUp => "uncacheable",
        NoCacheReason::CacheLockTimeout => "lock-timeout",
        NoCacheReason::CacheLockRetryLimit => "lock-retries",
        NoCacheReason::Custom(why) => why,
        NoCacheReason::NeverEnabled | NoCacheReason::DeclinedToUpstream => "not-cached",
    }
}

impl CacheStatus {
    /// The low-cardinality outcome used as the `cache_status` metric label
    /// and in the access log.
    pub fn outcome(&self) -> Outcome {
        match (self.hit, self.fwd) {
            _ if self.detail == Some(Detail::UnknownHost) => Outcome::UnknownHost,
            (true, _) if self.detail == Some(Detail::StaleWhileRevalidate) => Outcome::Stale,
            (true, _) => Outcome::Hit,
            (false, Some(_)) if self.detail == Some(Detail::StaleIfError) => Outcome::Stale,
            (false, _) if self.fwd_status.is_some_and(|s| s >= 500) && self.fwd.is_some() => {
                Outcome::Error
            }
            (false, Some(_)) if self.collapsed => Outcome::Collapsed,
            (false, Some(Fwd::Stale)) if self.fwd_status == Some(304) => Outcome::Revalidated,
            (false, Some(Fwd::Stale)) => Outcome::Expired,
            (false, Some(Fwd::Bypass)) => Outcome::Bypass,
            (false, Some(_)) => Outcome::Miss,
            (false, None) => Outcome::Local,
        }
    }

    /// Where the response's body came from.
    pub fn source(&self) -> Source {
        let outcome = self.outcome();
        if self.hit || self.collapsed || matches!(outcome, Outcome::Stale | Outcome::Revalidated) {
            Source::Cache
        } else if self.fwd.is_some() && outcome != Outcome::Error {
            Source::Origin
        } else {
            Source::Local
        }
    }

    /// The field value, prefixed with this cache's name: built with
    /// pushes, not `format!`, since every response carries one.
    pub fn render(&self, cache_name: &str) -> String {
        let mut out = String::with_capacity(cache_name.len() + 64);
        out.push_str(cache_name);
        self.push_params(&mut out);
        out
    }

    /// Everything after the cache name, each parameter preceded by `; `.
    fn push_params(&self, out: &mut String) {
        let mut number = itoa::Buffer::new();
        if self.hit {
            out.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            out.push_str("; fwd=");
            out.push_str(fwd.as_str());
        }
        if let Some(status) = self.fwd_status {
            out.push_str("; fwd-status=");
            out.push_str(number.format(status));
        }
        if let Some(ttl) = self.ttl {
            out.push_str("; ttl=");
            out.push_str(number.format(ttl));
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        match (self.detail, self.slice) {
            (Some(detail), _) => {
                out.push_str("; detail=");
                out.push_str(detail.as_str());
            }
            (None, Some(SliceBlocks { hit, total, .. })) => {
                out.push_str("; detail=slice-");
                out.push_str(number.format(hit));
                out.push('/');
                out.push_str(number.format(total));
                out.push_str("-hit");
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9211_field_values() {
        let hit = CacheStatus {
            hit: true,
            ttl: Some(42),
            ..Default::default()
        };
        assert_eq!(hit.render("stavka"), "stavka; hit; ttl=42");
        assert_eq!(hit.outcome(), Outcome::Hit);
        let miss = CacheStatus {
            fwd: Some(Fwd::UriMiss),
            fwd_status: Some(200),
            ttl: Some(60),
            stored: true,
            ..Default::default()
        };
        assert_eq!(
            miss.render("edge"),
            "edge; fwd=uri-miss; fwd-status=200; ttl=60; stored"
        );
        assert_eq!(miss.outcome(), Outcome::Miss);
        let sie = CacheStatus {
            fwd: Some(Fwd::Stale),
            fwd_status: Some(503),
            ttl: Some(-3),
            detail: Some(Detail::StaleIfError),
            ..Default::default()
        };
        assert_eq!(
            sie.render("stavka"),
            "stavka; fwd=stale; fwd-status=503; ttl=-3; detail=stale-if-error"
        );
        assert_eq!(sie.outcome(), Outcome::Stale);
        let reval = CacheStatus {
            fwd: Some(Fwd::Stale),
            fwd_status: Some(304),
            ..Default::default()
        };
        assert_eq!(reval.outcome(), Outcome::Revalidated);
        let sliced = CacheStatus {
            fwd: Some(Fwd::Partial),
            fwd_status: Some(206),
            collapsed: true,
            slice: Some(SliceBlocks {
                hit: 3,
                in_flight: 1,
                total: 5,
            }),
            ..Default::default()
        };
        assert_eq!(
            sliced.render("stavka"),
            "stavka; fwd=partial; fwd-status=206; collapsed; detail=slice-3/5-hit"
        );
        assert_eq!(CacheStatus::default().render("stavka"), "stavka");
    }
}
