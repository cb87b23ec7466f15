//! `/stats`: totals and rates for people and dashboards, read from the same
//! Prometheus registry `/metrics` exports, so the two never disagree.
//!
//! A [`Sampler`] keeps one snapshot per second for the last few minutes;
//! a rate is the difference between now and the snapshot a window ago.
//! Sampling gathers the registry once a second on the admin listener's
//! runtime; the request path only ever increments its counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use prometheus::proto::MetricFamily;

use super::error::ApiError;
use super::report::{
    BytesPerSecond, BytesServed, Catalog, Evictions, OriginTotals, Point, PolicyTotals, Rates,
    Stats, Store, Tier, Top, TopUrl, Totals,
};
use super::AdminState;
use crate::cache::outcome::{Outcome, Source};
use crate::top::Measure;

/// Snapshots kept: one a second, five minutes.
const KEPT: usize = 300;
/// Seconds of per-second points in `series`, for charts.
const SERIES: usize = 120;
/// The windows rates are reported over, in seconds.
const WINDOWS: [u64; 2] = [10, 60];

/// Cumulative counters at one instant.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Unix seconds.
    at: f64,
    requests: [f64; Outcome::ALL.len()],
    bytes_cache: f64,
    bytes_origin: f64,
    bytes_local: f64,
    origin_requests: f64,
    origin_errors: f64,
    origin_latency_sum: f64,
    origin_latency_count: f64,
    collapsed: f64,
    policy_calls: f64,
    policy_failures: f64,
    evicted_objects: f64,
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    m.get_label()
        .iter()
        .find(|l| l.get_name() == name)
        .map(|l| l.get_value())
}

impl Sample {
    fn take(state: &AdminState) -> Sample {
        let families = state.metrics.registry().gather();
        let store = state.store.stats();
        let mut s = Sample {
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            evicted_objects: store.evicted_objects as f64,
            ..Sample::default()
        };
        for family in &families {
            s.add(family);
        }
        s
    }

    fn add(&mut self, family: &MetricFamily) {
        let counters = || {
            family
                .get_metric()
                .iter()
                .map(|m| (m, m.get_counter().get_value()))
        };
        let total = || counters().map(|(_, v)| v).sum::<f64>();
        match family.get_name() {
            "stavka_requests_total" => {
                for (m, v) in counters() {
                    if let Some(o) = label(m, "cache_status").and_then(Outcome::from_label) {
                        self.requests[o.index()] += v;
                    }
                }
            }
            "stavka_served_bytes_total" => {
                for (m, v) in counters() {
                    match label(m, "source").and_then(Source::from_label) {
                        Some(Source::Cache) => self.bytes_cache += v,
                        Some(Source::Origin) => self.bytes_origin += v,
                        Some(Source::Local) | None => self.bytes_local += v,
                    }
                }
            }
            "stavka_origin_requests_total" => self.origin_requests += total(),
            "stavka_origin_errors_total" => self.origin_errors += total(),
            "stavka_collapsed_requests_total" => self.collapsed += total(),
            "stavka_policy_calls_total" => self.policy_calls += total(),
            "stavka_policy_failures_total" => self.policy_failures += total(),
            "stavka_origin_response_seconds" => {
                for m in family.get_metric() {
                    self.origin_latency_sum += m.get_histogram().get_sample_sum();
                    self.origin_latency_count += m.get_histogram().get_sample_count() as f64;
                }
            }
            _ => {}
        }
    }

    /// Requests with an outcome that `counts`.
    fn requests_where(&self, counts: fn(Outcome) -> bool) -> f64 {
        Outcome::ALL
            .into_iter()
            .filter(|o| counts(*o))
            .map(|o| self.requests[o.index()])
            .sum()
    }

    fn total_requests(&self) -> f64 {
        self.requests.iter().sum()
    }

    /// Hits over lookups, between `self` and an `earlier` sample (or since
    /// start); `None` without lookups.
    fn hit_ratio(&self, earlier: &Sample) -> Option<f64> {
        let delta = |counts| self.requests_where(counts) - earlier.requests_where(counts);
        let looked_up = delta(Outcome::looked_up);
        (looked_up > 0.0).then(|| delta(Outcome::served_from_cache) / looked_up)
    }

