//! Where `stavka ctl` finds the admin API and which token it presents:
//! flags first, then the environment, then the configuration file the
//! proxy itself reads, then the proxy's default address. Each of the two
//! is resolved on its own, so `--admin` with a token from the file works.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Context};

use crate::config::{Config, Listen};

/// The environment variable naming the admin API's `host:port`.
pub const ADMIN_ENV: &str = "STAVKA_ADMIN";
/// The environment variable holding the bearer token (also the default of
/// `admin.token_env`, so a shell set up for the proxy works for `ctl`).
pub const TOKEN_ENV: &str = "STAVKA_ADMIN_TOKEN";

/// The admin API to talk to and the credentials to present.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`: connected to, and sent as `Host` (which the API checks
    /// against loopback names when it has no token).
    pub addr: String,
    /// Sent as `Authorization: Bearer` when present.
    pub token: Option<String>,
}

impl Target {
    /// Resolve the address and the token from the flags, the environment
    /// and `config` (read only when a flag and its variable leave one of
    /// them unset).
    pub fn resolve(
        admin: Option<String>,
        token: Option<String>,
        config: Option<&Path>,
    ) -> anyhow::Result<Target> {
        let admin = admin.or_else(|| from_env(ADMIN_ENV));
        let token = token.or_else(|| from_env(TOKEN_ENV));
        let (admin, token) = match (admin, token, config) {
            (Some(admin), token, None) => (admin, token),
            (Some(admin), Some(token), Some(_)) => (admin, Some(token)),
            (admin, token, Some(file)) => {
                let config = read(file).with_context(|| {
                    format!("reading where the admin API is from {}", file.display())
                })?;
                (
                    admin.unwrap_or_else(|| reachable(config.listen.admin).to_string()),
                    token.or_else(|| config.admin.token()),
                )
            }
            (None, token, None) => (Listen::default().admin.to_string(), token),
        };
        Ok(Target {
            addr: host_port(&admin)?,
            token: token.filter(|t| !t.is_empty()),
        })
    }
}

/// The file parsed but not validated: only `listen.admin` and `[admin]`
/// matter here, and a problem elsewhere (an edited site, a missing module
/// directory) must not keep an operator from purging. Its errors on one
/// line.
fn read(file: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(file)?;
    Config::from_toml(&text).map_err(|errors| {
        let each: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}", each.join("; ").replace('\n', " "))
    })
}

/// A variable's value, unless unset or empty.
fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A listener bound to every address is reached on loopback: connecting
/// to `0.0.0.0` works on Linux, but the API would see a `Host` that is not
/// a loopback name.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// `host:port` from what an operator typed, allowing a pasted
/// `http://host:port/`; the API speaks plain HTTP only.
fn host_port(given: &str) -> anyhow::Result<String> {
    let bare = given.strip_prefix("http://").unwrap_or(given);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    if bare.contains("://") {
        bail!("admin address {given:?}: the admin API speaks plain HTTP; give host:port");
    }
    if bare.is_empty() || bare.contains('/') || !bare.contains(':') {
        bail!("admin address {given:?}: expected host:port, e.g. 127.0.0.1:9090");
    }
    Ok(bare.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listeners_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9090".parse().unwrap()).to_string(),
            "127.0.0.1:9090"
        );
        assert_eq!(
            reachable("[::]:9090".parse().unwrap()).to_string(),
            "[::1]:9090"
        );
        assert_eq!(
            reachable("10.0.0.1:9090".parse().unwrap()).to_string(),
            "10.0.0.1:9090"
        );
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(host_port("localhost:9090").unwrap(), "localhost:9090");
        assert_eq!(host_port("http://[::1]:9090/").unwrap(), "[::1]:9090");
        assert!(host_port("https://a:1").is_err());
        assert!(host_port("localhost").is_err());
        assert!(host_port("a:1/purge").is_err());
    }
}
