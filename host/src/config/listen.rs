//! `[listen]`: where the proxy and the admin API listen.

use std::net::SocketAddr;

use serde::Deserialize;

/// Listener addresses. The admin API is on its own address so it can stay on
/// loopback while the proxy faces the world.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// The caching proxy. Default `0.0.0.0:8080`.
    pub proxy: SocketAddr,
    /// Metrics, health and the admin API. Default `127.0.0.1:9090`.
    pub admin: SocketAddr,
    /// HTTPS (HTTP/1.1, and HTTP/2 by ALPN unless `tls.http2 = false`),
    /// with certificates from `[tls]` and each site's `tls`. Default: none.
    pub tls: Option<SocketAddr>,
    /// Also accept HTTP/2 with prior knowledge (h2c, RFC 9113 §3.3) on the
    /// plain `proxy` listener. Default `false`.
    pub h2c: bool,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            proxy: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            tls: None,
            h2c: false,
        }
    }
}

impl Listen {
    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.proxy == self.admin {
            out.push((
                "admin",
                format!("must differ from listen.proxy ({})", self.proxy),
            ));
        }
        if let Some(tls) = self.tls {
            for (other, addr) in [("proxy", self.proxy), ("admin", self.admin)] {
                if tls == addr {
                    out.push(("tls", format!("must differ from listen.{other} ({addr})")));
                }
            }
        }
        out
    }
}
