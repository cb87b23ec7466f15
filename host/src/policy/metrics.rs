//! Policy metrics: per module, registered in the process registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::breaker::BreakerMetrics;
use crate::events::{EventKind, EventLog};
use crate::prefetch::PrefetchMetrics;

/// A hook, as labelled in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `on-request`.
    Request,
    /// `on-response`.
    Response,
    /// `on-hit`.
    Hit,
    /// `slicing.decide` (since 0.1.1).
    Slice,
    /// `lifecycle.init`.
    Init,
    /// `on-body.received` (since 0.2.1).
    Body,
}

impl Hook {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Request => "on-request",
            Hook::Response => "on-response",
            Hook::Hit => "on-hit",
            Hook::Slice => "slicing",
            Hook::Init => "init",
            Hook::Body => "on-body",
        }
    }
}

/// Why a call failed: in the guest (the first three, which the circuit
/// breaker counts), or before entering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (a panic, `unreachable`, a bad access).
    Trap,
    /// The call overran its deadline and was interrupted.
    Deadline,
    /// The instance tried to grow past its memory cap.
    Memory,
    /// No instance came free within the wait: the module already ran as
    /// many calls as `instances` allows.
    Busy,
    /// The module's circuit breaker is open.
    BreakerOpen,
}

impl FailureKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::Busy => "busy",
            FailureKind::BreakerOpen => "breaker-open",
        }
    }
}

/// What the watcher made of a module file it was told had changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadResult {
    /// A new version was compiled and published.
    Loaded,
    /// The file was compiled (or read) and refused.
    Rejected,
    /// The content was the same as last time; nothing was compiled.
    Unchanged,
}

impl LoadResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadResult::Loaded => "loaded",
            LoadResult::Rejected => "rejected",
            LoadResult::Unchanged => "unchanged",
        }
    }
}

/// The policy metric families.
pub struct PolicyMetrics {
    calls: IntCounterVec,
    memo_hits: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    info: IntGaugeVec,
    loaded_at: GaugeVec,
    load_errors: IntCounterVec,
    loads: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_opens: IntCounterVec,
    last_error: IntGaugeVec,
    guest_counters: IntCounterVec,
    guest_gauges: IntGaugeVec,
    /// The label sets currently exported, per module, so a reload can
    /// retire the old ones.
    current: Mutex<HashMap<String, Exported>>,
    /// Loads, rejections, removals and breaker trips, for the operator.
    events: Arc<EventLog>,
    /// What modules asked to prefetch, and what became of it.
    prefetch: PrefetchMetrics,
}

/// A module's current `info` labels and `last_error` message.
#[derive(Default)]
struct Exported {
    info: Vec<String>,
    error: Option<String>,
}

/// A module's call counters, resolved once per loaded module version.
pub struct ModuleCallMetrics {
    calls: [IntCounter; HOOKS.len()],
    memo_hits: [IntCounter; HOOKS.len()],
    failures: [[IntCounter; 5]; HOOKS.len()],
    /// Seconds per call, including instantiation for per-request modules.
    pub duration: prometheus::Histogram,
}

impl ModuleCallMetrics {
    /// Count a call of `hook`.
    pub fn call(&self, hook: Hook) {
        self.calls[hook as usize].inc();
    }

    /// Count a call of `hook` answered from the memo, without the guest.
    pub fn memo_hit(&self, hook: Hook) {
        self.memo_hits[hook as usize].inc();
    }

    /// Count a failed call of `hook`.
    pub fn failure(&self, hook: Hook, kind: FailureKind) {
        self.failures[hook as usize][kind as usize].inc();
    }
}

