//! What a policy instance's store holds, and the host functions it imports.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use prometheus::{IntCounter, IntGauge};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{v01, v02};
use super::breaker::Breaker;
use super::kv::Kv;
use super::metrics::PolicyMetrics;
use super::request::{Request, RequestHandle, RequestView};
use super::trace::{
    monotonic_now, wall_now, Field, Impurity, MonotonicClock, Random, Reads, WallClock,
};
use crate::limits::RateLimiter;
use crate::prefetch::{ModuleBuckets, Phase, PrefetchMetrics, Refusal, Scope};

/// How often the engine's epoch advances: the resolution of every
/// deadline, and the most CPU time a call is charged before its first
/// reading of the thread clock.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Guest-defined metric names a module may create; more are ignored, so a
/// guest cannot grow the host's metrics without bound.
const MAX_GUEST_METRICS: usize = 64;
/// Longest guest log line kept; the rest is cut.
const MAX_LOG_LINE: usize = 4096;

/// What every instance of one module shares, across reloads of the module.
pub struct ModuleShared {
    /// The module's name, for logs and metric labels.
    pub name: Arc<str>,
    /// Its key-value store.
    pub kv: Arc<Kv>,
    /// Its circuit breaker; each new version resets it.
    pub breaker: Breaker,
    /// Token buckets for `host.rate-limit`, shared by every instance.
    pub buckets: RateLimiter<String>,
    /// Where refused prefetches of calls that may not prefetch are counted.
    pub prefetch: PrefetchMetrics,
    /// WASI's insecure seed for every instance, so that instances of the
    /// module hash alike and a call's outcome depends only on what it read.
    seed: u128,
    metrics: Arc<PolicyMetrics>,
    counters: Mutex<HashMap<String, IntCounter>>,
    gauges: Mutex<HashMap<String, IntGauge>>,
}

impl ModuleShared {
    /// Shared state for the module `name`.
    pub fn new(
        name: &str,
        kv: Arc<Kv>,
        metrics: Arc<PolicyMetrics>,
        prefetch: PrefetchMetrics,
    ) -> ModuleShared {
        let name: Arc<str> = name.into();
        ModuleShared {
            breaker: Breaker::new(name.clone(), metrics.breaker(&name)),
            name,
            kv,
            buckets: RateLimiter::default(),
            prefetch,
            seed: rand::random(),
            metrics,
            counters: Mutex::default(),
            gauges: Mutex::default(),
        }
    }

    fn guest_metric<M: Clone>(
        &self,
        map: &Mutex<HashMap<String, M>>,
        name: &str,
        make: impl FnOnce(&str, &str) -> M,
    ) -> Option<M> {
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = map.get(name) {
            return Some(m.clone());
        }
        if map.len() >= MAX_GUEST_METRICS {
            return None;
        }
        let m = make(&self.name, name);
        map.insert(name.to_owned(), m.clone());
        Some(m)
    }
}

/// What a hook call reads, borrowed: enough to look up a kept decision
/// before anything is copied for the guest.
#[derive(Default, Clone, Copy)]
pub struct CallView<'a> {
    /// The request.
    pub request: Option<RequestView<'a>>,
    /// The origin response's or cached entry's header fields.
    pub response: Option<&'a HeaderMap>,
}

/// What a hook call may read: the request's fields, and the response's or
/// cached entry's header fields; and what it may ask of the prefetcher.
#[derive(Default, Clone)]
pub struct CallInput {
    /// The request.
    pub request: Option<Arc<Request>>,
    /// The origin response's or cached entry's header fields.
    pub response: Option<Arc<HeaderMap>>,
    /// The request's prefetching, and the hook's phase; `None` where a
    /// hook may not prefetch (`init`, `slicing`).
    pub prefetch: Option<(Arc<Scope>, Phase)>,
}

