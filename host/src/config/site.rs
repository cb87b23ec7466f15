//! `[[site]]`: the sites this proxy serves, and the rules for their host
//! names and origin addresses.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::pool::{self, default_dns_ttl, ActiveCheck, Member, PassiveCheck};
use super::shield::Shield;
use crate::policy_settings::is_module_name;

/// One site: the Host names it answers and the origin behind them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Names the site in metrics and logs; unique.
    pub name: String,
    /// Exact names (`example.com`) and wildcards (`*.example.com`, which
    /// matches any name ending in `.example.com`). Matched case-insensitively,
    /// without the port.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Serve requests whose Host matches no site. At most one site may say so.
    #[serde(default)]
    pub default: bool,
    /// Where requests that the cache cannot answer go.
    pub origin: Origin,
    /// Send misses to this pool of shields (other stavka nodes) instead
    /// of the origin: each object's home shield is chosen by consistent
    /// hashing on its cache key. Default: none, misses go to the origin.
    #[serde(default)]
    pub shield: Option<Shield>,
    /// The policy module (`<policy.dir>/<name>.wasm`) that decides for this
    /// site. Default: none, plain HTTP caching.
    #[serde(default)]
    pub policy: Option<String>,
    /// While the named policy module is not loaded (its file is absent, or
    /// it failed to load at start): `"closed"` answers 503 with
    /// `detail=policy-missing`, `"open"` serves without it. Default
    /// `"closed"`. A module deleted while serving keeps its last good
    /// version as long as a site names it.
    #[serde(default)]
    pub policy_missing: PolicyMissing,
    /// Serve a stored response up to this long past its freshness when the
    /// origin fails (connect error, timeout, 5xx), even if the response did
    /// not say `stale-if-error`: RFC 9111 §4.2.4 allows it unless
    /// `must-revalidate`, `proxy-revalidate`, `no-cache` or `s-maxage`
    /// forbids it, and those are honoured. A response's own `stale-if-error`
    /// wins. Default: `cache.stale_if_error` (itself off by default).
    #[serde(default, with = "humantime_serde")]
    pub serve_stale_on_error: Option<std::time::Duration>,
    /// Remove `CDN-Cache-Control` before responses go to clients. RFC 9213
    /// expects a CDN to pass it on for caches further down, so the default
    /// is `false`; set it when this cache is the last CDN hop and the field
    /// should not leak to browsers.
    #[serde(default)]
    pub strip_cdn_cache_control: bool,
    /// Cache this site's large objects and ranges as blocks (`[slice]`).
    /// Default: `slice.enabled`.
    #[serde(default)]
    pub slice: Option<bool>,
    /// The certificate presented to TLS clients whose SNI matches one of
    /// `hosts`. Default: none (the `[tls]` default certificate answers).
    #[serde(default)]
    pub tls: Option<super::CertFiles>,
    /// Answer plain-HTTP requests with `308 Permanent Redirect` to the same
    /// URL on `listen.tls` (RFC 9110 §15.4.9: the method and body are
    /// kept). Default `false`.
    #[serde(default)]
    pub https_redirect: bool,
    /// Send `Strict-Transport-Security` on this site's HTTPS responses
    /// (never over plain HTTP, RFC 6797 §7.2). Default: none.
    #[serde(default)]
    pub hsts: Option<super::Hsts>,
    /// Let the site's policy prefetch (`[site.prefetch]`, bounds on what it
    /// may queue). Default: none, `prefetch.fetch` is refused.
    #[serde(default)]
    pub prefetch: Option<super::prefetch::Prefetch>,
    /// Send a 103 Early Hints response (RFC 8297) before going to the
    /// origin for a page whose last response carried `Link: <…>;
    /// rel=preload` fields, with those fields. Default `false`. (A policy
    /// may add hints of its own either way.)
    #[serde(default)]
    pub early_hints: bool,
}

/// What a site that names a policy module does while no version of that
/// module is loaded (absent, failed to load at start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMissing {
    /// Answer 503 with `Cache-Status: …; detail=policy-missing`: a site
    /// that names an access policy never runs without it.
    #[default]
    Closed,
    /// Serve as if the site named no policy: an explicit choice for
    /// policies that only tune caching.
    Open,
}

