//! Cache policy in WebAssembly: modules loaded from a directory, swapped
//! while the server runs.
//!
//! The [`PolicyRegistry`] maps module names to their serving version. It is
//! read on every request with one atomic load ([`arc_swap`]); a reload
//! compiles and validates the new version on the watcher thread and then
//! publishes it, so requests in flight finish on the version they started
//! with and new requests get the new one. A version that fails to load is
//! logged and counted, and the previous one keeps serving.

mod bindings;
mod breaker;
mod engine;
mod error;
mod host;
pub mod kv;
mod memo;
pub mod metrics;
mod module;
pub mod preflight;
pub mod request;
mod sidecar;
mod trace;
mod watch;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use arc_swap::ArcSwap;

pub use bindings::v01::exports::stavka::policy::slicing::{SliceDecision, SliceSettings};
pub use bindings::v01::stavka::policy::types::{
    Entry, HeaderEdits, HitDecision, Lookup, RequestDecision, RequestOutcome, Response,
    ResponseDecision, ResponseOutcome, Store, Synthetic,
};
pub use engine::Runtime;
pub use error::{CallFailure, LoadError};
pub use host::{CallInput, CallView};
pub use kv::{Kv, KvStores};
pub use metrics::{FailureKind, PolicyMetrics};
pub use module::{PolicyModule, RequestInstance, WitVersion};
pub use request::{Request, RequestView};
pub use sidecar::{Mode, Settings, SidecarError};
pub use watch::{Reloader, Watcher};

pub use crate::policy_settings::Failure;

use crate::config;
use crate::policy_settings::is_module_name;
use host::ModuleShared;

/// The serving version of every module in the policy directory.
pub struct PolicyRegistry {
    runtime: Runtime,
    config: config::Policy,
    /// Looked up by name on every request of a policy site.
    modules: ArcSwap<HashMap<String, Arc<PolicyModule>, foldhash::fast::RandomState>>,
    shared: std::sync::Mutex<HashMap<String, Arc<ModuleShared>>>,
    kv: KvStores,
    metrics: Arc<PolicyMetrics>,
    /// Modules a site names: deleting one's file keeps its last good
    /// version. Replaced by a configuration reload.
    named: std::sync::Mutex<HashSet<String>>,
}

/// What reading a module from disk found.
pub enum Loaded {
    /// A new version, compiled and validated, not yet published.
    New(Box<PolicyModule>),
    /// The same bytes and settings as the serving version.
    Unchanged,
    /// No `<name>.wasm` in the directory.
    Absent,
}

impl PolicyRegistry {
    /// An empty registry for `config.dir`.
    pub fn new(
        config: &config::Policy,
        metrics: Arc<PolicyMetrics>,
    ) -> anyhow::Result<PolicyRegistry> {
        Ok(PolicyRegistry {
            runtime: Runtime::new()?,
            config: config.clone(),
            modules: ArcSwap::default(),
            shared: Default::default(),
            kv: KvStores::default(),
            metrics,
            named: Default::default(),
        })
    }

    /// Keep serving the last good version of these modules (the ones sites
    /// name) when their files are deleted: an operator stops using a module
    /// by removing it from the configuration, not by deleting a file, so a
    /// stray `rm` cannot switch a site's access policy off.
    pub fn named_by_sites(self, names: impl IntoIterator<Item = String>) -> PolicyRegistry {
        self.set_named(names);
        self
    }

    /// Replace the modules sites name, after a configuration reload. A
    /// module no longer named whose file is gone is unpublished on its
    /// next reload.
    pub fn set_named(&self, names: impl IntoIterator<Item = String>) {
        *self.named.lock().unwrap_or_else(|e| e.into_inner()) = names.into_iter().collect();
    }

