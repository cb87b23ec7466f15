//! One compiled version of a policy module, and calls into it.
//!
//! Compilation, linking and validation happen in [`PolicyModule::load`], off
//! the request path. A call only instantiates from the pre-linked
//! [`InstancePre`] (per-request) or borrows an initialised instance from the
//! pool (long-lived); either way it runs under the module's deadline and
//! memory cap, and a failed instance is never reused.
//!
//! At most `instances` calls of a version run at once, so a long-lived
//! module never has more instances than that and its state (a budget, a
//! counter) is exactly as wide as documented. A call that finds none free
//! waits up to the wall-time cap of a call (ten times the deadline), then
//! fails as [`FailureKind::Busy`]. Before that, the module's circuit
//! breaker (see `breaker`) may refuse the call without entering the guest.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::{Component, Instance, InstancePre};
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::exports::stavka::policy::hooks::HookSet;
use super::bindings::exports::stavka::policy::slicing::{self, SliceDecision};
use super::bindings::exports::stavka::policy::{hooks, lifecycle, on_hit, on_request, on_response};
use super::bindings::stavka::policy::types::{
    Entry, HitDecision, Request, RequestOutcome, Response, ResponseOutcome,
};
use super::engine::Runtime;
use super::error::{CallFailure, LoadError};
use super::host::{CallInput, HostState, ModuleShared, WALL_FACTOR};
use super::metrics::{FailureKind, Hook, ModuleCallMetrics, PolicyMetrics};
use super::sidecar::{Mode, Settings};

/// The package every hook interface belongs to.
const PACKAGE: &str = "stavka:policy/";
/// The newest version of the package this host speaks: `wit/policy.wit`.
pub const WIT_VERSION: &str = "0.1.1";
/// The interfaces a module may export.
const INTERFACES: [&str; 6] = [
    "on-request",
    "on-response",
    "on-hit",
    "slicing",
    "lifecycle",
    "hooks",
];

/// Whether an export named `name` is one of this package's interfaces at a
/// version this host speaks: any `0.1.z` (wasmtime resolves them to ours;
/// a module built for an older `0.1` simply lacks the newer exports).
fn spoken(name: &str) -> bool {
    let Some(versioned) = name.strip_prefix(PACKAGE) else {
        return true;
    };
    versioned
        .split_once('@')
        .is_some_and(|(interface, version)| {
            INTERFACES.contains(&interface) && version.starts_with("0.1.")
        })
}

/// Which hooks the module exports, found once at load.
struct Hooks {
    on_request: Option<on_request::GuestIndices>,
    on_response: Option<on_response::GuestIndices>,
    on_hit: Option<on_hit::GuestIndices>,
    slicing: Option<slicing::GuestIndices>,
    lifecycle: Option<lifecycle::GuestIndices>,
}

impl Hooks {
    /// Forget the exported hooks the component says it does not implement.
    fn keep(&mut self, implemented: HookSet) {
        if !implemented.contains(HookSet::ON_REQUEST) {
            self.on_request = None;
        }
        if !implemented.contains(HookSet::ON_RESPONSE) {
            self.on_response = None;
        }
        if !implemented.contains(HookSet::ON_HIT) {
            self.on_hit = None;
        }
    }
}

/// An instance and its store, with its hook exports resolved at most once,
/// so a reused instance does not look them up again on every call (the
/// measurements are in docs/benchmarks.md).
struct Live {
    store: Store<HostState>,
    instance: Instance,
    exports: Exports,
}

/// The hook exports of one instance, resolved on first use.
#[derive(Default)]
struct Exports {
    on_request: Option<on_request::Guest>,
    on_response: Option<on_response::Guest>,
    on_hit: Option<on_hit::Guest>,
    slicing: Option<slicing::Guest>,
}

impl Live {
    /// The export kept in the `slot` of its exports (resolved with `load`
    /// the first time), and the store to call it in.
    fn export<G>(
        &mut self,
        slot: impl FnOnce(&mut Exports) -> &mut Option<G>,
        load: impl FnOnce(&mut Store<HostState>, &Instance) -> wasmtime::Result<G>,
    ) -> wasmtime::Result<(&G, &mut Store<HostState>)> {
        let slot = slot(&mut self.exports);
        if slot.is_none() {
            *slot = Some(load(&mut self.store, &self.instance)?);
        }
        Ok((slot.as_ref().expect("resolved just above"), &mut self.store))
    }
}

