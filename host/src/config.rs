//! The one TOML configuration file.
//!
//! Every field has a default, so `stavka` with no file runs. Loading is two
//! steps: [`Config::from_toml`] deserializes (and reports the field path of a
//! type error), then [`Config::validate`] checks the relations between fields
//! and reports *every* problem it finds, each with its field path, so an
//! operator fixes a file in one pass instead of one error per restart.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the proxy and the admin API listen.
    pub listen: Listen,
    /// Process-wide runtime settings.
    pub server: Server,
    /// Defaults for every connection to an origin.
    pub origin: OriginTimeouts,
    /// The HTTP cache's behaviour.
    pub cache: Cache,
    /// Where and how much the cache stores: the tiered memory + disk store.
    pub store: edge_cdn_store::StoreConfig,
    /// Logging.
    pub log: Log,
    /// The admin API's access control.
    pub admin: Admin,
    /// Where cache policy modules live.
    pub policy: Policy,
    /// The sites this proxy serves, written as `[[site]]` tables.
    #[serde(rename = "site")]
    pub sites: Vec<Site>,
}

/// Listener addresses. The admin API is on its own address so it can stay on
/// loopback while the proxy faces the world.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// The caching proxy. Default `0.0.0.0:8080`.
    pub proxy: SocketAddr,
    /// Metrics, health and (later) the admin API. Default `127.0.0.1:9090`.
    pub admin: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            proxy: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// Process-wide runtime settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// Worker threads for the proxy. Default 2.
    pub threads: usize,
    /// After SIGTERM, how long to keep accepting new connections before
    /// closing the listeners (time for a load balancer to notice). Default `0s`.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// After the listeners close, how long in-flight requests get to finish
    /// before the process exits. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            threads: 2,
            grace_period: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Timeouts for connections to origins.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginTimeouts {
    /// TCP (and TLS) connect. A timeout answers 504. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for each read from the origin, including the response
    /// header. A timeout answers 504. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Longest wait for each write to the origin. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How long an idle keep-alive connection to an origin is kept. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for OriginTimeouts {
    fn default() -> Self {
        OriginTimeouts {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The HTTP cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cache {
    /// The name this cache gives itself in `Cache-Status` (RFC 9211), so that
    /// chained caches read clearly. An RFC 8941 token. Default `stavka`.
    pub name: String,
    /// How long a request waits behind another request that is already
    /// fetching the same object before it goes to the origin itself, uncached.
    /// Default `5s`.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// How long one fetch may hold the cache lock before waiting requests may
    /// compete for it again. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub lock_age_timeout: Duration,
    /// stale-while-revalidate (RFC 5861) applied when a response does not say.
    /// Default `0s`: off.
    #[serde(with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    /// stale-if-error (RFC 5861) applied when a response does not say.
    /// Default `0s`: off.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Heuristic freshness (RFC 9111 §4.2.2) for responses without explicit
    /// freshness: 10% of the time since `Last-Modified`, capped at this value.
    /// Default: unset, so no heuristic freshness at all.
    #[serde(with = "humantime_serde")]
    pub heuristic_max_ttl: Option<Duration>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            name: "stavka".to_owned(),
            lock_timeout: Duration::from_secs(5),
            lock_age_timeout: Duration::from_secs(30),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            heuristic_max_ttl: None,
        }
    }
}

/// Access to the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// The bearer token the admin API requires. Prefer `token_env`, which
    /// keeps it out of the file. Required (here or in the environment)
    /// whenever `listen.admin` is not on loopback.
    pub token: Option<String>,
    /// The environment variable read for the token when `token` is unset.
    /// Default `STAVKA_ADMIN_TOKEN`.
    pub token_env: String,
    /// Serve `/metrics` without the token, for scrapers. Default `true`.
    pub metrics_public: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            token: None,
            token_env: "STAVKA_ADMIN_TOKEN".to_owned(),
            metrics_public: true,
        }
    }
}

