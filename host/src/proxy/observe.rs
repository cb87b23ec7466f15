//! Reading what the cache did for a request, and recording it: `Cache-Status`,
//! metrics and the access log. pingora's cache phase says most of it; the
//! request context fills in what the phase cannot (why it missed, why stale
//! was served).

use std::sync::Arc;
use std::time::SystemTime;

use pingora_cache::{CachePhase, HttpCache, NoCacheReason};
use pingora_error::Error;
use pingora_proxy::Session;

use super::ctx::{RequestCtx, SliceRole};
use crate::access_log::{AccessLog, Entry};
use crate::cache::freshness;
use crate::cache::key::target;
use crate::cache::outcome::{Lookup, Outcome, Source};
use crate::cache::status::{CacheStatus, Detail, Fwd};
use crate::cache::store::CacheStore;
use crate::config::Log;
use crate::metrics::{Metrics, SiteMetrics};

/// What the cache did, as far as it is known when the response header goes out.
pub fn cache_status(cache: &HttpCache, ctx: &RequestCtx) -> CacheStatus {
    let now = SystemTime::now();
    let ttl = cache
        .maybe_cache_meta()
        .map(|m| freshness::remaining_ttl(m, now));
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
            detail: Some(Detail::StaleWhileRevalidate),
            ..CacheStatus::default()
        },
        CachePhase::Stale => CacheStatus {
            fwd_status: ctx.stale_error_status.or(fwd_status),
            detail: Some(Detail::StaleIfError),
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
            detail: Some(Detail::PredictedUncacheable),
            ..forwarded(Fwd::Bypass)
        },
        CachePhase::Disabled(NoCacheReason::NeverEnabled) => CacheStatus {
            fwd: fwd_status.map(|_| Fwd::Bypass),
            fwd_status,
            ..CacheStatus::default()
        },
        CachePhase::Disabled(reason) => CacheStatus {
            detail: Some(Detail::NotStored(reason)),
            ttl: None,
            stored: false,
            ..forwarded(miss)
        },
        CachePhase::Uninit | CachePhase::CacheKey => CacheStatus::default(),
    }
}

/// Records finished requests in metrics and the access log.
pub struct Recorder {
    metrics: Arc<Metrics>,
    store: &'static CacheStore,
    /// Handles for requests that matched no site.
    unrouted: SiteMetrics,
    /// `None` when the access log is off.
    access: Option<AccessLog>,
}

impl Recorder {
    /// Record into `metrics`, asking `store` whether a stored miss really
    /// was; write access lines as `log` says, naming this cache
    /// `cache_name` in their `Cache-Status`.
    pub fn new(
        metrics: Arc<Metrics>,
        store: &'static CacheStore,
        log: &Log,
        cache_name: String,
    ) -> Recorder {
        Recorder {
            unrouted: metrics.for_site(crate::metrics::NO_SITE),
            metrics,
            store,
            access: AccessLog::new(log, cache_name),
        }
    }

    /// The process-wide metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metric handles of the request's site, or of "no site".
    pub fn site_metrics<'a>(&'a self, ctx: &'a RequestCtx) -> &'a SiteMetrics {
        ctx.site.as_ref().map_or(&self.unrouted, |s| &s.metrics)
    }

    /// A response whose `Cache-Status` said `stored` was not stored after
    /// all (the origin failed mid-body, it outgrew the size limit, the store
    /// failed): say so in what is logged, and count it.
    pub fn abandon_store(&self, ctx: &mut RequestCtx, reason: NoCacheReason) {
        if let Some(status) = ctx.cache_status.as_mut().filter(|s| s.stored) {
            status.stored = false;
            status.detail = Some(Detail::NotStored(reason));
            self.metrics.cache_stores_abandoned.inc();
        }
    }

    /// Count a finished request and write its access log line. The
    /// `Cache-Status` sent with the header said what was known then; a
    /// response that failed or was given up on mid-body was not stored after
    /// all, and the log and metrics say so.
    pub fn finish(&self, session: &Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let elapsed = ctx.started.elapsed();
        match session.cache.phase() {
            // The slice engine stores blocks itself, without pingora's cache.
            CachePhase::Disabled(_) if ctx.slice == SliceRole::Served => {}
            CachePhase::Disabled(reason) => self.abandon_store(ctx, reason),
            // The store gives up a write it cannot finish (disk full, say)
            // without failing the response: only its index knows.
            CachePhase::Miss | CachePhase::Expired
                if ctx.cache_status.as_ref().is_some_and(|s| s.stored)
                    && !self.store.holds(session.cache.cache_key()) =>
            {
                self.abandon_store(ctx, NoCacheReason::StorageError)
            }
            _ => {}
        }
        let (outcome, source) = match &ctx.cache_status {
            Some(s) => (s.outcome(), s.source()),
            None if e.is_some() => (Outcome::Error, Source::Local),
            None => (Outcome::Local, Source::Local),
        };
        let bytes = session.body_bytes_sent();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        self.site_metrics(ctx)
            .request(outcome, status, elapsed.as_secs_f64(), source, bytes);
        if let (Some(_), Some(host)) = (&ctx.site, &ctx.host) {
            let target = target(&session.req_header().uri);
            let miss = source == Source::Origin;
            self.metrics.top.record(host, target, bytes as u64, miss);
        }

        let cache = &session.cache;
        let lookups = &self.metrics.cache_lookups;
        match cache.phase() {
            CachePhase::Hit => lookups.inc(Lookup::Hit),
            CachePhase::Stale
            | CachePhase::StaleUpdating
            | CachePhase::Expired
            | CachePhase::Revalidated
            | CachePhase::RevalidatedNoCache(_) => lookups.inc(Lookup::Stale),
            CachePhase::Miss => lookups.inc(Lookup::Miss),
            CachePhase::Disabled(_) if ctx.miss.is_some() => lookups.inc(Lookup::Miss),
            _ => {}
        }
        if cache.lock_duration().is_some() {
            self.metrics.collapsed_requests.inc();
        }
        if ctx.cache_status.as_ref().is_some_and(|s| s.stored) {
            self.metrics.cache_inserts.inc();
        }

        if let Some(access) = &self.access {
            access.record(&Entry {
                request: session.req_header(),
                client: session.client_addr(),
                forwarded_for: ctx.client.filter(|ip| {
                    session
                        .client_addr()
                        .and_then(|a| a.as_inet())
                        .map(|a| a.ip())
                        != Some(*ip)
                }),
                site: ctx.site.as_ref().map_or("-", |s| s.name.as_str()),
                host: ctx.host.as_deref().unwrap_or("-"),
                status,
                cache_status: ctx.cache_status.as_ref(),
                outcome,
                bytes,
                elapsed,
                origin_ttfb: ctx.origin_ttfb,
                error: e,
            });
        }
    }
}