/// The instance a per-request module's hooks share within one request:
/// created by the first hook call, reused by the next, and released as soon
/// as no further hook can use it — after `on-hit`, or before the request
/// waits on an origin — so a slow origin or a slow client never holds a
/// pooling slot. Unused by long-lived modules.
///
/// The request context must be `Sync` and a store is not; the mutex is only
/// ever reached through `&mut` (`get_mut`), so it is never locked.
#[derive(Default)]
pub struct RequestInstance(Mutex<Option<Live>>);

impl RequestInstance {
    /// Drop the instance; a later hook of this request gets a fresh one.
    pub fn release(&mut self) {
        *self.slot() = None;
    }

    fn slot(&mut self) -> &mut Option<Live> {
        self.0.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

/// A loaded, validated module version.
pub struct PolicyModule {
    /// Shared with every version of this module name.
    pub shared: Arc<ModuleShared>,
    /// The first 16 hex digits of the SHA-256 of the file.
    pub hash: String,
    /// How it runs.
    pub settings: Settings,
    /// When this version was published.
    pub loaded_at: SystemTime,
    pre: InstancePre<HostState>,
    hooks: Hooks,
    metrics: ModuleCallMetrics,
    /// Idle initialised instances of a long-lived module.
    pool: Mutex<Vec<Live>>,
    /// One permit per call that may run at once: `settings.instances`.
    running: Semaphore,
}

impl PolicyModule {
    /// Compile, link and validate `bytes`. Long-lived modules also get a
    /// first instance, initialised, so a failing `init` rejects the
    /// version. Nothing here runs on the request path.
    pub async fn load(
        runtime: &Runtime,
        shared: Arc<ModuleShared>,
        bytes: &[u8],
        settings: Settings,
        metrics: &PolicyMetrics,
    ) -> Result<PolicyModule, LoadError> {
        let hash = content_hash(bytes);
        let component = Component::from_binary(&runtime.engine, bytes)
            .map_err(|e| LoadError::NotAComponent(root_cause(&e)))?;
        for (name, _) in component.component_type().exports(&runtime.engine) {
            if !spoken(name) {
                return Err(LoadError::ForeignInterface(name.to_owned()));
            }
        }
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WorldMismatch(root_cause(&e)))?;
        let hooks = Hooks {
            on_request: on_request::GuestIndices::new(&pre).ok(),
            on_response: on_response::GuestIndices::new(&pre).ok(),
            on_hit: on_hit::GuestIndices::new(&pre).ok(),
            slicing: slicing::GuestIndices::new(&pre).ok(),
            lifecycle: lifecycle::GuestIndices::new(&pre).ok(),
        };
        let declared = hooks::GuestIndices::new(&pre).ok();
        let running = Semaphore::new(settings.instances);
        let mut module = PolicyModule {
            metrics: metrics.module(&shared.name),
            shared,
            hash,
            settings,
            loaded_at: SystemTime::now(),
            pre,
            hooks,
            pool: Mutex::new(Vec::new()),
            running,
        };
        // Instantiate once: exports with the right names but wrong types,
        // and a failing `init`, are caught here rather than on a request.
        let mut live = module
            .instantiate()
            .await
            .map_err(LoadError::FirstInstance)?;
        module
            .check_types(&mut live)
            .map_err(|e| LoadError::Signature(root_cause(&e)))?;
        if let Some(declared) = declared {
            module.start_call(&mut live.store);
            let implemented = match declared.load(&mut live.store, &live.instance) {
                Ok(hooks) => hooks.call_implemented(&mut live.store).await,
                Err(e) => Err(e),
            }
            .map_err(|e| LoadError::Implemented(root_cause(&e)))?;
            module.hooks.keep(implemented);
        }
        if let Some(slicing) = &module.hooks.slicing {
            module.start_call(&mut live.store);
            let implemented = match slicing.load(&mut live.store, &live.instance) {
                Ok(guest) => guest.call_implemented(&mut live.store).await,
                Err(e) => Err(e),
            }
            .map_err(|e| LoadError::Implemented(root_cause(&e)))?;
            if !implemented {
                module.hooks.slicing = None;
            }
        }
        if module.settings.mode == Mode::LongLived {
            module
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(live);
        }
        module.shared.breaker.reset();
        Ok(module)
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether hits go through `on-hit`: exported, and not disclaimed by
    /// the module's `hooks` export.
    pub fn decides_hits(&self) -> bool {
        self.hooks.on_hit.is_some()
    }

    /// Which hooks it exports (less those it disclaims), for listings.
    pub fn exported_hooks(&self) -> Vec<&'static str> {
        let h = &self.hooks;
        [
            (h.on_request.is_some(), Hook::Request),
            (h.on_response.is_some(), Hook::Response),
            (h.on_hit.is_some(), Hook::Hit),
            (h.slicing.is_some(), Hook::Slice),
            (h.lifecycle.is_some(), Hook::Init),
        ]
        .into_iter()
        .filter(|(present, _)| *present)
        .map(|(_, hook)| hook.as_str())
        .collect()
    }

    /// Resolve every exported hook of `live`, which checks its type.
    fn check_types(&self, live: &mut Live) -> wasmtime::Result<()> {
        if let Some(i) = &self.hooks.on_request {
            live.export(|e| &mut e.on_request, |s, inst| i.load(s, inst))?;
        }
        if let Some(i) = &self.hooks.on_response {
            live.export(|e| &mut e.on_response, |s, inst| i.load(s, inst))?;
        }
        if let Some(i) = &self.hooks.on_hit {
            live.export(|e| &mut e.on_hit, |s, inst| i.load(s, inst))?;
        }
        if let Some(i) = &self.hooks.slicing {
            live.export(|e| &mut e.slicing, |s, inst| i.load(s, inst))?;
        }
        Ok(())
    }

    /// A new instance; long-lived ones are initialised.
    async fn instantiate(&self) -> Result<Live, CallFailure> {
        let state = HostState::new(self.shared.clone(), self.settings.memory);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut store| {
            Ok(if store.data_mut().budget.spent() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        self.start_call(&mut store);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| self.failure(Hook::Init, &store, &e))?;
        let mut live = Live {
            store,
            instance,
            exports: Exports::default(),
        };
        if self.settings.mode == Mode::LongLived {
            if let Some(lifecycle) = &self.hooks.lifecycle {
                self.metrics.call(Hook::Init);
                self.start_call(&mut live.store);
                let result = match lifecycle.load(&mut live.store, &live.instance) {
                    Ok(l) => l.call_init(&mut live.store, &self.settings.init).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(message)) => {
                        return Err(CallFailure {
                            module: self.shared.name.clone(),
                            hook: Hook::Init.as_str(),
                            kind: FailureKind::Trap,
                            message: format!("init refused: {message}"),
                        })
                    }
                    Err(e) => return Err(self.failure(Hook::Init, &live.store, &e)),
                }
            }
        }
        Ok(live)
    }

    /// Arm the deadline for one call (or instantiation).
    fn start_call(&self, store: &mut Store<HostState>) {
        store.data_mut().budget.start(self.settings.deadline);
        // The next tick checks the budget (see `CallBudget`).
        store.set_epoch_deadline(1);
    }

    fn failure(
        &self,
        hook: Hook,
        store: &Store<HostState>,
        error: &wasmtime::Error,
    ) -> CallFailure {
        let kind = if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            FailureKind::Deadline
        } else if store.data().limits.exceeded {
            FailureKind::Memory
        } else {
            FailureKind::Trap
        };
        self.metrics.failure(hook, kind);
        CallFailure {
            module: self.shared.name.clone(),
            hook: hook.as_str(),
            kind,
            message: root_cause(error),
        }
    }

