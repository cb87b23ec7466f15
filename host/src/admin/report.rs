//! The shape of `GET /stats` (`#/components/schemas/Stats`): written by
//! the admin API, read by `stavka ctl`, one definition for both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Totals since start, rates over windows, the store, a per-second series.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    /// Unix seconds when it was taken.
    pub at: f64,
    /// Counters since start.
    pub totals: Totals,
    /// The store's tiers and catalog.
    pub store: Store,
    /// Keyed by window (`10s`, `60s`); null before the first snapshot.
    pub rates: BTreeMap<String, Option<Rates>>,
    /// One point a second, oldest first.
    pub series: Vec<Point>,
    /// Each site over the last 10 seconds, busiest first.
    pub sites: Vec<SiteRates>,
    /// The TLS listener's certificates; empty without one.
    pub certificates: Vec<crate::tls::CertificateStatus>,
}

/// Counters since start.
#[derive(Debug, Serialize, Deserialize)]
pub struct Totals {
    /// Requests answered.
    pub requests: u64,
    /// Requests by `cache_status` outcome label.
    pub by_cache_status: BTreeMap<String, u64>,
    /// Hits and stale hits over lookups; none before any lookup.
    pub hit_ratio: Option<f64>,
    /// Body bytes sent, by where they came from.
    pub bytes_served: BytesServed,
    /// Requests to origins.
    pub origin: OriginTotals,
    /// Requests that waited for another request's fetch.
    pub collapsed_requests: u64,
    /// Objects and bytes evicted.
    pub evictions: Evictions,
    /// Policy hook calls.
    pub policy: PolicyTotals,
    /// What policies prefetched.
    pub prefetch: PrefetchTotals,
}

/// What policies asked to prefetch, and what became of it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PrefetchTotals {
    /// Counts by outcome (`stavka_prefetch_total`, all modules): queued,
    /// fetched, already-cached, not-stored, failed, used, wasted, and each
    /// refusal.
    pub by_outcome: BTreeMap<String, u64>,
    /// Prefetches waiting now, all sites.
    pub queued: u64,
    /// Prefetches being fetched now, all sites.
    pub running: u64,
    /// Prefetched objects not yet used nor stale.
    pub tracked: u64,
}

/// Body bytes sent, by where they came from.
#[derive(Debug, Serialize, Deserialize)]
pub struct BytesServed {
    /// From the cache.
    pub cache: u64,
    /// From origins.
    pub origin: u64,
    /// Made by the proxy itself.
    pub local: u64,
}

/// Requests to origins.
#[derive(Debug, Serialize, Deserialize)]
pub struct OriginTotals {
    /// Sent.
    pub requests: u64,
    /// Failed.
    pub errors: u64,
    /// Mean time to the response header; none before any.
    pub mean_latency_ms: Option<f64>,
}

/// Objects and bytes evicted.
#[derive(Debug, Serialize, Deserialize)]
pub struct Evictions {
    /// Objects.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Policy hook calls.
#[derive(Debug, Serialize, Deserialize)]
pub struct PolicyTotals {
    /// Calls.
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
}

/// The store's tiers and catalog.
#[derive(Debug, Serialize, Deserialize)]
pub struct Store {
    /// The memory tier.
    pub memory: Tier,
    /// The disk tier.
    pub disk: Tier,
    /// What the catalog indexes.
    pub catalog: Catalog,
    /// How disk hits read ring entries and body blocks: `io_uring` or `blocking_pool`
    /// (`store.io_engine`, as this kernel allowed).
    pub io_engine: String,
    /// The shared tier on Redis, when `[shared]` configures one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedStatus>,
}

/// The shared tier and the purge bus: `store.shared` in `/stats`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SharedStatus {
    /// The circuit breaker: `closed` (in use), `open` (not asked) or
    /// `half-open` (one probe).
    pub breaker: String,
    /// `connected`, `disconnected` or `off` (`purge = false`).
    pub purge_bus: String,
}

/// One tier: `#/components/schemas/Tier`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Tier {
    /// Objects held.
    pub objects: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Bytes it may hold.
    pub capacity_bytes: u64,
}

/// What the catalog indexes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Catalog {
    /// Objects.
    pub objects: u64,
    /// Distinct surrogate tags.
    pub tags: u64,
}