impl Admin {
    /// Shortest token accepted: a guessable token is no protection.
    pub const MIN_TOKEN_LEN: usize = 16;

    /// The token from the file, else from the environment.
    pub fn token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| std::env::var(&self.token_env).ok())
            .filter(|t| !t.is_empty())
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `text` or `json`. The level comes from `RUST_LOG` (default `info`).
    pub format: LogFormat,
    /// One line per request, target `stavka::access`. Default `true`.
    pub access_log: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            access_log: true,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Cache policy modules: where they live and what they run with when their
/// sidecar file does not say.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// The directory watched for `<name>.wasm` policy modules and their
    /// `<name>.toml` sidecars. Default `policies`.
    pub dir: PathBuf,
    /// How long a change must be quiet before the module is reloaded, so a
    /// file being written is read once, whole. Default `200ms`.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// CPU time one hook call may use (its wall time is capped at ten
    /// times this). Default `5ms`.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Largest linear memory an instance may use. Default `32MiB`, at most
    /// [`Policy::MAX_MEMORY`].
    pub memory: ByteSize,
    /// `open` (act as if there were no policy) or `closed` (503) when a
    /// call traps, overruns or runs out of memory. Default `open`.
    pub failure: crate::policy::Failure,
    /// Idle instances a long-lived module keeps. Default 8.
    pub instances: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            dir: PathBuf::from("policies"),
            debounce: Duration::from_millis(200),
            deadline: Duration::from_millis(5),
            memory: ByteSize::mib(32),
            failure: crate::policy::Failure::Open,
            instances: 8,
        }
    }
}

impl Policy {
    /// The engine-wide ceiling on one instance's memory (256 MiB): the
    /// pooling allocator reserves address space for it per slot.
    pub const MAX_MEMORY: usize = 256 << 20;
}

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
    /// The policy module (`<policy.dir>/<name>.wasm`) that decides for this
    /// site. Default: none, plain HTTP caching.
    #[serde(default)]
    pub policy: Option<String>,
}

/// An origin server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// `host:port`; a name is resolved once, at start-up.
    pub address: String,
    /// Speak TLS to the origin. Default `false`.
    #[serde(default)]
    pub tls: bool,
    /// The TLS server name; defaults to the host part of `address`.
    #[serde(default)]
    pub sni: Option<String>,
    /// The Host header sent to the origin; defaults to the client's Host.
    #[serde(default)]
    pub host_header: Option<String>,
}

