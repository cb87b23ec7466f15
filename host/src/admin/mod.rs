//! The admin listener: probes, metrics, purges, inspection, statistics,
//! policy management and the dashboard.
//!
//! It runs as a pingora background service on its own address, so a flood
//! of proxy traffic does not starve the endpoints an orchestrator polls.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
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
mod error;
mod policies;
mod probes;
mod reload;
pub mod report;
mod stats;

pub use error::ApiError;

/// What the admin endpoints read.
pub struct AdminState {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The cache: sizes, readiness, purges and inspection.
    pub store: &'static CacheStore,
    /// Which site serves a host, to find a URL's cache key.
    pub sites: Arc<arc_swap::ArcSwap<SiteRouter>>,
    /// The proxy listener, probed by `/readyz`.
    pub proxy_addr: SocketAddr,
    /// Requests in flight, and whether shutdown has begun.
    pub in_flight: Arc<InFlight>,
    /// Policy modules and their key-value stores.
    pub policies: Arc<PolicyRegistry>,
    /// Reads the configuration file again (`POST /config/reload`,
    /// `SIGHUP`); knows the sites serving now, for `/readyz` to name a site
    /// whose policy module is not loaded.
    pub config: Arc<crate::reload::ConfigReloader>,
    /// Loads a module now, on the watcher's thread.
    pub reloader: Reloader,
    /// The bearer token required for everything but the probes, if any.
    pub token: Option<String>,
    /// `/metrics` is served without the token.
    pub metrics_public: bool,
    /// Snapshots for `/stats` rates.
    pub sampler: stats::Sampler,
    /// The TLS listener's certificates, for their expiry in `/stats`.
    pub certificates: Option<Arc<crate::tls::Certificates>>,
    /// The client limits, whose header-timeout count pingora keeps.
    pub limits: Arc<crate::limits::Limits>,
    /// The cluster-wide purge bus, when `[shared]` configures one.
    pub purge_bus: Option<Arc<crate::cache::purge_bus::PurgeBus>>,
    /// Policies' prefetches: queues and what became of them.
    pub prefetcher: Arc<crate::prefetch::Prefetcher>,
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
/// else needs the bearer token when one is configured. Every error answers
/// with an [`ApiError`].
pub fn router(state: Arc<AdminState>) -> Router {
    let mut protected = Router::new()
        .route("/purge", post(cache::purge))
        .route("/inspect", get(cache::inspect))
        .route("/stats", get(stats::stats))
        .route("/top", get(stats::top))
        .route("/events", get(stats::events))
        .route("/config/reload", post(reload::reload))
        .route("/policies", get(policies::list))
        .route("/policies/{module}/reload", post(policies::reload))
        .route("/policies/{module}/kv", get(policies::kv_list))
        .route(
            "/policies/{module}/kv/{key}",
            get(policies::kv_get)
                .put(policies::kv_put)
                .delete(policies::kv_delete),
        );
    let mut open = dashboard::routes()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz));
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
/// on a loopback listener) a request passes only if its Host is a loopback
/// name, which defeats DNS rebinding from a browser on the same machine.
async fn authorize(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = &state.token else {
        let host = request
            .headers()
            .get(header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default();
        if !is_loopback_host(&host) {
            return Err(ApiError::ForeignHost(host));
        }
        return Ok(next.run(request).await);
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => Err(ApiError::Unauthorized),
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
            Ok(next.run(request).await)
        }
        Some(_) => Err(ApiError::Forbidden),
    }
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    matches!(
        crate::host_name::normalize(host).as_ref(),
        "localhost" | "127.0.0.1" | "[::1]"
    )
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    state.limits.sync_pingora_counts();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state
            .metrics
            .render(state.store.stats(), state.in_flight.count()),
    )
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
        let hangups = reload::on_sighup(self.state.clone());
        crate::systemd::notify_ready();
        let app = router(self.state.clone());
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        sampling.abort();
        hangups.abort();
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    }
}
