//! The one TOML configuration file.
//!
//! Every field has a default, so `stavka` with no file runs. Each `[section]`
//! is its own type in its own module, with its defaults documented where its
//! fields are declared and a `problems()` that checks its values. Loading is
//! two steps: [`Config::from_toml`] deserializes (and reports the field path
//! of a type error), then [`Config::validate`] gathers every section's
//! problems, each with its field path, so an operator fixes a file in one
//! pass instead of one error per restart.

mod admin;
mod cache;
mod error;
mod limits;
mod listen;
mod log;
mod origin;
mod policy;
mod pool;
pub mod prefetch;
mod server;
mod shared;
mod shield;
mod site;
pub mod slice;
mod tier;
mod tls;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use admin::Admin;
pub use cache::Cache;
pub use error::{ConfigError, ConfigErrors};
pub use limits::Limits;
pub use listen::Listen;
pub use log::{AccessFormat, Log, LogFormat};
pub use origin::OriginTimeouts;
pub use policy::Policy;
pub use pool::{ActiveCheck, Member, PassiveCheck};
pub use server::Server;
pub use shared::Shared;
pub use shield::Shield;
pub use site::{normalize_host_pattern, split_host_port, Origin, PolicyMissing, Selection, Site};
pub use slice::Slice;
pub use tier::Tier;
pub use tls::{CertFiles, Hsts, Tls};

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
    /// The shared tier on Redis and the cluster-wide purge bus; absent,
    /// none (every store and every purge is local).
    pub shared: Option<Shared>,
    /// Logging.
    pub log: Log,
    /// The admin API's access control.
    pub admin: Admin,
    /// Where cache policy modules live.
    pub policy: Policy,
    /// Large objects cached as blocks.
    pub slice: Slice,
    /// HTTPS on `listen.tls`.
    pub tls: Tls,
    /// What one client may ask of the proxy.
    pub limits: Limits,
    /// How edges pass the client's address on to shields.
    pub tier: Tier,
    /// The sites this proxy serves, written as `[[site]]` tables.
    #[serde(rename = "site")]
    pub sites: Vec<Site>,
}

impl Config {
    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(
                path.display().to_string(),
                format!("cannot read the file: {e}"),
            )
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
            ConfigErrors::one(
                if path == "." { "(file)".into() } else { path },
                inner.message().to_owned() + &location(text, inner.span()),
            )
        })
    }

    /// Check everything deserialization cannot: ranges, uniqueness, the
    /// relations between fields. Each section reports its own problems;
    /// this returns every one of them at once.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let sections = [
            ("listen", self.listen.problems()),
            ("admin", self.admin.problems(self.listen.admin)),
            ("server", self.server.problems()),
            ("origin", self.origin.problems()),
            ("cache", self.cache.problems()),
            ("log", self.log.problems()),
            ("store", self.store.problems()),
            ("policy", self.policy.problems()),
            ("slice", self.slice.problems()),
            ("tls", self.tls.problems()),
            ("limits", self.limits.problems()),
            (
                "shared",
                self.shared
                    .as_ref()
                    .map(Shared::problems)
                    .unwrap_or_default(),
            ),
        ];
        let fields = sections.into_iter().flat_map(|(section, problems)| {
            problems
                .into_iter()
                .map(move |(field, message)| (format!("{section}.{field}"), message))
        });
        let errors: Vec<ConfigError> = fields
            .chain(site::problems(&self.sites))
            .chain(
                self.tier
                    .problems()
                    .into_iter()
                    .map(|(field, message)| (format!("tier.{field}"), message)),
            )
            .chain(self.tls_problems())
            .map(|(path, message)| ConfigError { path, message })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

impl Config {
    /// TLS settings that need a TLS listener, and a TLS listener that has
    /// no certificate to present.
    fn tls_problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let any_cert =
            self.tls.default_cert().is_some() || self.sites.iter().any(|s| s.tls.is_some());
        if self.listen.tls.is_some() && !any_cert {
            out.push((
                "listen.tls".to_owned(),
                "no certificate to present: set tls.cert and tls.key, or a site's tls".to_owned(),
            ));
        }
        if self.listen.tls.is_none() {
            for (i, site) in self.sites.iter().enumerate() {
                let wants = [
                    ("tls", site.tls.is_some()),
                    ("https_redirect", site.https_redirect),
                    ("hsts", site.hsts.is_some()),
                ];
                for (field, set) in wants {
                    if set {
                        out.push((format!("site[{i}].{field}"), "needs listen.tls".to_owned()));
                    }
                }
            }
        }
        out
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

/// The durations among `fields` that are zero where they must not be.
fn zero_durations(fields: &[(&'static str, Duration)]) -> Vec<(&'static str, String)> {
    fields
        .iter()
        .filter(|(_, value)| value.is_zero())
        .map(|(field, _)| (*field, "must be greater than 0s".to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use bytesize::ByteSize;

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
    fn policy_limits_are_checked_with_their_paths() {
        let got = paths("[policy]\ndeadline = \"0s\"\nmemory = \"1KiB\"\ninstances = 0\n");
        assert_eq!(
            got,
            ["policy.deadline", "policy.memory", "policy.instances"]
        );
        let bad_module = "[[site]]\nname = \"s\"\ndefault = true\npolicy = \"../x\"\norigin = { address = \"o:80\" }\n";
        assert_eq!(paths(bad_module), ["site[0].policy"]);
    }
}
