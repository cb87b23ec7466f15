//! Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! Per-site counters are resolved to handles once, when the site is built, so
//! the request path increments an atomic instead of hashing label values.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::cache::outcome::{Block, Lookup, Outcome, Source};
use crate::cache::store::StoreStats;
use crate::error_kind::ErrorKind;
use crate::events::EventLog;
use crate::status_class::StatusClass;

/// The `site` label of requests that matched no site.
pub const NO_SITE: &str = "-";

/// Upper bounds, in seconds, of every latency histogram's buckets; `/stats`
/// reads percentiles from them.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `stavka_cache_lookups_total` by result, resolved once so the request
/// path increments an atomic.
pub struct Lookups([IntCounter; Lookup::ALL.len()]);

impl Lookups {
    fn new(family: &IntCounterVec) -> Lookups {
        Lookups(Lookup::ALL.map(|l| family.with_label_values(&[l.as_str()])))
    }

    /// Count one lookup.
    pub fn inc(&self, result: Lookup) {
        self.0[result as usize].inc();
    }
}

/// The process's metrics registry and its families.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    origin_requests: IntCounterVec,
    origin_errors: IntCounterVec,
    origin_latency: HistogramVec,
    bytes_served: IntCounterVec,
    responses: IntCounterVec,
    /// Cache lookups by result, resolved once.
    pub cache_lookups: Lookups,
    /// Objects admitted to the cache.
    pub cache_inserts: IntCounter,
    /// Responses whose storing began and was given up: the origin failed
    /// mid-body, the body outgrew the size limit, or the store could not
    /// write. The client's response is unaffected.
    pub cache_stores_abandoned: IntCounter,
    /// Entries removed by unsafe-method invalidation (RFC 9111 §4.4).
    pub cache_invalidations: IntCounter,
    /// Requests that waited on another request's fetch of the same object.
    pub collapsed_requests: IntCounter,
    /// Blocks of sliced objects, by what happened to them.
    slice_blocks: [IntCounter; Block::ALL.len()],
    /// The URLs with the most requests, bytes and misses lately.
    pub top: crate::top::TopUrls,
    /// What changed lately, for the dashboard's event log.
    pub events: std::sync::Arc<EventLog>,
    cache_evictions: IntCounter,
    cache_evicted_bytes: IntCounter,
    cache_objects: IntGauge,
    cache_bytes: IntGauge,
    memory_objects: IntGauge,
    memory_bytes: IntGauge,
    in_flight: IntGauge,
    /// Serialises scrapes: each one advances counters from cumulative totals.
    scrape: std::sync::Mutex<()>,
    /// Origin and shield pools: member health, failures, failovers.
    pub pools: crate::pool::PoolMetrics,
}

/// A site's metric handles.
#[derive(Clone)]
pub struct SiteMetrics {
    requests: [IntCounter; Outcome::ALL.len()],
    durations: [Histogram; Outcome::ALL.len()],
    /// Requests sent to the origin.
    pub origin_requests: IntCounter,
    /// Time from sending the request to the origin's response header.
    pub origin_latency: Histogram,
    origin_errors: IntCounterVec,
    site: String,
    bytes: [IntCounter; Source::ALL.len()],
    classes: [IntCounter; StatusClass::ALL.len()],
}

impl SiteMetrics {
    /// Count one finished request, answered with `status` (0 when nothing
    /// was sent).
    pub fn request(
        &self,
        outcome: Outcome,
        status: u16,
        seconds: f64,
        source: Source,
        bytes: usize,
    ) {
        let i = outcome.index();
        self.requests[i].inc();
        self.durations[i].observe(seconds);
        self.bytes[source.index()].inc_by(bytes as u64);
        if let Some(class) = StatusClass::of(status) {
            self.classes[class.index()].inc();
        }
    }