impl PolicyMissing {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMissing::Closed => "closed",
            PolicyMissing::Open => "open",
        }
    }
}

/// An origin: one server (`address`) or a pool of them (`addresses`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// `host:port` of a single origin server; give this or `addresses`.
    #[serde(default)]
    pub address: Option<String>,
    /// The members of a pool of origin servers, each `"host:port"` or
    /// `{ address = "host:port", weight = 2 }`; give this or `address`.
    /// Names are resolved at start and again every `dns_ttl`.
    #[serde(default)]
    pub addresses: Vec<Member>,
    /// How a request picks a member: `"round-robin"` (weighted) or
    /// `"ketama"` (consistent hashing on the cache key, so each object
    /// has one home member). Default `"round-robin"`.
    #[serde(default)]
    pub selection: Selection,
    /// Probe every member (`{ path = "/health", interval = "5s" }`).
    /// Default: none, only requests judge a member.
    #[serde(default)]
    pub health: Option<ActiveCheck>,
    /// What failed requests do to a member. Default: 3 consecutive
    /// failures take it out for `10s`.
    #[serde(default)]
    pub passive: PassiveCheck,
    /// Resolve member names again this often. Default `60s`.
    #[serde(default = "default_dns_ttl", with = "humantime_serde")]
    pub dns_ttl: std::time::Duration,
    /// Speak TLS to the origin. Default `false`.
    #[serde(default)]
    pub tls: bool,
    /// The TLS server name; defaults to the host part of the first
    /// member's address.
    #[serde(default)]
    pub sni: Option<String>,
    /// The Host header sent to the origin; defaults to the client's Host.
    #[serde(default)]
    pub host_header: Option<String>,
    /// Verify the origin's certificate (chain and name). Default `true`;
    /// `false` is an explicit choice, logged at start.
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// PEM file of the CAs that sign the origin's certificate. Default: the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// How a request picks a member of an origin pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Each member in turn, in proportion to its weight.
    #[default]
    RoundRobin,
    /// Consistent hashing (Ketama) on the cache key.
    Ketama,
}

impl Selection {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::RoundRobin => "round-robin",
            Selection::Ketama => "ketama",
        }
    }
}

fn yes() -> bool {
    true
}

impl Site {
    /// A site with every optional setting at its default: no policy, no
    /// TLS, not the default site.
    pub fn new(name: impl Into<String>, hosts: Vec<String>, origin: Origin) -> Site {
        Site {
            name: name.into(),
            hosts,
            default: false,
            origin,
            shield: None,
            policy: None,
            policy_missing: PolicyMissing::default(),
            serve_stale_on_error: None,
            strip_cdn_cache_control: false,
            slice: None,
            tls: None,
            https_redirect: false,
            hsts: None,
            prefetch: None,
            early_hints: false,
        }
    }
}

impl Origin {
    /// Plain HTTP to `address` (`host:port`), with the client's Host.
    pub fn plain(address: impl Into<String>) -> Origin {
        Origin {
            address: Some(address.into()),
            addresses: Vec::new(),
            selection: Selection::default(),
            health: None,
            passive: PassiveCheck::default(),
            dns_ttl: default_dns_ttl(),
            tls: false,
            sni: None,
            host_header: None,
            tls_verify: true,
            ca_file: None,
        }
    }
}

/// Problems with the sites, each with its full path (`site[1].hosts[0]`):
/// each site's own, and names, hosts and defaults claimed twice.
pub fn problems(sites: &[Site]) -> Vec<(String, String)> {
    let mut seen = Seen::default();
    let mut out = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        site.check(i, &mut seen, &mut |field, message| {
            out.push((format!("site[{i}].{field}"), message));
        });
    }
    out
}

/// What earlier sites claimed: names, host patterns and the default.
#[derive(Default)]
struct Seen<'a> {
    names: HashMap<&'a str, usize>,
    hosts: HashMap<String, String>,
    default: Option<usize>,
}

