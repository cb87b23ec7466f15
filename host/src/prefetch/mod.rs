//! Prefetching: a policy names what to fetch next (`prefetch.fetch` in
//! `stavka:policy` 0.2.1) and the host fetches it in the background.
//!
//! A prefetch is an ordinary request to this very proxy, sent over a Unix
//! socket only this process listens on and marked with a secret token
//! ([`Prefetcher::is_internal`]), so it takes the normal cache path: the
//! same site, cache key rules, policy hooks and request collapsing. A
//! prefetch and a real request for one object make one origin request.
//!
//! Each site with a `[site.prefetch]` table has one [`Lane`]: a bounded
//! queue, deduplication against what is queued or being fetched, token
//! buckets for prefetches and bytes per second, and a few fetch slots.
//! Prefetches never run outside those slots, so a burst of them cannot
//! take more than that from real requests. Everything a module asked for
//! is counted in `stavka_prefetch_total{module, outcome}`.

mod fetch;
mod hints;
mod lane;
mod scope;
mod tracker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, Opts, Registry};

use crate::config::prefetch::Prefetch;

pub use hints::{preload_links, Hints, MAX_LINKS};
pub use lane::{Lane, ModuleBuckets, ModuleBudget};
pub use scope::{Asks, Phase, Scope, MAX_BODY};
pub use tracker::Tracker;

/// The request header that marks a prefetch: `<token> <depth>`. Removed
/// from every request as it arrives; honoured only with the token.
pub const HEADER: &str = "x-stavka-prefetch";
/// The response header a prefetched object is stored with, so its later
/// hits can say so (`Cache-Status: …; detail=prefetched`); removed from
/// every response before it is sent.
pub const MARK: &str = "x-stavka-prefetched";

/// Why a prefetch was not queued: the `refusal` of `stavka:policy`'s
/// `prefetch` interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a path with an optional query, or too long.
    InvalidTarget,
    /// A header outside the site's allow-list, or too many.
    HeaderNotAllowed,
    /// Not in this hook, or the site does not prefetch.
    NotHere,
    /// The site's queue is full.
    QueueFull,
    /// Prefetches or bytes per second spent.
    OverBudget,
    /// Already queued or being fetched.
    Duplicate,
    /// An earlier prefetch of it stored it, or found it stored, and it is
    /// still fresh.
    Cached,
    /// The request asking is itself a prefetch, as deep as allowed.
    TooDeep,
}

impl Refusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::InvalidTarget => "invalid-target",
            Refusal::HeaderNotAllowed => "header-not-allowed",
            Refusal::NotHere => "not-here",
            Refusal::QueueFull => "queue-full",
            Refusal::OverBudget => "over-budget",
            Refusal::Duplicate => "duplicate",
            Refusal::Cached => "cached",
            Refusal::TooDeep => "too-deep",
        }
    }
}

/// What became of something a module asked to prefetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted into the queue.
    Queued,
    /// Refused when asked.
    Refused(Refusal),
    /// Fetched and stored.
    Fetched,
    /// Fetched, and found already cached and fresh (by a client's request,
    /// or another module's prefetch); its rate token is given back.
    AlreadyCached,
    /// Fetched, not storable (the origin or the policy said so).
    NotStored,
    /// The fetch failed: an origin error, a 5xx, a timeout.
    Failed,
    /// A prefetched object served to a real request (counted once).
    Used,
    /// A prefetched object that went stale (or was evicted) unused.
    Wasted,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::Refused(r) => r.as_str(),
            Outcome::Fetched => "fetched",
            Outcome::AlreadyCached => "already-cached",
            Outcome::NotStored => "not-stored",
            Outcome::Failed => "failed",
            Outcome::Used => "used",
            Outcome::Wasted => "wasted",
        }
    }

    /// Every outcome, for listings.
    pub const ALL: [Outcome; 15] = [
        Outcome::Queued,
        Outcome::Fetched,
        Outcome::AlreadyCached,
        Outcome::NotStored,
        Outcome::Failed,
        Outcome::Used,
        Outcome::Wasted,
        Outcome::Refused(Refusal::InvalidTarget),
        Outcome::Refused(Refusal::HeaderNotAllowed),
        Outcome::Refused(Refusal::NotHere),
        Outcome::Refused(Refusal::QueueFull),
        Outcome::Refused(Refusal::OverBudget),
        Outcome::Refused(Refusal::Duplicate),
        Outcome::Refused(Refusal::Cached),
        Outcome::Refused(Refusal::TooDeep),
    ];
}

/// `stavka_prefetch_total{module, outcome}`.
#[derive(Clone)]
pub struct PrefetchMetrics(IntCounterVec);

