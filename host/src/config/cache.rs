//! `[cache]`: how the HTTP cache behaves.

use std::time::Duration;

use serde::Deserialize;

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

impl Cache {
    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !is_token(&self.name) {
            out.push((
                "name",
                format!(
                    "{:?} is not a token: use letters, digits and !#$%&'*+-.^_`|~ (RFC 9211)",
                    self.name
                ),
            ));
        }
        out.extend(super::zero_durations(&[
            ("lock_timeout", self.lock_timeout),
            ("lock_age_timeout", self.lock_age_timeout),
        ]));
        if self.heuristic_max_ttl.is_some_and(|d| d.is_zero()) {
            out.push((
                "heuristic_max_ttl",
                "must be greater than 0s; leave it out to turn heuristics off".into(),
            ));
        }
        out
    }
}

/// RFC 8941 token characters, the form a Cache-Status cache name takes.
fn is_token(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
        && chars.all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c))
}
