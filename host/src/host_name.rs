//! The one way a host name is normalised for routing, cache keys and purges:
//! lower case, no port, no trailing dot. Every place that compares hosts goes
//! through [`normalize`], so a purge, a route and a cache key always agree.

use std::borrow::Cow;

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
}