impl Site {
    /// Report this site's problems, as site `i` after the `seen` ones, to
    /// `err(field, message)`.
    fn check<'a>(&'a self, i: usize, seen: &mut Seen<'a>, err: &mut dyn FnMut(String, String)) {
        if self.name.trim().is_empty() {
            err("name".into(), "must not be empty".into());
        } else if self.name.chars().any(char::is_control) {
            // A cache key separates its parts with NUL (cache::key).
            err("name".into(), "must not contain control characters".into());
        } else if let Some(first) = seen.names.insert(self.name.as_str(), i) {
            err(
                "name".into(),
                format!("{:?} is already the name of site[{first}]", self.name),
            );
        }
        if self.hosts.is_empty() && !self.default {
            err(
                "hosts".into(),
                "list at least one host name, or set default = true".into(),
            );
        }
        for (j, host) in self.hosts.iter().enumerate() {
            let field = format!("hosts[{j}]");
            match normalize_host_pattern(host) {
                Err(why) => err(field, format!("{host:?} {why}")),
                Ok(pattern) => {
                    let at = format!("site[{i}].{field}");
                    if let Some(first) = seen.hosts.insert(pattern, at) {
                        err(field, format!("{host:?} is already listed at {first}"));
                    }
                }
            }
        }
        if self.default {
            match seen.default {
                Some(first) => err(
                    "default".into(),
                    format!("site[{first}] is already the default; only one may be"),
                ),
                None => seen.default = Some(i),
            }
        }
        self.origin.check(err);
        if let Some(shield) = &self.shield {
            shield.check(err);
        }
        if let Some(prefetch) = &self.prefetch {
            prefetch.check(err);
        }
        if let Some(name) = &self.policy {
            if !is_module_name(name) {
                err(
                    "policy".into(),
                    format!("{name:?} is not a module name: use letters, digits, '-' and '_'"),
                );
            }
        }
    }
}

impl Origin {
    /// The pool's members: `address` alone, or `addresses`.
    pub fn members(&self) -> Vec<Member> {
        match &self.address {
            Some(address) => vec![Member::Address(address.clone())],
            None => self.addresses.clone(),
        }
    }

    /// Report problems with the origin to `err(field, message)`, its fields
    /// under `origin.`.
    fn check(&self, err: &mut dyn FnMut(String, String)) {
        match (&self.address, self.addresses.is_empty()) {
            (Some(address), true) => {
                if let Err(why) = split_host_port(address) {
                    err("origin.address".into(), format!("{address:?} {why}"));
                }
            }
            (Some(_), false) => err(
                "origin.addresses".into(),
                "give origin.address or origin.addresses, not both".into(),
            ),
            (None, true) => err(
                "origin.address".into(),
                "required (or origin.addresses for a pool)".into(),
            ),
            (None, false) => {}
        }
        pool::check(
            "origin",
            &self.addresses,
            self.health.as_ref(),
            &self.passive,
            self.dns_ttl,
            err,
        );
        let ip_member = self
            .members()
            .iter()
            .filter_map(|m| split_host_port(m.address()).ok())
            .any(|(host, _)| host.parse::<std::net::IpAddr>().is_ok());
        if self.tls && self.sni.is_none() && ip_member {
            err(
                "origin.sni".into(),
                "required when origin.tls = true and a member's address is an IP address".into(),
            );
        }
        let tls_only = [
            ("origin.ca_file", self.ca_file.is_some()),
            ("origin.tls_verify", !self.tls_verify),
        ];
        for (field, set) in tls_only {
            if set && !self.tls {
                err(field.into(), "applies only with origin.tls = true".into());
            }
        }
        if let Some(h) = &self.host_header {
            if http::HeaderValue::from_str(h).is_err() || h.is_empty() {
                err(
                    "origin.host_header".into(),
                    format!("{h:?} is not a valid header value"),
                );
            }
        }
    }
}