    /// Count an origin failure, by kind.
    pub fn origin_error(&self, kind: ErrorKind) {
        self.origin_errors
            .with_label_values(&[&self.site, kind.as_str()])
            .inc();
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = LATENCY_BUCKETS.to_vec();
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every family in a fresh registry.
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            requests: counter_vec(
                &r,
                "stavka_requests_total",
                "Requests answered, by site and cache outcome.",
                &["site", "cache_status"],
            ),
            request_duration: histogram_vec(
                &r,
                "stavka_request_duration_seconds",
                "Time from request start to the last byte sent, by site and cache outcome.",
                &["site", "cache_status"],
            ),
            origin_requests: counter_vec(
                &r,
                "stavka_origin_requests_total",
                "Requests sent to origins, by site.",
                &["site"],
            ),
            origin_errors: counter_vec(
                &r,
                "stavka_origin_errors_total",
                "Origin failures, by site and kind.",
                &["site", "kind"],
            ),
            origin_latency: histogram_vec(
                &r,
                "stavka_origin_response_seconds",
                "Time from sending a request to an origin to its response header, by site.",
                &["site"],
            ),
            bytes_served: counter_vec(
                &r,
                "stavka_served_bytes_total",
                "Response body bytes sent to clients, by site and where they came from.",
                &["site", "source"],
            ),
            responses: counter_vec(
                &r,
                "stavka_responses_total",
                "Responses sent, by site and status class (1xx to 5xx).",
                &["site", "class"],
            ),
            cache_lookups: Lookups::new(&counter_vec(
                &r,
                "stavka_cache_lookups_total",
                "Cache lookups, by result (hit, stale, miss).",
                &["result"],
            )),
            cache_inserts: counter(&r, "stavka_cache_inserts_total", "Objects admitted to the cache."),
            cache_stores_abandoned: counter(
                &r,
                "stavka_cache_stores_abandoned_total",
                "Responses whose storing began and was given up (origin failed mid-body, too large, store write failed); the client's response is unaffected.",
            ),
            cache_invalidations: counter(
                &r,
                "stavka_cache_invalidations_total",
                "Entries removed because an unsafe request changed their URI (RFC 9111 section 4.4).",
            ),
            collapsed_requests: counter(
                &r,
                "stavka_collapsed_requests_total",
                "Requests that waited for another request's fetch of the same object.",
            ),
            slice_blocks: {
                let family = counter_vec(
                    &r,
                    "stavka_slice_blocks_total",
                    "Blocks of sliced objects: served from the store (hit), fetched for a request, fetched ahead of one (read-ahead), read-ahead blocks a request then read (read-ahead-read), or fetched and not stored.",
                    &["result"],
                );
                Block::ALL.map(|b| family.with_label_values(&[b.as_str()]))
            },
            top: Default::default(),
            events: Default::default(),
            cache_evictions: counter(&r, "stavka_cache_evictions_total", "Objects evicted to stay within store.disk_bytes."),
            cache_evicted_bytes: counter(&r, "stavka_cache_evicted_bytes_total", "Bytes evicted to stay within store.disk_bytes."),
            cache_objects: gauge(&r, "stavka_cache_objects", "Objects in the cache (disk tier)."),
            cache_bytes: gauge(&r, "stavka_cache_bytes", "Bytes in the cache (disk tier: bodies and metadata)."),
            memory_objects: gauge(&r, "stavka_store_memory_objects", "Objects in the memory tier."),
            memory_bytes: gauge(&r, "stavka_store_memory_bytes", "Bytes in the memory tier."),
            in_flight: gauge(&r, "stavka_requests_in_flight", "Requests being served now."),
            scrape: std::sync::Mutex::new(()),
            pools: crate::pool::PoolMetrics::new(&r),
            registry: r,
        }
    }

    /// Count one block of a sliced object.
    pub fn slice_block(&self, block: Block) {
        self.slice_blocks[block.index()].inc();
    }

    /// The registry, for other families (policy metrics) to join.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Resolve the handles for one site (or `-` for requests that matched none).
    pub fn for_site(&self, site: &str) -> SiteMetrics {
        SiteMetrics {
            requests: Outcome::ALL.map(|o| self.requests.with_label_values(&[site, o.as_str()])),
            durations: Outcome::ALL
                .map(|o| self.request_duration.with_label_values(&[site, o.as_str()])),
            origin_requests: self.origin_requests.with_label_values(&[site]),
            origin_latency: self.origin_latency.with_label_values(&[site]),
            origin_errors: self.origin_errors.clone(),
            site: site.to_owned(),
            bytes: Source::ALL.map(|s| self.bytes_served.with_label_values(&[site, s.as_str()])),
            classes: StatusClass::ALL
                .map(|c| self.responses.with_label_values(&[site, c.as_str()])),
        }
    }

    /// Render the text exposition format, first bringing the storage figures
    /// up to date (they are read from the eviction manager, not pushed).
    pub fn render(&self, store: StoreStats, in_flight: usize) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.in_flight.set(in_flight as i64);
        self.cache_objects.set(store.objects as i64);
        self.cache_bytes.set(store.bytes as i64);
        self.memory_objects.set(store.memory_objects as i64);
        self.memory_bytes.set(store.memory_bytes as i64);
        advance(&self.cache_evictions, store.evicted_objects as u64);
        advance(&self.cache_evicted_bytes, store.evicted_bytes as u64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("text encoding is UTF-8")
    }
}

/// Move a counter up to a cumulative total read from elsewhere.
pub fn advance(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}
