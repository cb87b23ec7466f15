//! Live reconfiguration. `SIGHUP` or `POST /config/reload` reads the
//! configuration file again and, when it is valid, publishes what can change
//! while serving — sites and their hosts, origins and their timeouts, the
//! policy each site names, TLS certificates, the request and connection
//! limits — in one step: a request routes
//! once, so one already under way finishes on the site it started with. A
//! file that is invalid, names an origin that does not resolve or a
//! certificate that does not load changes nothing: every problem is logged,
//! counted and answered, and the running configuration keeps serving.
//! Settings only a restart applies (listen addresses, threads, the store,
//! the admin listener, logging, the policy directory and limits, cache and
//! slice settings, `tls.http2`, the header and idle timeouts and HTTP/2
//! streams) are named in the answer, not silently ignored.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigErrors, Site};
use crate::events::EventKind;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::policy::{preflight, PolicyRegistry};
use crate::sites::SiteRouter;
use crate::tls::{CertWatcher, Certificates};

/// What a reload changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// Sites that are new, by name.
    pub added: Vec<String>,
    /// Sites that are gone.
    pub removed: Vec<String>,
    /// Sites whose settings changed.
    pub changed: Vec<String>,
    /// Sites as they were.
    pub unchanged: usize,
    /// Sections that differ from the running process and apply only after
    /// a restart (or a binary upgrade).
    pub restart_required: Vec<String>,
    /// Things that will not work as configured: a site's module is not
    /// loaded.
    pub warnings: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The process was started without `--config`.
    #[error("stavka was started without --config: there is no file to read again")]
    NoFile,
    /// The file, or what it names, is not usable; every problem is listed.
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// The outcome label of `stavka_config_reloads_total`.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Applied,
    Rejected,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Rejected => "rejected",
        }
    }
}

/// What a reload replaces, shared with the proxy and the admin API.
pub struct Published {
    /// Sites by host.
    pub router: Arc<ArcSwap<SiteRouter>>,
    /// The TLS listener's certificates, if there is one.
    pub certificates: Option<Arc<Certificates>>,
    /// Which modules sites name.
    pub policies: Arc<PolicyRegistry>,
    /// Client limits.
    pub limits: Arc<Limits>,
}

/// Holds what a reload replaces and the configuration the process started
/// with.
pub struct ConfigReloader {
    path: Option<PathBuf>,
    /// What the process started with: sections only a restart applies are
    /// compared with it.
    started: Config,
    /// The configuration serving now.
    applied: Mutex<Config>,
    published: Published,
    cert_watcher: Mutex<Option<CertWatcher>>,
    metrics: Arc<Metrics>,
    reloads: IntCounterVec,
}

