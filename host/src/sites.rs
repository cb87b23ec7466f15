//! Host-name routing: which site (and so which origin) answers a request.
//!
//! The router is built once at start-up from `[[site]]` tables; a lookup is
//! a [`HostTable`] lookup: one hash probe for the exact name plus one per
//! label for wildcards, with no allocation.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use http::HeaderValue;

use crate::config::{self, normalize_host_pattern, split_host_port};
use crate::config::{OriginTimeouts, PolicyMissing};
use crate::host_table::HostTable;
use crate::metrics::{Metrics, SiteMetrics};
use crate::pool::{Pool, PoolRole, PoolSpec, ProbeTls};
use pingora_core::protocols::tls::CaType;
use pingora_core::utils::tls::{parse_x509, WrappedX509};

/// A configured site with its origin resolved.
#[derive(Debug)]
pub struct Site {
    /// From the configuration; the `site` label in metrics and logs.
    pub name: String,
    /// The origin's members, their health and selection.
    pub origin: Arc<Pool>,
    /// The shields misses go to instead of the origin, if any.
    pub shield: Option<Arc<Pool>>,
    /// Whether to speak TLS to the origin.
    pub tls: bool,
    /// Connect, read, write and idle timeouts for the origin (`[origin]`).
    pub timeouts: OriginTimeouts,
    /// The TLS server name (empty without TLS).
    pub sni: String,
    /// The Host header to send upstream instead of the client's.
    pub host_header: Option<HeaderValue>,
    /// This site's metric handles.
    pub metrics: SiteMetrics,
    /// The policy module that decides for this site, by name.
    pub policy: Option<String>,
    /// What to do while that module is not loaded.
    pub policy_missing: PolicyMissing,
    /// The stale-if-error window for responses that do not set one.
    pub serve_stale_on_error: Option<Duration>,
    /// Remove CDN-Cache-Control before responses go downstream.
    pub strip_cdn_cache_control: bool,
    /// Whether large objects and ranges are cached as blocks.
    pub slice: bool,
    /// Verify the origin's certificate chain and name.
    pub tls_verify: bool,
    /// The CAs that sign the origin's certificate, instead of the system's.
    pub ca: Option<Arc<CaType>>,
    /// Answer plain-HTTP requests with a 308 to HTTPS.
    pub https_redirect: bool,
    /// `Strict-Transport-Security` for HTTPS responses.
    pub hsts: Option<HeaderValue>,
    /// What the site's policy may prefetch; `None`: nothing.
    pub prefetch: Option<Arc<crate::config::prefetch::Prefetch>>,
    /// Send 103 Early Hints with the preload links a page's last response
    /// carried.
    pub early_hints: bool,
}

impl std::fmt::Debug for SiteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SiteMetrics")
    }
}

/// Maps a request's Host to its [`Site`].
#[derive(Debug, Default)]
pub struct SiteRouter {
    sites: HostTable<Arc<Site>>,
    /// Every site, in configuration order.
    all: Vec<Arc<Site>>,
}