/// One problem in a configuration, located by its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is, e.g. `site[1].origin.address`.
    pub path: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    fn render(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Config {
    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: path.display().to_string(),
                message: format!("cannot read the file: {e}"),
            }])
        })?;
        let config = Config::from_toml(&text)?;
        config.validate()?;
        Ok(config)
    }

    /// Deserialize TOML text without validating relations between fields.
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            ConfigErrors(vec![ConfigError {
                path: if path == "." { "(file)".into() } else { path },
                message: inner.message().to_owned() + &location(text, inner.span()),
            }])
        })
    }

    /// Check everything deserialization cannot: ranges, uniqueness, the
    /// relations between fields. Returns every problem at once.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |path: String, message: String| errors.push(ConfigError { path, message });

        if self.listen.proxy == self.listen.admin {
            err(
                "listen.admin".into(),
                format!("must differ from listen.proxy ({})", self.listen.proxy),
            );
        }
        match self.admin.token() {
            Some(t) if t.len() < Admin::MIN_TOKEN_LEN => err(
                "admin.token".into(),
                format!("must be at least {} characters", Admin::MIN_TOKEN_LEN),
            ),
            None if !self.listen.admin.ip().is_loopback() => err(
                "admin.token".into(),
                format!(
                    "required because listen.admin ({}) is not on loopback; set it, or the {} environment variable",
                    self.listen.admin, self.admin.token_env
                ),
            ),
            _ => {}
        }
        if self.server.threads == 0 {
            err("server.threads".into(), "must be at least 1".into());
        }
        for (field, value) in [
            ("origin.connect_timeout", self.origin.connect_timeout),
            ("origin.read_timeout", self.origin.read_timeout),
            ("origin.write_timeout", self.origin.write_timeout),
        ] {
            if value.is_zero() {
                err(field.into(), "must be greater than 0s".into());
            }
        }
        if !is_token(&self.cache.name) {
            err(
                "cache.name".into(),
                format!(
                    "{:?} is not a token: use letters, digits and !#$%&'*+-.^_`|~ (RFC 9211)",
                    self.cache.name
                ),
            );
        }
        for (field, problem) in self.store.problems() {
            err(format!("store.{field}"), problem);
        }
        if self.cache.lock_timeout.is_zero() {
            err(
                "cache.lock_timeout".into(),
                "must be greater than 0s".into(),
            );
        }
        if self.cache.lock_age_timeout.is_zero() {
            err(
                "cache.lock_age_timeout".into(),
                "must be greater than 0s".into(),
            );
        }
        if self.policy.deadline.is_zero() {
            err("policy.deadline".into(), "must be greater than 0s".into());
        }
        let memory = self.policy.memory.as_u64();
        if memory < 65536 || memory > Policy::MAX_MEMORY as u64 {
            err(
                "policy.memory".into(),
                "must be between 64KiB and 256MiB".into(),
            );
        }
        if self.policy.instances == 0 {
            err("policy.instances".into(), "must be at least 1".into());
        }
        if self.cache.heuristic_max_ttl.is_some_and(|d| d.is_zero()) {
            err(
                "cache.heuristic_max_ttl".into(),
                "must be greater than 0s; leave it out to turn heuristics off".into(),
            );
        }

        let mut names = std::collections::HashMap::new();
        let mut hosts = std::collections::HashMap::new();
        let mut default_site: Option<usize> = None;
        for (i, site) in self.sites.iter().enumerate() {
            let at = |field: &str| format!("site[{i}].{field}");
            if site.name.trim().is_empty() {
                err(at("name"), "must not be empty".into());
            } else if site.name.chars().any(char::is_control) {
                // A cache key separates its parts with NUL (cache::key).
                err(at("name"), "must not contain control characters".into());
            } else if let Some(first) = names.insert(site.name.as_str(), i) {
                err(
                    at("name"),
                    format!("{:?} is already the name of site[{first}]", site.name),
                );
            }
            if site.hosts.is_empty() && !site.default {
                err(
                    at("hosts"),
                    "list at least one host name, or set default = true".into(),
                );
            }
            for (j, host) in site.hosts.iter().enumerate() {
                let host_at = format!("site[{i}].hosts[{j}]");
                match normalize_host_pattern(host) {
                    Err(why) => err(host_at, format!("{host:?} {why}")),
                    Ok(pattern) => {
                        if let Some(first) = hosts.insert(pattern, host_at.clone()) {
                            err(host_at, format!("{host:?} is already listed at {first}"));
                        }
                    }
                }
            }
            if site.default {
                if let Some(first) = default_site {
                    err(
                        at("default"),
                        format!("site[{first}] is already the default; only one may be"),
                    );
                } else {
                    default_site = Some(i);
                }
            }
            match split_host_port(&site.origin.address) {
                Err(why) => err(
                    at("origin.address"),
                    format!("{:?} {why}", site.origin.address),
                ),
                Ok((host, _)) => {
                    if site.origin.tls
                        && site.origin.sni.is_none()
                        && host.parse::<std::net::IpAddr>().is_ok()
                    {
                        err(
                            at("origin.sni"),
                            "required when origin.tls = true and origin.address is an IP address"
                                .into(),
                        );
                    }
                }
            }
            if let Some(name) = &site.policy {
                if !crate::policy::is_module_name(name) {
                    err(
                        at("policy"),
                        format!("{name:?} is not a module name: use letters, digits, '-' and '_'"),
                    );
                }
            }
            if let Some(h) = &site.origin.host_header {
                if http::HeaderValue::from_str(h).is_err() || h.is_empty() {
                    err(
                        at("origin.host_header"),
                        format!("{h:?} is not a valid header value"),
                    );
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// `line L, column C` for a byte span, so a type error points into the file.
fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
    format!(" (line {line}, column {column})")
}

/// RFC 8941 token characters, the form a Cache-Status cache name takes.
fn is_token(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
        && chars.all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c))
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

    fn paths(text: &str) -> Vec<String> {
        match Config::from_toml(text).and_then(|c| c.validate().map(|_| c)) {
            Ok(_) => vec![],
            Err(e) => e.0.into_iter().map(|e| e.path).collect(),
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::from_toml("").unwrap();
        c.validate().unwrap();
        assert_eq!(c.cache.name, "stavka");
        assert_eq!(c.listen.admin.port(), 9090);
        assert!(c.sites.is_empty());
        assert!(c.cache.heuristic_max_ttl.is_none());
    }

    #[test]
    fn full_file_parses() {
        let c = Config::from_toml(
            r#"
            [listen]
            proxy = "127.0.0.1:1"
            admin = "127.0.0.1:2"
            [cache]
            lock_timeout = "250ms"
            stale_if_error = "1h"
            heuristic_max_ttl = "10m"
            [store]
            dir = "/var/cache/stavka"
            disk_bytes = "2GiB"
            max_object_size = "10MiB"
            [[site]]
            name = "www"
            hosts = ["Example.COM", "*.example.com"]
            default = true
            origin = { address = "origin.internal:443", tls = true, host_header = "example.com" }
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.store.disk_bytes, ByteSize::gib(2));
        assert_eq!(c.cache.lock_timeout, Duration::from_millis(250));
        assert_eq!(c.sites[0].hosts.len(), 2);
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = Config::from_toml("[store]\ndisk_bytes = \"lots\"\n").unwrap_err();
        assert_eq!(e.0[0].path, "store.disk_bytes");
        assert!(e.0[0].message.contains("line 2"), "{}", e);
        let e = Config::from_toml("[cache]\nsizee = 1\n").unwrap_err();
        assert!(e.to_string().contains("sizee"), "{e}");
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_path() {
        let got = paths(
            r#"
            [listen]
            proxy = "127.0.0.1:1"
            admin = "127.0.0.1:1"
            [server]
            threads = 0
            [cache]
            name = "has space"
            [store]
            max_object_size = "2GiB"
            [[site]]
            name = "a"
            hosts = ["a.example", "x.*.example"]
            default = true
            origin = { address = "nohost" }
            [[site]]
            name = "a"
            hosts = ["A.example"]
            default = true
            origin = { address = "10.0.0.1:443", tls = true }
            "#,
        );
        assert_eq!(
            got,
            [
                "listen.admin",
                "server.threads",
                "cache.name",
                "store.max_object_size",
                "site[0].hosts[1]",
                "site[0].origin.address",
                "site[1].name",
                "site[1].hosts[0]",
                "site[1].default",
                "site[1].origin.sni",
            ]
        );
    }

    #[test]
    fn admin_token_is_required_off_loopback_and_must_be_long() {
        let off_loopback =
            "[listen]\nadmin = \"0.0.0.0:9090\"\n[admin]\ntoken_env = \"STAVKA_TEST_NO_SUCH_VAR\"\n";
        assert_eq!(paths(off_loopback), ["admin.token"]);
        let short = format!("{off_loopback}token = \"short\"\n");
        assert_eq!(paths(&short), ["admin.token"]);
        let good = format!("{off_loopback}token = \"a-long-enough-token\"\n");
        assert!(paths(&good).is_empty());
        assert!(paths("").is_empty(), "loopback needs no token");
    }

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
}
