//! The `Cache-Status` response field (RFC 9211).
//!
//! One entry per response, for this cache only: `stavka; hit; ttl=42`,
//! `stavka; fwd=uri-miss; fwd-status=200; stored`, and so on. Downstream
//! caches append their own entries after ours.

use std::fmt;

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
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// The low-cardinality outcome used as the `cache_status` metric label
    /// and in the access log.
    pub fn outcome(&self) -> &'static str {
        match (self.hit, self.fwd) {
            (true, _) if self.detail == Some(STALE_WHILE_REVALIDATE) => "stale",
            (true, _) => "hit",
            (false, Some(_)) if self.detail == Some(STALE_IF_ERROR) => "stale",
            (false, _) if self.fwd_status.is_some_and(|s| s >= 500) && self.fwd.is_some() => {
                "error"
            }
            (false, Some(_)) if self.collapsed => "collapsed",
            (false, Some(Fwd::Stale)) if self.fwd_status == Some(304) => "revalidated",
            (false, Some(Fwd::Stale)) => "expired",
            (false, Some(Fwd::Bypass)) => "bypass",
            (false, Some(_)) => "miss",
            (false, None) => "local",
        }
    }

    /// The field value, prefixed with this cache's name.
    pub fn render(&self, cache_name: &str) -> String {
        format!("{cache_name}{self}")
    }
}

/// `detail` when a stale response is served while it revalidates in the background.
pub const STALE_WHILE_REVALIDATE: &str = "stale-while-revalidate";
/// `detail` when a stale response is served because the origin failed.
pub const STALE_IF_ERROR: &str = "stale-if-error";

impl fmt::Display for CacheStatus {
    /// Everything after the cache name, each parameter preceded by `; `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hit {
            f.write_str("; hit")?;
        }
        if let Some(fwd) = self.fwd {
            write!(f, "; fwd={}", fwd.as_str())?;
        }
        if let Some(status) = self.fwd_status {
            write!(f, "; fwd-status={status}")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={ttl}")?;
        }
        if self.stored {
            f.write_str("; stored")?;
        }
        if self.collapsed {
            f.write_str("; collapsed")?;
        }
        if let Some(detail) = self.detail {
            write!(f, "; detail={detail}")?;
        }
        Ok(())
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
        assert_eq!(hit.outcome(), "hit");
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
        assert_eq!(miss.outcome(), "miss");
        let sie = CacheStatus {
            fwd: Some(Fwd::Stale),
            fwd_status: Some(503),
            ttl: Some(-3),
            detail: Some(STALE_IF_ERROR),
            ..Default::default()
        };
        assert_eq!(
            sie.render("stavka"),
            "stavka; fwd=stale; fwd-status=503; ttl=-3; detail=stale-if-error"
        );
        assert_eq!(sie.outcome(), "stale");
        let reval = CacheStatus {
            fwd: Some(Fwd::Stale),
            fwd_status: Some(304),
            ..Default::default()
        };
        assert_eq!(reval.outcome(), "revalidated");
        assert_eq!(CacheStatus::default().render("stavka"), "stavka");
    }
}
