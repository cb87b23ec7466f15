//! The admin listener: probes, metrics, purges, inspection, statistics,
//! policy management and the dashboard.
//!
//! It runs as a pingora background service on its own address, so a flood
//! of proxy traffic does not starve the endpoints an orchestrator polls.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::Request;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use subtle::ConstantTimeEq;

use crate::cache::store::CacheStore;
use crate::metrics::Metrics;
use crate::policy::{PolicyRegistry, Reloader};
use crate::shutdown::InFlight;
use crate::sites::SiteRouter;

mod cache;
mod dashboard;
mod stats;

/// What the admin endpoints read.
pub struct AdminState {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The cache: sizes, readiness, purges and inspection.
    pub store: &'static CacheStore,
    /// Which site serves a host, to find a URL's cache key.
    pub sites: Arc<SiteRouter>,
    /// The proxy listener, probed by `/readyz`.
    pub proxy_addr: SocketAddr,
    /// Requests in flight, and whether shutdown has begun.
    pub in_flight: Arc<InFlight>,
    /// Policy modules and their key-value stores.
    pub policies: Arc<PolicyRegistry>,
    /// Loads a module now, on the watcher's thread.
    pub reloader: Reloader,
    /// The bearer token required for everything but the probes, if any.
    pub token: Option<String>,
    /// `/metrics` is served without the token.
    pub metrics_public: bool,
    /// Snapshots for `/stats` rates.
    pub sampler: stats::Sampler,
}

/// The admin HTTP service on a listener bound before the server started, so
/// a taken port is a start-up error rather than a log line.
pub struct AdminService {
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    state: Arc<AdminState>,
}

impl AdminService {
    /// Serve `state` on `listener` once the server runs.
    pub fn new(listener: std::net::TcpListener, state: AdminState) -> AdminService {
        AdminService {
            listener: std::sync::Mutex::new(Some(listener)),
            state: Arc::new(state),
        }
    }
}

/// The admin routes. `/healthz` and `/readyz` are always open (probes
/// carry no credentials), as are the dashboard's static files and the API
/// description; `/metrics` is open when `admin.metrics_public`; everything
/// else needs the bearer token when one is configured.
pub fn router(state: Arc<AdminState>) -> Router {
    let mut protected = Router::new()
        .route("/purge", post(cache::purge))
        .route("/inspect", get(cache::inspect))
        .route("/stats", get(stats::stats))
        .route("/policies", get(policies))
        .route("/policies/{module}/reload", post(reload))
        .route("/policies/{module}/kv", get(kv_list))
        .route(
            "/policies/{module}/kv/{key}",
            get(kv_get).put(kv_put).delete(kv_delete),
        );
    let mut open = dashboard::routes()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if state.metrics_public {
        open = open.route("/metrics", get(metrics));
    } else {
        protected = protected.route("/metrics", get(metrics));
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    open.merge(protected).with_state(state)
}

/// Check `Authorization: Bearer <token>` in constant time: 401 without
/// credentials, 403 with wrong ones. With no token configured (allowed only
/// on a loopback listener) every request passes.
async fn authorize(State(state): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response(),
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => (StatusCode::FORBIDDEN, "wrong token\n").into_response(),
    }
}

fn known_module(name: &str) -> Result<(), (StatusCode, &'static str)> {
    if crate::policy_settings::is_module_name(name) {
        Ok(())
    } else {
        Err((StatusCode::BAD_REQUEST, "not a module name\n"))
    }
}

