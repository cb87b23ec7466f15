//! One site's prefetches: what is queued, what is being fetched, and the
//! budgets that bound both.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};

use super::fetch::{Client, Fetched};
use super::{Outcome, PrefetchMetrics, Refusal};
use crate::config::prefetch::Prefetch;

/// The longest target a module may name.
const MAX_TARGET: usize = 8 * 1024;
/// The most header fields a module may set on one prefetch.
const MAX_HEADERS: usize = 16;
/// Targets remembered as fetched and fresh, per lane; the oldest are
/// forgotten first (and may then be fetched again, to find them cached).
const RECENT: usize = 4096;

/// What a module asks to prefetch, as it asked.
pub struct Ask<'a> {
    /// The module asking, for the metrics.
    pub module: &'a Arc<str>,
    /// The Host to fetch on: the asking request's.
    pub host: &'a str,
    /// Path and optional query.
    pub target: &'a str,
    /// Header fields to add.
    pub headers: &'a [(String, String)],
    /// How deep a prefetch the asking request is itself (0 for a real
    /// request).
    pub depth: u8,
    /// The module's own budget over all its sites, if its sidecar sets one.
    pub budget: Option<&'a Arc<ModuleBuckets>>,
}

/// A module's own prefetch budget over all its sites, from its sidecar
/// (`prefetch_rate`, `prefetch_bytes_per_second`); each `None` sets no
/// limit of the module's own (each site's `[site.prefetch]` still holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleBudget {
    /// Prefetches queued per second, a bucket of one second.
    pub rate: Option<u32>,
    /// Bytes prefetched per second, a bucket of one second.
    pub bytes_per_second: Option<u64>,
}

/// A module version's [`ModuleBudget`] as it is spent, shared by its calls
/// on every site (a new version starts with full buckets).
pub struct ModuleBuckets {
    budget: ModuleBudget,
    rate: Mutex<Bucket>,
    bytes: Mutex<Bucket>,
}

impl ModuleBuckets {
    /// The buckets of `budget`; `None` when it sets no limit.
    pub fn new(budget: ModuleBudget) -> Option<Arc<ModuleBuckets>> {
        if budget == ModuleBudget::default() {
            return None;
        }
        Some(Arc::new(ModuleBuckets {
            rate: Mutex::new(Bucket::full(budget.rate.map_or(0.0, f64::from))),
            bytes: Mutex::new(Bucket::full(budget.bytes_per_second.unwrap_or(0) as f64)),
            budget,
        }))
    }

    /// Whether one more prefetch fits at `now`, without taking it.
    fn fits(&self, now: Instant) -> bool {
        let rate_ok = self
            .budget
            .rate
            .is_none_or(|r| lock(&self.rate).level(f64::from(r), now) >= 1.0);
        let bytes_ok = self
            .budget
            .bytes_per_second
            .is_none_or(|b| lock(&self.bytes).level(b as f64, now) > 0.0);
        rate_ok && bytes_ok
    }

    /// Take (`-1`) or give back (`+1`) one prefetch.
    fn count(&self, delta: f64, now: Instant) {
        if let Some(r) = self.budget.rate {
            let mut rate = lock(&self.rate);
            rate.level(f64::from(r), now);
            rate.tokens += delta;
        }
    }

    /// Take `bytes` fetched.
    fn spend(&self, bytes: u64, now: Instant) {
        if let Some(b) = self.budget.bytes_per_second {
            let mut budget = lock(&self.bytes);
            budget.level(b as f64, now);
            budget.tokens -= bytes as f64;
        }
    }
}

/// `m`, locked; a poisoned lock still holds counts worth keeping.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One prefetch, checked and queued.
pub struct Job {
    pub module: Arc<str>,
    pub host: Box<str>,
    pub target: http::uri::PathAndQuery,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The depth the fetch runs at.
    pub depth: u8,
    key: u64,
    budget: Option<Arc<ModuleBuckets>>,
}

/// A token bucket holding one second's worth.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_second: f64) -> Bucket {
        Bucket {
            tokens: per_second,
            at: Instant::now(),
        }
    }

    /// Tokens now, at `per_second` (at most one second's worth). May be
    /// negative: bytes are taken after they were fetched.
    fn level(&mut self, per_second: f64, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * per_second;
        self.tokens = (self.tokens + earned).min(per_second);
        self.at = now;
        self.tokens
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Keys of the jobs queued or being fetched.
    pending: HashSet<u64>,
    running: usize,
    /// Keys of targets a prefetch stored or found stored, and until when
    /// they are fresh.
    fresh: HashMap<u64, Instant>,
    /// `fresh`'s keys, oldest first.
    fresh_order: VecDeque<u64>,
}

impl Queue {
    /// Whether `key` was fetched and is fresh at `now` (a stale one stays
    /// until it is fetched again or forgotten, so `fresh_order` holds each
    /// key once).
    fn is_fresh(&self, key: u64, now: Instant) -> bool {
        self.fresh.get(&key).is_some_and(|until| *until > now)
    }

