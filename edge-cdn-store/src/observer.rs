//! What the store reports, to whoever wants to know.
//!
//! The store calls a [`StoreObserver`] at each event; it does not own a
//! metrics registry or a logger. [`PrometheusObserver`] exports counters into
//! a registry you pass in; [`TracingObserver`] writes debug events.

use std::time::Duration;

use crate::breaker::{BreakerState, SharedOp};
use crate::error::WriteFailure;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Which tier served or held an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The memory tier.
    Memory,
    /// The disk tier.
    Disk,
    /// A write still in progress.
    Partial,
    /// The shared tier, after a local miss.
    Shared,
}

impl Tier {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Partial => "partial",
            Tier::Shared => "shared",
        }
    }
}

/// Something the store did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StoreEvent {
    /// A lookup found the object in `tier`.
    Hit(Tier),
    /// A lookup found nothing.
    Miss,
    /// An object was committed with this many bytes.
    Insert(u64),
    /// A disk object was copied into memory.
    Promotion,
    /// An object was removed because the store was full.
    Eviction,
    /// An object was removed or expired on request.
    Purge,
    /// A file failed its checks and was removed.
    Corrupt,
    /// A write was refused because disk I/O was saturated.
    Skipped,
    /// Body bytes read from disk.
    BytesRead(u64),
    /// Body bytes written to disk.
    BytesWritten(u64),
    /// One disk operation took this long.
    DiskLatency(&'static str, Duration),
    /// An object could not be stored, for this reason; its response was
    /// served whole all the same.
    WriteFailed(WriteFailure),
    /// The shared tier failed or was too slow; the store failed open.
    SharedUnavailable,
    /// One call to the shared tier failed or timed out (reported by the
    /// tier itself, through its [`Breaker`](crate::Breaker)).
    SharedError(SharedOp),
    /// The shared tier's circuit breaker changed state.
    SharedBreaker(BreakerState),
    /// An object was written to the shared tier, with this many body bytes.
    SharedPut(u64),
    /// The purge catalog could not record a change. An object it could not
    /// record was removed; an entry it could not remove is left for the
    /// next start's reconciliation.
    CatalogFailed,
    /// An object read since it was stored was copied forward in the segment
    /// ring as its region was reclaimed, instead of being evicted.
    CopiedForward,
    /// A small object was written to files because the segment ring's next
    /// region was not yet reclaimed: the reclaimer is behind the fills.
    RingBehind,
}

/// Receives the store's events. Must be cheap: it is called on the request path.
pub trait StoreObserver: Send + Sync {
    /// One event.
    fn event(&self, event: StoreEvent);
}

/// Ignores everything.
pub struct NoopObserver;

impl StoreObserver for NoopObserver {
    fn event(&self, _event: StoreEvent) {}
}

/// Writes each event as a `tracing` debug event (target `edge_cdn_store`).
pub struct TracingObserver;

impl StoreObserver for TracingObserver {
    fn event(&self, event: StoreEvent) {
        match event {
            StoreEvent::Corrupt
            | StoreEvent::WriteFailed(_)
            | StoreEvent::CatalogFailed
            | StoreEvent::SharedBreaker(BreakerState::Open) => {
                tracing::warn!(target: "edge_cdn_store", ?event)
            }
            _ => tracing::debug!(target: "edge_cdn_store", ?event),
        }
    }
}

/// Exports events as Prometheus counters and a latency histogram, and the
/// shared tier's errors and breaker state.
pub struct PrometheusObserver {
    lookups: IntCounterVec,
    events: IntCounterVec,
    bytes: IntCounterVec,
    latency: HistogramVec,
    shared_errors: IntCounterVec,
    breaker: IntGauge,
}

impl PrometheusObserver {
    /// Register the families in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<PrometheusObserver> {
        let lookups = IntCounterVec::new(
            Opts::new(
                "edge_store_lookups_total",
                "Store lookups by result and tier.",
            ),
            &["result", "tier"],
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "edge_store_events_total",
                "Inserts, promotions, evictions, purges, corrupt files, skipped and failed writes, shared-tier puts, failures and breaker openings, purge catalog failures, segment ring copies and fallbacks to files.",
            ),
            &["event"],
        )?;

        let bytes = IntCounterVec::new(
            Opts::new(
                "edge_store_disk_bytes_total",
                "Body bytes read from and written to disk.",
            ),
            &["direction"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("edge_store_disk_seconds", "Disk operation latency.").buckets(vec![
                1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5,
            ]),
            &["op"],
        )?;
        let shared_errors = IntCounterVec::new(
            Opts::new(
                "edge_store_shared_errors_total",
                "Shared-tier calls that failed or timed out, by operation.",
            ),
            &["op"],
        )?;
        let breaker = IntGauge::new(
            "edge_store_shared_breaker_state",
            "The shared tier's circuit breaker: 0 closed, 1 open, 2 half-open (probing).",
        )?;
        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(shared_errors.clone()))?;
        registry.register(Box::new(breaker.clone()))?;
        Ok(PrometheusObserver {
            lookups,
            events,
            bytes,
            latency,
            shared_errors,
            breaker,
        })
    }
}

impl StoreObserver for PrometheusObserver {
    fn event(&self, event: StoreEvent) {
        let count = |e: &str| self.events.with_label_values(&[e]).inc();
        match event {
            StoreEvent::Hit(tier) => self
                .lookups
                .with_label_values(&["hit", tier.as_str()])
                .inc(),
            StoreEvent::Miss => self.lookups.with_label_values(&["miss", "none"]).inc(),
            StoreEvent::Insert(_) => count("insert"),
            StoreEvent::Promotion => count("promotion"),
            StoreEvent::Eviction => count("eviction"),
            StoreEvent::Purge => count("purge"),
            StoreEvent::Corrupt => count("corrupt"),
            StoreEvent::Skipped => count("skipped"),
            StoreEvent::WriteFailed(_) => count("write-failed"),
            StoreEvent::SharedUnavailable => count("shared-unavailable"),
            StoreEvent::SharedError(op) => {
                self.shared_errors.with_label_values(&[op.as_str()]).inc()
            }
            StoreEvent::SharedBreaker(state) => {
                if state == BreakerState::Open {
                    count("shared-breaker-opened");
                }
                self.breaker.set(state.as_gauge());
            }
            StoreEvent::SharedPut(_) => count("shared-put"),
            StoreEvent::CatalogFailed => count("catalog-failed"),
            StoreEvent::CopiedForward => count("copied-forward"),
            StoreEvent::RingBehind => count("ring-behind"),
            StoreEvent::BytesRead(n) => self.bytes.with_label_values(&["read"]).inc_by(n),
            StoreEvent::BytesWritten(n) => self.bytes.with_label_values(&["written"]).inc_by(n),
            StoreEvent::DiskLatency(op, d) => self
                .latency
                .with_label_values(&[op])
                .observe(d.as_secs_f64()),
        }
    }
}