/// Caps an instance's memory and remembers that it did.
pub struct MemoryCap {
    limit: usize,
    /// A growth past the limit was refused.
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// One call's time budget. The deadline is CPU time, so a guest is not
/// stopped because the OS descheduled its thread; wall time is capped too,
/// at [`WALL_FACTOR`] times the deadline, so nothing can hold a request
/// indefinitely.
///
/// The thread's CPU clock is a system call (CLOCK_THREAD_CPUTIME_ID has no
/// vDSO path), too dear to read on every call (docs/benchmarks.md). So it is
/// read only from the epoch callback, which runs only for calls still going at
/// the next epoch tick — almost none do. A running guest notices a tick
/// within microseconds (wasmtime checks the epoch at every function entry
/// and loop back-edge), so before its first callback it has used at most
/// the time until that tick, at most one [`EPOCH_TICK`]: the first reading
/// charges that much (or the wall time so far, if less), and from then on
/// only CPU time counts. A thread descheduled for a long time before the
/// first callback is charged one tick, not the time it waited.
pub struct CallBudget {
    /// The thread's CPU clock when the call started, as estimated at its
    /// first epoch tick; `None` before.
    cpu_start: Option<Duration>,
    cpu_limit: Duration,
    wall_start: Instant,
    wall_limit: Duration,
}

/// How much longer than its CPU deadline a call may take in wall time.
pub const WALL_FACTOR: u32 = 10;

impl CallBudget {
    fn new() -> CallBudget {
        CallBudget {
            cpu_start: None,
            cpu_limit: Duration::ZERO,
            wall_start: Instant::now(),
            wall_limit: Duration::ZERO,
        }
    }

    /// Start timing a call that may use `deadline` of CPU time.
    pub fn start(&mut self, deadline: Duration) {
        self.cpu_start = None;
        self.cpu_limit = deadline;
        self.wall_start = Instant::now();
        self.wall_limit = deadline * WALL_FACTOR;
    }