/// A host pattern in the form the router matches: lower case, no trailing dot.
/// `*.example.com` keeps its `*.` prefix.
pub fn normalize_host_pattern(pattern: &str) -> Result<String, &'static str> {
    let lower = pattern.trim_end_matches('.').to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    if name.is_empty() {
        return Err("is empty");
    }
    if name.contains('*') {
        return Err("may only use a wildcard as its first label, as in *.example.com");
    }
    if name.contains(':') {
        return Err("must not carry a port: Host is matched without it");
    }
    if !name.split('.').all(|label| {
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    }) {
        return Err("is not a valid host name");
    }
    Ok(lower)
}

/// Split `host:port` (or `[v6]:port`) and check the port.
pub fn split_host_port(address: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or("needs a port, as in origin.example.com:443")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("needs a host before the port");
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or("has an invalid port (1-65535)")?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(
            normalize_host_pattern("WWW.Example.com.").unwrap(),
            "www.example.com"
        );
        assert_eq!(
            normalize_host_pattern("*.example.com").unwrap(),
            "*.example.com"
        );
        assert!(normalize_host_pattern("example.com:80").is_err());
        assert!(normalize_host_pattern("*").is_err());
        assert_eq!(split_host_port("[::1]:80").unwrap(), ("::1", 80));
        assert!(split_host_port("host:0").is_err());
    }

    fn problem_paths(text: &str) -> Vec<String> {
        let config = crate::config::Config::from_toml(text).expect("parses");
        match config.validate() {
            Ok(()) => vec![],
            Err(e) => e.0.into_iter().map(|e| e.path).collect(),
        }
    }

    #[test]
    fn one_address_loads_as_before_and_a_pool_with_a_shield_loads() {
        let one = "[[site]]\nname = \"s\"\ndefault = true\norigin = { address = \"o:80\" }\n";
        assert!(problem_paths(one).is_empty());
        let config = crate::config::Config::from_toml(one).unwrap();
        assert_eq!(
            config.sites[0].origin.members(),
            [Member::Address("o:80".into())]
        );
        let pool = r#"
            [tier]
            trusted_edges = ["10.0.0.0/8", "192.0.2.1"]
            [[site]]
            name = "s"
            default = true
            [site.origin]
            addresses = ["a:80", { address = "b:80", weight = 3 }]
            selection = "ketama"
            dns_ttl = "5s"
            health = { path = "/health", interval = "1s" }
            passive = { failures = 2, down_for = "3s" }
            [site.shield]
            addresses = ["10.0.0.1:8080", "10.0.0.2:8080"]
        "#;
        assert!(problem_paths(pool).is_empty());
        let config = crate::config::Config::from_toml(pool).unwrap();
        let site = &config.sites[0];
        assert_eq!(site.origin.members()[1].weight(), 3);
        assert_eq!(site.origin.selection, Selection::Ketama);
        assert_eq!(site.shield.as_ref().unwrap().addresses.len(), 2);
    }

    #[test]
    fn a_bad_pool_names_the_field() {
        let got = problem_paths(
            r#"
            [tier]
            client_header = "bad header"
            trusted_edges = ["10.0.0.0/33"]
            [[site]]
            name = "s"
            default = true
            [site.origin]
            address = "o:80"
            addresses = ["p:80"]
            [[site]]
            name = "t"
            hosts = ["t.example"]
            [site.origin]
            addresses = ["nohost", { address = "q:80", weight = 0 }]
            health = { path = "health", interval = "0s" }
            passive = { failures = 0 }
            dns_ttl = "0s"
            [site.shield]
            addresses = []
            [[site]]
            name = "u"
            hosts = ["u.example"]
            origin = {}
        "#,
        );
        assert_eq!(
            got,
            [
                "site[0].origin.addresses",
                "site[1].origin.addresses[0]",
                "site[1].origin.addresses[1].weight",
                "site[1].origin.health.path",
                "site[1].origin.health.interval",
                "site[1].origin.passive.failures",
                "site[1].origin.dns_ttl",
                "site[1].shield.addresses",
                "site[2].origin.address",
                "tier.client_header",
                "tier.trusted_edges[0]",
            ]
        );
    }
}
