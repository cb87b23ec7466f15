//! `/stats`: totals and rates for people and dashboards, read from the same
//! Prometheus registry `/metrics` exports, so the two never disagree.
//!
//! A [`Sampler`] keeps one snapshot per second for the last few minutes;
//! a rate is the difference between now and the snapshot a window ago, and
//! a percentile is read from the difference of two histograms. Per-site
//! figures are kept only as long as the per-site window needs them, so the
//! history costs the same however many sites there are. Sampling gathers
//! the registry once a second on the admin listener's runtime; the request
//! path only ever increments its counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use prometheus::proto::{Histogram, Metric, MetricFamily};

use super::error::ApiError;
use super::report::{
    BytesPerSecond, BytesServed, Catalog, Events, Evictions, Latency, OriginHealth, OriginRates,
    OriginTotals, Percentiles, Point, PolicyTotals, PrefetchTotals, Rates, SharedStatus, SiteRates,
    Stats, Store, Tier, Top, TopUrl, Totals,
};
use super::AdminState;
use crate::cache::outcome::{Outcome, Source};
use crate::error_kind::ErrorKind;
use crate::events::EventKind;
use crate::metrics::{LATENCY_BUCKETS, NO_SITE};
use crate::status_class::StatusClass;
use crate::top::Measure;

/// Snapshots kept: one a second, five minutes.
const KEPT: usize = 300;
/// Seconds of per-second points in `series`, for charts.
const SERIES: usize = 120;
/// The windows rates are reported over, in seconds.
const WINDOWS: [u64; 2] = [10, 60];
/// The window per-site rates are reported over, in seconds; snapshots
/// older than this (and a second) drop their per-site figures.
const SITE_WINDOW: u64 = 10;
/// An eviction spike: a second with at least this many evictions …
const SPIKE_FLOOR: f64 = 100.0;
/// … and this many times the mean rate of the minute before.
const SPIKE_FACTOR: f64 = 4.0;

/// A latency histogram's cumulative bucket counts and its sum.
#[derive(Debug, Clone, Default)]
struct Buckets {
    /// Observations at or below each of [`LATENCY_BUCKETS`].
    le: [f64; LATENCY_BUCKETS.len()],
    count: f64,
    sum: f64,
}

impl Buckets {
    fn add(&mut self, h: &Histogram) {
        for (le, bucket) in self.le.iter_mut().zip(h.get_bucket()) {
            *le += bucket.get_cumulative_count() as f64;
        }
        self.count += h.get_sample_count() as f64;
        self.sum += h.get_sample_sum();
    }

    /// Add `sign` times `other` (1: merge sites, -1: take a window).
    fn add_scaled(&mut self, other: &Buckets, sign: f64) {
        add_each(&mut self.le, &other.le, sign);
        self.count += sign * other.count;
        self.sum += sign * other.sum;
    }

    /// The `q` quantile in seconds, interpolated linearly within its
    /// bucket; the top bound when it lies above every bucket; `None`
    /// without observations.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for (bound, le) in LATENCY_BUCKETS.into_iter().zip(self.le) {
            if le >= rank {
                let within = (le - below).max(f64::MIN_POSITIVE);
                return Some(lower + (bound - lower) * ((rank - below) / within).clamp(0.0, 1.0));
            }
            (lower, below) = (bound, le);
        }
        LATENCY_BUCKETS.last().copied()
    }

    fn percentiles(&self) -> Percentiles {
        let ms = |q| self.quantile(q).map(|s| s * 1000.0);
        Percentiles {
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
        }
    }
}

/// `a[i] += sign * b[i]`.
fn add_each(a: &mut [f64], b: &[f64], sign: f64) {
    for (a, b) in a.iter_mut().zip(b) {
        *a += sign * b;
    }
}

/// One site's (or every site's) cumulative counters at one instant.
#[derive(Debug, Clone, Default)]
struct Counts {
    requests: [f64; Outcome::ALL.len()],
    classes: [f64; StatusClass::ALL.len()],
    bytes: [f64; Source::ALL.len()],
    origin_requests: f64,
    origin_errors: f64,
    origin_timeouts: f64,
    duration: Buckets,
    origin_latency: Buckets,
}

