//! The proxy's side of prefetching (see [`crate::prefetch`]): marking what
//! a prefetch stores, telling a later hit on it, and sending 103 Early
//! Hints before the origin is asked.

use http::header;
use pingora_cache::key::CacheHashKey;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{RequestCtx, StavkaProxy};
use crate::cache::status::{CacheStatus, Detail};
use crate::prefetch::{MARK, MAX_LINKS};

/// The cache key's primary hash, if the request has a cache key.
fn primary(session: &Session) -> Option<u128> {
    let key = session.cache.maybe_cache_key()?;
    Some(u128::from_be_bytes(key.primary_bin()))
}

impl StavkaProxy {
    /// RFC 8297: before the origin is asked (a miss, or a revalidation),
    /// send a 103 with the links the policy's `on-request` named and, on a
    /// site with `early_hints`, the preload links the page's last response
    /// carried. Never to a prefetch, and never to an HTTP/1.0 client (RFC
    /// 9110 §15.2). A failure to send is only logged: the final response
    /// still follows.
    pub(super) async fn early_hints(&self, session: &mut Session, ctx: &mut RequestCtx) {
        let policy_links = ctx
            .policy
            .as_mut()
            .map(|p| std::mem::take(&mut p.early_hints))
            .unwrap_or_default();
        if ctx.prefetch_depth.is_some() || session.req_header().version < http::Version::HTTP_11 {
            return;
        }
        let learnt = match &ctx.site {
            Some(site) if site.early_hints => {
                primary(session).and_then(|key| self.prefetcher.hints.links(key))
            }
            _ => None,
        };
        let links: Vec<_> = learnt
            .iter()
            .flat_map(|links| links.iter())
            .chain(&policy_links)
            .take(MAX_LINKS)
            .cloned()
            .collect();
        if links.is_empty() {
            return;
        }
        let Ok(mut hints) = ResponseHeader::build(103, Some(links.len())) else {
            return;
        };
        for link in links {
            if hints.append_header(header::LINK, link).is_err() {
                return;
            }
        }
        if let Err(e) = session
            .as_downstream_mut()
            .write_response_header(Box::new(hints))
            .await
        {
            tracing::debug!(error = %e, "could not send 103 Early Hints");
        }
    }

    /// On the origin's final response: a prefetch's is stored with
    /// [`MARK`] (so later hits can tell), anyone else's never carries it;
    /// and a page's preload links are remembered for Early Hints.
    pub(super) fn mark_prefetched(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &RequestCtx,
    ) {
        if ctx.prefetch_depth.is_some() {
            let _ = resp.insert_header(MARK, "1");
        } else {
            resp.remove_header(MARK);
        }
        let learns = ctx.site.as_ref().is_some_and(|s| s.early_hints)
            && resp.status.is_success()
            && resp.headers.contains_key(header::LINK);
        if learns {
            if let Some(key) = primary(session) {
                self.prefetcher.hints.learn(key, &resp.headers);
            }
        }
    }

    /// Before the response goes out: [`MARK`] never does. A client's hit
    /// on a prefetched object says so (`detail=prefetched`) and counts the
    /// object as used (once); a prefetch that stored its object starts
    /// tracking it, so one that goes stale unused counts as wasted.
    pub(super) fn account_prefetched(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &RequestCtx,
        status: &mut CacheStatus,
    ) {
        let marked = resp.remove_header(MARK).is_some();
        match ctx.prefetch_depth {
            None if marked && status.hit => {
                if status.detail.is_none() {
                    status.detail = Some(Detail::Prefetched);
                }
                if let Some(key) = primary(session) {
                    self.prefetcher.tracker.served(key);
                }
            }
            Some(_) if status.stored => {
                let module = ctx.policy.as_ref().map(|p| &p.module.shared.name);
                let meta = session.cache.maybe_cache_meta();
                if let (Some(key), Some(module), Some(meta)) = (primary(session), module, meta) {
                    self.prefetcher
                        .tracker
                        .stored(key, module, meta.fresh_until());
                }
            }
            _ => {}
        }
    }
}
