//! The one way a host name is normalised for routing, cache keys and purges:
//! lower case, no port, no trailing dot. Every place that compares hosts goes
//! through [`normalize`], so a purge, a route and a cache key always agree.

use std::borrow::Cow;

use http::{header, Version};
use pingora_http::RequestHeader;

/// Why a request's authority cannot name a host (RFC 9112 §3.2: answered
/// with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// An HTTP/1.1 request without a Host field, or with an empty one.
    #[error("the request has no Host")]
    Missing,
    /// More than one Host field line.
    #[error("the request has more than one Host")]
    Repeated,
    /// Not a reg-name, IPv4 address or IP literal, with an optional port.
    #[error("the Host is not a valid host name")]
    Invalid,
}

/// Check that `authority` is `host[:port]` where host is a reg-name of
/// letters, digits, `-`, `.` and `_`, an IPv4 address, or a bracketed IP
/// literal, and the port is decimal digits (RFC 3986 §3.2.2–3.2.3).
/// Percent-encoded and other sub-delimiter characters are refused: no DNS
/// name uses them, and they are how keys and logs get confused.
pub fn validate(authority: &str) -> Result<(), HostError> {
    let port = if let Some(bracketed) = authority.strip_prefix('[') {
        let (literal, after) = bracketed.split_once(']').ok_or(HostError::Invalid)?;
        let ip_literal = !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ip_literal {
            return Err(HostError::Invalid);
        }
        match after {
            "" => None,
            rest => Some(rest.strip_prefix(':').ok_or(HostError::Invalid)?),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let reg_name = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if host.is_empty() || !reg_name || host.starts_with('.') || host.contains("..") {
            return Err(HostError::Invalid);
        }
        port
    };
    if port.is_some_and(|p| p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(HostError::Invalid);
    }
    Ok(())
}

/// The host `req` names, normalised: from the URI's authority (HTTP/2's
/// `:authority`) or the Host field. pingora has already refused a repeated
/// Host and a Host that disagrees with an absolute-form target; this refuses
/// what RFC 9112 §3.2 also makes a 400 — an HTTP/1.1 request with no Host or
/// an empty one, and a Host that is not a valid host — so no request is
/// routed, keyed or forwarded on a name a client shaped. `Ok(None)` is an
/// HTTP/1.0 request without Host, which the default site may serve.
pub fn request_host(req: &RequestHeader) -> Result<Option<String>, HostError> {
    let authority = match req.uri.authority() {
        Some(authority) => authority.as_str(),
        None => {
            let mut hosts = req.headers.get_all(header::HOST).iter();
            let (host, repeated) = (hosts.next(), hosts.next());
            if repeated.is_some() {
                return Err(HostError::Repeated);
            }
            match host {
                Some(host) if !host.is_empty() => host.to_str().map_err(|_| HostError::Invalid)?,
                _ if req.version <= Version::HTTP_10 => return Ok(None),
                _ => return Err(HostError::Missing),
            }
        }
    };
    validate(authority)?;
    Ok(Some(normalize(authority).into_owned()))
}

/// `Example.COM.:8080` → `example.com`; `[::1]:80` → `[::1]`. Borrows when
/// the value is already normal, so routing a normal host allocates nothing.
pub fn normalize(authority: &str) -> Cow<'_, str> {
    let host = strip_port(authority).trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_case_without_port_or_trailing_dot() {
        assert_eq!(normalize("Example.COM.:8080"), "example.com");
        assert_eq!(normalize("[::1]:80"), "[::1]");
        assert_eq!(normalize("[::1]"), "[::1]");
        assert!(matches!(normalize("example.com"), Cow::Borrowed(_)));
    }

    #[test]
    fn rfc3986_hosts_with_optional_port() {
        for ok in [
            "example.com",
            "a-b.example.com:8080",
            "Example.COM.",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "under_score.example",
            "example.com:",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "exa mple.com",
            "exämple.com",
            "example.com:80:80",
            "example.com:http",
            "ex%41mple.com",
            "user@example.com",
            "[::1",
            "[::1]x",
            "[]",
            "[zz::1]",
            ".example.com",
            "a..b",
            "example.com/evil",
            "example.com:123456",
        ] {
            assert_eq!(validate(bad), Err(HostError::Invalid), "{bad}");
        }
    }
}
