//! What one request's policy calls may ask of the prefetcher, and what
//! they asked of the request itself (its body, Early Hints).

use std::sync::{Arc, Mutex};

use http::HeaderValue;

use super::hints::MAX_LINKS;
use super::lane::{Ask, Lane, ModuleBuckets};
use super::{Outcome, PrefetchMetrics, Refusal};

/// The largest body a module may ask for.
pub const MAX_BODY: u32 = 1024 * 1024;

/// The hook a call runs in: what it may ask for besides `fetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `on-request`: Early Hints.
    Request,
    /// `on-response`: the body.
    Response,
    /// `on-hit` and `on-body`: only `fetch`.
    Other,
}

/// What the hooks asked of the request.
#[derive(Debug, Default)]
pub struct Asks {
    /// `want-body`: hand the body, up to this many bytes, to `on-body`.
    pub want_body: Option<u32>,
    /// `early-hint`: `Link` field values for a 103.
    pub early_hints: Vec<HeaderValue>,
}

/// One request's prefetching: the site's lane (none when the site does not
/// prefetch), the Host to fetch on, and how deep a prefetch the request is.
pub struct Scope {
    lane: Option<Arc<Lane>>,
    host: Box<str>,
    depth: u8,
    metrics: PrefetchMetrics,
    asks: Mutex<Asks>,
}

impl Scope {
    /// Prefetching for a request to `host` at `depth` (0 for a real
    /// request) on a site whose lane is `lane`.
    pub fn new(lane: Option<Arc<Lane>>, host: &str, depth: u8, metrics: PrefetchMetrics) -> Scope {
        Scope {
            lane,
            host: host.into(),
            depth,
            metrics,
            asks: Mutex::default(),
        }
    }

    /// `prefetch.fetch` from `module`, whose own budget is `budget`.
    pub fn fetch(
        &self,
        module: &Arc<str>,
        budget: Option<&Arc<ModuleBuckets>>,
        target: &str,
        headers: &[(String, String)],
    ) -> Result<(), Refusal> {
        let Some(lane) = &self.lane else {
            self.metrics
                .count(module, Outcome::Refused(Refusal::NotHere));
            return Err(Refusal::NotHere);
        };
        lane.offer(Ask {
            module,
            host: &self.host,
            target,
            headers,
            depth: self.depth,
            budget,
        })
    }

    /// `prefetch.want-body` in `phase`.
    pub fn want_body(&self, phase: Phase, max_bytes: u32) -> bool {
        if phase != Phase::Response || max_bytes == 0 {
            return false;
        }
        self.lock().want_body = Some(max_bytes.min(MAX_BODY));
        true
    }

    /// `prefetch.early-hint` in `phase`.
    pub fn early_hint(&self, phase: Phase, link: &str) -> bool {
        if phase != Phase::Request {
            return false;
        }
        let mut asks = self.lock();
        if asks.early_hints.len() >= MAX_LINKS || !link.trim_start().starts_with('<') {
            return false;
        }
        match HeaderValue::from_str(link) {
            Ok(value) => {
                asks.early_hints.push(value);
                true
            }
            Err(_) => false,
        }
    }

    /// What the hooks asked so far, taken.
    pub fn take_asks(&self) -> Asks {
        std::mem::take(&mut *self.lock())
    }

    /// The request's depth.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Asks> {
        self.asks.lock().unwrap_or_else(|e| e.into_inner())
    }
}
