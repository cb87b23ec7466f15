//! Pools of upstream servers: a site's origin and its shields.
//!
//! Built on `pingora-load-balancing`: its `LoadBalancer` holds the members
//! and picks one (weighted round robin, or Ketama consistent hashing on the
//! cache key), runs the active health checks (`HttpHealthCheck`,
//! `TcpHealthCheck`) and asks [`discovery::Resolver`] for the members again
//! every `dns_ttl`. Its background loop runs on one thread of its own
//! ([`runtime`]) until the pool is dropped (a reload replaces it).
//! Passive health ([`member`]) is ours: what requests learn takes a member
//! out for a while, and a request that cannot connect tries the next
//! member ([`Pool::select`] with the members it tried).

mod discovery;
mod health;
pub mod member;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pingora_load_balancing::selection::{Consistent, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{ActiveCheck, Member, PassiveCheck, Selection};
use discovery::Resolver;
pub use health::ProbeTls;
pub use member::{Failure, MemberState};

/// What a pool is for: the `pool` label of its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolRole {
    /// The site's origin servers.
    Origin,
    /// The shields (other stavka nodes) the site's misses go to.
    Shield,
}

impl PoolRole {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolRole::Origin => "origin",
            PoolRole::Shield => "shield",
        }
    }
}

/// How a pool is configured, whatever it is for.
pub struct PoolSpec<'a> {
    /// The configuration path (`site[0].origin`), for errors.
    pub field: String,
    /// The site's name, a metric label.
    pub site: &'a str,
    /// Origin or shield.
    pub role: PoolRole,
    /// The members as configured.
    pub members: Vec<Member>,
    /// How a request picks a member.
    pub selection: Selection,
    /// The active health check, if any.
    pub health: Option<&'a ActiveCheck>,
    /// The Host of an HTTP probe when `health.host` does not say.
    pub probe_host: String,
    /// Probe over TLS as requests connect, instead of plain HTTP.
    pub probe_tls: Option<ProbeTls>,
    /// The passive health check.
    pub passive: &'a PassiveCheck,
    /// How often names are resolved again.
    pub dns_ttl: Duration,
}

/// The load balancer, with its selection.
enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Ketama(Arc<LoadBalancer<Consistent>>),
}

impl Balancer {
    fn backends(&self) -> &Backends {
        match self {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Ketama(lb) => lb.backends(),
        }
    }

    fn select_with(
        &self,
        key: &[u8],
        steps: usize,
        accept: impl Fn(&Backend, bool) -> bool,
    ) -> Option<Backend> {
        match self {
            Balancer::RoundRobin(lb) => lb.select_with(key, steps, accept),
            Balancer::Ketama(lb) => lb.select_with(key, steps, accept),
        }
    }
}

/// A pool of upstream servers with health, running its background checks
/// until dropped.
pub struct Pool {
    role: PoolRole,
    balancer: Balancer,
    /// Whether a 5xx counts against a member (origins: yes; shields: no).
    status_counts: bool,
    failovers: IntCounter,
    /// Dropping it (with the pool) stops the background loop.
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("role", &self.role).finish()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // pingora's loop keeps running when its watch is merely closed.
        let _ = self.stop.send(true);
    }
}

/// A member of a pool picked for one request.
#[derive(Debug, Clone)]
pub struct Picked {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Its passive health.
    pub state: Arc<MemberState>,
}

/// One member's health, for `/stats`.
#[derive(Debug, Serialize)]
pub struct MemberHealth {
    /// The address as configured.
    pub address: String,
    /// What it resolved to.
    pub resolved: String,
    /// Its weight.
    pub weight: usize,
    /// The active health check's verdict (`true` without one).
    pub healthy: bool,
    /// Milliseconds requests still leave it out after failing on it.
    pub down_ms: Option<u64>,
}

/// Pool metric families, registered once per process.
#[derive(Clone)]
pub struct PoolMetrics {
    healthy: IntGaugeVec,
    failures: IntCounterVec,
    failovers: IntCounterVec,
    resolutions: IntCounterVec,
}

impl PoolMetrics {
    /// Register the families in `registry`.
    pub fn new(registry: &Registry) -> PoolMetrics {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "stavka_pool_member_healthy",
                "1 while the active health check finds a pool member healthy, by site, pool (origin, shield) and member address.",
            ),
            &["site", "pool", "member"],
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let metrics = PoolMetrics {
            healthy: gauge,
            failures: counter(
                "stavka_pool_member_failures_total",
                "Requests that failed on a pool member, by site, pool, member and kind (connect, 5xx).",
                &["site", "pool", "member", "kind"],
            ),
            failovers: counter(
                "stavka_pool_failovers_total",
                "Requests that could not connect to one member and tried the next, by site and pool.",
                &["site", "pool"],
            ),
            resolutions: counter(
                "stavka_pool_resolutions_total",
                "Pool member names resolved, by site, pool and result (ok, failed).",
                &["site", "pool", "result"],
            ),
        };
        registry
            .register(Box::new(metrics.healthy.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(metrics.failures.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(metrics.failovers.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(metrics.resolutions.clone()))
            .expect("unique metric");
        metrics
    }
}

/// The thread pool checks run on: one current-thread runtime of its own,
/// so pools can be built before pingora's runtimes exist and outlive none
/// of them.
fn runtime() -> &'static tokio::runtime::Handle {
    static HANDLE: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("stavka-pools")
            .build()
            .expect("a runtime for pool health checks");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("stavka-pools".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("a thread for pool health checks");
        handle
    })
}