/// Rates over one window: `#/components/schemas/Rates`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rates {
    /// The window's length.
    pub seconds: f64,
    /// Requests answered per second.
    pub requests_per_second: f64,
    /// Hits over lookups in the window.
    pub hit_ratio: Option<f64>,
    /// Body bytes sent per second.
    pub bytes_per_second: BytesPerSecond,
    /// Origin requests per second.
    pub origin_requests_per_second: f64,
    /// Origin failures per second.
    pub origin_errors_per_second: f64,
    /// Mean origin time to header in the window.
    pub origin_mean_latency_ms: Option<f64>,
    /// Collapsed requests per second.
    pub collapsed_per_second: f64,
    /// Evictions per second.
    pub evictions_per_second: f64,
    /// Policy calls per second.
    pub policy_calls_per_second: f64,
    /// Policy call failures per second.
    pub policy_failures_per_second: f64,
    /// Responses per second by status class (`1xx` … `5xx`).
    pub status_per_second: BTreeMap<String, f64>,
    /// Client and origin latency percentiles in the window.
    pub latency: Latency,
}

/// Latency percentiles of clients and origins.
#[derive(Debug, Serialize, Deserialize)]
pub struct Latency {
    /// From a request's start to its last byte sent.
    pub client: Percentiles,
    /// From a request sent to an origin to its response header.
    pub origin: Percentiles,
}

/// Percentiles read from histogram buckets (linear within a bucket, as
/// Prometheus' `histogram_quantile` does); none without observations.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median, milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th percentile, milliseconds.
    pub p95_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub p99_ms: Option<f64>,
}

/// One site over a window: `#/components/schemas/SiteRates`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SiteRates {
    /// The site's name; `-` for requests that matched no site.
    pub site: String,
    /// Requests answered per second.
    pub requests_per_second: f64,
    /// Hits over lookups; none without lookups.
    pub hit_ratio: Option<f64>,
    /// Responses per second by status class.
    pub status_per_second: BTreeMap<String, f64>,
    /// Client latency percentiles.
    pub latency: Percentiles,
    /// How the site's origin is doing.
    pub origin: OriginRates,
}

/// A site's origin over a window.
#[derive(Debug, Serialize, Deserialize)]
pub struct OriginRates {
    /// Requests sent per second.
    pub requests_per_second: f64,
    /// Failures per second (connection, timeout, closed early, …).
    pub errors_per_second: f64,
    /// Of those, timeouts per second (connect or read).
    pub timeouts_per_second: f64,
    /// Time to the response header.
    pub latency: Percentiles,
    /// The verdict.
    pub health: OriginHealth,
}

/// A verdict on an origin from its failure ratio over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginHealth {
    /// Nothing was sent to it.
    Idle,
    /// Under 5% of requests failed.
    Healthy,
    /// 5% to 50% failed.
    Degraded,
    /// Half or more failed.
    Failing,
}

impl OriginHealth {
    /// The verdict on `errors` failures among `requests` sent.
    pub fn judge(requests: f64, errors: f64) -> OriginHealth {
        // A failure to connect is counted without a request having been
        // sent, so the failures are weighed against both.
        let attempts = requests.max(errors);
        if attempts <= 0.0 {
            OriginHealth::Idle
        } else if errors / attempts >= 0.5 {
            OriginHealth::Failing
        } else if errors / attempts >= 0.05 {
            OriginHealth::Degraded
        } else {
            OriginHealth::Healthy
        }
    }

    /// Its name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginHealth::Idle => "idle",
            OriginHealth::Healthy => "healthy",
            OriginHealth::Degraded => "degraded",
            OriginHealth::Failing => "failing",
        }
    }
}

/// Body bytes sent per second, by where they came from.
#[derive(Debug, Serialize, Deserialize)]
pub struct BytesPerSecond {
    /// From the cache.
    pub cache: f64,
    /// From origins.
    pub origin: f64,
}

/// One second of the series.
#[derive(Debug, Serialize, Deserialize)]
pub struct Point {
    /// Unix seconds at its end.
    pub t: f64,
    /// Requests in that second.
    pub requests_per_second: f64,
    /// Hits over lookups in that second.
    pub hit_ratio: Option<f64>,
    /// Responses in that second by status class.
    pub status_per_second: BTreeMap<String, f64>,
    /// Client latency percentiles in that second.
    pub latency: Percentiles,
}

/// `GET /events`: the newest events after the one asked for.
#[derive(Debug, Serialize, Deserialize)]
pub struct Events {
    /// Oldest first.
    pub events: Vec<crate::events::Event>,
}

/// `GET /top`: the URLs with the most requests, bytes and misses over the
/// last one to two minutes (`#/components/schemas/Top`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Top {
    /// By requests answered.
    pub requests: Vec<TopUrl>,
    /// By body bytes sent.
    pub bytes: Vec<TopUrl>,
    /// By requests that went to the origin.
    pub misses: Vec<TopUrl>,
}

/// One URL and its count (an estimate that never undercounts).
#[derive(Debug, Serialize, Deserialize)]
pub struct TopUrl {
    /// Host and target.
    pub url: String,
    /// Requests, bytes or misses.
    pub count: u64,
}

/// Header fields as `(name, value)` text pairs, for reports; values that
/// are not UTF-8 are shown lossily.
pub fn field_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}
