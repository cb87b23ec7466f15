//! TLS termination: which certificate answers a client (by SNI, from the
//! sites' `hosts`), loaded from PEM files that are watched and swapped
//! without dropping connections, and the HTTPS listener's rustls settings.

mod certificate;
mod certificates;
mod watch;

use std::sync::Arc;

use pingora_core::listeners::tls::TlsSettings;

pub use certificate::CertError;
pub use certificates::{CertificateStatus, Certificates, DEFAULT_NAME};
pub use watch::CertWatcher;

/// The HTTPS listener's settings: TLS 1.2 and 1.3 with rustls' safe
/// defaults (forward-secret AEAD suites only), certificates by SNI from
/// `certificates`, session resumption (stateless TLS 1.3 tickets and a
/// 16,384-session cache for TLS 1.2), and ALPN `h2` then `http/1.1` when
/// `http2`.
pub fn listener_settings(
    certificates: Arc<Certificates>,
    http2: bool,
) -> anyhow::Result<TlsSettings> {
    let mut settings = TlsSettings::intermediate("", "")
        .map_err(|e| anyhow::anyhow!("TLS listener settings: {e}"))?;
    settings.set_cert_resolver(certificates);
    if http2 {
        settings.enable_h2();
    }
    // Resumption for real numbers of clients: stateless TLS 1.3 tickets
    // (keys rotated every six hours) and, for TLS 1.2, a session cache
    // larger than rustls' 256 entries.
    let ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| anyhow::anyhow!("TLS session tickets: {e}"))?;
    settings.set_server_config_hook(move |config| {
        config.ticketer = ticketer;
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    });
    Ok(settings)
}

/// TLS 1.2 sessions kept for resumption.
const SESSION_CACHE: usize = 16_384;