impl Counts {
    /// Add `sign` times `other` (1: merge sites, -1: take a window).
    fn add_scaled(&mut self, other: &Counts, sign: f64) {
        add_each(&mut self.requests, &other.requests, sign);
        add_each(&mut self.classes, &other.classes, sign);
        add_each(&mut self.bytes, &other.bytes, sign);
        self.origin_requests += sign * other.origin_requests;
        self.origin_errors += sign * other.origin_errors;
        self.origin_timeouts += sign * other.origin_timeouts;
        self.duration.add_scaled(&other.duration, sign);
        self.origin_latency.add_scaled(&other.origin_latency, sign);
    }

    /// What was counted between `earlier` and `self`.
    fn since(&self, earlier: &Counts) -> Counts {
        let mut d = self.clone();
        d.add_scaled(earlier, -1.0);
        d
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

    /// Hits over lookups; `None` without lookups.
    fn hit_ratio(&self) -> Option<f64> {
        let looked_up = self.requests_where(Outcome::looked_up);
        (looked_up > 0.0).then(|| self.requests_where(Outcome::served_from_cache) / looked_up)
    }

    /// Responses per second by class over `seconds`.
    fn status_per_second(&self, seconds: f64) -> BTreeMap<String, f64> {
        StatusClass::ALL
            .into_iter()
            .map(|c| (c.as_str().to_owned(), self.classes[c.index()] / seconds))
            .collect()
    }

    /// `self` as the delta over a window of `seconds`, for one site.
    fn site_rates(&self, site: String, seconds: f64) -> SiteRates {
        SiteRates {
            site,
            requests_per_second: self.total_requests() / seconds,
            hit_ratio: self.hit_ratio(),
            status_per_second: self.status_per_second(seconds),
            latency: self.duration.percentiles(),
            origin: OriginRates {
                requests_per_second: self.origin_requests / seconds,
                errors_per_second: self.origin_errors / seconds,
                timeouts_per_second: self.origin_timeouts / seconds,
                latency: self.origin_latency.percentiles(),
                health: OriginHealth::judge(self.origin_requests, self.origin_errors),
            },
        }
    }
}

/// Cumulative counters at one instant.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Unix seconds.
    at: f64,
    /// Every site together.
    all: Counts,
    /// Per site; emptied once older than [`SITE_WINDOW`].
    sites: BTreeMap<String, Counts>,
    collapsed: f64,
    policy_calls: f64,
    policy_failures: f64,
    evicted_objects: f64,
}

