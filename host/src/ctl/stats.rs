//! `stavka ctl stats`: `GET /stats` as one table of the main figures, since
//! start and over each window the server reports, and the store's sizes.
//! `top` draws the same figures each second.

use super::client::Client;
use super::format;
use super::table::{Align, Table};
use crate::admin::report::{Rates, Stats, Totals};
use crate::status_class::StatusClass;

/// The store's tiers, as `/stats` names them.
#[derive(Debug, Clone, Copy)]
enum TierKind {
    Memory,
    Disk,
}

impl TierKind {
    /// The row's label.
    fn as_str(self) -> &'static str {
        match self {
            TierKind::Memory => "memory",
            TierKind::Disk => "disk",
        }
    }
}

/// A row of the figures table: a total since start and a rate per window.
#[derive(Debug, Clone, Copy)]
enum Figure {
    Requests,
    HitRatio,
    BytesFromCache,
    BytesFromOrigin,
    OriginRequests,
    OriginErrors,
    OriginLatency,
    ClientP50,
    ClientP99,
    OriginP99,
    ClientErrors,
    ServerErrors,
    Collapsed,
    Evictions,
    PolicyCalls,
    PolicyFailures,
}

impl Figure {
    const ALL: [Figure; 16] = [
        Figure::Requests,
        Figure::HitRatio,
        Figure::BytesFromCache,
        Figure::BytesFromOrigin,
        Figure::OriginRequests,
        Figure::OriginErrors,
        Figure::OriginLatency,
        Figure::ClientP50,
        Figure::ClientP99,
        Figure::OriginP99,
        Figure::ClientErrors,
        Figure::ServerErrors,
        Figure::Collapsed,
        Figure::Evictions,
        Figure::PolicyCalls,
        Figure::PolicyFailures,
    ];

    /// The row's label.
    fn as_str(self) -> &'static str {
        match self {
            Figure::Requests => "requests",
            Figure::HitRatio => "hit ratio",
            Figure::BytesFromCache => "bytes from cache",
            Figure::BytesFromOrigin => "bytes from origin",
            Figure::OriginRequests => "origin requests",
            Figure::OriginErrors => "origin errors",
            Figure::OriginLatency => "origin latency",
            Figure::ClientP50 => "client latency p50",
            Figure::ClientP99 => "client latency p99",
            Figure::OriginP99 => "origin latency p99",
            Figure::ClientErrors => "4xx responses",
            Figure::ServerErrors => "5xx responses",
            Figure::Collapsed => "collapsed requests",
            Figure::Evictions => "evictions",
            Figure::PolicyCalls => "policy calls",
            Figure::PolicyFailures => "policy failures",
        }
    }

    /// Since start.
    fn total(self, t: &Totals) -> String {
        match self {
            Figure::Requests => t.requests.to_string(),
            Figure::HitRatio => format::ratio(t.hit_ratio),
            Figure::BytesFromCache => format::bytes(t.bytes_served.cache),
            Figure::BytesFromOrigin => format::bytes(t.bytes_served.origin),
            Figure::OriginRequests => t.origin.requests.to_string(),
            Figure::OriginErrors => t.origin.errors.to_string(),
            Figure::OriginLatency => format::millis(t.origin.mean_latency_ms),
            // Percentiles and status classes are kept per window only.
            Figure::ClientP50
            | Figure::ClientP99
            | Figure::OriginP99
            | Figure::ClientErrors
            | Figure::ServerErrors => "-".to_owned(),
            Figure::Collapsed => t.collapsed_requests.to_string(),
            Figure::Evictions => t.evictions.objects.to_string(),
            Figure::PolicyCalls => t.policy.calls.to_string(),
            Figure::PolicyFailures => t.policy.failures.to_string(),
        }
    }

    /// Over one window.
    fn rate(self, r: &Rates) -> String {
        match self {
            Figure::Requests => format::per_second(r.requests_per_second),
            Figure::HitRatio => format::ratio(r.hit_ratio),
            Figure::BytesFromCache => format::bytes_per_second(r.bytes_per_second.cache),
            Figure::BytesFromOrigin => format::bytes_per_second(r.bytes_per_second.origin),
            Figure::OriginRequests => format::per_second(r.origin_requests_per_second),
            Figure::OriginErrors => format::per_second(r.origin_errors_per_second),
            Figure::OriginLatency => format::millis(r.origin_mean_latency_ms),
            Figure::ClientP50 => format::millis(r.latency.client.p50_ms),
            Figure::ClientP99 => format::millis(r.latency.client.p99_ms),
            Figure::OriginP99 => format::millis(r.latency.origin.p99_ms),
            Figure::ClientErrors => status(r, StatusClass::ClientError),
            Figure::ServerErrors => status(r, StatusClass::ServerError),
            Figure::Collapsed => format::per_second(r.collapsed_per_second),
            Figure::Evictions => format::per_second(r.evictions_per_second),
            Figure::PolicyCalls => format::per_second(r.policy_calls_per_second),
            Figure::PolicyFailures => format::per_second(r.policy_failures_per_second),
        }
    }
}

