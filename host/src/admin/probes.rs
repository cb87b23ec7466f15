//! `/healthz` and `/readyz`: what an orchestrator polls, open without the
//! token since probes carry no credentials.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::AdminState;

/// `GET /readyz`: `#/components/schemas/Readiness`.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Every check passed and shutdown has not begun.
    ready: bool,
    /// Shutdown has begun.
    draining: bool,
    /// Bytes free on the store's filesystem, when it could be read.
    store_free_bytes: Option<u64>,
    /// Each check: `ok`, or why it failed.
    checks: Checks,
}

/// The outcome of each readiness check.
#[derive(Debug, Serialize)]
struct Checks {
    proxy_listener: String,
    storage: String,
}

/// Liveness: the process serves.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the proxy listener accepts connections, storage can take
/// writes and shutdown has not begun.
pub async fn readyz(State(state): State<Arc<AdminState>>) -> (StatusCode, Json<Readiness>) {
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
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_owned());
    let body = Readiness {
        ready,
        draining,
        store_free_bytes: storage.as_ref().ok().copied(),
        checks: Checks {
            proxy_listener: show(listener),
            storage: show(storage.map(|_| ())),
        },
    };
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
