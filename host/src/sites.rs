//! Host-name routing: which site (and so which origin) answers a request.
//!
//! The router is built once at start-up from `[[site]]` tables; a lookup is
//! one hash probe for the exact name plus one per label for wildcards, with no
//! allocation.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use http::HeaderValue;

use crate::config::PolicyMissing;
use crate::config::{self, normalize_host_pattern, split_host_port};
use crate::host_name;
use crate::metrics::{Metrics, SiteMetrics};

/// A configured site with its origin resolved.
#[derive(Debug)]
pub struct Site {
    /// From the configuration; the `site` label in metrics and logs.
    pub name: String,
    /// The origin's resolved socket address.
    pub origin_addr: SocketAddr,
    /// Whether to speak TLS to the origin.
    pub tls: bool,
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
}

impl std::fmt::Debug for SiteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SiteMetrics")
    }
}

/// Maps a request's Host to its [`Site`].
#[derive(Debug, Default)]
pub struct SiteRouter {
    exact: HashMap<String, Arc<Site>>,
    /// Keyed by the suffix after `*.`: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<Site>>,
    default: Option<Arc<Site>>,
}

impl SiteRouter {
    /// Build the router, resolving each origin's address once; sites that
    /// do not say slice when `slice_enabled`. Expects a configuration that
    /// passed [`config::Config::validate`].
    pub fn build(
        sites: &[config::Site],
        slice_enabled: bool,
        metrics: &Metrics,
    ) -> anyhow::Result<SiteRouter> {
        let mut router = SiteRouter::default();
        for (i, cfg) in sites.iter().enumerate() {
            let (host, _) = split_host_port(&cfg.origin.address)
                .map_err(|e| anyhow!("site[{i}].origin.address: {e}"))?;
            let origin_addr = cfg
                .origin
                .address
                .to_socket_addrs()
                .with_context(|| {
                    format!(
                        "site[{i}].origin.address: cannot resolve {:?}",
                        cfg.origin.address
                    )
                })?
                .next()
                .ok_or_else(|| {
                    anyhow!(
                        "site[{i}].origin.address: {:?} resolves to no address",
                        cfg.origin.address
                    )
                })?;
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
            let site = Arc::new(Site {
                name: cfg.name.clone(),
                origin_addr,
                tls: cfg.origin.tls,
                sni,
                host_header,
                metrics: metrics.for_site(&cfg.name),
                policy: cfg.policy.clone(),
                policy_missing: cfg.policy_missing,
                serve_stale_on_error: cfg.serve_stale_on_error,
                strip_cdn_cache_control: cfg.strip_cdn_cache_control,
                slice: cfg.slice.unwrap_or(slice_enabled),
            });
            for pattern in &cfg.hosts {
                let pattern = normalize_host_pattern(pattern)
                    .map_err(|e| anyhow!("site[{i}].hosts: {pattern:?} {e}"))?;
                match pattern.strip_prefix("*.") {
                    Some(suffix) => router.wildcard.insert(suffix.to_owned(), site.clone()),
                    None => router.exact.insert(pattern, site.clone()),
                };
            }
            if cfg.default {
                router.default = Some(site);
            }
        }
        Ok(router)
    }

    /// The site for a Host value (any case, with or without port or trailing
    /// dot): an exact name first, then the most specific wildcard, then the
    /// default site.
    pub fn route(&self, host: Option<&str>) -> Option<&Arc<Site>> {
        let Some(host) = host.map(host_name::normalize) else {
            return self.default.as_ref();
        };
        let host = host.as_ref();
        if let Some(site) = self.exact.get(host) {
            return Some(site);
        }
        // `*.example.com` matches `a.example.com` and `a.b.example.com`;
        // walking from the left finds the most specific suffix first.
        let mut rest = host;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(site) = self.wildcard.get(suffix) {
                return Some(site);
            }
            rest = suffix;
        }
        self.default.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, hosts: &[&str], default: bool) -> config::Site {
        config::Site {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            default,
            origin: config::Origin {
                address: "127.0.0.1:1".into(),
                tls: false,
                sni: None,
                host_header: None,
            },
            policy: None,
            policy_missing: Default::default(),
            serve_stale_on_error: None,
            strip_cdn_cache_control: false,
            slice: None,
        }
    }

    #[test]
    fn exact_then_most_specific_wildcard_then_default() {
        let router = SiteRouter::build(
            &[
                site("apex", &["example.com"], false),
                site("wild", &["*.example.com"], false),
                site("deep", &["*.img.example.com"], false),
                site("fallback", &[], true),
            ],
            false,
            &Metrics::new(),
        )
        .unwrap();
        let name = |h: Option<&str>| router.route(h).map(|s| s.name.as_str());
        assert_eq!(name(Some("EXAMPLE.com:8080")), Some("apex"));
        assert_eq!(name(Some("www.example.com")), Some("wild"));
        assert_eq!(name(Some("a.b.example.com")), Some("wild"));
        assert_eq!(name(Some("x.img.example.com")), Some("deep"));
        assert_eq!(name(Some("example.com.")), Some("apex"));
        assert_eq!(name(Some("other.org")), Some("fallback"));
        assert_eq!(name(None), Some("fallback"));
    }

    #[test]
    fn no_default_means_no_site() {
        let router = SiteRouter::build(
            &[site("apex", &["example.com"], false)],
            false,
            &Metrics::new(),
        )
        .unwrap();
        assert!(router.route(Some("nope.example")).is_none());
        assert!(router.route(Some("[::1]:80")).is_none());
    }
}
