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
    /// The Unix socket a new binary started with `--upgrade` listens on
    /// for the running process's listening sockets (sent on SIGQUIT).
    /// Default `/tmp/stavka-upgrade.sock`; give each instance its own.
    pub upgrade_sock: std::path::PathBuf,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            threads: 2,
            grace_period: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(10),
            upgrade_sock: std::path::PathBuf::from("/tmp/stavka-upgrade.sock"),
        }
    }
}

impl Server {
    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.threads == 0 {
            out.push(("threads", "must be at least 1".into()));
        }
        // sockaddr_un holds 108 bytes with the terminating NUL.
        if self.upgrade_sock.as_os_str().len() > 107 {
            out.push((
                "upgrade_sock",
                "a Unix socket path must be at most 107 bytes".into(),
            ));
        }
        out
    }
}
