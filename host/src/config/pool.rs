//! The parts of a pool of upstream servers, shared by a site's `origin`
//! and its `shield`: members with weights, active and passive health
//! checks, and how often names are resolved again.

use std::time::Duration;

use serde::Deserialize;

use super::site::split_host_port;

/// One member of a pool: `"host:port"`, or `{ address = "host:port",
/// weight = 2 }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Member {
    /// An address with weight 1.
    Address(String),
    /// An address with a weight.
    Weighted {
        /// `host:port`; a name is resolved at start and every `dns_ttl`.
        address: String,
        /// Its share of the requests (of the ring, for a shield) relative
        /// to the others'. Default 1.
        #[serde(default = "one")]
        weight: u32,
    },
}

fn one() -> u32 {
    1
}

impl Member {
    /// The configured `host:port`.
    pub fn address(&self) -> &str {
        match self {
            Member::Address(a) | Member::Weighted { address: a, .. } => a,
        }
    }

    /// The configured weight (1 unless given).
    pub fn weight(&self) -> u32 {
        match self {
            Member::Address(_) => 1,
            Member::Weighted { weight, .. } => *weight,
        }
    }
}

/// Active health checks: a probe every `interval` to every member.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ActiveCheck {
    /// `GET` this path (with the pool's Host) and expect a 200. Default:
    /// none, a TCP connection is the probe.
    pub path: Option<String>,
    /// The probe's Host. Default: the origin's `host_header`, else the
    /// host part of the first member's address.
    pub host: Option<String>,
    /// Time between two probes of a member. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A probe that takes longer fails. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passing probes that bring a member back. Default 2.
    pub healthy: u32,
    /// Consecutive failing probes that take a member out. Default 3.
    pub unhealthy: u32,
}

impl Default for ActiveCheck {
    fn default() -> Self {
        ActiveCheck {
            path: None,
            host: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy: 2,
            unhealthy: 3,
        }
    }
}

/// Passive health checks: what requests learn about a member.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveCheck {
    /// Consecutive failed requests (a connection that could not be made;
    /// for an origin, also a 5xx answer) that take a member out. Default 3.
    pub failures: u32,
    /// How long a member taken out by requests stays out. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub down_for: Duration,
}

impl Default for PassiveCheck {
    fn default() -> Self {
        PassiveCheck {
            failures: 3,
            down_for: Duration::from_secs(10),
        }
    }
}

/// The default of `dns_ttl`: names are resolved again every minute.
pub fn default_dns_ttl() -> Duration {
    Duration::from_secs(60)
}

/// Report problems with a pool's members, health checks and `dns_ttl` to
/// `err(field, message)`, each field under `prefix` (`origin`, `shield`).
pub fn check(
    prefix: &str,
    members: &[Member],
    health: Option<&ActiveCheck>,
    passive: &PassiveCheck,
    dns_ttl: Duration,
    err: &mut dyn FnMut(String, String),
) {
    for (j, member) in members.iter().enumerate() {
        if let Err(why) = split_host_port(member.address()) {
            err(
                format!("{prefix}.addresses[{j}]"),
                format!("{:?} {why}", member.address()),
            );
        }
        if member.weight() == 0 {
            err(
                format!("{prefix}.addresses[{j}].weight"),
                "must be at least 1".into(),
            );
        }
    }
    if let Some(health) = health {
        if let Some(path) = &health.path {
            if !path.starts_with('/') || http::Uri::try_from(path.as_str()).is_err() {
                err(
                    format!("{prefix}.health.path"),
                    format!("{path:?} is not a path (it starts with /)"),
                );
            }
        }
        if let Some(host) = &health.host {
            if host.is_empty() || http::HeaderValue::from_str(host).is_err() {
                err(
                    format!("{prefix}.health.host"),
                    format!("{host:?} is not a valid Host"),
                );
            }
        }
        let zero = [
            ("interval", health.interval.is_zero()),
            ("timeout", health.timeout.is_zero()),
            ("healthy", health.healthy == 0),
            ("unhealthy", health.unhealthy == 0),
        ];
        for (field, is_zero) in zero {
            if is_zero {
                err(
                    format!("{prefix}.health.{field}"),
                    "must be greater than 0".into(),
                );
            }
        }
    }
    if passive.failures == 0 {
        err(
            format!("{prefix}.passive.failures"),
            "must be at least 1".into(),
        );
    }
    if dns_ttl.is_zero() {
        err(
            format!("{prefix}.dns_ttl"),
            "must be greater than 0s".into(),
        );
    }
}