/// Responses of `class` per second in `r`.
fn status(r: &Rates, class: StatusClass) -> String {
    format::per_second(
        r.status_per_second
            .get(class.as_str())
            .copied()
            .unwrap_or(0.0),
    )
}

/// Which columns [`figures`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// The totals since start and every window (`stats`).
    TotalsAndRates,
    /// Only the windows (`top`, where totals only ever grow).
    Rates,
}

/// The statistics for `stats`, as a table or the API's JSON.
pub async fn run(client: &Client, json: bool) -> anyhow::Result<String> {
    let reply = client.get("/stats").await?;
    if json {
        return reply.pretty();
    }
    let stats: Stats = reply.json()?;
    Ok(format!(
        "{}\n{}\n{}",
        figures(&stats, Columns::TotalsAndRates),
        sites(&stats),
        store(&stats)
    ))
}

/// Each site over the last 10 seconds: traffic, errors, latency and its
/// origin's health.
pub fn sites(stats: &Stats) -> String {
    let mut table = Table::new(&[
        ("SITE", Align::Left),
        ("REQ/S", Align::Right),
        ("HIT", Align::Right),
        ("5XX/S", Align::Right),
        ("P50", Align::Right),
        ("P99", Align::Right),
        ("ORIGIN", Align::Left),
        ("ORIGIN REQ/S", Align::Right),
        ("ERR/S", Align::Right),
        ("TIMEOUT/S", Align::Right),
        ("ORIGIN P99", Align::Right),
    ]);
    for site in &stats.sites {
        let o = &site.origin;
        let server_errors = site
            .status_per_second
            .get(StatusClass::ServerError.as_str())
            .copied()
            .unwrap_or(0.0);
        table.row(vec![
            site.site.clone(),
            format::per_second(site.requests_per_second),
            format::ratio(site.hit_ratio),
            format::per_second(server_errors),
            format::millis(site.latency.p50_ms),
            format::millis(site.latency.p99_ms),
            o.health.as_str().to_owned(),
            format::per_second(o.requests_per_second),
            format::per_second(o.errors_per_second),
            format::per_second(o.timeouts_per_second),
            format::millis(o.latency.p99_ms),
        ]);
    }
    table.render()
}

/// One row per figure; a window the server has no snapshot for yet (just
/// after start) shows `-`.
pub fn figures(stats: &Stats, columns: Columns) -> String {
    let mut windows: Vec<(&String, &Option<Rates>)> = stats.rates.iter().collect();
    windows.sort_by_key(|(name, _)| window_seconds(name));
    let mut headers = vec![("", Align::Left)];
    if columns == Columns::TotalsAndRates {
        headers.push(("TOTAL", Align::Right));
    }
    headers.extend(
        windows
            .iter()
            .map(|(name, _)| (name.as_str(), Align::Right)),
    );
    let mut table = Table::new(&headers);
    for figure in Figure::ALL {
        let mut row = vec![figure.as_str().to_owned()];
        if columns == Columns::TotalsAndRates {
            row.push(figure.total(&stats.totals));
        }
        row.extend(windows.iter().map(|(_, rates)| {
            rates
                .as_ref()
                .map_or_else(|| "-".to_owned(), |r| figure.rate(r))
        }));
        table.row(row);
    }
    table.render()
}

/// Each tier's objects and bytes against its capacity, and the catalog.
pub fn store(stats: &Stats) -> String {
    let mut table = Table::new(&[
        ("TIER", Align::Left),
        ("OBJECTS", Align::Right),
        ("BYTES", Align::Right),
        ("CAPACITY", Align::Right),
    ]);
    for (kind, tier) in [
        (TierKind::Memory, &stats.store.memory),
        (TierKind::Disk, &stats.store.disk),
    ] {
        table.row(vec![
            kind.as_str().to_owned(),
            tier.objects.to_string(),
            format::bytes(tier.bytes),
            format::bytes(tier.capacity_bytes),
        ]);
    }
    let shared = stats
        .store
        .shared
        .as_ref()
        .map(|s| {
            format!(
                "shared tier: breaker {}, purge bus {}\n",
                s.breaker, s.purge_bus
            )
        })
        .unwrap_or_default();
    format!(
        "{}catalog: {} objects, {} tags\n{shared}",
        table.render(),
        stats.store.catalog.objects,
        stats.store.catalog.tags
    )
}

/// `10s` → 10, for ordering windows by length; unknown names go last.
fn window_seconds(name: &str) -> u64 {
    name.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}
