//! `[server]`: process-wide runtime settings.

use std::time::Duration;

use serde::Deserialize;

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

impl Server {
    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        if self.threads == 0 {
            vec![("threads", "must be at least 1".into())]
        } else {
            Vec::new()
        }
    }
}
