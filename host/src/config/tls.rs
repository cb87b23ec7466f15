//! `[tls]`: HTTPS on `listen.tls` — the default certificate and what the
//! TLS listener offers. Each site names its own certificate in
//! `[site.tls]`; a client's SNI picks it by the site's `hosts`.

use std::path::PathBuf;

use serde::Deserialize;

/// The TLS listener's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain (PEM) for clients that send no SNI, or a
    /// name no site's certificate covers. Default: none, and such
    /// handshakes fail (as they should: no certificate would match).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`). Default `true`.
    pub http2: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: None,
            key: None,
            http2: true,
        }
    }
}

impl Tls {
    /// The default certificate's files, when both are set.
    pub fn default_cert(&self) -> Option<CertFiles> {
        Some(CertFiles {
            cert: self.cert.clone()?,
            key: self.key.clone()?,
        })
    }

    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        match (&self.cert, &self.key) {
            (Some(_), None) => vec![("key", "needed with tls.cert".to_owned())],
            (None, Some(_)) => vec![("cert", "needed with tls.key".to_owned())],
            _ => Vec::new(),
        }
    }
}

/// A certificate chain and its private key, PEM files watched for changes:
/// a replaced pair is swapped in without dropping connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// HTTP Strict Transport Security (RFC 6797) for a site's HTTPS responses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hsts {
    /// `max-age`: how long browsers remember to use HTTPS only.
    #[serde(with = "humantime_serde")]
    pub max_age: std::time::Duration,
    /// `includeSubDomains`. Default `false`.
    #[serde(default)]
    pub include_subdomains: bool,
    /// `preload`. Default `false`.
    #[serde(default)]
    pub preload: bool,
}

impl Hsts {
    /// The `Strict-Transport-Security` field value.
    pub fn header_value(&self) -> String {
        let mut value = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if self.preload {
            value.push_str("; preload");
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_is_written_as_rfc_6797_section_6_1() {
        let hsts = Hsts {
            max_age: std::time::Duration::from_secs(31_536_000),
            include_subdomains: true,
            preload: false,
        };
        assert_eq!(hsts.header_value(), "max-age=31536000; includeSubDomains");
    }
}
