//! HTTPS from the client's side: whether a request came over TLS, the
//! redirect that sends a plain-HTTP request there, and the HSTS field its
//! answers carry.

use pingora_proxy::Session;

/// Whether the client's connection is TLS (HTTP/1.1 or HTTP/2 over it).
pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// `https://host[:port]/target`: the request's URL on the TLS listener at
/// `port` (left out when it is 443). `host` is normalized (no port; IPv6
/// in brackets).
pub fn location(host: &str, port: u16, target: &str) -> String {
    if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_keeps_host_and_target_and_names_a_non_default_port() {
        assert_eq!(
            location("example.com", 443, "/a?b=1"),
            "https://example.com/a?b=1"
        );
        assert_eq!(location("[::1]", 8443, "/"), "https://[::1]:8443/");
    }
}
