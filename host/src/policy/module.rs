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
use wasmtime::component::{Component, Instance, InstancePre, Resource};
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{v01, v02};
use super::engine::Runtime;
use super::error::{CallFailure, LoadError};
use super::host::{CallInput, CallView, HostState, ModuleShared, WALL_FACTOR};
use super::memo::Memo;
use super::metrics::{FailureKind, Hook, ModuleCallMetrics, PolicyMetrics};
use super::request::{Request, RequestHandle};
use super::sidecar::{Mode, Settings};
use super::trace::RECORD_FIELDS;
use super::{Entry, HitDecision, RequestOutcome, Response, ResponseOutcome, SliceDecision};
use crate::prefetch::ModuleBuckets;

/// The package every hook interface belongs to.
const PACKAGE: &str = "stavka:policy/";
/// The newest version of the package this host speaks: `wit/policy.wit`.
pub const WIT_VERSION: &str = "0.2.1";
/// The interfaces a module may export.
const INTERFACES: [&str; 7] = [
    "on-request",
    "on-response",
    "on-hit",
    "slicing",
    "on-body",
    "lifecycle",
    "hooks",
];

/// The versions of the package a module may be built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitVersion {
    /// `0.1.z` (`wit/v0.1/`): the request is a record.
    V01,
    /// `0.2.z` (`wit/`): the request is a resource.
    V02,
}

impl WitVersion {
    /// The version's minor series, for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            WitVersion::V01 => "0.1",
            WitVersion::V02 => "0.2",
        }
    }
}

/// The version of this package an export named `name` belongs to: `None`
/// for another package's; an error for one of ours this host does not
/// speak (wasmtime resolves any `0.1.z` or `0.2.z` to ours; a module built
/// for an older patch simply lacks the newer exports).
fn spoken(name: &str) -> Result<Option<WitVersion>, ()> {
    let Some(versioned) = name.strip_prefix(PACKAGE) else {
        return Ok(None);
    };
    let (interface, version) = versioned.split_once('@').ok_or(())?;
    if !INTERFACES.contains(&interface) {
        return Err(());
    }
    if version.starts_with("0.1.") {
        Ok(Some(WitVersion::V01))
    } else if version.starts_with("0.2.") {
        Ok(Some(WitVersion::V02))
    } else {
        Err(())
    }
}

/// The exports of one version's hooks: found once at load (`GuestIndices`)
/// or resolved once per instance (`Guest`).
struct Slots<Rq, Rs, Ht, Sl> {
    on_request: Option<Rq>,
    on_response: Option<Rs>,
    on_hit: Option<Ht>,
    slicing: Option<Sl>,
}

impl<Rq, Rs, Ht, Sl> Default for Slots<Rq, Rs, Ht, Sl> {
    fn default() -> Self {
        Slots {
            on_request: None,
            on_response: None,
            on_hit: None,
            slicing: None,
        }
    }
}

impl<Rq, Rs, Ht, Sl> Slots<Rq, Rs, Ht, Sl> {
    /// Forget the exported hooks the component says it does not implement.
    fn keep(&mut self, implemented: Implemented) {
        if !implemented.on_request {
            self.on_request = None;
        }
        if !implemented.on_response {
            self.on_response = None;
        }
        if !implemented.on_hit {
            self.on_hit = None;
        }
    }

    fn present(&self) -> [bool; 4] {
        [
            self.on_request.is_some(),
            self.on_response.is_some(),
            self.on_hit.is_some(),
            self.slicing.is_some(),
        ]
    }
}

/// What a component's `hooks` export says it implements.
#[derive(Debug, Clone, Copy)]
struct Implemented {
    on_request: bool,
    on_response: bool,
    on_hit: bool,
    /// Always true for 0.1, whose hook set cannot say.
    init: bool,
}

