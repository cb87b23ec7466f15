//! Carrying a policy module's decisions between the phases of one request.
//!
//! pingora's cache hooks are synchronous, so the module is called from the
//! async phase before each (`request_filter`, `upstream_response_filter`,
//! `cache_hit_filter`) and its decision waits here for the synchronous hook
//! that acts on it.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora_cache::{CacheMeta, ForcedFreshness, NoCacheReason, RespCacheable};
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::cache::freshness;
use crate::cache::store::POLICY_TAGS;
use crate::error_kind::ErrorKind;
use crate::hop_by_hop;
use crate::policy::{
    CallInput, CallView, Entry, Failure, HeaderEdits, HitDecision, PolicyModule, Request,
    RequestDecision, RequestInstance, RequestView, Response, ResponseDecision, SliceDecision,
    Store, Synthetic,
};
use crate::prefetch::{Lane, Phase, Scope};

/// What a site's policy has decided so far for one request.
pub struct PolicyDecisions {
    /// The module version this request started with; it finishes on it even
    /// if a new version is published meanwhile.
    pub module: Arc<PolicyModule>,
    /// What the module is asked about, besides pingora's request header.
    asked: Asked,
    /// A per-request module's instance, shared by this request's hooks.
    pub instance: RequestInstance,
    /// Replaces the path and query in the cache key.
    pub key: Option<String>,
    /// Extra values the entry varies on.
    pub variance: Vec<String>,
    /// Proxy without the cache.
    pub bypass: bool,
    /// Edits to the request sent to the origin.
    pub origin_edits: Option<HeaderEdits>,
    /// What `on-response` decided about storing.
    pub response: Option<ResponseDecision>,
    /// What `on-hit` asked of the miss path, when it steered a hit there;
    /// read once, through [`PolicyDecisions::take_after_hit`].
    after_hit: AfterHit,
    /// `Link` values `on-request` asked to send in a 103 Early Hints.
    pub early_hints: Vec<HeaderValue>,
    /// The response body `on-response` asked for, as it arrives.
    body: Option<WantedBody>,
}

/// A response body a module asked to read (`prefetch.want-body`), kept
/// until it has all arrived, then handed to its `on-body` in the
/// background.
struct WantedBody {
    limit: usize,
    bytes: Vec<u8>,
    status: u16,
    headers: Arc<HeaderMap>,
}

/// What `on-hit` asks `proxy_upstream_filter` to do, once pingora has taken
/// the miss path it steered to (the hit hook can only steer the cache).
#[derive(Default)]
pub enum AfterHit {
    /// Nothing: go to the origin as usual.
    #[default]
    Proceed,
    /// Answer with this instead of the entry.
    Respond(Synthetic),
    /// A fail-closed module failed: answer 503.
    FailClosed,
}

/// The request as a module sees it: pingora's header, borrowed at each
/// decision, with what the proxy knows besides; and the owned copy made
/// the first time a call enters the guest, which later decisions use.
struct Asked {
    scheme: &'static str,
    host: String,
    client: Option<IpAddr>,
    owned: OnceLock<Arc<Request>>,
    /// The site's prefetch lane (none when the site does not prefetch).
    lane: Option<Arc<Lane>>,
    /// How deep a prefetch this request is (0: a real request).
    depth: u8,
    /// What the calls ask of the prefetcher, made with the first call
    /// that enters the guest.
    scope: OnceLock<Arc<Scope>>,
}

impl Asked {
    /// What a call on `req` (and `response`) reads, borrowed, by which a
    /// kept decision is looked up; and how to make it owned, for a call
    /// that enters the guest. `None` when there is no request to read:
    /// `req` is not given and no copy was kept (see
    /// [`PolicyDecisions::keep_request`]).
    fn call<'a>(
        &'a self,
        req: Option<&'a RequestHeader>,
        response: Option<&'a HeaderMap>,
        phase: Option<Phase>,
        module: &'a PolicyModule,
    ) -> Option<(CallView<'a>, impl FnOnce() -> CallInput + 'a)> {
        let view = match (self.owned.get(), req) {
            (Some(owned), _) => owned.view(),
            (None, Some(req)) => RequestView {
                method: req.method.as_str(),
                scheme: self.scheme,
                host: &self.host,
                path: req.uri.path(),
                query: req.uri.query(),
                client_addr: self.client,
                headers: &req.headers,
            },
            (None, None) => return None,
        };
        let input = move || CallInput {
            request: Some(
                self.owned
                    .get_or_init(|| Arc::new(view.to_request()))
                    .clone(),
            ),
            response: response.map(|r| Arc::new(r.clone())),
            prefetch: phase.map(|phase| {
                let scope = self.scope.get_or_init(|| {
                    Arc::new(Scope::new(
                        self.lane.clone(),
                        &self.host,
                        self.depth,
                        module.shared.prefetch.clone(),
                    ))
                });
                (scope.clone(), phase)
            }),
        };
        Some((
            CallView {
                request: Some(view),
                response,
            },
            input,
        ))
    }
}

