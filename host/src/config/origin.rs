//! `[origin]`: timeouts for every connection to an origin.

use std::time::Duration;

use serde::Deserialize;

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

impl OriginTimeouts {
    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        super::zero_durations(&[
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
        ])
    }
}