/// Every module: the serving version (hash, mode, load time, settings,
/// exported hooks), the standing load error, and call counters. A module
/// whose every version failed to load is listed with its error only.
async fn policies(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let metrics = state.policies.metrics();
    let counters = |name: &str| {
        let (calls, failures) = metrics.call_totals(name);
        let failures: serde_json::Map<_, _> = failures
            .iter()
            .map(|(kind, n)| ((*kind).to_owned(), (*n).into()))
            .collect();
        serde_json::json!({ "calls": calls, "failures": failures })
    };
    let mut modules: Vec<_> = state
        .policies
        .modules()
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name(),
                "status": "serving",
                "hash": m.hash,
                "mode": m.settings.mode.as_str(),
                "loaded_at": httpdate::fmt_http_date(m.loaded_at),
                "deadline_ms": m.settings.deadline.as_secs_f64() * 1000.0,
                "memory_bytes": m.settings.memory,
                "failure": format!("{:?}", m.settings.failure).to_lowercase(),
                "hooks": m.exported_hooks(),
                "last_error": metrics.last_error(m.name()),
                "counters": counters(m.name()),
            })
        })
        .collect();
    modules.extend(metrics.failed_only().into_iter().map(|(name, error)| {
        serde_json::json!({ "name": name, "status": "failed", "last_error": error })
    }));
    modules.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(serde_json::json!({ "dir": state.policies.dir(), "modules": modules }))
}

/// Load a module from disk again now (the watcher does this on change).
async fn reload(
    State(state): State<Arc<AdminState>>,
    Path(module): Path<String>,
) -> Result<impl IntoResponse, (StatusCode, &'static str)> {
    known_module(&module)?;
    state.reloader.reload(&module).await;
    let serving = state.policies.get(&module).map(|m| m.hash.clone());
    Ok(Json(
        serde_json::json!({ "module": module, "serving": serving }),
    ))
}

async fn kv_list(
    State(state): State<Arc<AdminState>>,
    Path(module): Path<String>,
) -> Result<impl IntoResponse, (StatusCode, &'static str)> {
    known_module(&module)?;
    Ok(Json(state.policies.kv(&module).entries()))
}

async fn kv_get(
    State(state): State<Arc<AdminState>>,
    Path((module, key)): Path<(String, String)>,
) -> Result<String, (StatusCode, &'static str)> {
    known_module(&module)?;
    state
        .policies
        .kv(&module)
        .get(&key)
        .ok_or((StatusCode::NOT_FOUND, "no such key\n"))
}

async fn kv_put(
    State(state): State<Arc<AdminState>>,
    Path((module, key)): Path<(String, String)>,
    value: String,
) -> Result<StatusCode, (StatusCode, &'static str)> {
    known_module(&module)?;
    state.policies.kv(&module).set(&key, &value);
    Ok(StatusCode::NO_CONTENT)
}

async fn kv_delete(
    State(state): State<Arc<AdminState>>,
    Path((module, key)): Path<(String, String)>,
) -> Result<StatusCode, (StatusCode, &'static str)> {
    known_module(&module)?;
    if state.policies.kv(&module).remove(&key) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err((StatusCode::NOT_FOUND, "no such key\n"))
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state
            .metrics
            .render(state.store.stats(), state.in_flight.count()),
    )
}

/// Ready when the proxy listener accepts connections, storage can take
/// writes and shutdown has not begun.
async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let probe = loopback_for(state.proxy_addr);
    let listener = match tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(probe),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("proxy listener {probe}: {e}")),
        Err(_) => Err(format!("proxy listener {probe}: connect timed out")),
    };
    let store = state.store;
    let storage = tokio::task::spawn_blocking(move || store.ready())
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let draining = state.in_flight.is_draining();
    let ready = listener.is_ok() && storage.is_ok() && !draining;
    let free_bytes = storage.as_ref().ok().copied();
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_owned());
    let body = serde_json::json!({
        "ready": ready,
        "draining": draining,
        "store_free_bytes": free_bytes,
        "checks": { "proxy_listener": show(listener), "storage": show(storage.map(|_| ())) },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// A wildcard listen address is probed on loopback.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(listener) = self.listener.lock().expect("not poisoned").take() else {
            return;
        };
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable");
                return;
            }
        };
        let sampling = stats::Sampler::run(self.state.clone());
        let app = router(self.state.clone());
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        sampling.abort();
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    }
}
