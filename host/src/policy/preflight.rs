//! The modules sites name, checked before serving: `stavka check-config`
//! compiles each one, and start-up reports those that did not load, so a
//! site never runs without its policy silently.

use std::collections::HashMap;
use std::fmt;

use std::sync::Arc;

use super::{Loaded, PolicyMetrics, PolicyRegistry};
use crate::config::PolicyMissing;
use crate::config::{Config, Site};
use crate::metrics::Metrics;

/// A site whose named module is absent or does not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `site[i].policy`.
    pub field: String,
    /// What is wrong and what the site will do about it.
    pub message: String,
    /// The site answers 503 until the module loads (`policy_missing = "closed"`).
    pub closed: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Compile every module a site names (each once, however many sites name
/// it), without publishing any: what `check-config` reports.
pub async fn check(registry: &PolicyRegistry, sites: &[Site]) -> Vec<Finding> {
    let mut problems: HashMap<&str, Option<String>> = HashMap::new();
    for name in sites.iter().filter_map(|s| s.policy.as_deref()) {
        if problems.contains_key(name) {
            continue;
        }
        let problem = match registry.load(name).await {
            Ok(Loaded::New(_) | Loaded::Unchanged) => None,
            Ok(Loaded::Absent) => Some(format!(
                "module {name:?} is not in {} (no {name}.wasm)",
                registry.dir().display()
            )),
            Err(e) => Some(format!("module {name:?} does not load: {e}")),
        };
        problems.insert(name, problem);
    }
    sites
        .iter()
        .enumerate()
        .filter_map(|(i, site)| {
            let problem = problems.get(site.policy.as_deref()?)?.clone()?;
            Some(finding(i, site, problem))
        })
        .collect()
}

/// [`check`] for `config` on a registry of its own, off any server: what
/// `stavka check-config` runs.
pub fn check_config(config: &Config) -> anyhow::Result<Vec<Finding>> {
    let metrics = Metrics::new();
    let registry = PolicyRegistry::new(
        &config.policy,
        Arc::new(PolicyMetrics::new(
            metrics.registry(),
            metrics.events.clone(),
        )),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(check(&registry, &config.sites)))
}

/// The sites whose named module is not being served now: what start-up
/// logs and `/readyz` reports.
pub fn unserved(registry: &PolicyRegistry, sites: &[Site]) -> Vec<Finding> {
    sites
        .iter()
        .enumerate()
        .filter_map(|(i, site)| {
            let name = site.policy.as_deref()?;
            registry
                .get(name)
                .is_none()
                .then(|| finding(i, site, format!("module {name:?} is not loaded")))
        })
        .collect()
}

fn finding(i: usize, site: &Site, problem: String) -> Finding {
    let closed = site.policy_missing == PolicyMissing::Closed;
    let consequence = if closed {
        "the site answers 503 until it loads"
    } else {
        "the site is served without it"
    };
    Finding {
        field: format!("site[{i}].policy"),
        message: format!(
            "{problem}; {consequence} (policy_missing = {:?})",
            site.policy_missing.as_str()
        ),
        closed,
    }
}
