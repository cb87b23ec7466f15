//! Reading what the cache did for a request, for `Cache-Status`, metrics
//! and the access log. pingora's cache phase says most of it; the request
//! context fills in what the phase cannot (why it missed, why stale was served).

use std::time::SystemTime;

use pingora_cache::{CacheMeta, CachePhase, HttpCache, NoCacheReason};

use super::ctx::RequestCtx;
use crate::cache::status::{CacheStatus, Fwd, STALE_IF_ERROR, STALE_WHILE_REVALIDATE};

/// Remaining freshness in whole seconds; negative once stale.
pub fn remaining_ttl(meta: &CacheMeta, now: SystemTime) -> i64 {
    match meta.fresh_until().duration_since(now) {
        Ok(left) => left.as_secs() as i64,
        Err(past) => -(past.duration().as_secs() as i64),
    }
}

/// A short name for why the cache was not used, for `detail=`.
pub fn reason_detail(reason: NoCacheReason) -> &'static str {
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

/// What the cache did, as far as it is known when the response header goes out.
pub fn cache_status(cache: &HttpCache, ctx: &RequestCtx) -> CacheStatus {
    let now = SystemTime::now();
    let ttl = cache.maybe_cache_meta().map(|m| remaining_ttl(m, now));
    let fwd_status = ctx.upstream_status;
    let stored = matches!(ctx.store_decision, Some(Ok(()))) && cache.enabled();
    let miss = ctx.miss.unwrap_or(if ctx.found_stale {
        Fwd::Stale
    } else {
        Fwd::Miss
    });
    let forwarded = |fwd| CacheStatus {
        fwd: Some(fwd),
        fwd_status,
        ttl,
        stored,
        ..CacheStatus::default()
    };
    match cache.phase() {
        CachePhase::Hit if cache.lock_duration().is_some() => CacheStatus {
            collapsed: true,
            stored: false,
            fwd_status: Some(cache.cache_meta().response_header().status.as_u16()),
            ..forwarded(Fwd::UriMiss)
        },
        CachePhase::Hit => CacheStatus {
            hit: true,
            ttl,
            ..CacheStatus::default()
        },
        CachePhase::StaleUpdating => CacheStatus {
            hit: true,
            ttl,
            detail: Some(STALE_WHILE_REVALIDATE),
            ..CacheStatus::default()
        },
        CachePhase::Stale => CacheStatus {
            fwd_status: ctx.stale_error_status.or(fwd_status),
            detail: Some(STALE_IF_ERROR),
            stored: false,
            ..forwarded(Fwd::Stale)
        },
        CachePhase::Expired => forwarded(Fwd::Stale),
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => CacheStatus {
            fwd_status: Some(304),
            stored: false,
            ..forwarded(Fwd::Stale)
        },
        CachePhase::Miss => forwarded(miss),
        CachePhase::Bypass => CacheStatus {
            detail: Some("predicted-uncacheable"),
            ..forwarded(Fwd::Bypass)
        },
        CachePhase::Disabled(NoCacheReason::NeverEnabled) => CacheStatus {
            fwd: fwd_status.map(|_| Fwd::Bypass),
            fwd_status,
            ..CacheStatus::default()
        },
        CachePhase::Disabled(reason) => CacheStatus {
            detail: Some(reason_detail(reason)),
            ttl: None,
            stored: false,
            ..forwarded(miss)
        },
        CachePhase::Uninit | CachePhase::CacheKey => CacheStatus::default(),
    }
}