impl Pool {
    /// Resolve the members and start the pool's health checks and
    /// re-resolution. Blocks on the system resolver (see
    /// [`Resolver::start`]).
    pub fn start(spec: PoolSpec<'_>, metrics: &PoolMetrics) -> anyhow::Result<Arc<Pool>> {
        let role = spec.role.as_str();
        let site = spec.site.to_owned();
        let members: Vec<(String, usize)> = spec
            .members
            .iter()
            .map(|m| (m.address().to_owned(), m.weight() as usize))
            .collect();
        let (threshold, down_for) = (spec.passive.failures, spec.passive.down_for);
        let failures = metrics.failures.clone();
        let healthy = metrics.healthy.clone();
        let (site_label, role_label) = (site.clone(), role);
        let new_state: discovery::NewState = Box::new(move |configured, addr| {
            let member = addr.to_string();
            healthy
                .with_label_values(&[&site_label, role_label, &member])
                .set(1);
            let counted = Failure::ALL.map(|kind| {
                failures.with_label_values(&[&site_label, role_label, &member, kind.as_str()])
            });
            MemberState::new(configured.to_owned(), threshold, down_for, counted)
        });
        let resolutions = (
            metrics.resolutions.with_label_values(&[&site, role, "ok"]),
            metrics
                .resolutions
                .with_label_values(&[&site, role, "failed"]),
        );
        let resolver = Resolver::start(&spec.field, &members, new_state, resolutions)?;
        let mut backends = Backends::new(Box::new(resolver));
        if let Some(check) = spec.health {
            let observer = health::Observer {
                gauge: metrics.healthy.clone(),
                site: site.clone(),
                role: spec.role,
            };
            backends.set_health_check(health::build(
                check,
                &spec.probe_host,
                spec.probe_tls.as_ref(),
                observer,
            ));
        }
        let (stop, stopped) = watch::channel(false);
        let balancer = match (spec.role, spec.selection) {
            (PoolRole::Shield, _) | (PoolRole::Origin, Selection::Ketama) => {
                Balancer::Ketama(run(LoadBalancer::from_backends(backends), &spec, stopped)?)
            }
            (PoolRole::Origin, Selection::RoundRobin) => {
                Balancer::RoundRobin(run(LoadBalancer::from_backends(backends), &spec, stopped)?)
            }
        };
        Ok(Arc::new(Pool {
            role: spec.role,
            balancer,
            status_counts: spec.role == PoolRole::Origin,
            failovers: metrics.failovers.with_label_values(&[&site, role]),
            stop,
        }))
    }

    /// What the pool is for.
    pub fn role(&self) -> PoolRole {
        self.role
    }

    /// The member for a request with hash `key` (ignored by round robin)
    /// that has not tried the members in `tried`: one both health checks
    /// find well if there is one, else any it has not tried (a pool whose
    /// every member is out still tries them rather than refuse). `None`
    /// once every member was tried.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<Picked> {
        let steps = self.steps();
        let untried = |b: &Backend| inet(b).is_some_and(|a| !tried.contains(&a));
        let well = |b: &Backend, healthy: bool| {
            healthy && untried(b) && state(b).is_some_and(|s| s.down_for().is_none())
        };
        let backend = self
            .balancer
            .select_with(key, steps, well)
            .or_else(|| self.balancer.select_with(key, steps, |b, _| untried(b)))?;
        Some(Picked {
            addr: inet(&backend)?,
            state: state(&backend)?.clone(),
        })
    }

    /// Enough selection steps to meet every member: a Ketama ring has 160
    /// points per unit of weight.
    fn steps(&self) -> usize {
        let weights: usize = self
            .balancer
            .backends()
            .get_backend()
            .iter()
            .map(|b| b.weight.max(1))
            .sum();
        160 * weights + 16
    }

    /// Count a request that could not connect to `picked`; `true` when
    /// another member is left to try, which the caller then does.
    pub fn connect_failed(&self, picked: &Picked, tried: &[SocketAddr]) -> bool {
        if picked.state.failed(Failure::Connect) {
            tracing::warn!(pool = self.role.as_str(), member = %picked.addr, "requests take a pool member out: it refused connections");
        }
        let left = self
            .balancer
            .backends()
            .get_backend()
            .iter()
            .filter_map(inet)
            .any(|a| !tried.contains(&a));
        if left {
            self.failovers.inc();
        }
        left
    }

    /// Count the answer `picked` gave: a 5xx against an origin member,
    /// anything else for it.
    pub fn answered(&self, picked: &Picked, status: u16) {
        if status >= 500 && self.status_counts {
            if picked.state.failed(Failure::Status) {
                tracing::warn!(pool = self.role.as_str(), member = %picked.addr, "requests take a pool member out: it answered 5xx");
            }
        } else {
            picked.state.succeeded();
        }
    }

    /// Every member's health, for `/stats`.
    pub fn health(&self) -> Vec<MemberHealth> {
        let backends = self.balancer.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| {
                let state = state(b)?;
                Some(MemberHealth {
                    address: state.configured.clone(),
                    resolved: inet(b)?.to_string(),
                    weight: b.weight,
                    healthy: backends.ready(b),
                    down_ms: state.down_for().map(|d| d.as_millis() as u64),
                })
            })
            .collect()
    }
}