fn label<'a>(m: &'a Metric, name: &str) -> Option<&'a str> {
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
        for counts in s.sites.values() {
            s.all.add_scaled(counts, 1.0);
        }
        s
    }

    fn add(&mut self, family: &MetricFamily) {
        let total = || {
            family
                .get_metric()
                .iter()
                .map(|m| m.get_counter().get_value())
                .sum::<f64>()
        };
        match family.get_name() {
            "stavka_collapsed_requests_total" => self.collapsed += total(),
            "stavka_policy_calls_total" => self.policy_calls += total(),
            "stavka_policy_failures_total" => self.policy_failures += total(),
            name => {
                for m in family.get_metric() {
                    let Some(site) = label(m, "site") else {
                        continue;
                    };
                    if !self.sites.contains_key(site) {
                        self.sites.insert(site.to_owned(), Counts::default());
                    }
                    let counts = self.sites.get_mut(site).expect("inserted above");
                    add_site_metric(counts, name, m);
                }
            }
        }
    }

    /// Rates between `earlier` and `self`.
    fn rates(&self, earlier: &Sample) -> Rates {
        let dt = (self.at - earlier.at).max(1e-3);
        let d = self.all.since(&earlier.all);
        let per_second = |now: f64, then: f64| (now - then) / dt;
        Rates {
            seconds: dt,
            requests_per_second: d.total_requests() / dt,
            hit_ratio: d.hit_ratio(),
            bytes_per_second: BytesPerSecond {
                cache: d.bytes[Source::Cache.index()] / dt,
                origin: d.bytes[Source::Origin.index()] / dt,
            },
            origin_requests_per_second: d.origin_requests / dt,
            origin_errors_per_second: d.origin_errors / dt,
            origin_mean_latency_ms: (d.origin_latency.count > 0.0)
                .then(|| d.origin_latency.sum / d.origin_latency.count * 1000.0),
            collapsed_per_second: per_second(self.collapsed, earlier.collapsed),
            evictions_per_second: per_second(self.evicted_objects, earlier.evicted_objects),
            policy_calls_per_second: per_second(self.policy_calls, earlier.policy_calls),
            policy_failures_per_second: per_second(self.policy_failures, earlier.policy_failures),
            status_per_second: d.status_per_second(dt),
            latency: Latency {
                client: d.duration.percentiles(),
                origin: d.origin_latency.percentiles(),
            },
        }
    }

    /// Each site's rates between `earlier` and `self`, busiest first;
    /// requests that matched no site (`-`) only when there were some.
    fn site_rates(&self, earlier: &Sample) -> Vec<SiteRates> {
        let dt = (self.at - earlier.at).max(1e-3);
        let none = Counts::default();
        let mut sites: Vec<SiteRates> = self
            .sites
            .iter()
            .map(|(site, now)| (site, now.since(earlier.sites.get(site).unwrap_or(&none))))
            .filter(|(site, d)| site.as_str() != NO_SITE || d.total_requests() > 0.0)
            .map(|(site, d)| d.site_rates(site.clone(), dt))
            .collect();
        sites.sort_by(|a, b| {
            b.requests_per_second
                .total_cmp(&a.requests_per_second)
                .then_with(|| a.site.cmp(&b.site))
        });
        sites
    }

    /// One point of the series: the second between `earlier` and `self`.
    fn point(&self, earlier: &Sample) -> Point {
        let dt = (self.at - earlier.at).max(1e-3);
        let d = self.all.since(&earlier.all);
        Point {
            t: self.at,
            requests_per_second: d.total_requests() / dt,
            hit_ratio: d.hit_ratio(),
            status_per_second: d.status_per_second(dt),
            latency: d.duration.percentiles(),
        }
    }
}