/// Generated per version: the names differ only by the module path, and
/// in what the hook set can disclaim (`$init` reads `init` from it).
macro_rules! version_slots {
    ($v:ident, $hooks:ident, $indices:ident, $guests:ident, $init:expr, $body:ty, $find_body:expr) => {
        type $indices = Slots<
            $v::exports::stavka::policy::on_request::GuestIndices,
            $v::exports::stavka::policy::on_response::GuestIndices,
            $v::exports::stavka::policy::on_hit::GuestIndices,
            $v::exports::stavka::policy::slicing::GuestIndices,
        >;
        type $guests = Slots<
            $v::exports::stavka::policy::on_request::Guest,
            $v::exports::stavka::policy::on_response::Guest,
            $v::exports::stavka::policy::on_hit::Guest,
            $v::exports::stavka::policy::slicing::Guest,
        >;

        type $hooks = VersionHooks<
            $indices,
            $v::exports::stavka::policy::lifecycle::GuestIndices,
            $v::exports::stavka::policy::hooks::GuestIndices,
            $body,
        >;

        impl $hooks {
            /// The hooks `pre` exports, and its `lifecycle` and `hooks`.
            fn find(pre: &InstancePre<HostState>) -> $hooks {
                use $v::exports::stavka::policy::*;
                VersionHooks {
                    slots: Slots {
                        on_request: on_request::GuestIndices::new(pre).ok(),
                        on_response: on_response::GuestIndices::new(pre).ok(),
                        on_hit: on_hit::GuestIndices::new(pre).ok(),
                        slicing: slicing::GuestIndices::new(pre).ok(),
                    },
                    lifecycle: lifecycle::GuestIndices::new(pre).ok(),
                    declared: hooks::GuestIndices::new(pre).ok(),
                    on_body: ($find_body)(pre),
                }
            }

            /// Resolve every hook of `live`, which checks its type.
            fn check_types(&self, live: &mut Live) -> wasmtime::Result<()> {
                let slots = &self.slots;
                if let Some(i) = &slots.on_request {
                    live.export(|e| &mut e.$v.on_request, |s, inst| i.load(s, inst))?;
                }
                if let Some(i) = &slots.on_response {
                    live.export(|e| &mut e.$v.on_response, |s, inst| i.load(s, inst))?;
                }
                if let Some(i) = &slots.on_hit {
                    live.export(|e| &mut e.$v.on_hit, |s, inst| i.load(s, inst))?;
                }
                if let Some(i) = &slots.slicing {
                    live.export(|e| &mut e.$v.slicing, |s, inst| i.load(s, inst))?;
                }
                Ok(())
            }

            /// What the `hooks` export says the component implements;
            /// `None` without the export.
            async fn implemented(&self, live: &mut Live) -> wasmtime::Result<Option<Implemented>> {
                use $v::exports::stavka::policy::hooks::HookSet;
                let Some(declared) = &self.declared else {
                    return Ok(None);
                };
                let store = &mut live.store;
                let set = declared
                    .load(&mut *store, &live.instance)?
                    .call_implemented(store)
                    .await?;
                let init: fn(HookSet) -> bool = $init;
                Ok(Some(Implemented {
                    on_request: set.contains(HookSet::ON_REQUEST),
                    on_response: set.contains(HookSet::ON_RESPONSE),
                    on_hit: set.contains(HookSet::ON_HIT),
                    init: init(set),
                }))
            }

            /// Whether the `slicing` export implements `decide` (false
            /// without one).
            async fn ask_slicing(&self, live: &mut Live) -> wasmtime::Result<bool> {
                let Some(i) = &self.slots.slicing else {
                    return Ok(false);
                };
                let (guest, store) =
                    live.export(|e| &mut e.$v.slicing, |s, inst| i.load(s, inst))?;
                guest.call_implemented(store).await
            }

            /// Call `init` with `config`; `None` without a `lifecycle`.
            async fn init(
                &self,
                live: &mut Live,
                config: &[(String, String)],
            ) -> Option<wasmtime::Result<Result<(), String>>> {
                let lifecycle = self.lifecycle.as_ref()?;
                let store = &mut live.store;
                Some(match lifecycle.load(&mut *store, &live.instance) {
                    Ok(l) => l.call_init(&mut *store, config).await,
                    Err(e) => Err(e),
                })
            }
        }
    };
}