/// Whether two values differ, by their full debug rendering: every
/// configuration type has one, and a reload is rare.
fn differs(a: &impl Debug, b: &impl Debug) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// The sections of `new` that differ from `started` and need a restart.
fn restart_required(started: &Config, new: &Config) -> Vec<String> {
    let (was, is) = (&started.limits, &new.limits);
    let sections: [(&str, bool); 14] = [
        ("listen", differs(&started.listen, &new.listen)),
        ("server", differs(&started.server, &new.server)),
        ("store", differs(&started.store, &new.store)),
        ("shared", differs(&started.shared, &new.shared)),
        ("admin", differs(&started.admin, &new.admin)),
        ("log", differs(&started.log, &new.log)),
        ("policy", differs(&started.policy, &new.policy)),
        ("cache", differs(&started.cache, &new.cache)),
        ("slice", differs(&started.slice, &new.slice)),
        ("tls.http2", started.tls.http2 != new.tls.http2),
        (
            "limits.header_timeout",
            was.header_timeout != is.header_timeout,
        ),
        ("limits.idle_timeout", was.idle_timeout != is.idle_timeout),
        (
            "limits.h2_max_streams",
            was.h2_max_streams != is.h2_max_streams,
        ),
        (
            "limits.h2_max_resets",
            was.h2_max_resets != is.h2_max_resets,
        ),
    ];
    sections
        .into_iter()
        .filter(|(_, differ)| *differ)
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Sites of `new` against `old`, by name.
fn site_changes(old: &[Site], new: &[Site]) -> (Vec<String>, Vec<String>, Vec<String>, usize) {
    let find = |sites: &[Site], name: &str| sites.iter().position(|s| s.name == name);
    let (mut added, mut changed, mut unchanged) = (Vec::new(), Vec::new(), 0);
    for site in new {
        match find(old, &site.name) {
            None => added.push(site.name.clone()),
            Some(i) if differs(&old[i], site) => changed.push(site.name.clone()),
            Some(_) => unchanged += 1,
        }
    }
    let removed = old
        .iter()
        .filter(|s| find(new, &s.name).is_none())
        .map(|s| s.name.clone())
        .collect();
    (added, removed, changed, unchanged)
}

impl ConfigReloader {
    /// Reload from `path` (none: started without a file) what `published`
    /// serves, starting from `started`, and keep `cert_watcher` current.
    pub fn new(
        path: Option<PathBuf>,
        started: Config,
        published: Published,
        cert_watcher: Option<CertWatcher>,
        metrics: Arc<Metrics>,
    ) -> ConfigReloader {
        let reloads = IntCounterVec::new(
            prometheus::Opts::new(
                "stavka_config_reloads_total",
                "Configuration reloads (SIGHUP, POST /config/reload), by result: applied, or rejected with the running configuration kept.",
            ),
            &["result"],
        )
        .expect("valid metric");
        metrics
            .registry()
            .register(Box::new(reloads.clone()))
            .expect("unique metric");
        ConfigReloader {
            path,
            applied: Mutex::new(started.clone()),
            started,
            published,
            cert_watcher: Mutex::new(cert_watcher),
            metrics,
            reloads,
        }
    }

    /// The sites serving now, for `/readyz`.
    pub fn sites(&self) -> Vec<Site> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sites
            .clone()
    }

    /// Read the file again and publish it, or change nothing and say why.
    /// Blocking (file reads, name resolution, PEM parsing): run it on a
    /// blocking thread. Reloads are serialised.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.try_reload(&applied);
        let events = &self.metrics.events;
        match &result {
            Ok((report, new)) => {
                self.reloads
                    .with_label_values(&[Outcome::Applied.as_str()])
                    .inc();
                tracing::info!(
                    added = ?report.added,
                    removed = ?report.removed,
                    changed = ?report.changed,
                    restart_required = ?report.restart_required,
                    "configuration reloaded"
                );
                for warning in &report.warnings {
                    tracing::warn!("{warning}");
                }
                events.record(EventKind::ConfigReloaded, self.file_name(), summary(report));
                *applied = new.clone();
            }
            Err(e) => {
                self.reloads
                    .with_label_values(&[Outcome::Rejected.as_str()])
                    .inc();
                for line in e.to_string().lines() {
                    tracing::error!(
                        problem = line,
                        "configuration reload rejected; the running configuration keeps serving"
                    );
                }
                events.record(EventKind::ConfigRejected, self.file_name(), e.to_string());
            }
        }
        result.map(|(report, _)| report)
    }

    fn file_name(&self) -> String {
        self.path
            .as_deref()
            .map_or_else(|| "(no file)".to_owned(), |p| p.display().to_string())
    }

    /// Everything but the bookkeeping: check, build, then swap.
    fn try_reload(&self, applied: &Config) -> Result<(ReloadReport, Config), ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        let new = Config::load(path).map_err(ReloadError::Invalid)?;
        let router = SiteRouter::build(
            &new.sites,
            self.started.slice.enabled,
            &new.origin,
            &self.metrics,
        )
        .map_err(|e| ReloadError::Invalid(ConfigErrors::one("site".into(), format!("{e:#}"))))?;
        let published = &self.published;
        let certificates = match (&published.certificates, new.listen.tls) {
            (Some(certificates), Some(_)) => Some((
                certificates,
                Certificates::prepare(&new).map_err(ReloadError::Invalid)?,
            )),
            _ => None,
        };

        // Everything checked: publish.
        published.router.store(Arc::new(router));
        if let Some((certificates, prepared)) = certificates {
            certificates.install(prepared);
            let mut watcher = self.cert_watcher.lock().unwrap_or_else(|e| e.into_inner());
            // Watch the directories the new files are in.
            *watcher = None;
            match CertWatcher::start(certificates.clone()) {
                Ok(w) => *watcher = Some(w),
                Err(e) => {
                    tracing::error!(error = %e, "certificate files are not watched after the reload")
                }
            }
        }
        published
            .policies
            .set_named(new.sites.iter().filter_map(|s| s.policy.clone()));
        published.limits.reconfigure(&new.limits);

        let (added, removed, changed, unchanged) = site_changes(&applied.sites, &new.sites);
        let report = ReloadReport {
            added,
            removed,
            changed,
            unchanged,
            restart_required: restart_required(&self.started, &new),
            warnings: preflight::unserved(&published.policies, &new.sites)
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        Ok((report, new))
    }
}

/// A reload in one line, for the event log.
fn summary(report: &ReloadReport) -> String {
    let mut parts = vec![format!(
        "{} added, {} removed, {} changed, {} unchanged",
        report.added.len(),
        report.removed.len(),
        report.changed.len(),
        report.unchanged
    )];
    if !report.restart_required.is_empty() {
        parts.push(format!(
            "needs a restart: {}",
            report.restart_required.join(", ")
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text).unwrap()
    }

    #[test]
    fn restart_only_sections_are_named_and_sites_are_not() {
        let started = config("[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\norigin = { address = \"127.0.0.1:1\" }\n");
        let new = config("[listen]\nproxy = \"0.0.0.0:9999\"\n[store]\ndisk_bytes = \"2GiB\"\n[[site]]\nname = \"b\"\nhosts = [\"b.test\"]\norigin = { address = \"127.0.0.1:1\" }\n");
        assert_eq!(restart_required(&started, &new), ["listen", "store"]);
        assert!(restart_required(&started, &started).is_empty());
    }

    #[test]
    fn sites_are_compared_by_name() {
        let old = config("[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\norigin = { address = \"127.0.0.1:1\" }\n[[site]]\nname = \"b\"\nhosts = [\"b.test\"]\norigin = { address = \"127.0.0.1:1\" }\n");
        let new = config("[[site]]\nname = \"b\"\nhosts = [\"b.test\"]\norigin = { address = \"127.0.0.1:2\" }\n[[site]]\nname = \"c\"\nhosts = [\"c.test\"]\norigin = { address = \"127.0.0.1:1\" }\n");
        let (added, removed, changed, unchanged) = site_changes(&old.sites, &new.sites);
        assert_eq!(
            (added, removed, changed, unchanged),
            (
                vec!["c".to_owned()],
                vec!["a".to_owned()],
                vec!["b".to_owned()],
                0
            )
        );
    }
}