impl SiteRouter {
    /// Build the router, resolving each origin's address once; sites that
    /// do not say slice when `slice_enabled`. Expects a configuration that
    /// passed [`config::Config::validate`].
    pub fn build(
        sites: &[config::Site],
        slice_enabled: bool,
        timeouts: &OriginTimeouts,
        metrics: &Metrics,
    ) -> anyhow::Result<SiteRouter> {
        let mut router = SiteRouter::default();
        for (i, cfg) in sites.iter().enumerate() {
            let members = cfg.origin.members();
            let first = members
                .first()
                .ok_or_else(|| anyhow!("site[{i}].origin: no member"))?;
            let (host, _) =
                split_host_port(first.address()).map_err(|e| anyhow!("site[{i}].origin: {e}"))?;
            let sni = match (&cfg.origin.sni, cfg.origin.tls) {
                (Some(sni), true) => sni.clone(),
                (None, true) => host.to_owned(),
                (_, false) => String::new(),
            };
            let host_header = cfg
                .origin
                .host_header
                .as_deref()
                .map(HeaderValue::from_str)
                .transpose()
                .with_context(|| format!("site[{i}].origin.host_header"))?;
            if cfg.origin.tls && !cfg.origin.tls_verify {
                tracing::warn!(
                    site = cfg.name,
                    origin = first.address(),
                    "origin.tls_verify = false: the origin's certificate is not checked"
                );
            }
            let ca = cfg
                .origin
                .ca_file
                .as_deref()
                .map(|path| load_ca(path).with_context(|| format!("site[{i}].origin.ca_file")))
                .transpose()?;
            let hsts = cfg
                .hsts
                .as_ref()
                .map(|h| HeaderValue::from_str(&h.header_value()))
                .transpose()
                .with_context(|| format!("site[{i}].hsts"))?;
            let origin = Pool::start(
                PoolSpec {
                    field: format!("site[{i}].origin"),
                    site: &cfg.name,
                    role: PoolRole::Origin,
                    members: members.clone(),
                    selection: cfg.origin.selection,
                    health: cfg.origin.health.as_ref(),
                    probe_host: cfg
                        .origin
                        .host_header
                        .clone()
                        .unwrap_or_else(|| host.to_owned()),
                    probe_tls: cfg.origin.tls.then(|| ProbeTls {
                        sni: sni.clone(),
                        verify: cfg.origin.tls_verify,
                        ca: ca.clone(),
                    }),
                    passive: &cfg.origin.passive,
                    dns_ttl: cfg.origin.dns_ttl,
                },
                &metrics.pools,
            )?;
            let shield = cfg
                .shield
                .as_ref()
                .map(|shield| {
                    let probe_host = cfg.hosts.first().map_or_else(
                        || host.to_owned(),
                        |h| h.trim_start_matches("*.").to_owned(),
                    );
                    Pool::start(
                        PoolSpec {
                            field: format!("site[{i}].shield"),
                            site: &cfg.name,
                            role: PoolRole::Shield,
                            members: shield.addresses.clone(),
                            selection: crate::config::Selection::Ketama,
                            health: shield.health.as_ref(),
                            probe_host,
                            probe_tls: None,
                            passive: &shield.passive,
                            dns_ttl: shield.dns_ttl,
                        },
                        &metrics.pools,
                    )
                })
                .transpose()?;
            let site = Arc::new(Site {
                name: cfg.name.clone(),
                origin,
                shield,
                tls: cfg.origin.tls,
                timeouts: timeouts.clone(),
                sni,
                host_header,
                metrics: metrics.for_site(&cfg.name),
                policy: cfg.policy.clone(),
                policy_missing: cfg.policy_missing,
                serve_stale_on_error: cfg.serve_stale_on_error,
                strip_cdn_cache_control: cfg.strip_cdn_cache_control,
                slice: cfg.slice.unwrap_or(slice_enabled),
                tls_verify: cfg.origin.tls_verify,
                ca,
                https_redirect: cfg.https_redirect,
                hsts,
                prefetch: cfg.prefetch.clone().map(Arc::new),
                early_hints: cfg.early_hints,
            });
            for pattern in &cfg.hosts {
                let pattern = normalize_host_pattern(pattern)
                    .map_err(|e| anyhow!("site[{i}].hosts: {pattern:?} {e}"))?;
                router.sites.insert(&pattern, site.clone());
            }
            if cfg.default {
                router.sites.set_default(site.clone());
            }
            router.all.push(site);
        }
        Ok(router)
    }

    /// The site for a Host value (any case, with or without port or trailing
    /// dot): an exact name first, then the most specific wildcard, then the
    /// default site.
    pub fn route(&self, host: Option<&str>) -> Option<&Arc<Site>> {
        self.sites.lookup(host)
    }

    /// Every site, in configuration order.
    pub fn sites(&self) -> &[Arc<Site>] {
        &self.all
    }
}

/// The PEM certificates in `path`, as pingora's per-peer CA list.
fn load_ca(path: &std::path::Path) -> anyhow::Result<Arc<CaType>> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cas: Vec<WrappedX509> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: not PEM certificates: {e:?}", path.display()))?
        .into_iter()
        .filter(|der| x509_parser::parse_x509_certificate(der).is_ok())
        .map(|der| WrappedX509::new(der.to_vec(), parse_x509))
        .collect();
    if cas.is_empty() {
        return Err(anyhow!("{}: no PEM certificate in it", path.display()));
    }
    Ok(Arc::from(cas))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, hosts: &[&str], default: bool) -> config::Site {
        config::Site {
            default,
            ..config::Site::new(
                name,
                hosts.iter().map(|h| h.to_string()).collect(),
                config::Origin::plain("127.0.0.1:1"),
            )
        }
    }

    #[test]
    fn each_sites_patterns_and_the_default_route_to_it() {
        let router = SiteRouter::build(
            &[
                site("apex", &["example.com"], false),
                site("wild", &["*.example.com"], false),
                site("deep", &["*.img.example.com"], false),
                site("fallback", &[], true),
            ],
            false,
            &OriginTimeouts::default(),
            &Metrics::new(),
        )
        .unwrap();
        let name = |h: Option<&str>| router.route(h).map(|s| s.name.as_str());
        assert_eq!(name(Some("EXAMPLE.com:8080")), Some("apex"));
        assert_eq!(name(Some("www.example.com")), Some("wild"));
        assert_eq!(name(Some("x.img.example.com")), Some("deep"));
        assert_eq!(name(Some("other.org")), Some("fallback"));
        assert_eq!(name(None), Some("fallback"));
    }
}
