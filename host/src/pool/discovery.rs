//! The members of a pool as resolved addresses: every configured name is
//! resolved at start (where a failure is a configuration error) and again
//! each time pingora's load balancer asks (every `dns_ttl`), keeping the
//! last good addresses of a name that fails to resolve.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::{Backend, Extensions};
use prometheus::IntCounter;

use super::member::MemberState;

/// Builds the passive state of a newly resolved address of a member.
pub type NewState = Box<dyn Fn(&str, SocketAddr) -> Arc<MemberState> + Send + Sync>;

/// One configured member: its name and weight, and what it resolved to
/// last.
struct Named {
    address: String,
    weight: usize,
    resolved: Vec<SocketAddr>,
}

/// A pool's members, resolved by name.
pub struct Resolver {
    named: Mutex<Vec<Named>>,
    /// The passive state of each resolved address, kept across
    /// resolutions so a member that resolves again keeps its history.
    states: Mutex<HashMap<SocketAddr, Arc<MemberState>>>,
    new_state: NewState,
    /// The first `discover` returns what [`Resolver::start`] resolved.
    resolved_at_start: AtomicBool,
    /// Names resolved, and names that failed to.
    resolutions: (IntCounter, IntCounter),
}

impl Resolver {
    /// Resolve every member now; `field` (`site[0].origin`) names the
    /// configuration in errors. Blocks on the system resolver: call it
    /// where blocking is allowed (start-up, a reload's blocking thread).
    pub fn start(
        field: &str,
        members: &[(String, usize)],
        new_state: NewState,
        resolutions: (IntCounter, IntCounter),
    ) -> anyhow::Result<Resolver> {
        let mut named = Vec::with_capacity(members.len());
        for (j, (address, weight)) in members.iter().enumerate() {
            let resolved: Vec<SocketAddr> = address
                .to_socket_addrs()
                .with_context(|| format!("{field}: cannot resolve member {j}, {address:?}"))?
                .collect();
            if resolved.is_empty() {
                return Err(anyhow!(
                    "{field}: member {j}, {address:?}, resolves to no address"
                ));
            }
            resolutions.0.inc();
            named.push(Named {
                address: address.clone(),
                weight: *weight,
                resolved,
            });
        }
        Ok(Resolver {
            named: Mutex::new(named),
            states: Mutex::default(),
            new_state,
            resolved_at_start: AtomicBool::new(true),
            resolutions,
        })
    }

    /// The backends for the current addresses, each carrying its
    /// [`MemberState`].
    fn backends(&self) -> BTreeSet<Backend> {
        let named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeSet::new();
        for member in named.iter() {
            for addr in &member.resolved {
                let state = states
                    .entry(*addr)
                    .or_insert_with(|| (self.new_state)(&member.address, *addr))
                    .clone();
                let mut ext = Extensions::new();
                ext.insert(state);
                out.insert(Backend {
                    addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(*addr),
                    weight: member.weight,
                    ext,
                });
            }
        }
        let current: BTreeSet<SocketAddr> = named
            .iter()
            .flat_map(|m| m.resolved.iter().copied())
            .collect();
        states.retain(|addr, _| current.contains(addr));
        out
    }

    /// Resolve every name again, asynchronously; a name that fails keeps
    /// its last addresses.
    async fn refresh(&self) {
        let names: Vec<String> = {
            let named = self.named.lock().unwrap_or_else(|e| e.into_inner());
            named.iter().map(|m| m.address.clone()).collect()
        };
        for (j, name) in names.iter().enumerate() {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(found) => {
                    let found: Vec<SocketAddr> = found.collect();
                    if found.is_empty() {
                        self.resolutions.1.inc();
                        continue;
                    }
                    self.resolutions.0.inc();
                    let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(member) = named.get_mut(j) {
                        member.resolved = found;
                    }
                }
                Err(e) => {
                    self.resolutions.1.inc();
                    tracing::warn!(member = name, error = %e, "cannot resolve a pool member again; keeping its last addresses");
                }
            }
        }
    }
}

#[async_trait]
impl ServiceDiscovery for Resolver {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        if !self.resolved_at_start.swap(false, Ordering::Relaxed) {
            self.refresh().await;
        }
        Ok((self.backends(), HashMap::new()))
    }
}