impl PolicyDecisions {
    /// Start deciding a request (for `host`, from `client`, over
    /// `scheme`) with `module`. Its header is borrowed from pingora at each
    /// decision, and copied only when a call enters the guest.
    /// `lane` is the site's prefetch lane, `depth` how deep a prefetch
    /// the request is (0 for a real one).
    pub fn new(
        module: Arc<PolicyModule>,
        scheme: &'static str,
        host: &str,
        client: Option<IpAddr>,
        lane: Option<Arc<Lane>>,
        depth: u8,
    ) -> PolicyDecisions {
        PolicyDecisions {
            module,
            asked: Asked {
                scheme,
                host: host.to_owned(),
                client,
                owned: OnceLock::new(),
                lane,
                depth,
                scope: OnceLock::new(),
            },
            instance: RequestInstance::default(),
            key: None,
            variance: Vec::new(),
            bypass: false,
            origin_edits: None,
            response: None,
            after_hit: AfterHit::Proceed,
            early_hints: Vec::new(),
            body: None,
        }
    }
}

impl PolicyDecisions {
    /// A failed call: carry on without the module's opinion (fail-open), or
    /// fail the request with 503 (fail-closed).
    fn on_failure(&self) -> pingora_error::Result<()> {
        match self.module.settings.failure {
            Failure::Open => Ok(()),
            Failure::Closed => Err(failed_closed()),
        }
    }

    /// A synthetic answer with a status no final response can have is a
    /// failed call: log it and let the failure mode decide.
    fn refuse(&self, synthetic: &Synthetic) {
        tracing::warn!(
            module = self.module.name(),
            status = synthetic.status,
            "policy answered with a status that is not a final response (200-599); applying its failure mode"
        );
    }

    /// What `on-hit` left for the miss path, taken so it acts once.
    pub fn take_after_hit(&mut self) -> AfterHit {
        std::mem::take(&mut self.after_hit)
    }

    /// Copy `req` for the decisions made where pingora's header is not at
    /// hand (the slice engine's [`Judge`](crate::slice::Judge)): call it
    /// before handing these decisions over.
    pub fn keep_request(&self, req: &RequestHeader) {
        if let Some((_, input)) = self.asked.call(Some(req), None, None, &self.module) {
            drop(input());
        }
    }

    /// `on-request`: records the key, variance, bypass and origin edits;
    /// returns the response to send instead, if the module chose one.
    pub async fn decide_request(
        &mut self,
        req: &RequestHeader,
    ) -> pingora_error::Result<Option<Synthetic>> {
        let phase = Some(Phase::Request);
        let Some((view, input)) = self.asked.call(Some(req), None, phase, &self.module) else {
            return Ok(None);
        };
        let outcome = match self
            .module
            .on_request(&mut self.instance, view, input)
            .await
        {
            None => return Ok(None),
            Some(Err(_)) => return self.on_failure().map(|()| None),
            Some(Ok(outcome)) => outcome,
        };
        if let Some(scope) = self.asked.scope.get() {
            self.early_hints = scope.take_asks().early_hints;
        }
        self.origin_edits = Some(outcome.origin_request);
        Ok(match outcome.decision {
            RequestDecision::Lookup(lookup) => {
                self.key = lookup.cache_key;
                self.variance = lookup.variance;
                None
            }
            RequestDecision::Bypass => {
                self.bypass = true;
                None
            }
            RequestDecision::Respond(synthetic) if is_final(&synthetic) => Some(synthetic),
            RequestDecision::Respond(synthetic) => {
                self.refuse(&synthetic);
                self.on_failure()?;
                None
            }
        })
    }

