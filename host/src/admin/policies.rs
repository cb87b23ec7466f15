//! `/policies`: the policy modules, reloading them, and their key-value
//! stores.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::AdminState;
use crate::policy::{Mode, PolicyMetrics, PolicyModule};
use crate::policy_settings::{is_module_name, Failure};

/// `GET /policies`: `#/components/schemas/Policies`.
#[derive(Debug, Serialize)]
pub struct Policies {
    /// The watched directory.
    dir: PathBuf,
    /// Every module, by name.
    modules: Vec<Module>,
}

/// One module: `#/components/schemas/Module`.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Module {
    /// A version serves.
    Serving(Box<Serving>),
    /// No version of it ever loaded.
    Failed {
        /// The module's name.
        name: String,
        /// Why its newest file was rejected.
        last_error: String,
    },
}

/// The serving version of a module.
#[derive(Debug, Serialize)]
struct Serving {
    name: String,
    /// The first 16 hex digits of the SHA-256 of the file.
    hash: String,
    /// The `stavka:policy` series it was built for.
    wit: &'static str,
    mode: Mode,
    /// HTTP date it was published.
    loaded_at: String,
    deadline_ms: f64,
    memory_bytes: usize,
    failure: Failure,
    /// The hooks it implements (exports and does not disclaim).
    hooks: Vec<&'static str>,
    /// Decisions kept for reuse; `None` when it keeps none.
    memo: Option<usize>,
    /// Why the newest file was rejected, while this version serves.
    last_error: Option<String>,
    /// The module's circuit breaker: closed, open or half-open.
    breaker: &'static str,
    counters: Counters,
}

/// A module's calls, and its failed calls by kind.
#[derive(Debug, Serialize)]
struct Counters {
    calls: u64,
    memo_hits: u64,
    failures: BTreeMap<&'static str, u64>,
    /// What it asked to prefetch, by outcome (those that happened).
    prefetch: BTreeMap<&'static str, u64>,
}

impl Module {
    fn name(&self) -> &str {
        match self {
            Module::Serving(s) => &s.name,
            Module::Failed { name, .. } => name,
        }
    }

    fn serving(module: &PolicyModule, metrics: &PolicyMetrics) -> Module {
        let (calls, failures) = metrics.call_totals(module.name());
        let settings = &module.settings;
        Module::Serving(Box::new(Serving {
            name: module.name().to_owned(),
            hash: module.hash.clone(),
            wit: module.wit_version().as_str(),
            mode: settings.mode,
            loaded_at: httpdate::fmt_http_date(module.loaded_at),
            deadline_ms: settings.deadline.as_secs_f64() * 1000.0,
            memory_bytes: settings.memory,
            failure: settings.failure,
            hooks: module.exported_hooks(),
            memo: module.memo_len(),
            last_error: metrics.last_error(module.name()),
            breaker: module.shared.breaker.state().as_str(),
            counters: Counters {
                calls,
                memo_hits: metrics.memo_hit_total(module.name()),
                failures: failures.into_iter().collect(),
                prefetch: metrics
                    .prefetch()
                    .totals(module.name())
                    .into_iter()
                    .collect(),
            },
        }))
    }
}

/// `POST /policies/{module}/reload`: `#/components/schemas/Reloaded`.
#[derive(Debug, Serialize)]
pub struct Reloaded {
    /// The module.
    module: String,
    /// The hash now serving, if any version does.
    serving: Option<String>,
}

/// `module`, if it could name a module file.
fn module_name(module: String) -> Result<String, ApiError> {
    if is_module_name(&module) {
        Ok(module)
    } else {
        Err(ApiError::NotAModuleName(module))
    }
}

/// Every module: the serving version (hash, mode, load time, settings,
/// exported hooks), the standing load error, and call counters. A module
/// whose every version failed to load is listed with its error only.
pub async fn list(State(state): State<Arc<AdminState>>) -> Json<Policies> {
    let metrics = state.policies.metrics();
    let mut modules: Vec<Module> = state
        .policies
        .modules()
        .iter()
        .map(|m| Module::serving(m, metrics))
        .collect();
    modules.extend(
        metrics
            .failed_only()
            .into_iter()
            .map(|(name, last_error)| Module::Failed { name, last_error }),
    );
    modules.sort_by(|a, b| a.name().cmp(b.name()));
    Json(Policies {
        dir: state.policies.dir().to_path_buf(),
        modules,
    })
}

/// Load a module from disk again now (the watcher does this on change).
pub async fn reload(
    State(state): State<Arc<AdminState>>,
    Path(module): Path<String>,
) -> Result<Json<Reloaded>, ApiError> {
    let module = module_name(module)?;
    state.reloader.reload(&module).await;
    let serving = state.policies.get(&module).map(|m| m.hash.clone());
    Ok(Json(Reloaded { module, serving }))
}

/// Every entry of a module's key-value store, sorted by key.
pub async fn kv_list(
    State(state): State<Arc<AdminState>>,
    Path(module): Path<String>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let module = module_name(module)?;
    Ok(Json(state.policies.kv(&module).entries()))
}

/// One value, as text.
pub async fn kv_get(
    State(state): State<Arc<AdminState>>,
    Path((module, key)): Path<(String, String)>,
) -> Result<String, ApiError> {
    let module = module_name(module)?;
    state
        .policies
        .kv(&module)
        .get(&key)
        .ok_or(ApiError::NoSuchKey(key))
}

/// Set a value; a long-lived module sees it on its next call.
pub async fn kv_put(
    State(state): State<Arc<AdminState>>,
    Path((module, key)): Path<(String, String)>,
    value: Result<String, axum::extract::rejection::StringRejection>,
) -> Result<StatusCode, ApiError> {
    let module = module_name(module)?;
    state.policies.kv(&module).set(&key, &value?);
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a value.
pub async fn kv_delete(
    State(state): State<Arc<AdminState>>,
    Path((module, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let module = module_name(module)?;
    if state.policies.kv(&module).remove(&key) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NoSuchKey(key))
    }
}