/// One version's hooks, found once at load.
struct VersionHooks<S, L, D, B> {
    slots: S,
    lifecycle: Option<L>,
    /// The `hooks` export; only asked at load.
    declared: Option<D>,
    /// `on-body`, called only when the module asked for a body (0.2.1).
    on_body: Option<B>,
}

/// The `on-body` export of a version that has none.
enum NoBody {}

version_slots!(v01, Hooks01, Indices01, Guests01, |_| true, NoBody, |_| {
    None
});
version_slots!(
    v02,
    Hooks02,
    Indices02,
    Guests02,
    |set| set.contains(HookSet::INIT),
    v02::exports::stavka::policy::on_body::GuestIndices,
    |pre| v02::exports::stavka::policy::on_body::GuestIndices::new(pre).ok()
);

/// Which hooks the module exports, found once at load, by version.
enum Hooks {
    V01(Hooks01),
    V02(Hooks02),
}

/// `$body` with `$h` bound to the module's version's hooks, whichever it
/// is: the arms differ only in type.
macro_rules! each_version {
    ($hooks:expr, $h:ident => $body:expr) => {
        match $hooks {
            Hooks::V01($h) => $body,
            Hooks::V02($h) => $body,
        }
    };
}

impl Hooks {
    fn present(&self) -> [bool; 4] {
        each_version!(self, h => h.slots.present())
    }

