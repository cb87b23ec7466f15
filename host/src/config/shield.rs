//! `[site.shield]`: the pool of shields (other stavka nodes) a site's
//! misses go to instead of its origin.

use std::time::Duration;

use serde::Deserialize;

use super::pool::{self, default_dns_ttl, ActiveCheck, Member, PassiveCheck};

/// A pool of shields. Each object's home shield is chosen by consistent
/// hashing (Ketama) on its cache key, so the shields' caches do not hold
/// the same objects; when the home shield is down the next one on the
/// ring takes its objects. Shields are spoken to in plain HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shield {
    /// The shields' proxy listeners, each `"host:port"` or `{ address =
    /// "host:port", weight = 2 }`. Every edge must list the same members
    /// (resolving to the same addresses) to agree on each object's home.
    pub addresses: Vec<Member>,
    /// Probe every shield. Default: none, only requests judge a shield.
    #[serde(default)]
    pub health: Option<ActiveCheck>,
    /// What failed connections do to a shield (a shield's 5xx is the
    /// origin's answer passed on and does not count). Default: 3
    /// consecutive failures take it out for `10s`.
    #[serde(default)]
    pub passive: PassiveCheck,
    /// Resolve member names again this often. Default `60s`.
    #[serde(default = "default_dns_ttl", with = "humantime_serde")]
    pub dns_ttl: Duration,
}

impl Shield {
    /// Report problems with the shield pool to `err(field, message)`, its
    /// fields under `shield.`.
    pub(super) fn check(&self, err: &mut dyn FnMut(String, String)) {
        if self.addresses.is_empty() {
            err("shield.addresses".into(), "list at least one shield".into());
        }
        pool::check(
            "shield",
            &self.addresses,
            self.health.as_ref(),
            &self.passive,
            self.dns_ttl,
            err,
        );
    }
}
