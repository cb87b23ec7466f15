//! `/healthz` and `/readyz`: what an orchestrator polls, open without the
//! token since probes carry no credentials.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use edge_cdn_store::Recovering;
use serde::Serialize;

use super::AdminState;
use crate::policy::preflight;
use crate::pool::{MemberHealth, PoolRole};

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
    /// What works less well without making the node unready, each with
    /// why: a store under its free-space floor still serves every
    /// response, it only stops storing new ones.
    degraded: Vec<String>,
    /// Each site's origin and shield members and their health.
    pools: Vec<SitePools>,
}

/// One site's pools, member by member.
#[derive(Debug, Serialize)]
struct SitePools {
    site: String,
    origin: Vec<MemberHealth>,
    /// `null` when the site has no shields.
    shield: Option<Vec<MemberHealth>>,
}

/// The outcome of each readiness check.
#[derive(Debug, Serialize)]
struct Checks {
    proxy_listener: String,
    storage: String,
    /// `ok`, or each site whose named policy module is not loaded. It does
    /// not make the node unready: one tenant's missing module must not take
    /// every other site out of rotation; that site answers 503 itself
    /// (`policy_missing = "closed"`).
    policies: String,
    /// `off` (no shared tier), `ok`, or why the shared tier is not being
    /// asked (its breaker is open) and whether the purge bus is
    /// subscribed. Never makes the node unready: lookups fail open to the
    /// origin.
    shared: String,
}

/// Liveness: the process serves.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the proxy listener accepts connections, storage can take
/// writes and shutdown has not begun; `degraded` lists what works less
/// well without making it unready (a store low on space).
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
    let health = tokio::task::spawn_blocking(move || store.health()).await;
    let (storage, store_free_bytes, low_space, recovering, shared_degraded) = match health {
        Ok(h) => (
            h.writable,
            h.space.map(|s| s.free),
            h.low_space,
            h.recovering,
            h.shared_degraded,
        ),
        Err(e) => (Err(e.to_string()), None, None, None, None),
    };
    let mut degraded = storage_degraded(low_space, recovering);
    let shared = shared_check(&state, shared_degraded);
    if shared != "ok" && shared != "off" {
        degraded.push(format!("shared: {shared}"));
    }
    let pools = pools(&state);
    degraded.extend(pools_degraded(&pools));
    let draining = state.in_flight.is_draining();
    let ready = listener.is_ok() && storage.is_ok() && !draining;
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_owned());
    let body = Readiness {
        ready,
        draining,
        store_free_bytes,
        checks: Checks {
            proxy_listener: show(listener),
            storage: show(storage),
            policies: policies_check(&state),
            shared,
        },
        degraded,
        pools,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// The shared tier and the purge bus: `off`, `ok`, or what is wrong.
fn shared_check(state: &AdminState, degraded: Option<String>) -> String {
    if state.store.shared_breaker().is_none() {
        return "off".to_owned();
    }
    let mut problems: Vec<String> = degraded.into_iter().collect();
    if state.purge_bus.as_ref().is_some_and(|bus| !bus.connected()) {
        problems.push("purge bus: disconnected (purges from other nodes wait)".to_owned());
    }
    if problems.is_empty() {
        "ok".to_owned()
    } else {
        problems.join("; ")
    }
}

/// Every site's pools as they are now.
fn pools(state: &AdminState) -> Vec<SitePools> {
    state
        .sites
        .load()
        .sites()
        .iter()
        .map(|site| SitePools {
            site: site.name.clone(),
            origin: site.origin.health(),
            shield: site.shield.as_ref().map(|s| s.health()),
        })
        .collect()
}

/// A member out of its pool (its health check failed, or requests took it
/// out) degrades the node without making it unready: the pool's other
/// members serve, and a pool with none left still tries them.
fn pools_degraded(pools: &[SitePools]) -> Vec<String> {
    let mut out = Vec::new();
    for site in pools {
        let roles = [
            (PoolRole::Origin, Some(&site.origin)),
            (PoolRole::Shield, site.shield.as_ref()),
        ];
        for (role, members) in roles {
            for m in members.into_iter().flatten() {
                let why = match (m.healthy, m.down_ms) {
                    (false, _) => "fails its health check",
                    (true, Some(_)) => "taken out by failed requests",
                    (true, None) => continue,
                };
                out.push(format!(
                    "pool: site {} {} member {} ({}) {why}",
                    site.site,
                    role.as_str(),
                    m.address,
                    m.resolved
                ));
            }
        }
    }
    out
}

/// `ok`, or the sites whose named module is not being served.
fn policies_check(state: &AdminState) -> String {
    let unserved = preflight::unserved(&state.policies, &state.config.sites());
    if unserved.is_empty() {
        return "ok".to_owned();
    }
    unserved
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The store's degraded reasons. Low space does not make the node
/// unready: it serves every response from the origin or the cache it has,
/// and a fleet filling its disks together must not leave rotation at once.
/// Nor does a store still walking its files after an unclean stop: it
/// serves, with misses for what it has not reached. An unwritable
/// directory (one the store cannot even recreate) does: it is a
/// misconfiguration an operator should see before traffic arrives.
fn storage_degraded(low_space: Option<String>, recovering: Option<Recovering>) -> Vec<String> {
    let recovering = recovering.map(|p| {
        format!(
            "storage: recovering objects from the files after an unclean stop ({} so far, {} s); objects not reached yet are misses",
            p.found,
            p.elapsed.as_secs()
        )
    });
    low_space
        .map(|why| format!("storage: {why}"))
        .into_iter()
        .chain(recovering)
        .collect()
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