    fn is_named(&self, name: &str) -> bool {
        self.named
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// The serving version of `name`. One atomic load; the returned version
    /// stays valid for as long as the caller holds it.
    pub fn get(&self, name: &str) -> Option<Arc<PolicyModule>> {
        self.modules.load().get(name).cloned()
    }

    /// Every serving module, by name.
    pub fn modules(&self) -> Vec<Arc<PolicyModule>> {
        let mut all: Vec<_> = self.modules.load().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// The key-value store of module `name` (which need not be loaded).
    pub fn kv(&self, name: &str) -> Arc<Kv> {
        self.kv.for_module(name)
    }

    /// The modules' metrics: call totals and load errors.
    pub fn metrics(&self) -> &PolicyMetrics {
        &self.metrics
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Load every `*.wasm` in the directory (the [`Watcher`] does, at start). Failures are logged and
    /// counted; they do not stop the others or the server.
    pub async fn load_all(&self) {
        let entries = match std::fs::read_dir(&self.config.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.config.dir.display(), error = %e, "policy directory unreadable; no policies loaded");
                return;
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| module_name_of(&e.path()))
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            self.reload(&name).await;
        }
    }

    fn module_path(&self, name: &str, extension: &str) -> PathBuf {
        self.config.dir.join(format!("{name}.{extension}"))
    }

    /// Load `name` from disk again: publish the new version, keep the old one
    /// if the new one is bad, or unpublish the module if its file is gone
    /// and no site names it.
    pub async fn reload(&self, name: &str) {
        match self.load(name).await {
            Ok(Loaded::Unchanged) => {}
            Ok(Loaded::Absent) if self.is_named(name) => {
                if self.get(name).is_some() {
                    tracing::warn!(
                        module = name,
                        "policy module file removed; a site names it, so its last good version keeps serving"
                    );
                }
            }
            Ok(Loaded::Absent) => {
                if self.publish(name, None) {
                    self.metrics.removed(name);
                    tracing::info!(module = name, "policy module removed");
                }
            }
            Ok(Loaded::New(module)) => {
                let at = module
                    .loaded_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.metrics
                    .loaded(name, &module.hash, module.settings.mode.as_str(), at);
                tracing::info!(
                    module = name,
                    hash = %module.hash,
                    mode = module.settings.mode.as_str(),
                    hooks = ?module.exported_hooks(),
                    "policy module loaded"
                );
                self.publish(name, Some(Arc::from(module)));
            }
            Err(e) => self.reject(name, &e),
        }
    }

    /// Read, validate and compile `name` from disk without publishing it:
    /// what a reload and `stavka check-config` both do.
    pub async fn load(&self, name: &str) -> Result<Loaded, LoadError> {
        let wasm = self.module_path(name, "wasm");
        let bytes = match std::fs::read(&wasm) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Absent),
            Err(e) => return Err(LoadError::read(wasm, &e)),
        };
        let settings = self.settings(name)?;
        if let Some(current) = self.get(name) {
            if current.hash == module::content_hash(&bytes) && current.settings == settings {
                return Ok(Loaded::Unchanged);
            }
        }
        let shared = self.shared_for(name);
        PolicyModule::load(&self.runtime, shared, &bytes, settings, &self.metrics)
            .await
            .map(|m| Loaded::New(Box::new(m)))
    }

    /// `name`'s settings: its sidecar over the `[policy]` limits, or those
    /// limits alone when it has none.
    fn settings(&self, name: &str) -> Result<Settings, LoadError> {
        let path = self.module_path(name, "toml");
        let defaults = self.config.limits();
        match std::fs::read_to_string(&path) {
            Ok(text) => Settings::parse(&text, &defaults).map_err(|error| LoadError::Sidecar {
                file: format!("{name}.toml"),
                error,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::defaults(&defaults)),
            Err(e) => Err(LoadError::read(path, &e)),
        }
    }

    fn reject(&self, name: &str, error: &LoadError) {
        let serving = self.get(name).map(|m| m.hash.clone());
        tracing::error!(module = name, %error, serving = ?serving, "policy module rejected; the previous version keeps serving");
        self.metrics.rejected(name, &error.to_string());
    }

    /// Swap in (or remove) `name`'s version; returns whether one was there.
    fn publish(&self, name: &str, module: Option<Arc<PolicyModule>>) -> bool {
        let mut had = false;
        self.modules.rcu(|current| {
            let mut next = HashMap::clone(current);
            had = match &module {
                Some(m) => next.insert(name.to_owned(), m.clone()).is_some(),
                None => next.remove(name).is_some(),
            };
            next
        });
        had
    }

    fn shared_for(&self, name: &str) -> Arc<ModuleShared> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(ModuleShared::new(
                    name,
                    self.kv.for_module(name),
                    self.metrics.clone(),
                    self.metrics.prefetch().clone(),
                ))
            })
            .clone()
    }
}

/// `dir/name.wasm` or `dir/name.toml` → `name`.
fn module_name_of(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    if ext != "wasm" && ext != "toml" {
        return None;
    }
    let name = path.file_stem()?.to_str()?;
    is_module_name(name).then(|| name.to_owned())
}
