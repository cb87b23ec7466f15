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

impl Listen {
    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        if self.proxy == self.admin {
            vec![(
                "admin",
                format!("must differ from listen.proxy ({})", self.proxy),
            )]
        } else {
            Vec::new()
        }
    }
}