    /// Whether the call has used up its budget; called at each epoch tick
    /// while the call runs.
    pub fn spent(&mut self) -> bool {
        let wall = self.wall_start.elapsed();
        if wall >= self.wall_limit {
            return true;
        }
        let now = thread_cpu_time();
        let start = *self
            .cpu_start
            .get_or_insert(now.saturating_sub(wall.min(EPOCH_TICK)));
        now.saturating_sub(start) >= self.cpu_limit
    }
}

/// CPU time consumed by the calling thread. A guest call runs on one thread
/// from start to end (its fiber does not migrate while it runs).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a
    // constant the kernel knows; clock_gettime writes only into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The data of one instance's store.
pub struct HostState {
    /// Module-wide state.
    pub shared: Arc<ModuleShared>,
    /// What the current call may read; empty between calls.
    pub input: CallInput,
    /// Memory cap for this instance.
    pub limits: MemoryCap,
    /// The current call's time budget.
    pub budget: CallBudget,
    /// The fields the current call read, when they are being recorded.
    pub reads: Option<Reads>,
    /// Set when the current call uses anything besides its fields.
    pub impurity: Impurity,
    /// The module version's own prefetch budget, if its sidecar sets one.
    pub prefetch_budget: Option<Arc<ModuleBuckets>>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    /// State for a new instance: a WASI context with no filesystem, no
    /// network, no environment; stdout and stderr go to the host log.
    /// Its clocks, random sources and output streams mark the call that
    /// uses them as impure.
    pub fn new(
        shared: Arc<ModuleShared>,
        memory_limit: usize,
        prefetch_budget: Option<Arc<ModuleBuckets>>,
    ) -> HostState {
        let impurity = Impurity::default();
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestLog::new(&shared.name, "stdout", impurity.clone()))
            .stderr(GuestLog::new(&shared.name, "stderr", impurity.clone()))
            .wall_clock(WallClock(impurity.clone()))
            .monotonic_clock(MonotonicClock(impurity.clone()))
            .secure_random(Random::new(impurity.clone()))
            .insecure_random(Random::new(impurity.clone()))
            .insecure_random_seed(shared.seed)
            .build();
        HostState {
            shared,
            input: CallInput::default(),
            limits: MemoryCap {
                limit: memory_limit,
                exceeded: false,
            },
            budget: CallBudget::new(),
            reads: None,
            impurity,
            prefetch_budget,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// `field` of the current call's input, recorded if reads are.
    fn read(&mut self, field: Field) -> Option<String> {
        let value = field.value(
            self.input.request.as_deref().map(Request::view),
            self.input.response.as_deref(),
        );
        if let Some(reads) = &mut self.reads {
            reads.push((field, value.clone()));
        }
        value
    }

    /// The header field a guest names, recorded if reads are; a name no
    /// field can have reads as absent, and is not an input.
    fn read_header(&mut self, response: bool, name: &str) -> Option<String> {
        Field::header(response, name).and_then(|field| self.read(field))
    }

    fn wall_clock_ms(&mut self) -> u64 {
        self.impurity.mark();
        wall_now().as_millis() as u64
    }

    fn monotonic_ns(&mut self) -> u64 {
        self.impurity.mark();
        monotonic_now()
    }

    fn kv_get(&mut self, key: &str) -> Option<String> {
        self.impurity.mark();
        self.shared.kv.get(key)
    }

    fn counter_add(&mut self, name: &str, delta: u64) {
        self.impurity.mark();
        let shared = &self.shared;
        let metrics = &shared.metrics;
        if let Some(c) =
            shared.guest_metric(&shared.counters, name, |m, n| metrics.guest_counter(m, n))
        {
            c.inc_by(delta);
        }
    }

    fn gauge_set(&mut self, name: &str, value: i64) {
        self.impurity.mark();
        let shared = &self.shared;
        let metrics = &shared.metrics;
        if let Some(g) = shared.guest_metric(&shared.gauges, name, |m, n| metrics.guest_gauge(m, n))
        {
            g.set(value);
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The `host` imports every version shares, for each version's `Host`
/// trait; `$extra` are the version's own.
macro_rules! host_imports {
    ($version:ident, { $($extra:tt)* }) => {
        impl $version::stavka::policy::host::Host for HostState {
            fn log(&mut self, level: $version::stavka::policy::host::Level, message: String) {
                use $version::stavka::policy::host::Level;
                self.impurity.mark();
                let module = &*self.shared.name;
                match level {
                    Level::Trace => tracing::trace!(target: "stavka::policy", module, "{message}"),
                    Level::Debug => tracing::debug!(target: "stavka::policy", module, "{message}"),
                    Level::Info => tracing::info!(target: "stavka::policy", module, "{message}"),
                    Level::Warn => tracing::warn!(target: "stavka::policy", module, "{message}"),
                    Level::Error => tracing::error!(target: "stavka::policy", module, "{message}"),
                }
            }

            fn wall_clock_ms(&mut self) -> u64 {
                HostState::wall_clock_ms(self)
            }

            fn monotonic_ns(&mut self) -> u64 {
                HostState::monotonic_ns(self)
            }

            fn kv_get(&mut self, key: String) -> Option<String> {
                HostState::kv_get(self, &key)
            }

            fn counter_add(&mut self, name: String, delta: u64) {
                HostState::counter_add(self, &name, delta);
            }

            fn gauge_set(&mut self, name: String, value: i64) {
                HostState::gauge_set(self, &name, value);
            }

            fn response_header(&mut self, name: String) -> Option<String> {
                self.read_header(true, &name)
            }

            $($extra)*
        }
    };
}

impl v01::stavka::policy::types::Host for HostState {}

host_imports!(v01, {
    fn request_header(&mut self, name: String) -> Option<String> {
        self.read_header(false, &name)
    }
});

host_imports!(v02, {
    fn rate_limit(&mut self, key: String, per_second: f64, burst: u32) -> bool {
        self.impurity.mark();
        let per_second = if per_second.is_finite() {
            per_second.max(0.0)
        } else {
            0.0
        };
        self.shared
            .buckets
            .allow(key.as_str(), per_second, burst, Instant::now())
    }
});

impl v02::stavka::policy::incoming::Host for HostState {}

/// Asking the prefetcher is a side effect: a call that asks is never
/// reused for another request.
impl v02::stavka::policy::prefetch::Host for HostState {
    fn fetch(
        &mut self,
        target: String,
        headers: Vec<(String, String)>,
    ) -> Result<(), v02::stavka::policy::prefetch::Refusal> {
        use v02::stavka::policy::prefetch::Refusal as Wit;
        self.impurity.mark();
        let result = match &self.input.prefetch {
            Some((scope, _)) => scope.fetch(
                &self.shared.name,
                self.prefetch_budget.as_ref(),
                &target,
                &headers,
            ),
            None => {
                self.shared.prefetch.count(
                    &self.shared.name,
                    crate::prefetch::Outcome::Refused(Refusal::NotHere),
                );
                Err(Refusal::NotHere)
            }
        };
        result.map_err(|refusal| match refusal {
            Refusal::InvalidTarget => Wit::InvalidTarget,
            Refusal::HeaderNotAllowed => Wit::HeaderNotAllowed,
            Refusal::NotHere => Wit::NotHere,
            Refusal::QueueFull => Wit::QueueFull,
            Refusal::OverBudget => Wit::OverBudget,
            Refusal::Duplicate => Wit::Duplicate,
            Refusal::Cached => Wit::Cached,
            Refusal::TooDeep => Wit::TooDeep,
        })
    }

    fn want_body(&mut self, max_bytes: u32) -> bool {
        self.impurity.mark();
        self.input
            .prefetch
            .as_ref()
            .is_some_and(|(scope, phase)| scope.want_body(*phase, max_bytes))
    }

    fn early_hint(&mut self, link: String) -> bool {
        self.impurity.mark();
        self.input
            .prefetch
            .as_ref()
            .is_some_and(|(scope, phase)| scope.early_hint(*phase, &link))
    }
}

/// A 0.2 guest reads the request through its handle; every call has one
/// request, the one in the call input, so the handle names nothing.
impl v02::stavka::policy::incoming::HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> String {
        self.read(Field::Method).unwrap_or_default()
    }

    fn scheme(&mut self, _: Resource<RequestHandle>) -> String {
        self.read(Field::Scheme).unwrap_or_default()
    }

    fn host(&mut self, _: Resource<RequestHandle>) -> String {
        self.read(Field::Host).unwrap_or_default()
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> String {
        self.read(Field::Path).unwrap_or_default()
    }

    fn query(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        self.read(Field::Query)
    }

    fn client_addr(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        self.read(Field::ClientAddr)
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        self.read_header(false, &name)
    }

    /// The host owns the request; a borrow's end frees nothing.
    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// A guest's stdout or stderr, written to the host log a line at a time.
#[derive(Clone)]
pub struct GuestLog {
    module: Arc<str>,
    stream: &'static str,
    line: Arc<Mutex<Vec<u8>>>,
    impurity: Impurity,
}

impl GuestLog {
    fn new(module: &Arc<str>, stream: &'static str, impurity: Impurity) -> GuestLog {
        GuestLog {
            module: module.clone(),
            stream,
            line: Arc::default(),
            impurity,
        }
    }

    /// Writing is a side effect: the call that writes is impure.
    fn push(&self, mut bytes: &[u8]) {
        self.impurity.mark();
        let mut line = self.line.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            let room = MAX_LOG_LINE.saturating_sub(line.len());
            line.extend_from_slice(&bytes[..end.min(room)]);
            self.emit(&line);
            line.clear();
            bytes = &bytes[end + 1..];
        }
        let room = MAX_LOG_LINE.saturating_sub(line.len());
        line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&self, line: &[u8]) {
        tracing::info!(
            target: "stavka::policy",
            module = &*self.module,
            stream = self.stream,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(MAX_LOG_LINE)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burn_cpu(amount: Duration) {
        let start = thread_cpu_time();
        while thread_cpu_time() - start < amount {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn waiting_before_the_first_tick_costs_one_tick_and_cpu_time_counts() {
        let mut budget = CallBudget::new();
        budget.start(Duration::from_millis(5));
        // Descheduled (asleep) for 20 ms before the first callback: charged
        // one tick, not 20 ms.
        std::thread::sleep(Duration::from_millis(20));
        assert!(!budget.spent());
        burn_cpu(Duration::from_millis(2));
        assert!(!budget.spent(), "1 tick + 2 ms of 5 ms");
        burn_cpu(Duration::from_millis(3));
        assert!(budget.spent(), "past 5 ms of CPU");
    }

    #[test]
    fn wall_time_is_capped() {
        let mut budget = CallBudget::new();
        budget.start(Duration::from_millis(2));
        std::thread::sleep(Duration::from_millis(2) * WALL_FACTOR);
        assert!(budget.spent());
    }
}
