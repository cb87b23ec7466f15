//! The active health check of a pool: pingora's `HttpHealthCheck` (a `GET`
//! of `health.path` that must answer 200) or `TcpHealthCheck` (a
//! connection), with the configured thresholds, reporting each change to
//! the log and `stavka_pool_member_healthy`.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::protocols::tls::CaType;
use pingora_core::upstreams::peer::PeerOptions;
use pingora_load_balancing::health_check::{
    HealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck,
};
use pingora_load_balancing::Backend;
use prometheus::IntGaugeVec;

use super::PoolRole;
use crate::config::ActiveCheck;

/// How a probe speaks TLS: as the site's requests do.
#[derive(Debug, Clone)]
pub struct ProbeTls {
    /// The server name.
    pub sni: String,
    /// Verify the certificate's chain and name (`origin.tls_verify`).
    pub verify: bool,
    /// The CAs to verify against (`origin.ca_file`); `None`: the system's.
    pub ca: Option<Arc<CaType>>,
}

impl ProbeTls {
    /// Apply to a probe's connection options.
    fn apply(&self, options: &mut PeerOptions) {
        options.verify_cert = self.verify;
        options.verify_hostname = self.verify;
        options.ca = self.ca.clone();
    }
}

/// Reports a member's health changes.
pub struct Observer {
    /// `stavka_pool_member_healthy`.
    pub gauge: IntGaugeVec,
    /// The site label.
    pub site: String,
    /// The pool label.
    pub role: PoolRole,
}

#[async_trait]
impl HealthObserve for Observer {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let member = target.addr.to_string();
        if healthy {
            tracing::info!(
                site = self.site,
                pool = self.role.as_str(),
                member,
                "pool member healthy again"
            );
        } else {
            tracing::warn!(
                site = self.site,
                pool = self.role.as_str(),
                member,
                "pool member failed its health check"
            );
        }
        self.gauge
            .with_label_values(&[&self.site, self.role.as_str(), &member])
            .set(i64::from(healthy));
    }
}

/// The health check `check` describes: HTTP when it names a path (with
/// `check.host`, else `host`, as the Host; over `tls` when given), a
/// connection (and a TLS handshake with `tls`) otherwise.
pub fn build(
    check: &ActiveCheck,
    host: &str,
    tls: Option<&ProbeTls>,
    observer: Observer,
) -> Box<dyn HealthCheck + Send + Sync> {
    let (healthy, unhealthy) = (check.healthy as usize, check.unhealthy as usize);
    match &check.path {
        Some(path) => {
            let host = check.host.as_deref().unwrap_or(host);
            let mut http = HttpHealthCheck::new(host, tls.is_some());
            if let Some(tls) = tls {
                http.peer_template.sni = tls.sni.clone();
                tls.apply(&mut http.peer_template.options);
            }
            // Validated as a path by the configuration.
            if let Ok(uri) = http::Uri::try_from(path.as_str()) {
                http.req.set_uri(uri);
            }
            http.peer_template.options.connection_timeout = Some(check.timeout);
            http.peer_template.options.read_timeout = Some(check.timeout);
            http.consecutive_success = healthy;
            http.consecutive_failure = unhealthy;
            http.health_changed_callback = Some(Box::new(observer));
            Box::new(http)
        }
        None => {
            let mut tcp = match tls {
                Some(tls) => {
                    let mut tcp = TcpHealthCheck::new_tls(&tls.sni);
                    tls.apply(&mut tcp.peer_template.options);
                    tcp
                }
                None => TcpHealthCheck::new(),
            };
            tcp.peer_template.options.connection_timeout = Some(check.timeout);
            tcp.consecutive_success = healthy;
            tcp.consecutive_failure = unhealthy;
            tcp.health_changed_callback = Some(Box::new(observer));
            tcp
        }
    }
}
