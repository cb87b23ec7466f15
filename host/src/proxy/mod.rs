//! The one `ProxyHttp` implementation: short hooks that route, decide and
//! record, delegating the HTTP caching rules to [`crate::cache`].
//!
//! Phase order (see pingora's `proxy_trait.rs`): `request_filter` →
//! `request_cache_filter` → `cache_key_callback` → lookup (`cache_hit_filter`,
//! `cache_vary_filter`, `cache_miss`) → `upstream_peer` →
//! `upstream_request_filter` → `upstream_response_filter` →
//! `response_cache_filter` → `response_filter` → `logging`.

mod ctx;
mod decisions;
mod https;
mod local;
mod observe;
mod prefetched;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method};
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::{
    CacheKey, CacheMeta, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

pub use ctx::{RequestCtx, SliceRole};
pub use decisions::PolicyDecisions;

use crate::cache::freshness::{self, FreshnessRules};
use crate::cache::invalidate;
use crate::cache::key::{self, cache_key, target, variance};
use crate::cache::status::{CacheStatus, Detail, Fwd};
use crate::cache::store::CacheStore;
use crate::config;
use crate::config::PolicyMissing;
use crate::error_kind::ErrorKind;
use crate::hop_by_hop;
use crate::host_name;
use crate::limits::{Limit, Limits};
use crate::metrics::Metrics;
use crate::policy::{PolicyRegistry, SliceDecision};
use crate::pool::{Picked, Pool, PoolRole};
use crate::prefetch::{self, Prefetcher};
use crate::shutdown::InFlight;
use crate::sites::{Site, SiteRouter};
use crate::slice::{self, Judge};
use crate::tier::ClientHeader;
use decisions::AfterHit;
use observe::Recorder;

/// The caching reverse proxy.
pub struct StavkaProxy {
    /// Replaced whole by a configuration reload; a request routes once.
    router: Arc<ArcSwap<SiteRouter>>,
    store: &'static CacheStore,
    rules: FreshnessRules,
    cache_name: String,
    recorder: Recorder,
    in_flight: Arc<InFlight>,
    policies: Arc<PolicyRegistry>,
    slicer: &'static slice::Engine,
    /// The TLS listener's port, where `https_redirect` sends clients.
    https_port: Option<u16>,
    /// What one client may ask.
    limits: Arc<Limits>,
    /// The client-address header between edges and shields.
    client_header: ClientHeader,
    /// Policies' prefetches, Early Hints and what became of them.
    prefetcher: Arc<Prefetcher>,
}

/// The running parts the proxy works with, made by the server.
pub struct ProxyParts {
    /// The sites, replaced whole by a configuration reload.
    pub router: Arc<ArcSwap<SiteRouter>>,
    /// The cache.
    pub store: &'static CacheStore,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Requests in flight, for a graceful shutdown.
    pub in_flight: Arc<InFlight>,
    /// The policy modules.
    pub policies: Arc<PolicyRegistry>,
    /// What one client may ask.
    pub limits: Arc<Limits>,
    /// Policies' prefetches and Early Hints.
    pub prefetcher: Arc<Prefetcher>,
}

impl StavkaProxy {
    /// Assemble the proxy from a validated configuration.
    pub fn new(config: &config::Config, parts: ProxyParts) -> anyhow::Result<StavkaProxy> {
        let ProxyParts {
            router,
            store,
            metrics,
            in_flight,
            policies,
            limits,
            prefetcher,
        } = parts;
        let rules = FreshnessRules {
            default_swr: config.cache.stale_while_revalidate,
            default_sie: config.cache.stale_if_error,
            heuristic_max_ttl: config.cache.heuristic_max_ttl,
        };
        let slicer = Box::leak(Box::new(slice::Engine::new(
            &config.slice,
            store,
            rules,
            config.cache.name.clone(),
            metrics.clone(),
        )));
        Ok(StavkaProxy {
            router,
            store,
            rules,
            cache_name: config.cache.name.clone(),
            recorder: Recorder::new(metrics, store, &config.log, config.cache.name.clone()),
            in_flight,
            policies,
            slicer,
            https_port: config.listen.tls.map(|a| a.port()),
            limits,
            client_header: ClientHeader::new(&config.tier)?,
            prefetcher,
        })
    }
}

impl StavkaProxy {
    /// The peer for member `addr` of one of `site`'s pools, with this
    /// proxy's timeouts: an origin as configured, a shield in plain HTTP.
    fn peer(&self, site: &Site, role: PoolRole, addr: SocketAddr) -> HttpPeer {
        let mut peer = match role {
            PoolRole::Origin => HttpPeer::new(addr, site.tls, site.sni.clone()),
            PoolRole::Shield => HttpPeer::new(addr, false, String::new()),
        };
        let timeouts = &site.timeouts;
        peer.options.connection_timeout = Some(timeouts.connect_timeout);
        peer.options.read_timeout = Some(timeouts.read_timeout);
        peer.options.write_timeout = Some(timeouts.write_timeout);
        peer.options.idle_timeout = Some(timeouts.idle_timeout);
        peer.options.verify_cert = site.tls_verify;
        peer.options.verify_hostname = site.tls_verify;
        peer.options.ca = site.ca.clone();
        peer
    }

    /// Where a miss of `site` goes (its shields if it has them, else its
    /// origin) and the member for this request: for a shield, the home of
    /// the object `key` names; `None` when every member was tried.
    fn pick(&self, site: &Site, key: &[u8], tried: &[SocketAddr]) -> Option<(Arc<Pool>, Picked)> {
        let pool = site.shield.as_ref().unwrap_or(&site.origin);
        let picked = pool.select(key, tried)?;
        Some((pool.clone(), picked))
    }

    /// The client-address header to set on a request of `ctx` going
    /// upstream: only one going to a shield carries it.
    fn to_shield<'a>(&'a self, ctx: &RequestCtx) -> Option<&'a ClientHeader> {
        ctx.site
            .as_ref()
            .is_some_and(|s| s.shield.is_some())
            .then_some(&self.client_header)
    }

    /// The object's slice keys, when its site slices and the request can
    /// be cached: it names a host, and its policy (if any) neither bypasses
    /// the cache nor decides hits (the slice engine calls `on-response`,
    /// not `on-hit`). The key is the one the cache would use, the policy's
    /// included.
    fn slice_object(&self, session: &Session, ctx: &RequestCtx) -> Option<slice::ObjectKey> {
        let site = ctx.site.as_ref()?;
        let host = ctx.host.as_deref()?;
        let policy = ctx.policy.as_ref();
        if policy.is_some_and(|p| p.bypass || p.module.decides_hits()) {
            return None;
        }
        if !site.slice && !policy.is_some_and(|p| p.module.decides_slicing()) {
            return None;
        }
        let target = policy
            .and_then(|p| p.key.as_deref())
            .unwrap_or_else(|| target(&session.req_header().uri));
        Some(slice::ObjectKey {
            primary: key::primary(&site.name, host, target),
            site: site.name.clone(),
        })
    }

    /// Whether this request's object is sliced, and how: as its site is
    /// configured, unless its policy's `slicing` hook says otherwise. Asked
    /// only of a request the slice engine would take.
    async fn slice_settings(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Option<slice::Settings>> {
        let site_slices = ctx.site.as_ref().is_some_and(|s| s.slice);
        let decision = match ctx.policy.as_mut() {
            Some(p) => p.decide_slicing(req).await?,
            None => None,
        };
        Ok(match decision {
            None | Some(SliceDecision::Default) => site_slices.then(|| self.slicer.defaults()),
            Some(SliceDecision::Whole) => None,
            Some(SliceDecision::Slice(s)) => Some(self.slicer.settings(s.block_kib, s.read_ahead)),
        })
    }

    /// Serve the request from blocks if it is for a sliced object (see
    /// [`slice::Engine::takes`]); `Ok(true)` when it was.
    async fn serve_sliced(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(object) = self.slice_object(session, ctx) else {
            return Ok(false);
        };
        if !self.slicer.takes(session.req_header(), &object) {
            return Ok(false);
        }
        let Some(settings) = self.slice_settings(session.req_header(), ctx).await? else {
            return Ok(false);
        };
        let Some(site) = ctx.site.clone() else {
            return Ok(false);
        };
        let mut request = session.req_header().clone();
        hop_by_hop::strip_request(&mut request);
        prepare_upstream(&mut request, ctx, self.to_shield(ctx))?;
        let key = shield_key(ctx, session.req_header());
        let (pool, picked) = self
            .pick(&site, &key, &[])
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "the pool has no member"))?;
        let target = slice::Target {
            object,
            upstream: Arc::new(slice::Upstream {
                peer: self.peer(&site, pool.role(), picked.addr),
                request,
                requests: site.metrics.origin_requests.clone(),
                latency: site.metrics.origin_latency.clone(),
            }),
            authorization: session
                .req_header()
                .headers
                .contains_key(header::AUTHORIZATION),
            settings,
        };
        ctx.slice = SliceRole::Served;
        // The request now waits on the origin: a per-request instance must
        // not hold its pool slot meanwhile (as in `upstream_peer`).
        if let Some(p) = ctx.policy.as_mut() {
            p.instance.release();
            p.keep_request(session.req_header());
        }
        let policy = ctx
            .policy
            .as_mut()
            .map(|p| p as &mut (dyn slice::Judge + 'static));
        let status = self.slicer.serve(session, &target, policy).await?;
        ctx.cache_status = Some(status);
        Ok(true)
    }

    /// Answer a request over one of `[limits]` with the limit's status,
    /// `Retry-After` for the rate limit, and close the connection.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        limit: Limit,
    ) -> Result<bool> {
        self.limits.count(limit);
        let mut headers = vec![local::plain_text()];
        if limit == Limit::Rate {
            // RFC 6585 §4: when to try again; a token comes back this soon.
            headers.push(("retry-after".to_owned(), "1".to_owned()));
        }
        let body = Bytes::from(format!("stavka: {}\n", limit.explain()));
        self.answer(
            session,
            ctx,
            limit.status(),
            Detail::Limit(limit),
            &headers,
            body,
        )
        .await
    }

    /// Answer in `request_filter`, before any cache lookup or origin:
    /// `code` with a plain-text `body` and `Cache-Status: …; detail=…`.
    /// Returns `Ok(true)`, pingora's "the response is sent".
    async fn answer_here(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        code: u16,
        detail: Detail,
        body: String,
    ) -> Result<bool> {
        self.answer(
            session,
            ctx,
            code,
            detail,
            &[local::plain_text()],
            Bytes::from(body),
        )
        .await
    }

    /// Answer in `request_filter` with `code`, `headers`, `body` and
    /// `Cache-Status: …; detail=…`, and close the connection. Returns
    /// `Ok(true)`, pingora's "the response is sent".
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        code: u16,
        detail: Detail,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<bool> {
        let status = CacheStatus {
            detail: Some(detail),
            ..CacheStatus::default()
        };
        local::respond_with(
            session,
            code,
            headers,
            body,
            &status.render(&self.cache_name),
        )
        .await?;
        ctx.cache_status = Some(status);
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for StavkaProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.in_flight.enter())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // RFC 9112 §9.3.2: requests a client pipelines are answered one after
        // another, in order (pingora otherwise closes after the first).
        session.set_pipelining_enabled(true);
        // A prefetch this process sent itself (see `prefetch`): honoured
        // only with the process's token, and never passed on.
        if let Some(mark) = session.req_header_mut().remove_header(prefetch::HEADER) {
            ctx.prefetch_depth = self.prefetcher.is_internal(mark.as_bytes());
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let client = self.client_header.client(session.req_header_mut(), peer);
        ctx.client = client;
        if let Err(limit) = self.limits.check_request(session.req_header(), client) {
            return self.refuse(session, ctx, limit).await;
        }
        // RFC 8586: a request this node already forwarded has come back
        // (an origin pointing at the proxy, shields pointing at each
        // other): 508 Loop Detected (RFC 5842 §7.2), never forwarded again.
        if crate::node::looped(session.req_header(), crate::node::id()) {
            let body = "stavka: this request has already passed through this node (CDN-Loop)\n";
            return self
                .answer_here(session, ctx, 508, Detail::LoopDetected, body.to_owned())
                .await;
        }
        ctx.host = match host_name::request_host(session.req_header()) {
            Ok(host) => host,
            Err(bad) => {
                let body = format!("stavka: {bad}\n");
                let detail = Detail::Error(ErrorKind::BadRequest);
                return self.answer_here(session, ctx, 400, detail, body).await;
            }
        };
        // The site is taken once: a reload meanwhile does not change it.
        let routed = self.router.load().route(ctx.host.as_deref()).cloned();
        let Some(site) = routed else {
            let body = match &ctx.host {
                Some(host) => format!("stavka: no site is configured for host {host:?}\n"),
                None => {
                    "stavka: the request has no Host and no default site is configured\n".to_owned()
                }
            };
            return self
                .answer_here(session, ctx, 421, Detail::UnknownHost, body)
                .await;
        };
        ctx.site = Some(site.clone());
        if let (true, Some(port), Some(host)) = (site.https_redirect, self.https_port, &ctx.host) {
            if !https::is_tls(session) {
                // RFC 9110 §15.4.9: 308 keeps the method and body.
                let location = https::location(host, port, key::target(&session.req_header().uri));
                let headers = [("location".to_owned(), location)];
                return self
                    .answer(
                        session,
                        ctx,
                        308,
                        Detail::HttpsRedirect,
                        &headers,
                        Bytes::new(),
                    )
                    .await;
            }
        }
        let Some(name) = site.policy.as_deref() else {
            return self.serve_sliced(session, ctx).await;
        };
        let Some(module) = self.policies.get(name) else {
            return match site.policy_missing {
                PolicyMissing::Open => Ok(false),
                PolicyMissing::Closed => {
                    let kind = ErrorKind::PolicyMissing;
                    let body = local::error_body(503, kind, &site.name);
                    self.answer_here(session, ctx, 503, Detail::Error(kind), body)
                        .await
                }
            };
        };
        let host = ctx.host.as_deref().unwrap_or("");
        let scheme = if https::is_tls(session) {
            "https"
        } else {
            "http"
        };
        let lane = site
            .prefetch
            .as_ref()
            .map(|settings| self.prefetcher.lane(&site.name, settings));
        let depth = ctx.prefetch_depth.unwrap_or(0);
        let mut p = PolicyDecisions::new(module, scheme, host, ctx.client, lane, depth);
        let synthetic = p.decide_request(session.req_header()).await?;
        ctx.policy = Some(p);
        if let Some(synthetic) = synthetic {
            let status = local::respond_synthetic(session, &synthetic, &self.cache_name).await?;
            ctx.cache_status = Some(status);
            return Ok(true);
        }
        self.serve_sliced(session, ctx).await
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        // RFC 9111 §4: only GET and HEAD are answered from cache.
        let cacheable = matches!(session.req_header().method, Method::GET | Method::HEAD);
        let bypass = ctx.policy.as_ref().is_some_and(|p| p.bypass);
        // A request that names no host (HTTP/1.0) has no shared entry to use.
        if cacheable && ctx.site.is_some() && ctx.host.is_some() && !bypass {
            self.store.enable(&mut session.cache);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let req = session.req_header();
        let site = ctx.site.as_ref().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "cache enabled without a site")
        })?;
        let host = ctx.host.as_deref().unwrap_or_default();
        let target = ctx
            .policy
            .as_ref()
            .and_then(|p| p.key.as_deref())
            .unwrap_or_else(|| target(&req.uri));
        Ok(cache_key(&site.name, host, target))
    }

    fn cache_miss(&self, session: &mut Session, ctx: &mut RequestCtx) {
        // A key that still carries variance was looked up in a secondary
        // (Vary) slot: the URI is cached, just not for these request headers.
        ctx.miss = Some(if session.cache.cache_key().variance_bin().is_some() {
            Fwd::VaryMiss
        } else if ctx.found_stale {
            Fwd::Stale
        } else {
            Fwd::UriMiss
        });
        session.cache.cache_miss();
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        ctx.found_stale = !is_fresh;
        let Some(p) = ctx.policy.as_mut() else {
            return Ok(None);
        };
        let forced = p
            .decide_hit(session.req_header(), meta, || {
                self.store.tags(meta.headers())
            })
            .await;
        if matches!(forced, Some(ForcedFreshness::ForceExpired)) {
            ctx.found_stale = true;
        }
        Ok(forced)
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        self.early_hints(session, ctx).await;
        let Some(p) = ctx.policy.as_mut() else {
            return Ok(true);
        };
        match p.take_after_hit() {
            AfterHit::Proceed => Ok(true),
            AfterHit::FailClosed => Err(decisions::failed_closed()),
            AfterHit::Respond(synthetic) => {
                let status =
                    local::respond_synthetic(session, &synthetic, &self.cache_name).await?;
                ctx.cache_status = Some(status);
                Ok(false)
            }
        }
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        let extra = ctx.policy.as_ref().map_or(&[][..], |p| &p.variance[..]);
        variance(meta, &req.headers, extra)
    }

    /// RFC 9110 §15.5.14: a body that grows past `limits.max_body_bytes`
    /// (chunked, or longer than it said) fails the request with 413.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.request_body_bytes += chunk.len() as u64;
            if self.limits.body_over(ctx.request_body_bytes) {
                self.limits.count(Limit::Body);
                return Err(ErrorKind::RequestTooLarge.error(413, "the request body is too large"));
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let site = ctx
            .site
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no site for upstream"))?;
        let key = shield_key(ctx, session.req_header());
        let (pool, picked) = self.pick(&site, &key, &ctx.tried).ok_or_else(|| {
            Error::explain(ErrorType::ConnectNoRoute, "every pool member was tried")
        })?;
        let peer = self.peer(&site, pool.role(), picked.addr);
        ctx.tried.push(picked.addr);
        ctx.upstream = Some((pool, picked));
        site.metrics.origin_requests.inc();
        // The request now waits on the origin: a per-request instance must
        // not hold its pool slot meanwhile.
        if let Some(p) = ctx.policy.as_mut() {
            p.instance.release();
        }
        ctx.sent_upstream = Some((SystemTime::now(), Instant::now()));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        prepare_upstream(upstream_request, ctx, self.to_shield(ctx))
    }

    /// A member that refused the connection counts against it, and the
    /// request tries the next member it has not tried (pingora calls
    /// `upstream_peer` again for an error marked for retry): nothing was
    /// sent yet, so any method may.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some((pool, picked)) = &ctx.upstream {
            if pool.connect_failed(picked, &ctx.tried) {
                e.set_retry(true);
            }
        }
        e
    }

    /// pingora's rule (a request that cannot be sent again is not retried;
    /// a failure on a reused connection is), plus: an idempotent request
    /// whose member failed before answering (a shield killed mid-request)
    /// tries the next member, as nothing reached the client yet.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let resendable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if !resendable {
            e.set_retry(false);
            return e;
        }
        e.retry.decide_reuse(client_reused);
        let unanswered = ctx.upstream_status.is_none()
            && !client_reused
            && e.esource() == &ErrorSource::Upstream;
        if let (true, Some((pool, picked))) = (unanswered, &ctx.upstream) {
            if pool.connect_failed(picked, &ctx.tried) {
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if upstream_response.status.is_informational() {
            // RFC 9110 §15.2: an interim response (a 103's preload links,
            // RFC 8297) is passed on as it is; the final response is what
            // the cache and the policy decide on.
            hop_by_hop::strip(upstream_response);
            return Ok(());
        }
        // RFC 9110 §6.2, RFC 9112 §2.3: an intermediary sends its own
        // version; an HTTP/1.0 origin's answer (stored, too) is not one.
        upstream_response.set_version(http::Version::HTTP_11);
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        if let Some((pool, picked)) = &ctx.upstream {
            pool.answered(picked, upstream_response.status.as_u16());
        }
        hop_by_hop::strip(upstream_response);
        freshness::stamp_date(upstream_response, SystemTime::now());
        ctx.origin_age = upstream_response.headers.get(header::AGE).cloned();
        if upstream_response.status == http::StatusCode::NOT_MODIFIED {
            ctx.not_modified = Some(upstream_response.headers.clone());
        }
        if let Some((sent_at, sent)) = ctx.sent_upstream {
            let ttfb = sent.elapsed();
            ctx.origin_ttfb = Some(ttfb);
            if let Some(site) = &ctx.site {
                site.metrics.origin_latency.observe(ttfb.as_secs_f64());
            }
            ctx.initial_age =
                freshness::corrected_initial_age(upstream_response, sent_at, SystemTime::now());
        }
        if let Some(p) = ctx.policy.as_mut() {
            p.decide_response(Some(session.req_header()), upstream_response)
                .await?;
        }
        self.mark_prefetched(session, upstream_response, ctx);
        if self.slicer.too_large(upstream_response) && session.req_header().method == Method::GET {
            if let Some(object) = self.slice_object(session, ctx) {
                if let Some(settings) = self.slice_settings(session.req_header(), ctx).await? {
                    let authorization = session
                        .req_header()
                        .headers
                        .contains_key(header::AUTHORIZATION);
                    if let Some(p) = ctx.policy.as_ref() {
                        p.keep_request(session.req_header());
                    }
                    let policy = ctx
                        .policy
                        .as_mut()
                        .map(|p| p as &mut (dyn slice::Judge + 'static));
                    ctx.tee = self
                        .slicer
                        .adopt(&object, upstream_response, authorization, settings, policy)
                        .await?;
                    if ctx.tee.is_some() {
                        ctx.slice = SliceRole::Adopted;
                    }
                }
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(tee), Some(chunk)) = (ctx.tee.as_mut(), body.as_ref()) {
            tee.feed(chunk);
        }
        if let Some(p) = ctx.policy.as_mut() {
            p.body_chunk(body.as_ref(), end_of_stream);
        }
        if end_of_stream {
            ctx.tee = None;
        }
        Ok(None)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let authorization = session
            .req_header()
            .headers
            .contains_key(header::AUTHORIZATION);
        let merged;
        let resp = match ctx.not_modified.take() {
            Some(not_modified) => {
                merged = {
                    let mut stored = resp.clone();
                    freshness::merge_not_modified(&mut stored, &not_modified);
                    stored
                };
                &merged
            }
            None => resp,
        };
        let now = SystemTime::now();
        let verdict = ctx.policy.as_ref().and_then(|p| p.verdict(resp, now));
        let decision = match verdict {
            _ if ctx.slice == SliceRole::Adopted => {
                RespCacheable::Uncacheable(NoCacheReason::Custom("sliced"))
            }
            Some(decision) => decision,
            None => {
                let rules = FreshnessRules {
                    default_sie: ctx
                        .site
                        .as_ref()
                        .and_then(|s| s.serve_stale_on_error)
                        .unwrap_or(self.rules.default_sie),
                    ..self.rules
                };
                freshness::decide(resp, authorization, ctx.initial_age, &rules, now)
            }
        };
        ctx.store_decision = Some(match &decision {
            RespCacheable::Cacheable(_) => Ok(()),
            RespCacheable::Uncacheable(why) => Err(*why),
        });
        Ok(decision)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        // pingora has already checked the entry's own stale window; this
        // decides which failures count as errors (RFC 5861 §4).
        let Some(error) = error else {
            return true; // stale-while-revalidate
        };
        let status = match error.etype() {
            ErrorType::HTTPStatus(code @ (500 | 502 | 503 | 504)) => Some(*code),
            ErrorType::HTTPStatus(_) => None,
            _ if error.esource() == &ErrorSource::Upstream => Some(ErrorKind::classify(error).0),
            _ => None,
        };
        ctx.stale_error_status = status;
        status.is_some()
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(site) = &ctx.site {
            if site.strip_cdn_cache_control {
                resp.remove_header(freshness::CDN_CACHE_CONTROL);
            }
            // RFC 6797 §7.2: only over a secure transport.
            if let (Some(hsts), true) = (&site.hsts, https::is_tls(session)) {
                resp.insert_header("strict-transport-security", hsts.clone())?;
            }
        }
        // Surrogate tags are for this cache's purges, not for clients.
        self.store.strip_tags(resp);
        let mut status = observe::cache_status(&session.cache, ctx);
        self.account_prefetched(session, resp, ctx, &mut status);
        let mut value = status.render(&self.cache_name);
        // RFC 9211 §2: caches closer to the client append their member.
        if let Some(upstream) = resp
            .headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
        {
            value = format!("{upstream}, {value}");
        }
        resp.insert_header("cache-status", value)?;
        // RFC 9111 §5.1: a forwarded response keeps the origin's Age; once
        // stored it is this cache's estimate, the corrected age (§4.2.3).
        let forwarded = !status.hit && status.fwd_status == Some(resp.status.as_u16());
        if let (true, Some(origin_age)) = (forwarded, &ctx.origin_age) {
            if status.stored {
                resp.insert_header(header::AGE, ctx.initial_age.as_secs())?;
            } else {
                resp.insert_header(header::AGE, origin_age.clone())?;
            }
        }
        ctx.cache_status = Some(status);

        let req = session.req_header();
        let succeeded = resp.status.is_success() || resp.status.is_redirection();
        if invalidate::is_unsafe(&req.method) && succeeded && ctx.upstream_status.is_some() {
            if let (Some(site), Some(host)) = (&ctx.site, &ctx.host) {
                let removed =
                    invalidate::after_unsafe(self.store, &site.name, host, req, resp).await;
                self.recorder
                    .metrics()
                    .cache_invalidations
                    .inc_by(removed as u64);
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, kind) = ErrorKind::classify(e);
        if code == 0 {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if e.esource() == &ErrorSource::Upstream {
            self.recorder.site_metrics(ctx).origin_error(kind);
            self.recorder
                .abandon_store(ctx, NoCacheReason::UpstreamError);
        }
        let mut status = observe::cache_status(&session.cache, ctx);
        status.hit = false;
        status.stored = false;
        status.fwd = Some(status.fwd.unwrap_or(Fwd::Miss));
        status.fwd_status = Some(code);
        status.detail = Some(Detail::Error(kind));
        let site = ctx.site.as_ref().map_or("-", |s| s.name.as_str());
        let body = local::error_body(code, kind, site);
        if session.response_written().is_none() {
            if let Err(write) =
                local::respond(session, code, body, &status.render(&self.cache_name)).await
            {
                tracing::debug!(error = %write, "could not send the error response");
            }
        }
        ctx.cache_status = Some(status);
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.recorder.finish(session, e, ctx);
    }
}

/// The bytes a shield pool hashes to find an object's home shield: the
/// host and the target the cache key holds (the policy's key if it set
/// one), without the site's name, so edges agree whatever they call the
/// site.
fn shield_key(ctx: &RequestCtx, req: &RequestHeader) -> Vec<u8> {
    let target = ctx
        .policy
        .as_ref()
        .and_then(|p| p.key.as_deref())
        .unwrap_or_else(|| target(&req.uri));
    key::primary("", ctx.host.as_deref().unwrap_or(""), target)
}

/// Shape the request the origin (or a shield) gets, for the proxy and the
/// slice engine alike; one going to a shield carries the client's address
/// in `to_shield`'s header.
fn prepare_upstream(
    upstream_request: &mut RequestHeader,
    ctx: &RequestCtx,
    to_shield: Option<&ClientHeader>,
) -> Result<()> {
    crate::node::mark(upstream_request)?;
    if let Some(header) = to_shield {
        header.forward(upstream_request, ctx.client)?;
    }
    // The origin sees the host the entry is keyed on, never a port or
    // spelling the client chose (an origin that reflects Host would
    // otherwise poison the shared entry), in origin-form. A shield gets
    // the client's host, which it routes on; its own site says what its
    // origin gets.
    let configured = ctx
        .site
        .as_ref()
        .filter(|_| to_shield.is_none())
        .and_then(|s| s.host_header.clone());
    match (configured, &ctx.host) {
        (Some(configured), _) => upstream_request.insert_header(header::HOST, configured)?,
        (None, Some(host))
            if upstream_request
                .headers
                .get(header::HOST)
                .is_none_or(|h| h != host.as_str()) =>
        {
            upstream_request.insert_header(header::HOST, host.as_str())?
        }
        _ => {}
    }
    // A policy key that is a path and query is also what the origin is
    // asked for, so nothing the key ignores (tracking parameters, say)
    // can shape a shared entry. Otherwise the client's target goes, in
    // origin-form.
    let keyed = ctx.policy.as_ref().and_then(|p| p.key.as_deref());
    if let Some(key) = keyed.filter(|k| k.starts_with('/')) {
        let uri = http::Uri::try_from(key).map_err(|e| {
            Error::because(
                ErrorType::InternalError,
                "the policy's cache key is not a valid request target",
                e,
            )
        })?;
        upstream_request.set_uri(uri);
    } else if !upstream_request.raw_path().starts_with(b"/") {
        let origin_form = http::Uri::try_from(target(&upstream_request.uri))
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "request target", e))?;
        upstream_request.set_uri(origin_form);
    }
    if let Some(edits) = ctx.policy.as_ref().and_then(|p| p.origin_edits.as_ref()) {
        decisions::apply_edits(upstream_request, edits)?;
    }
    Ok(())
}