const HOOKS: [Hook; 6] = [
    Hook::Request,
    Hook::Response,
    Hook::Hit,
    Hook::Slice,
    Hook::Init,
    Hook::Body,
];
const KINDS: [FailureKind; 5] = [
    FailureKind::Trap,
    FailureKind::Deadline,
    FailureKind::Memory,
    FailureKind::Busy,
    FailureKind::BreakerOpen,
];

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl PolicyMetrics {
    /// Register the families in `r`.
    /// Register the families in `r`; load and breaker events go to `events`.
    pub fn new(r: &Registry, events: Arc<EventLog>) -> PolicyMetrics {
        let cv = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gv = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        PolicyMetrics {
            calls: cv("stavka_policy_calls_total", "Policy hook calls that entered the module, by module and hook.", &["module", "hook"]),
            memo_hits: cv(
                "stavka_policy_memo_hits_total",
                "Policy hook calls answered with a decision the module made earlier for a request that agreed on every field it read, without entering the module.",
                &["module", "hook"],
            ),
            failures: cv(
                "stavka_policy_failures_total",
                "Policy hook calls stopped by a trap, the deadline or the memory cap, or refused before entering the module (busy, breaker-open).",
                &["module", "hook", "kind"],
            ),
            duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new("stavka_policy_call_seconds", "Policy hook call time, including instantiation.")
                        .buckets(vec![1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2]),
                    &["module"],
                )
                .expect("valid metric"),
            ),
            info: gv(
                "stavka_policy_module_info",
                "The loaded version of each module: content hash and mode.",
                &["module", "hash", "mode"],
            ),
            loaded_at: register(
                r,
                GaugeVec::new(
                    Opts::new("stavka_policy_loaded_timestamp_seconds", "When the serving version of each module was loaded."),
                    &["module"],
                )
                .expect("valid metric"),
            ),
            load_errors: cv("stavka_policy_load_errors_total", "Module versions rejected.", &["module"]),
            loads: cv(
                "stavka_policy_loads_total",
                "Module files looked at after a change: loaded, rejected, or unchanged (not compiled).",
                &["module", "result"],
            ),
            breaker_state: gv(
                "stavka_policy_breaker_state",
                "Each module's circuit breaker: 0 closed, 1 half-open (probing), 2 open (calls refused).",
                &["module"],
            ),
            breaker_opens: cv(
                "stavka_policy_breaker_opens_total",
                "Times each module's circuit breaker opened.",
                &["module"],
            ),
            last_error: gv(
                "stavka_policy_last_load_error",
                "The last rejection of a module since its serving version loaded (1 while it stands).",
                &["module", "error"],
            ),
            guest_counters: cv(
                "stavka_policy_guest_counter_total",
                "Counters defined by policy modules.",
                &["module", "name"],
            ),
            guest_gauges: gv("stavka_policy_guest_gauge", "Gauges defined by policy modules.", &["module", "name"]),
            current: Mutex::default(),
            events,
            prefetch: PrefetchMetrics::new(r),
        }
    }

    /// The prefetch family, which the prefetcher counts in too.
    pub fn prefetch(&self) -> &PrefetchMetrics {
        &self.prefetch
    }

    /// Handles for one module's calls.
    pub fn module(&self, module: &str) -> ModuleCallMetrics {
        ModuleCallMetrics {
            calls: HOOKS.map(|h| self.calls.with_label_values(&[module, h.as_str()])),
            memo_hits: HOOKS.map(|h| self.memo_hits.with_label_values(&[module, h.as_str()])),
            failures: HOOKS.map(|h| {
                KINDS.map(|k| {
                    self.failures
                        .with_label_values(&[module, h.as_str(), k.as_str()])
                })
            }),
            duration: self.duration.with_label_values(&[module]),
        }
    }

    /// A module version was published.
    pub fn loaded(&self, module: &str, hash: &str, mode: &str, at_unix_seconds: f64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let entry = current.entry(module.to_owned()).or_default();
        if !entry.info.is_empty() {
            let old: Vec<&str> = entry.info.iter().map(String::as_str).collect();
            let _ = self.info.remove_label_values(&old);
        }
        if let Some(error) = entry.error.take() {
            let _ = self.last_error.remove_label_values(&[module, &error]);
        }
        entry.info = vec![module.to_owned(), hash.to_owned(), mode.to_owned()];
        self.load(module, LoadResult::Loaded);
        self.events.record(
            EventKind::PolicyLoaded,
            module,
            format!("version {} ({mode})", &hash[..hash.len().min(12)]),
        );
        self.info.with_label_values(&[module, hash, mode]).set(1);
        self.loaded_at
            .with_label_values(&[module])
            .set(at_unix_seconds);
    }

    /// A module version was rejected; the previous one (if any) keeps serving.
    pub fn rejected(&self, module: &str, error: &str) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let entry = current.entry(module.to_owned()).or_default();
        if let Some(old) = entry.error.replace(error.to_owned()) {
            let _ = self.last_error.remove_label_values(&[module, &old]);
        }
        self.last_error.with_label_values(&[module, error]).set(1);
        self.load_errors.with_label_values(&[module]).inc();
        self.load(module, LoadResult::Rejected);
        self.events.record(EventKind::PolicyRejected, module, error);
    }

    /// How many versions of `module` were rejected so far.
    pub fn rejections(&self, module: &str) -> u64 {
        self.load_errors.with_label_values(&[module]).get()
    }

    /// Count what became of a changed module file.
    pub fn load(&self, module: &str, result: LoadResult) {
        self.loads
            .with_label_values(&[module, result.as_str()])
            .inc();
    }

    /// The circuit breaker metrics of `module`.
    pub fn breaker(&self, module: &str) -> BreakerMetrics {
        BreakerMetrics {
            state: self.breaker_state.with_label_values(&[module]),
            opens: self.breaker_opens.with_label_values(&[module]),
            events: self.events.clone(),
        }
    }

    /// A module was removed from the directory.
    pub fn removed(&self, module: &str) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Exported { info, error }) = current.remove(module) {
            let info: Vec<&str> = info.iter().map(String::as_str).collect();
            if !info.is_empty() {
                let _ = self.info.remove_label_values(&info);
            }
            if let Some(error) = error {
                let _ = self.last_error.remove_label_values(&[module, &error]);
            }
        }
        let _ = self.loaded_at.remove_label_values(&[module]);
        self.events
            .record(EventKind::PolicyRemoved, module, "its file is gone");
    }

    /// The rejection standing against `module` (its newest file failed to
    /// load), if any.
    pub fn last_error(&self, module: &str) -> Option<String> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.get(module).and_then(|e| e.error.clone())
    }

    /// Modules that failed to load and have no serving version, with why.
    pub fn failed_only(&self) -> Vec<(String, String)> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .iter()
            .filter(|(_, e)| e.info.is_empty())
            .filter_map(|(m, e)| Some((m.clone(), e.error.clone()?)))
            .collect()
    }

    /// `module`'s calls so far, and its failed calls by kind.
    pub fn call_totals(&self, module: &str) -> (u64, [(&'static str, u64); 5]) {
        let calls = HOOKS
            .iter()
            .filter_map(|h| {
                self.calls
                    .get_metric_with_label_values(&[module, h.as_str()])
                    .ok()
            })
            .map(|c| c.get())
            .sum();
        let failures = KINDS.map(|k| {
            let n = HOOKS
                .iter()
                .filter_map(|h| {
                    self.failures
                        .get_metric_with_label_values(&[module, h.as_str(), k.as_str()])
                        .ok()
                })
                .map(|c| c.get())
                .sum();
            (k.as_str(), n)
        });
        (calls, failures)
    }

    /// A module's calls answered from its memo, over all hooks.
    pub fn memo_hit_total(&self, module: &str) -> u64 {
        HOOKS
            .iter()
            .filter_map(|h| {
                self.memo_hits
                    .get_metric_with_label_values(&[module, h.as_str()])
                    .ok()
            })
            .map(|c| c.get())
            .sum()
    }

    /// A guest-defined counter.
    pub fn guest_counter(&self, module: &str, name: &str) -> IntCounter {
        self.guest_counters.with_label_values(&[module, name])
    }

    /// A guest-defined gauge.
    pub fn guest_gauge(&self, module: &str, name: &str) -> IntGauge {
        self.guest_gauges.with_label_values(&[module, name])
    }
}