    fn has_lifecycle(&self) -> bool {
        each_version!(self, h => h.lifecycle.is_some())
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

/// The hook exports of one instance, resolved on first use; only its
/// module's version's are ever filled.
#[derive(Default)]
struct Exports {
    v01: Guests01,
    v02: Guests02,
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

    /// Whether the next hook runs on a fresh instance.
    fn is_fresh(&mut self) -> bool {
        self.slot().is_none()
    }

    fn slot(&mut self) -> &mut Option<Live> {
        self.0.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

/// Call the hook `$name` with `$args`, in whichever version the module
/// speaks, as [`PolicyModule::call`] does: `$req` is the request as that
/// version takes it (a record lowered whole for 0.1, a borrowed handle for
/// 0.2). `$key` is what besides the request the outcome depends on, for
/// the memo. `None` when the module does not implement the hook.
macro_rules! hook_call {
    ($self:ident, $slot:ident, $view:ident, $input:ident, $hook:expr, $name:ident, $key:expr, [$req:ident]($($arg:expr),*)) => {{
        let memo = $self.memos.as_ref().map(|m| (&m.$name, $key));
        match &$self.hooks {
            Hooks::V01(hooks) => {
                let index = hooks.slots.$name.as_ref()?;
                let call = async |live: &mut Live| {
                    let record = record(&live.store.data().input);
                    let (guest, store) = live.export(|e| &mut e.v01.$name, |s, i| index.load(s, i))?;
                    let $req = &record;
                    guest.call_decide(store, $($arg),*).await.map(Into::into)
                };
                Some($self.call($hook, $slot, $view, $input, memo, call).await)
            }
            Hooks::V02(hooks) => {
                let index = hooks.slots.$name.as_ref()?;
                let call = async |live: &mut Live| {
                    let (guest, store) = live.export(|e| &mut e.v02.$name, |s, i| index.load(s, i))?;
                    let $req = Resource::<RequestHandle>::new_borrow(0);
                    guest.call_decide(store, $($arg),*).await.map(Into::into)
                };
                Some($self.call($hook, $slot, $view, $input, memo, call).await)
            }
        }
    }};
}

/// The decisions of one module version kept for reuse, by hook (see
/// `memo`).
#[derive(Default)]
struct Memos {
    on_request: Memo<RequestOutcome>,
    on_response: Memo<ResponseOutcome>,
    on_hit: Memo<HitDecision>,
    slicing: Memo<SliceDecision>,
}

/// A 0.1 guest's request record: every field, lowered whole.
fn record(input: &CallInput) -> v01::stavka::policy::types::Request {
    let req = input.request.as_deref();
    let field =
        |f: fn(&super::request::Request) -> &String| req.map(f).cloned().unwrap_or_default();
    v01::stavka::policy::types::Request {
        method: field(|r| &r.method),
        scheme: field(|r| &r.scheme),
        host: field(|r| &r.host),
        path: field(|r| &r.path),
        query: req.and_then(|r| r.query.clone()),
        client_addr: req.and_then(|r| r.client_addr).map(|ip| ip.to_string()),
    }
}

impl From<v02::exports::stavka::policy::slicing::SliceDecision> for SliceDecision {
    fn from(decision: v02::exports::stavka::policy::slicing::SliceDecision) -> Self {
        use v02::exports::stavka::policy::slicing::SliceDecision as V02;
        match decision {
            V02::Default => SliceDecision::Default,
            V02::Whole => SliceDecision::Whole,
            V02::Slice(s) => SliceDecision::Slice(super::SliceSettings {
                block_kib: s.block_kib,
                read_ahead: s.read_ahead,
            }),
        }
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
    /// Decisions kept for reuse, when the sidecar allows it.
    memos: Option<Memos>,
    /// What the version may prefetch on all its sites, if its sidecar
    /// says.
    prefetch_budget: Option<Arc<ModuleBuckets>>,
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
        let mut version = None;
        for (name, _) in component.component_type().exports(&runtime.engine) {
            match spoken(name) {
                Ok(None) => {}
                Ok(Some(v)) if version.is_none_or(|seen| seen == v) => version = Some(v),
                Ok(Some(_)) | Err(()) => return Err(LoadError::ForeignInterface(name.to_owned())),
            }
        }
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WorldMismatch(root_cause(&e)))?;
        let hooks = match version.unwrap_or(WitVersion::V02) {
            WitVersion::V01 => Hooks::V01(Hooks01::find(&pre)),
            WitVersion::V02 => Hooks::V02(Hooks02::find(&pre)),
        };
        let running = Semaphore::new(settings.instances);
        let settings_memo = settings.memo;
        let prefetch_budget = ModuleBuckets::new(settings.prefetch);
        let mut module = PolicyModule {
            metrics: metrics.module(&shared.name),
            shared,
            hash,
            settings,
            loaded_at: SystemTime::now(),
            pre,
            hooks,
            pool: Mutex::new(Vec::new()),
            memos: settings_memo.then(Memos::default),
            prefetch_budget,
            running,
        };
        // Instantiate once: exports with the right names but wrong types,
        // and a failing `init`, are caught here rather than on a request.
        let mut live = module
            .instantiate_bare()
            .await
            .map_err(LoadError::FirstInstance)?;
        each_version!(&module.hooks, h => h.check_types(&mut live))
            .map_err(|e| LoadError::Signature(root_cause(&e)))?;
        module.start_call(&mut live.store);
        let implemented = each_version!(&module.hooks, h => h.implemented(&mut live).await)
            .map_err(|e| LoadError::Implemented(root_cause(&e)))?;
        module.start_call(&mut live.store);
        let slices = each_version!(&module.hooks, h => h.ask_slicing(&mut live).await)
            .map_err(|e| LoadError::Implemented(root_cause(&e)))?;
        each_version!(&mut module.hooks, h => {
            if let Some(i) = implemented {
                h.slots.keep(i);
                if !i.init {
                    h.lifecycle = None;
                }
            }
            if !slices {
                h.slots.slicing = None;
            }
        });
        // A failing `init` rejects the version.
        module
            .init(&mut live)
            .await
            .map_err(LoadError::FirstInstance)?;
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

    /// Decisions kept for reuse (all hooks), or `None` when the module
    /// does not keep any.
    pub fn memo_len(&self) -> Option<usize> {
        let m = self.memos.as_ref()?;
        Some(m.on_request.kept() + m.on_response.kept() + m.on_hit.kept() + m.slicing.kept())
    }

    /// The version of `stavka:policy` it was built for.
    pub fn wit_version(&self) -> WitVersion {
        match self.hooks {
            Hooks::V01(..) => WitVersion::V01,
            Hooks::V02(..) => WitVersion::V02,
        }
    }

    /// Whether hits go through `on-hit`: exported, and not disclaimed by
    /// the module's `hooks` export.
    pub fn decides_hits(&self) -> bool {
        self.hooks.present()[2]
    }

    /// Which hooks it implements (those it exports, less those it
    /// disclaims), for listings; `init` only for a long-lived module that
    /// exports `lifecycle`, the only kind it is called for.
    pub fn exported_hooks(&self) -> Vec<&'static str> {
        let [request, response, hit, slice] = self.hooks.present();
        let init = self.hooks.has_lifecycle() && self.settings.mode == Mode::LongLived;
        [
            (request, Hook::Request),
            (response, Hook::Response),
            (hit, Hook::Hit),
            (slice, Hook::Slice),
            (init, Hook::Init),
        ]
        .into_iter()
        .filter(|(present, _)| *present)
        .map(|(_, hook)| hook.as_str())
        .collect()
    }

    /// A new instance; long-lived ones are initialised.
    async fn instantiate(&self) -> Result<Live, CallFailure> {
        let mut live = self.instantiate_bare().await?;
        self.init(&mut live).await?;
        Ok(live)
    }

    /// A new instance, not initialised.
    async fn instantiate_bare(&self) -> Result<Live, CallFailure> {
        let state = HostState::new(
            self.shared.clone(),
            self.settings.memory,
            self.prefetch_budget.clone(),
        );
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
        Ok(Live {
            store,
            instance,
            exports: Exports::default(),
        })
    }

    /// Run `init` on a long-lived module's new instance, if it has one.
    async fn init(&self, live: &mut Live) -> Result<(), CallFailure> {
        if self.settings.mode != Mode::LongLived {
            return Ok(());
        }
        if !self.hooks.has_lifecycle() {
            return Ok(());
        }
        self.metrics.call(Hook::Init);
        self.start_call(&mut live.store);
        let config = &self.settings.init;
        let Some(result) = each_version!(&self.hooks, h => h.init(live, config).await) else {
            return Ok(());
        };
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(CallFailure {
                module: self.shared.name.clone(),
                hook: Hook::Init.as_str(),
                kind: FailureKind::Trap,
                message: format!("init refused: {message}"),
            }),
            Err(e) => Err(self.failure(Hook::Init, &live.store, &e)),
        }
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
    async fn call<R: Clone>(
        &self,
        hook: Hook,
        slot: &mut RequestInstance,
        view: CallView<'_>,
        input: impl FnOnce() -> CallInput,
        memo: Option<(&Memo<R>, String)>,
        f: impl AsyncFnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        // A per-request call is a function of its input only on a fresh
        // instance; a long-lived module keeps decisions only when its
        // sidecar says its state does not decide them.
        let memo = memo.filter(|_| self.settings.mode == Mode::LongLived || slot.is_fresh());
        if let Some((memo, key)) = &memo {
            if let Some(outcome) = memo.get(key, view.request, view.response) {
                self.metrics.memo_hit(hook);
                return Ok(outcome);
            }
        }
        let input = input();
        let ticket = self
            .shared
            .breaker
            .admit(Instant::now())
            .ok_or_else(|| self.refused(hook, FailureKind::BreakerOpen))?;
        let _turn = self.wait_turn(hook).await?;
        let started = Instant::now();
        self.metrics.call(hook);
        let result = self.run(hook, slot, input, memo, f).await;
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
    /// if the call succeeded, and keep the outcome in `memo` if the call
    /// read nothing but fields.
    async fn run<R: Clone>(
        &self,
        hook: Hook,
        slot: &mut RequestInstance,
        input: CallInput,
        memo: Option<(&Memo<R>, String)>,
        f: impl AsyncFnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        let pooled = match self.settings.mode {
            Mode::PerRequest => slot.slot().take(),
            Mode::LongLived => self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop(),
        };
        let reused = pooled.is_some();
        let mut live = match pooled {
            Some(live) => live,
            None => self.instantiate().await?,
        };
        let state = live.store.data_mut();
        if reused {
            // What earlier calls used is theirs; a new instance's start
            // counts against its first call.
            state.impurity.take();
        }
        if memo.is_some() {
            state.reads = Some(match self.wit_version() {
                // A 0.1 guest gets every field of the record.
                WitVersion::V01 => RECORD_FIELDS
                    .iter()
                    .map(|f| {
                        (
                            f.clone(),
                            f.value(input.request.as_deref().map(Request::view), None),
                        )
                    })
                    .collect(),
                WitVersion::V02 => Vec::new(),
            });
        }
        state.input = input;
        self.start_call(&mut live.store);
        let result = f(&mut live).await;
        let state = live.store.data_mut();
        state.input = CallInput::default();
        let impure = state.impurity.take();
        let reads = state.reads.take();
        match result {
            Ok(r) => {
                if let (Some((memo, key)), Some(reads), false) = (memo, reads, impure) {
                    memo.put(&key, reads, &r);
                }
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

    /// `on-request`, or `None` when the module does not implement it.
    /// `view` is what a kept decision is looked up by; `input` is built
    /// only if the call enters the guest.
    pub async fn on_request(
        &self,
        slot: &mut RequestInstance,
        view: CallView<'_>,
        input: impl FnOnce() -> CallInput,
    ) -> Option<Result<RequestOutcome, CallFailure>> {
        let key = String::new();
        hook_call!(
            self,
            slot,
            view,
            input,
            Hook::Request,
            on_request,
            key,
            [req](req)
        )
    }

    /// `on-response`, or `None` when the module does not implement it.
    pub async fn on_response(
        &self,
        slot: &mut RequestInstance,
        resp: Response,
        view: CallView<'_>,
        input: impl FnOnce() -> CallInput,
    ) -> Option<Result<ResponseOutcome, CallFailure>> {
        let key = resp.status.to_string();
        hook_call!(
            self,
            slot,
            view,
            input,
            Hook::Response,
            on_response,
            key,
            [req](req, resp)
        )
    }

    /// `on-hit`, or `None` when the module does not implement it.
    pub async fn on_hit(
        &self,
        slot: &mut RequestInstance,
        entry: &Entry,
        view: CallView<'_>,
        input: impl FnOnce() -> CallInput,
    ) -> Option<Result<HitDecision, CallFailure>> {
        // The entry is part of the call's input: its age and freshness
        // change by the second, so `on-hit` decisions are rarely reused.
        let key = || {
            format!(
                "{} {} {} {:?}",
                entry.status, entry.age_seconds, entry.ttl_seconds, entry.tags
            )
        };
        hook_call!(
            self,
            slot,
            view,
            input,
            Hook::Hit,
            on_hit,
            key(),
            [req](req, entry)
        )
    }

    /// `on-body.received` with the body the module asked for in
    /// `on-response`; `None` when the module has no `on-body` (built for
    /// 0.2.0 or 0.1). Never reused: a call that asked for a body was not
    /// pure.
    pub async fn on_body(
        &self,
        slot: &mut RequestInstance,
        resp: Response,
        body: &[u8],
        view: CallView<'_>,
        input: impl FnOnce() -> CallInput,
    ) -> Option<Result<(), CallFailure>> {
        let Hooks::V02(hooks) = &self.hooks else {
            return None;
        };
        let index = hooks.on_body.as_ref()?;
        let call = async |live: &mut Live| {
            let guest = index.load(&mut live.store, &live.instance)?;
            let req = Resource::<RequestHandle>::new_borrow(0);
            guest.call_received(&mut live.store, req, resp, body).await
        };
        let memo: Option<(&Memo<()>, String)> = None;
        Some(self.call(Hook::Body, slot, view, input, memo, call).await)
    }

    /// Whether it implements `slicing` (0.1.1 and later).
    pub fn decides_slicing(&self) -> bool {
        self.hooks.present()[3]
    }

    /// `slicing.decide`, or `None` when the module does not implement it.
    pub async fn slicing(
        &self,
        slot: &mut RequestInstance,
        view: CallView<'_>,
        input: impl FnOnce() -> CallInput,
    ) -> Option<Result<SliceDecision, CallFailure>> {
        let key = String::new();
        hook_call!(
            self,
            slot,
            view,
            input,
            Hook::Slice,
            slicing,
            key,
            [req](req)
        )
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