    /// Rates between `earlier` and `self`.
    fn rates(&self, earlier: &Sample) -> Rates {
        let dt = (self.at - earlier.at).max(1e-3);
        let per_second = |now: f64, then: f64| (now - then) / dt;
        let latency_count = self.origin_latency_count - earlier.origin_latency_count;
        Rates {
            seconds: dt,
            requests_per_second: per_second(self.total_requests(), earlier.total_requests()),
            hit_ratio: self.hit_ratio(earlier),
            bytes_per_second: BytesPerSecond {
                cache: per_second(self.bytes_cache, earlier.bytes_cache),
                origin: per_second(self.bytes_origin, earlier.bytes_origin),
            },
            origin_requests_per_second: per_second(self.origin_requests, earlier.origin_requests),
            origin_errors_per_second: per_second(self.origin_errors, earlier.origin_errors),
            origin_mean_latency_ms: (latency_count > 0.0).then(|| {
                (self.origin_latency_sum - earlier.origin_latency_sum) / latency_count * 1000.0
            }),
            collapsed_per_second: per_second(self.collapsed, earlier.collapsed),
            evictions_per_second: per_second(self.evicted_objects, earlier.evicted_objects),
            policy_calls_per_second: per_second(self.policy_calls, earlier.policy_calls),
            policy_failures_per_second: per_second(self.policy_failures, earlier.policy_failures),
        }
    }
}

/// `?n=`: how many URLs per measure.
#[derive(Debug, serde::Deserialize)]
pub struct TopQuery {
    n: Option<usize>,
}

/// The most URLs `/top` lists per measure.
const TOP_MAX: usize = 100;

/// `GET /top`: the heaviest URLs lately, by requests, bytes and misses.
pub async fn top(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<TopQuery>, QueryRejection>,
) -> Result<Json<Top>, ApiError> {
    let Query(query) = query?;
    let n = query.n.unwrap_or(10).min(TOP_MAX);
    let list = |measure| {
        state
            .metrics
            .top
            .top(measure, n)
            .into_iter()
            .map(|(url, count)| TopUrl { url, count })
            .collect()
    };
    Ok(Json(Top {
        requests: list(Measure::Requests),
        bytes: list(Measure::Bytes),
        misses: list(Measure::Misses),
    }))
}

/// One snapshot a second, for rates and charts.
#[derive(Default)]
pub struct Sampler {
    samples: Mutex<VecDeque<Sample>>,
}

impl Sampler {
    /// Take a snapshot now, dropping the oldest beyond [`KEPT`].
    fn record(&self, state: &AdminState) {
        let sample = Sample::take(state);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Snapshot every second until the returned task is dropped or aborted.
    pub fn run(state: Arc<AdminState>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                state.sampler.record(&state);
            }
        })
    }
}

/// Totals since start, rates over the last 10 and 60 seconds, per-tier
/// sizes, and a per-second series of request rate and hit ratio.
pub async fn stats(State(state): State<Arc<AdminState>>) -> Json<Stats> {
    let now = Sample::take(&state);
    let samples = state
        .sampler
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut rates = BTreeMap::new();
    for window in WINDOWS {
        let since = now.at - window as f64;
        // The newest snapshot at least a window old, else the oldest.
        let earlier = samples
            .iter()
            .rev()
            .find(|s| s.at <= since)
            .or_else(|| samples.front());
        rates.insert(format!("{window}s"), earlier.map(|e| now.rates(e)));
    }
    let series: Vec<Point> = samples
        .iter()
        .zip(samples.iter().skip(1))
        .skip(samples.len().saturating_sub(SERIES + 1))
        .map(|(a, b)| Point {
            t: b.at,
            requests_per_second: (b.total_requests() - a.total_requests())
                / (b.at - a.at).max(1e-3),
            hit_ratio: b.hit_ratio(a),
        })
        .collect();
    let by_cache_status = Outcome::ALL
        .iter()
        .zip(now.requests)
        .map(|(o, n)| (o.as_str().to_owned(), n as u64))
        .collect();
    let store = state.store.stats();
    let (catalog_objects, catalog_tags) = state.store.catalog_totals();
    Json(Stats {
        at: now.at,
        totals: Totals {
            requests: now.total_requests() as u64,
            by_cache_status,
            hit_ratio: now.hit_ratio(&Sample::default()),
            bytes_served: BytesServed {
                cache: now.bytes_cache as u64,
                origin: now.bytes_origin as u64,
                local: now.bytes_local as u64,
            },
            origin: OriginTotals {
                requests: now.origin_requests as u64,
                errors: now.origin_errors as u64,
                mean_latency_ms: (now.origin_latency_count > 0.0)
                    .then(|| now.origin_latency_sum / now.origin_latency_count * 1000.0),
            },
            collapsed_requests: now.collapsed as u64,
            evictions: Evictions {
                objects: store.evicted_objects as u64,
                bytes: store.evicted_bytes as u64,
            },
            policy: PolicyTotals {
                calls: now.policy_calls as u64,
                failures: now.policy_failures as u64,
            },
        },
        store: Store {
            memory: Tier {
                objects: store.memory_objects as u64,
                bytes: store.memory_bytes as u64,
                capacity_bytes: store.memory_capacity,
            },
            disk: Tier {
                objects: store.objects as u64,
                bytes: store.bytes as u64,
                capacity_bytes: store.disk_capacity,
            },
            catalog: Catalog {
                objects: catalog_objects as u64,
                tags: catalog_tags as u64,
            },
        },
        rates,
        series,
    })
}