/// Add one per-site metric of family `name` to `counts`.
fn add_site_metric(counts: &mut Counts, name: &str, m: &Metric) {
    let value = m.get_counter().get_value();
    match name {
        "stavka_requests_total" => {
            if let Some(o) = label(m, "cache_status").and_then(Outcome::from_label) {
                counts.requests[o.index()] += value;
            }
        }
        "stavka_responses_total" => {
            if let Some(c) = label(m, "class").and_then(StatusClass::from_label) {
                counts.classes[c.index()] += value;
            }
        }
        "stavka_served_bytes_total" => {
            let source = label(m, "source")
                .and_then(Source::from_label)
                .unwrap_or(Source::Local);
            counts.bytes[source.index()] += value;
        }
        "stavka_origin_requests_total" => counts.origin_requests += value,
        "stavka_origin_errors_total" => {
            counts.origin_errors += value;
            if matches!(
                label(m, "kind"),
                Some(k) if k == ErrorKind::OriginTimeout.as_str()
                    || k == ErrorKind::OriginConnectTimeout.as_str()
            ) {
                counts.origin_timeouts += value;
            }
        }
        "stavka_request_duration_seconds" => counts.duration.add(m.get_histogram()),
        "stavka_origin_response_seconds" => counts.origin_latency.add(m.get_histogram()),
        _ => {}
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

/// `?after=&n=`: events newer than `after` (default 0), at most `n`.
#[derive(Debug, serde::Deserialize)]
pub struct EventsQuery {
    after: Option<u64>,
    n: Option<usize>,
}

/// `GET /events`: the event log, oldest first.
pub async fn events(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Events>, ApiError> {
    let Query(query) = query?;
    let n = query.n.unwrap_or(50).min(crate::events::KEPT);
    Ok(Json(Events {
        events: state.metrics.events.after(query.after.unwrap_or(0), n),
    }))
}

/// One snapshot a second, for rates and charts.
#[derive(Default)]
pub struct Sampler {
    samples: Mutex<VecDeque<Sample>>,
}

impl Sampler {
    /// Take a snapshot now, dropping the oldest beyond [`KEPT`] and the
    /// per-site figures the site window no longer needs; tell the event log
    /// of an eviction spike.
    fn record(&self, state: &AdminState) {
        let sample = Sample::take(state);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(spike) = eviction_spike(&samples, &sample) {
            state.metrics.events.record(
                EventKind::EvictionSpike,
                "store",
                format!("{spike:.0} objects/s evicted"),
            );
        }
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
        let stale = samples.len().saturating_sub(SITE_WINDOW as usize + 2);
        if let Some(old) = samples.get_mut(stale) {
            old.sites = BTreeMap::new();
        }
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

/// The eviction rate of the second ending at `now`, if it is a spike: at
/// least [`SPIKE_FLOOR`] a second and [`SPIKE_FACTOR`] times the mean over
/// the minute before, when the second before was not one already (one
/// event per spike).
fn eviction_spike(samples: &VecDeque<Sample>, now: &Sample) -> Option<f64> {
    let rate = |a: &Sample, b: &Sample| {
        let dt = b.at - a.at;
        if dt > 0.0 {
            (b.evicted_objects - a.evicted_objects) / dt
        } else {
            0.0
        }
    };
    let last = samples.back()?;
    let minute_ago = samples.iter().rev().nth(60).or_else(|| samples.front())?;
    let baseline = rate(minute_ago, last);
    let spiking = |r: f64| r >= SPIKE_FLOOR && r >= SPIKE_FACTOR * baseline;
    let current = rate(last, now);
    let previous = samples.iter().rev().nth(1).map(|before| rate(before, last));
    (spiking(current) && !previous.is_some_and(spiking)).then_some(current)
}

/// Totals since start, rates over the last 10 and 60 seconds, per-tier
/// sizes, a per-second series of request rate, hit ratio, status classes
/// and latency, and each site over the last 10 seconds.
pub async fn stats(State(state): State<Arc<AdminState>>) -> Json<Stats> {
    let now = Sample::take(&state);
    let (rates, series, sites) = {
        let samples = state
            .sampler
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The newest snapshot at least `window` seconds old, else the oldest.
        let earlier = |window: u64| {
            let since = now.at - window as f64;
            samples
                .iter()
                .rev()
                .find(|s| s.at <= since)
                .or_else(|| samples.front())
        };
        let rates: BTreeMap<String, Option<Rates>> = WINDOWS
            .into_iter()
            .map(|w| (format!("{w}s"), earlier(w).map(|e| now.rates(e))))
            .collect();
        let series: Vec<Point> = samples
            .iter()
            .zip(samples.iter().skip(1))
            .skip(samples.len().saturating_sub(SERIES + 1))
            .map(|(a, b)| b.point(a))
            .collect();
        let sites = earlier(SITE_WINDOW)
            .map(|e| now.site_rates(e))
            .unwrap_or_default();
        (rates, series, sites)
    };
    let all = &now.all;
    let by_cache_status = Outcome::ALL
        .iter()
        .zip(all.requests)
        .map(|(o, n)| (o.as_str().to_owned(), n as u64))
        .collect();
    let store = state.store.stats();
    let (catalog_objects, catalog_tags) = state.store.catalog_totals();
    Json(Stats {
        at: now.at,
        totals: Totals {
            requests: all.total_requests() as u64,
            by_cache_status,
            hit_ratio: all.hit_ratio(),
            bytes_served: BytesServed {
                cache: all.bytes[Source::Cache.index()] as u64,
                origin: all.bytes[Source::Origin.index()] as u64,
                local: all.bytes[Source::Local.index()] as u64,
            },
            origin: OriginTotals {
                requests: all.origin_requests as u64,
                errors: all.origin_errors as u64,
                mean_latency_ms: (all.origin_latency.count > 0.0)
                    .then(|| all.origin_latency.sum / all.origin_latency.count * 1000.0),
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
            prefetch: {
                let (queued, running) = state
                    .prefetcher
                    .lanes()
                    .iter()
                    .fold((0, 0), |(q, r), (_, queued, running)| {
                        (q + *queued as u64, r + *running as u64)
                    });
                PrefetchTotals {
                    by_outcome: state.prefetcher.metrics().by_outcome(),
                    queued,
                    running,
                    tracked: state.prefetcher.tracker.tracked() as u64,
                }
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
            io_engine: state.store.io_engine().as_str().to_owned(),
            shared: state.store.shared_breaker().map(|breaker| SharedStatus {
                breaker: breaker.as_str().to_owned(),
                purge_bus: match &state.purge_bus {
                    None => "off",
                    Some(bus) if bus.connected() => "connected",
                    Some(_) => "disconnected",
                }
                .to_owned(),
            }),
        },
        rates,
        series,
        sites,
        certificates: state
            .certificates
            .as_ref()
            .map(|c| c.status())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets holding `n` observations at each of `(bound index, n)`.
    fn buckets(at: &[(usize, f64)]) -> Buckets {
        let mut b = Buckets::default();
        for &(i, n) in at {
            for le in &mut b.le[i..] {
                *le += n;
            }
            b.count += n;
            b.sum += n * LATENCY_BUCKETS[i];
        }
        b
    }

    #[test]
    fn percentiles_interpolate_within_the_bucket_like_histogram_quantile() {
        // 100 observations in (1 ms, 2.5 ms]: the median is half way.
        let b = buckets(&[(2, 100.0)]);
        let p = b.percentiles();
        assert!((p.p50_ms.unwrap() - 1.75).abs() < 1e-9, "{p:?}");
        assert!(
            (p.p99_ms.unwrap() - (1.0 + 1.5 * 0.99)).abs() < 1e-9,
            "{p:?}"
        );
        // 99 fast and one slow: p99 stays fast, the slow one moves nothing
        // below it.
        let b = buckets(&[(0, 99.0), (9, 1.0)]);
        assert!(b.percentiles().p99_ms.unwrap() <= 0.5);
        // Above every bucket: the top bound.
        let mut b = buckets(&[]);
        b.count = 10.0;
        assert_eq!(b.quantile(0.5), Some(30.0));
        assert_eq!(Buckets::default().percentiles().p50_ms, None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_histograms() {
        let early = buckets(&[(1, 50.0)]);
        let late = buckets(&[(1, 50.0), (4, 10.0)]);
        let mut d = late;
        d.add_scaled(&early, -1.0);
        assert_eq!(d.count, 10.0);
        assert!(d.percentiles().p50_ms.unwrap() > 5.0);
    }

    fn at(t: f64, evicted: f64) -> Sample {
        Sample {
            at: t,
            evicted_objects: evicted,
            ..Sample::default()
        }
    }

    #[test]
    fn an_eviction_spike_is_told_once_and_a_steady_rate_is_not() {
        // A steady 200/s for a minute is no spike.
        let mut samples: VecDeque<Sample> =
            (0..61).map(|i| at(i as f64, 200.0 * i as f64)).collect();
        assert_eq!(eviction_spike(&samples, &at(61.0, 200.0 * 61.0)), None);
        // Then 5,000 in a second: a spike, told once.
        let spike = at(61.0, 200.0 * 60.0 + 5000.0);
        assert_eq!(eviction_spike(&samples, &spike), Some(4800.0 + 200.0));
        samples.push_back(spike);
        let next = at(62.0, 200.0 * 60.0 + 10_000.0);
        assert_eq!(eviction_spike(&samples, &next), None);
        // Few evictions are never a spike, however sudden.
        let quiet: VecDeque<Sample> = (0..5).map(|i| at(i as f64, 0.0)).collect();
        assert_eq!(eviction_spike(&quiet, &at(5.0, 50.0)), None);
    }
}