    /// `on-hit`: how pingora should treat the entry. A synthetic answer is
    /// kept for `proxy_upstream_filter`, which runs once the miss path is
    /// chosen and before any origin request.
    pub async fn decide_hit(
        &mut self,
        req: &RequestHeader,
        meta: &CacheMeta,
        tags: impl FnOnce() -> Vec<String>,
    ) -> Option<ForcedFreshness> {
        if !self.module.decides_hits() {
            // Nothing to ask: skip building the entry and copying headers.
            self.instance.release();
            return None;
        }
        let entry = entry(meta, tags(), SystemTime::now());
        let phase = Some(Phase::Other);
        let decided = match self
            .asked
            .call(Some(req), Some(meta.headers()), phase, &self.module)
        {
            Some((view, input)) => {
                self.module
                    .on_hit(&mut self.instance, &entry, view, input)
                    .await
            }
            None => None,
        };
        // No later hook runs on a hit, and the body may take long to send:
        // give the instance back now.
        self.instance.release();
        match decided {
            None | Some(Ok(HitDecision::Serve)) => None,
            Some(Ok(HitDecision::Revalidate)) => Some(ForcedFreshness::ForceExpired),
            Some(Ok(HitDecision::Respond(synthetic))) if is_final(&synthetic) => {
                self.after_hit = AfterHit::Respond(synthetic);
                Some(ForcedFreshness::ForceMiss)
            }
            Some(Ok(HitDecision::Respond(synthetic))) => {
                self.refuse(&synthetic);
                self.on_failure().err()?;
                self.after_hit = AfterHit::FailClosed;
                Some(ForcedFreshness::ForceMiss)
            }
            Some(Err(_)) => {
                self.on_failure().err()?;
                self.after_hit = AfterHit::FailClosed;
                Some(ForcedFreshness::ForceMiss)
            }
        }
    }

    /// `slicing`: whether and how this request's object is served from
    /// blocks, or `None` when the module does not say (it does not export
    /// the hook, or failed open).
    pub async fn decide_slicing(
        &mut self,
        req: &RequestHeader,
    ) -> pingora_error::Result<Option<SliceDecision>> {
        let Some((view, input)) = self.asked.call(Some(req), None, None, &self.module) else {
            return Ok(None);
        };
        match self.module.slicing(&mut self.instance, view, input).await {
            None => Ok(None),
            Some(Err(_)) => self.on_failure().map(|()| None),
            Some(Ok(decision)) => Ok(Some(decision)),
        }
    }

    /// `on-response`: applies its header edits to the origin's response and
    /// records the storage decision for `response_cache_filter`. Without
    /// `req`, the request kept by [`PolicyDecisions::keep_request`] is
    /// used; with neither, the module is not asked and its failure mode
    /// decides.
    pub async fn decide_response(
        &mut self,
        req: Option<&RequestHeader>,
        resp: &mut ResponseHeader,
    ) -> pingora_error::Result<()> {
        let status = Response {
            status: resp.status.as_u16(),
        };
        let phase = Some(Phase::Response);
        let Some((view, input)) = self
            .asked
            .call(req, Some(&resp.headers), phase, &self.module)
        else {
            return self.on_failure();
        };
        match self
            .module
            .on_response(&mut self.instance, status, view, input)
            .await
        {
            None => Ok(()),
            Some(Err(_)) => self.on_failure(),
            Some(Ok(outcome)) => {
                apply_edits(resp, &outcome.headers)?;
                self.response = Some(outcome.decision);
                let wanted = self.asked.scope.get().and_then(|s| s.take_asks().want_body);
                self.body = wanted.map(|limit| WantedBody {
                    limit: limit as usize,
                    bytes: Vec::new(),
                    status: status.status,
                    headers: Arc::new(resp.headers.clone()),
                });
                Ok(())
            }
        }
    }

    /// Keep `chunk` of the response body if `on-response` asked for it; at
    /// the end of the body, hand it to the module's `on-body` in a task of
    /// its own (the client is not kept waiting). A body longer than asked
    /// for is dropped, and `on-body` is not called.
    pub fn body_chunk(&mut self, chunk: Option<&Bytes>, end: bool) {
        let Some(wanted) = self.body.as_mut() else {
            return;
        };
        if let Some(chunk) = chunk {
            if wanted.bytes.len() + chunk.len() > wanted.limit {
                self.body = None;
                return;
            }
            wanted.bytes.extend_from_slice(chunk);
        }
        if !end {
            return;
        }
        let (Some(wanted), Some(request)) = (self.body.take(), self.asked.owned.get().cloned())
        else {
            return;
        };
        let module = self.module.clone();
        let scope = self.asked.scope.get().cloned();
        tokio::spawn(async move {
            let mut instance = RequestInstance::default();
            let view = CallView {
                request: Some(request.view()),
                response: Some(&wanted.headers),
            };
            let input = || CallInput {
                request: Some(request.clone()),
                response: Some(wanted.headers.clone()),
                prefetch: scope.map(|s| (s, Phase::Other)),
            };
            let resp = Response {
                status: wanted.status,
            };
            // A failure is counted and logged by the call; the response
            // has been sent, so there is nothing to fail.
            let _ = module
                .on_body(&mut instance, resp, &wanted.bytes, view, input)
                .await;
        });
    }
}