    /// Remember that `key` is fresh until `until`.
    fn keep_fresh(&mut self, key: u64, until: Instant) {
        if self.fresh.insert(key, until).is_none() {
            self.fresh_order.push_back(key);
        }
        while self.fresh_order.len() > RECENT {
            if let Some(oldest) = self.fresh_order.pop_front() {
                self.fresh.remove(&oldest);
            }
        }
    }
}

/// One site's prefetch queue and fetch slots.
pub struct Lane {
    site: Arc<str>,
    settings: ArcSwap<Prefetch>,
    queue: Mutex<Queue>,
    rate: Mutex<Bucket>,
    bytes: Mutex<Bucket>,
    client: Client,
    hasher: RandomState,
    metrics: PrefetchMetrics,
}

impl Lane {
    pub(super) fn new(
        site: &str,
        settings: Arc<Prefetch>,
        client: Client,
        metrics: PrefetchMetrics,
    ) -> Lane {
        Lane {
            site: site.into(),
            rate: Mutex::new(Bucket::full(f64::from(settings.rate))),
            bytes: Mutex::new(Bucket::full(settings.bytes_per_second.as_u64() as f64)),
            settings: ArcSwap::new(settings),
            queue: Mutex::default(),
            client,
            hasher: RandomState::new(),
            metrics,
        }
    }

    /// Apply a reload's settings (each reload makes new ones; a request
    /// of the same configuration finds the same pointer).
    pub(super) fn configure(&self, settings: &Arc<Prefetch>) {
        if !Arc::ptr_eq(&self.settings.load(), settings) {
            self.settings.store(settings.clone());
        }
    }

    /// Jobs queued and fetches running.
    pub fn load(&self) -> (usize, usize) {
        let queue = lock(&self.queue);
        (queue.jobs.len(), queue.running)
    }

    /// Queue `ask`, or say why not; counted either way. Starts a fetch
    /// slot if one is free.
    pub fn offer(self: &Arc<Self>, ask: Ask<'_>) -> Result<(), Refusal> {
        let result = self.admit(&ask);
        self.metrics.count(
            ask.module,
            match result {
                Ok(()) => Outcome::Queued,
                Err(refusal) => Outcome::Refused(refusal),
            },
        );
        result
    }

    fn admit(self: &Arc<Self>, ask: &Ask<'_>) -> Result<(), Refusal> {
        let settings = self.settings.load();
        if ask.depth > 0 && ask.depth >= settings.max_depth {
            return Err(Refusal::TooDeep);
        }
        let target = checked_target(ask.target)?;
        let headers = checked_headers(ask.headers, &settings.headers)?;
        let key = self.hasher.hash_one((ask.host, target.as_str(), &headers));
        let now = Instant::now();
        let bytes_left = lock(&self.bytes).level(settings.bytes_per_second.as_u64() as f64, now);
        if bytes_left <= 0.0 {
            return Err(Refusal::OverBudget);
        }
        let start = {
            let mut queue = lock(&self.queue);
            if queue.pending.contains(&key) {
                return Err(Refusal::Duplicate);
            }
            if queue.is_fresh(key, now) {
                return Err(Refusal::Cached);
            }
            if queue.jobs.len() >= settings.queue {
                return Err(Refusal::QueueFull);
            }
            {
                let mut rate = lock(&self.rate);
                let module_fits = ask.budget.is_none_or(|b| b.fits(now));
                if rate.level(f64::from(settings.rate), now) < 1.0 || !module_fits {
                    return Err(Refusal::OverBudget);
                }
                rate.tokens -= 1.0;
                if let Some(budget) = ask.budget {
                    budget.count(-1.0, now);
                }
            }
            queue.pending.insert(key);
            queue.jobs.push_back(Job {
                module: ask.module.clone(),
                host: ask.host.into(),
                target,
                headers,
                depth: ask.depth + 1,
                key,
                budget: ask.budget.cloned(),
            });
            let start = queue.running < settings.concurrency;
            if start {
                queue.running += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().work());
        }
        Ok(())
    }

    /// One fetch slot: fetch queued jobs until none is left.
    async fn work(self: Arc<Self>) {
        loop {
            let job = {
                let mut queue = lock(&self.queue);
                let next = queue.jobs.pop_front();
                if next.is_none() {
                    queue.running -= 1;
                }
                next
            };
            let Some(job) = job else { return };
            let fetched = self.client.fetch(&job).await;
            let mut fresh_until = None;
            let outcome = match &fetched {
                Ok(Fetched {
                    outcome,
                    bytes,
                    fresh_for,
                }) => {
                    let settings = self.settings.load();
                    let now = Instant::now();
                    {
                        let per_second = settings.bytes_per_second.as_u64() as f64;
                        let mut budget = lock(&self.bytes);
                        budget.level(per_second, now);
                        budget.tokens -= *bytes as f64;
                    }
                    if let Some(module) = &job.budget {
                        module.spend(*bytes, now);
                    }
                    if *outcome == Outcome::AlreadyCached {
                        // Nothing was fetched: the rate is for fetches.
                        let mut rate = lock(&self.rate);
                        rate.level(f64::from(settings.rate), now);
                        rate.tokens += 1.0;
                        if let Some(module) = &job.budget {
                            module.count(1.0, now);
                        }
                    }
                    fresh_until = fresh_for.map(|d| now + d);
                    *outcome
                }
                Err(e) => {
                    tracing::debug!(site = %self.site, module = %job.module, target = %job.target, error = %e, "prefetch failed");
                    Outcome::Failed
                }
            };
            self.metrics.count(&job.module, outcome);
            let mut queue = lock(&self.queue);
            queue.pending.remove(&job.key);
            if let Some(until) = fresh_until {
                queue.keep_fresh(job.key, until);
            }
        }
    }
}

