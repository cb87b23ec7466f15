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
/// `certificates`, session resumption from rustls' server session cache,
/// and ALPN `h2` then `http/1.1` when `http2`.
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
    Ok(settings)
}