/// Run `lb`'s background loop on the pool thread until `stopped` says so:
/// discovery first (now, from what was resolved at start) so the pool
/// selects from its first request on.
fn run<S>(
    lb: LoadBalancer<S>,
    spec: &PoolSpec<'_>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Arc<LoadBalancer<S>>>
where
    S: pingora_load_balancing::selection::BackendSelection + Send + Sync + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
    S::Config: Send + Sync,
{
    use futures_util::FutureExt;
    let mut lb = lb;
    lb.update_frequency = Some(spec.dns_ttl);
    lb.health_check_frequency = spec.health.map(|h| h.interval);
    lb.parallel_health_check = true;
    lb.update()
        .now_or_never()
        .ok_or_else(|| {
            anyhow::anyhow!("{}: the first discovery did not finish at once", spec.field)
        })?
        .map_err(|e| anyhow::anyhow!("{}: {e}", spec.field))?;
    let lb = Arc::new(lb);
    let running = lb.clone();
    runtime().spawn(async move { running.run(stopped, None).await });
    Ok(lb)
}

fn inet(b: &Backend) -> Option<SocketAddr> {
    match &b.addr {
        pingora_core::protocols::l4::socket::SocketAddr::Inet(a) => Some(*a),
        _ => None,
    }
}

fn state(b: &Backend) -> Option<&Arc<MemberState>> {
    b.ext.get::<Arc<MemberState>>()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The addresses of `pool`'s members.
    fn addresses(pool: &Pool) -> BTreeSet<SocketAddr> {
        pool.balancer
            .backends()
            .get_backend()
            .iter()
            .filter_map(inet)
            .collect()
    }

    fn spec<'a>(role: PoolRole, members: &[&str], passive: &'a PassiveCheck) -> PoolSpec<'a> {
        PoolSpec {
            field: "site[0].origin".into(),
            site: "s",
            role,
            members: members
                .iter()
                .map(|m| Member::Address(m.to_string()))
                .collect(),
            selection: Selection::RoundRobin,
            health: None,
            probe_host: "s".into(),
            probe_tls: None,
            passive,
            dns_ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_request_tries_every_member_once_then_gives_up() {
        let passive = PassiveCheck::default();
        let metrics = PoolMetrics::new(&Registry::new());
        let pool = Pool::start(
            spec(
                PoolRole::Origin,
                &["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"],
                &passive,
            ),
            &metrics,
        )
        .unwrap();
        assert_eq!(addresses(&pool).len(), 3);
        let mut tried = Vec::new();
        while let Some(picked) = pool.select(b"", &tried) {
            tried.push(picked.addr);
            let more = pool.connect_failed(&picked, &tried);
            assert_eq!(more, tried.len() < 3);
        }
        assert_eq!(tried.len(), 3);
    }

    #[test]
    fn a_shield_is_the_same_for_a_key_and_the_next_takes_it_when_it_is_out() {
        let passive = PassiveCheck {
            failures: 1,
            ..PassiveCheck::default()
        };
        let metrics = PoolMetrics::new(&Registry::new());
        let pool = Pool::start(
            spec(
                PoolRole::Shield,
                &["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"],
                &passive,
            ),
            &metrics,
        )
        .unwrap();
        let home = pool.select(b"/a", &[]).unwrap();
        for _ in 0..10 {
            assert_eq!(pool.select(b"/a", &[]).unwrap().addr, home.addr);
        }
        pool.connect_failed(&home, &[home.addr]);
        let next = pool.select(b"/a", &[]).unwrap();
        assert_ne!(next.addr, home.addr, "the home shield is out");
        assert!(pool.health().iter().any(|m| m.down_ms.is_some()));
        pool.answered(&next, 503);
        assert!(
            next.state.down_for().is_none(),
            "a shield's 5xx is the origin's"
        );
    }

    #[test]
    fn an_unresolvable_member_names_the_field() {
        let passive = PassiveCheck::default();
        let metrics = PoolMetrics::new(&Registry::new());
        let err = Pool::start(
            spec(PoolRole::Origin, &["no-such-host.invalid:80"], &passive),
            &metrics,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("site[0].origin"), "{err:#}");
    }
}