/// `target` as a path with an optional query.
fn checked_target(target: &str) -> Result<http::uri::PathAndQuery, Refusal> {
    if !target.starts_with('/') || target.starts_with("//") || target.len() > MAX_TARGET {
        return Err(Refusal::InvalidTarget);
    }
    let parsed: http::uri::PathAndQuery = target.parse().map_err(|_| Refusal::InvalidTarget)?;
    if parsed.as_str().contains('#') {
        return Err(Refusal::InvalidTarget);
    }
    Ok(parsed)
}

/// `headers`, each named in `allowed`.
fn checked_headers(
    headers: &[(String, String)],
    allowed: &[String],
) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
    if headers.len() > MAX_HEADERS {
        return Err(Refusal::HeaderNotAllowed);
    }
    headers
        .iter()
        .map(|(name, value)| {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| Refusal::HeaderNotAllowed)?;
            if !allowed.iter().any(|a| a == name.as_str()) {
                return Err(Refusal::HeaderNotAllowed);
            }
            let value = HeaderValue::from_str(value).map_err(|_| Refusal::HeaderNotAllowed)?;
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_path_with_an_optional_query() {
        assert!(checked_target("/seg/1.ts?v=2").is_ok());
        for bad in ["seg.ts", "//other.example/x", "http://other/x", "/a b", ""] {
            assert_eq!(checked_target(bad), Err(Refusal::InvalidTarget), "{bad}");
        }
        assert_eq!(
            checked_target(&format!("/{}", "a".repeat(MAX_TARGET))),
            Err(Refusal::InvalidTarget)
        );
    }

    #[test]
    fn only_allowed_headers_pass() {
        let allowed = vec!["accept".to_owned()];
        let ok = [("Accept".to_owned(), "video/mp2t".to_owned())];
        assert_eq!(checked_headers(&ok, &allowed).unwrap()[0].0, "accept");
        let cookie = [("cookie".to_owned(), "s=1".to_owned())];
        assert_eq!(
            checked_headers(&cookie, &allowed),
            Err(Refusal::HeaderNotAllowed)
        );
        let bad_value = [("accept".to_owned(), "a\nb".to_owned())];
        assert_eq!(
            checked_headers(&bad_value, &allowed),
            Err(Refusal::HeaderNotAllowed)
        );
    }

    #[test]
    fn fetched_targets_are_fresh_until_their_ttl_and_bounded() {
        let mut queue = Queue::default();
        let now = Instant::now();
        queue.keep_fresh(1, now + std::time::Duration::from_secs(60));
        queue.keep_fresh(2, now);
        assert!(queue.is_fresh(1, now));
        assert!(!queue.is_fresh(2, now), "stale at its end");
        queue.keep_fresh(2, now + std::time::Duration::from_secs(1));
        assert!(queue.is_fresh(2, now), "fetched again");
        assert_eq!(queue.fresh_order.len(), 2, "each key once");
        for key in 10..(10 + RECENT as u64 + 5) {
            queue.keep_fresh(key, now + std::time::Duration::from_secs(60));
        }
        assert!(queue.fresh.len() <= RECENT);
        assert!(!queue.is_fresh(1, now), "the oldest went first");
    }

    #[test]
    fn a_modules_budget_counts_prefetches_and_bytes() {
        assert!(ModuleBuckets::new(ModuleBudget::default()).is_none());
        let b = ModuleBuckets::new(ModuleBudget {
            rate: Some(2),
            bytes_per_second: Some(1000),
        })
        .unwrap();
        let now = Instant::now();
        assert!(b.fits(now));
        b.count(-1.0, now);
        b.count(-1.0, now);
        assert!(!b.fits(now), "two a second");
        b.count(1.0, now);
        assert!(b.fits(now), "one given back");
        b.spend(5000, now);
        assert!(!b.fits(now), "bytes overdrawn");
    }

    #[test]
    fn a_bucket_holds_one_second_and_may_go_negative() {
        let mut b = Bucket::full(10.0);
        let now = b.at;
        assert_eq!(b.level(10.0, now), 10.0);
        b.tokens -= 25.0;
        assert_eq!(b.level(10.0, now), -15.0);
        let later = now + std::time::Duration::from_secs(10);
        assert_eq!(b.level(10.0, later), 10.0);
    }
}