impl PrefetchMetrics {
    /// Register the family in `r`.
    pub fn new(r: &Registry) -> PrefetchMetrics {
        let family = IntCounterVec::new(
            Opts::new(
                "stavka_prefetch_total",
                "What policy modules asked to prefetch: queued, refused (by reason), fetched (stored), already-cached, not-stored, failed; and prefetched objects later used by a request or wasted (stale or evicted unused).",
            ),
            &["module", "outcome"],
        )
        .expect("valid metric");
        r.register(Box::new(family.clone())).expect("unique metric");
        PrefetchMetrics(family)
    }

    /// Count `outcome` for `module`.
    pub fn count(&self, module: &str, outcome: Outcome) {
        self.0.with_label_values(&[module, outcome.as_str()]).inc();
    }

    /// Each outcome's count over all modules, for `/stats`.
    pub fn by_outcome(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for family in prometheus::core::Collector::collect(&self.0) {
            for metric in family.get_metric() {
                let outcome = metric
                    .get_label()
                    .iter()
                    .find(|l| l.get_name() == "outcome")
                    .map(|l| l.get_value().to_owned());
                if let Some(outcome) = outcome {
                    *out.entry(outcome).or_default() += metric.get_counter().get_value() as u64;
                }
            }
        }
        out
    }

    /// `module`'s count of each outcome that happened, for `/policies`.
    pub fn totals(&self, module: &str) -> Vec<(&'static str, u64)> {
        Outcome::ALL
            .iter()
            .filter_map(|o| {
                let n = self
                    .0
                    .get_metric_with_label_values(&[module, o.as_str()])
                    .ok()?
                    .get();
                (n > 0).then_some((o.as_str(), n))
            })
            .collect()
    }
}

/// Prefetching for the whole process: the sites' lanes, the internal
/// socket prefetches are sent to, and what became of them.
pub struct Prefetcher {
    token: Box<str>,
    socket: PathBuf,
    lanes: ArcSwap<HashMap<Arc<str>, Arc<Lane>>>,
    /// Creating a lane; lookups never take it.
    creating: Mutex<()>,
    metrics: PrefetchMetrics,
    /// Prefetched objects not yet used.
    pub tracker: Tracker,
    /// `Link: rel=preload` fields learnt from pages, for Early Hints.
    pub hints: Hints,
}

impl Prefetcher {
    /// A prefetcher sending to the Unix socket at `socket` (which the
    /// proxy must listen on), counting into `metrics`.
    pub fn new(socket: PathBuf, metrics: PrefetchMetrics) -> Prefetcher {
        let token: [u8; 16] = rand::random();
        Prefetcher {
            token: token.iter().map(|b| format!("{b:02x}")).collect(),
            socket,
            lanes: ArcSwap::default(),
            creating: Mutex::new(()),
            tracker: Tracker::new(metrics.clone()),
            metrics,
            hints: Hints::default(),
        }
    }

    /// Where prefetches are sent: the proxy listens here too.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The metrics.
    pub fn metrics(&self) -> &PrefetchMetrics {
        &self.metrics
    }

    /// The depth of a request that carries `value` in [`HEADER`]: `Some`
    /// only with this process's token (compared in constant time).
    pub fn is_internal(&self, value: &[u8]) -> Option<u8> {
        use subtle::ConstantTimeEq;
        let text = std::str::from_utf8(value).ok()?;
        let (token, depth) = text.split_once(' ')?;
        if !bool::from(token.as_bytes().ct_eq(self.token.as_bytes())) {
            return None;
        }
        depth.parse().ok()
    }

    /// The lane of `site`, with `settings` (made on first use; a reload's
    /// new settings apply to the lane from then on).
    pub fn lane(&self, site: &str, settings: &Arc<Prefetch>) -> Arc<Lane> {
        if let Some(lane) = self.lanes.load().get(site) {
            lane.configure(settings);
            return lane.clone();
        }
        let _creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lane) = self.lanes.load().get(site) {
            return lane.clone();
        }
        let lane = Arc::new(Lane::new(
            site,
            settings.clone(),
            fetch::Client::new(self.socket.clone(), self.token.clone()),
            self.metrics.clone(),
        ));
        let mut lanes = HashMap::clone(&self.lanes.load());
        lanes.insert(site.into(), lane.clone());
        self.lanes.store(Arc::new(lanes));
        lane
    }

    /// Each lane's site, queue length and fetches running, for `/stats`.
    pub fn lanes(&self) -> Vec<(Arc<str>, usize, usize)> {
        let mut out: Vec<_> = self
            .lanes
            .load()
            .iter()
            .map(|(site, lane)| {
                let (queued, running) = lane.load();
                (site.clone(), queued, running)
            })
            .collect();
        out.sort();
        out
    }
}