    /// A call that did not enter the module: counted, and answered with the
    /// failure mode by the caller.
    fn refused(&self, hook: Hook, kind: FailureKind) -> CallFailure {
        self.metrics.failure(hook, kind);
        CallFailure {
            module: self.shared.name.clone(),
            hook: hook.as_str(),
            kind,
            message: match kind {
                FailureKind::BreakerOpen => "the circuit breaker is open".to_owned(),
                _ => format!("{} calls already running", self.settings.instances),
            },
        }
    }

    /// Wait for one of the module's `instances` call slots, at most as long
    /// as a call may run.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled wait leaves the queue and holds no slot.
    async fn wait_turn(&self, hook: Hook) -> Result<SemaphorePermit<'_>, CallFailure> {
        if let Ok(permit) = self.running.try_acquire() {
            return Ok(permit);
        }
        let wait = self.settings.deadline * WALL_FACTOR;
        match tokio::time::timeout(wait, self.running.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; either way no slot came free.
            Ok(Err(_)) | Err(_) => Err(self.refused(hook, FailureKind::Busy)),
        }
    }

    /// Run one hook call on an instance, under the deadline, and put a
    /// healthy long-lived instance back. The breaker hears how it went.
    ///
    /// # Cancel safety
    /// A cancelled call drops its instance (never reused mid-call), frees
    /// its slot, and lets another call probe a half-open breaker.
    async fn call<R>(
        &self,
        hook: Hook,
        slot: &mut RequestInstance,
        input: CallInput,
        f: impl AsyncFnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        let ticket = self
            .shared
            .breaker
            .admit(Instant::now())
            .ok_or_else(|| self.refused(hook, FailureKind::BreakerOpen))?;
        let _turn = self.wait_turn(hook).await?;
        let started = Instant::now();
        self.metrics.call(hook);
        let result = self.run(hook, slot, input, f).await;
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => ticket.succeeded(),
            Err(failure) => {
                ticket.failed(&self.settings.breaker, Instant::now());
                tracing::warn!(
                    module = %failure.module,
                    hook = failure.hook,
                    kind = failure.kind.as_str(),
                    breaker = self.shared.breaker.state().as_str(),
                    error = %failure.message,
                    "policy call failed"
                );
            }
        }
        result
    }

    /// [`call`](Self::call) once admitted: take an instance, call, keep it
    /// if the call succeeded.
    async fn run<R>(
        &self,
        hook: Hook,
        slot: &mut RequestInstance,
        input: CallInput,
        f: impl AsyncFnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        let pooled = match self.settings.mode {
            Mode::PerRequest => slot.slot().take(),
            Mode::LongLived => self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop(),
        };
        let mut live = match pooled {
            Some(live) => live,
            None => self.instantiate().await?,
        };
        live.store.data_mut().input = input;
        self.start_call(&mut live.store);
        let result = f(&mut live).await;
        live.store.data_mut().input = CallInput::default();
        match result {
            Ok(r) => {
                match self.settings.mode {
                    Mode::PerRequest => *slot.slot() = Some(live),
                    Mode::LongLived => self
                        .pool
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(live),
                }
                Ok(r)
            }
            Err(e) => Err(self.failure(hook, &live.store, &e)),
        }
    }

    /// `on-request`, or `None` when the module does not export it.
    pub async fn on_request(
        &self,
        slot: &mut RequestInstance,
        req: &Request,
        input: CallInput,
    ) -> Option<Result<RequestOutcome, CallFailure>> {
        let hook = self.hooks.on_request.as_ref()?;
        let call = async |live: &mut Live| {
            let (guest, store) = live.export(|e| &mut e.on_request, |s, i| hook.load(s, i))?;
            guest.call_decide(store, req).await
        };
        Some(self.call(Hook::Request, slot, input, call).await)
    }

    /// `on-response`, or `None` when the module does not export it.
    pub async fn on_response(
        &self,
        slot: &mut RequestInstance,
        req: &Request,
        resp: Response,
        input: CallInput,
    ) -> Option<Result<ResponseOutcome, CallFailure>> {
        let hook = self.hooks.on_response.as_ref()?;
        let call = async |live: &mut Live| {
            let (guest, store) = live.export(|e| &mut e.on_response, |s, i| hook.load(s, i))?;
            guest.call_decide(store, req, resp).await
        };
        Some(self.call(Hook::Response, slot, input, call).await)
    }

    /// `on-hit`, or `None` when the module does not export it.
    pub async fn on_hit(
        &self,
        slot: &mut RequestInstance,
        req: &Request,
        entry: &Entry,
        input: CallInput,
    ) -> Option<Result<HitDecision, CallFailure>> {
        let hook = self.hooks.on_hit.as_ref()?;
        let call = async |live: &mut Live| {
            let (guest, store) = live.export(|e| &mut e.on_hit, |s, i| hook.load(s, i))?;
            guest.call_decide(store, req, entry).await
        };
        Some(self.call(Hook::Hit, slot, input, call).await)
    }

    /// Whether it exports `slicing` (0.1.1 and later).
    pub fn decides_slicing(&self) -> bool {
        self.hooks.slicing.is_some()
    }

    /// `slicing.decide`, or `None` when the module does not export it.
    pub async fn slicing(
        &self,
        slot: &mut RequestInstance,
        req: &Request,
        input: CallInput,
    ) -> Option<Result<SliceDecision, CallFailure>> {
        let hook = self.hooks.slicing.as_ref()?;
        let call = async |live: &mut Live| {
            let (guest, store) = live.export(|e| &mut e.slicing, |s, i| hook.load(s, i))?;
            guest.call_decide(store, req).await
        };
        Some(self.call(Hook::Slice, slot, input, call).await)
    }
}

/// The first 16 hex digits of the SHA-256 of a module file: enough to tell
/// versions apart in metrics and logs.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The innermost message of an error chain: the one an operator can act on.
fn root_cause(e: &wasmtime::Error) -> String {
    e.chain()
        .last()
        .map_or_else(|| e.to_string(), ToString::to_string)
}