#[async_trait::async_trait]
impl crate::slice::Judge for PolicyDecisions {
    async fn consult(&mut self, resp: &mut ResponseHeader) -> pingora_error::Result<()> {
        if self.response.is_none() {
            self.decide_response(None, resp).await?;
        }
        Ok(())
    }

    fn verdict(&self, resp: &ResponseHeader, now: SystemTime) -> Option<RespCacheable> {
        match self.response.as_ref()? {
            ResponseDecision::NoStore => Some(RespCacheable::Uncacheable(NoCacheReason::Custom(
                "policy-no-store",
            ))),
            ResponseDecision::Store(store) => {
                Some(RespCacheable::Cacheable(stored_by_policy(resp, store, now)))
            }
            ResponseDecision::Default => None,
        }
    }
}

/// The error that turns into a 503 when a fail-closed module fails.
pub fn failed_closed() -> Box<Error> {
    ErrorKind::PolicyFailed.error(503, "the site's policy failed")
}

/// A request or response header that policy edits apply to.
pub trait EditHeaders {
    /// Drop every value of `name`.
    fn remove(&mut self, name: &str);
    /// Replace every value of `name` with `value`.
    fn set(&mut self, name: HeaderName, value: HeaderValue) -> pingora_error::Result<()>;
}

impl EditHeaders for RequestHeader {
    fn remove(&mut self, name: &str) {
        self.remove_header(name);
    }
    fn set(&mut self, name: HeaderName, value: HeaderValue) -> pingora_error::Result<()> {
        self.insert_header(name, value)
    }
}

impl EditHeaders for ResponseHeader {
    fn remove(&mut self, name: &str) {
        self.remove_header(name);
    }
    fn set(&mut self, name: HeaderName, value: HeaderValue) -> pingora_error::Result<()> {
        self.insert_header(name, value)
    }
}

/// RFC 9110 §15: a synthetic answer must be a final response, 200 to 599
/// (1xx are interim, 101 switches protocols, 600+ do not exist).
fn is_final(synthetic: &Synthetic) -> bool {
    (200..=599).contains(&synthetic.status)
}

/// Apply a policy's header edits: removals first, then sets. Edits to the
/// fields that frame the message or the connection are ignored: those are
/// the proxy's (see [`hop_by_hop::is_proxy_managed`]).
pub fn apply_edits(
    target: &mut impl EditHeaders,
    edits: &HeaderEdits,
) -> pingora_error::Result<()> {
    let allowed = |name: &str| !hop_by_hop::is_proxy_managed(name);
    for name in edits.remove.iter().filter(|n| allowed(n)) {
        target.remove(name);
    }
    for (name, value) in edits.set.iter().filter(|(n, _)| allowed(n)) {
        let (name, value) = header_pair(name, value)?;
        target.set(name, value)?;
    }
    Ok(())
}

fn header_pair(name: &str, value: &str) -> pingora_error::Result<(HeaderName, HeaderValue)> {
    let bad = |what: &str| {
        Error::explain(
            ErrorType::InternalError,
            format!("policy set an invalid header {what}: {name:?}"),
        )
    };
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("name"))?;
    let value = HeaderValue::from_str(value).map_err(|_| bad("value"))?;
    Ok((name, value))
}

/// The cached entry as `on-hit` sees it.
pub fn entry(meta: &CacheMeta, tags: Vec<String>, now: SystemTime) -> Entry {
    Entry {
        status: meta.response_header().status.as_u16(),
        age_seconds: meta.age().as_secs(),
        ttl_seconds: freshness::remaining_ttl(meta, now),
        tags,
    }
}

/// The entry to store when a policy says `store`, whatever the response's
/// own headers say.
pub fn stored_by_policy(resp: &ResponseHeader, store: &Store, now: SystemTime) -> CacheMeta {
    let mut header = resp.clone();
    if !store.tags.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&store.tags.join(",")) {
            let _ = header.insert_header(POLICY_TAGS, value);
        }
    }
    freshness::stored_entry(
        header,
        now,
        Duration::from_secs(store.ttl_seconds.into()),
        (
            store.stale_while_revalidate_seconds,
            store.stale_if_error_seconds,
        ),
        now,
    )
}
