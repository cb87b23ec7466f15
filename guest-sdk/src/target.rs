//! Turning a URI found in a document into a same-site request target
//! (RFC 3986 §5), for [`prefetch::same_site_target`](crate::prefetch::same_site_target).

use crate::prefetch::MAX_TARGET_BYTES;

/// See [`prefetch::same_site_target`](crate::prefetch::same_site_target).
pub(crate) fn same_site_target(base_path: &str, host: &str, reference: &str) -> Option<String> {
    // HTML strips leading and trailing spaces from URL attributes.
    let reference = reference.trim_matches(|c: char| c.is_ascii_whitespace());
    let reference = reference.split('#').next().unwrap_or_default();
    if reference.is_empty() || reference.len() > MAX_TARGET_BYTES {
        return None;
    }
    let target = if let Some(rest) = reference.strip_prefix("//") {
        same_host_path(rest, host, None)?
    } else if let Some((scheme, rest)) = split_scheme(reference) {
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => "80",
            "https" => "443",
            _ => return None,
        };
        same_host_path(rest.strip_prefix("//")?, host, Some(default_port))?
    } else if reference.starts_with('/') {
        reference.to_owned()
    } else {
        return merge(base_path, reference);
    };
    normalise(&target)
}

/// A relative reference resolved against the base path (RFC 3986 §5.2.2,
/// §5.2.3).
fn merge(base_path: &str, reference: &str) -> Option<String> {
    let base = if base_path.starts_with('/') {
        base_path
    } else {
        "/"
    };
    if reference.starts_with('?') {
        return normalise(&format!("{base}{reference}"));
    }
    let dir = &base[..base.rfind('/').map_or(1, |i| i + 1)];
    normalise(&format!("{dir}{reference}"))
}

/// The scheme and the rest of an absolute URI, if `reference` has one.
fn split_scheme(reference: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = reference.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// The path and query after an authority, if the authority is `host`
/// (with no port, or `default_port` when the scheme names one).
fn same_host_path(after_slashes: &str, host: &str, default_port: Option<&str>) -> Option<String> {
    let end = after_slashes
        .find(['/', '?'])
        .unwrap_or(after_slashes.len());
    let (authority, rest) = after_slashes.split_at(end);
    let (name, port) = if authority.starts_with('[') {
        // An IP literal (RFC 3986 §3.2.2): the port follows the `]`.
        let close = authority.find(']')?;
        let (name, after) = authority.split_at(close + 1);
        match after {
            "" => (name, None),
            _ => (name, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    let port_ok = match port {
        None | Some("") => true,
        Some(port) => Some(port) == default_port,
    };
    let same_host = !host.is_empty() && name.eq_ignore_ascii_case(host);
    if !port_ok || !same_host || authority.contains('@') {
        return None;
    }
    Some(match rest {
        "" => "/".to_owned(),
        _ if rest.starts_with('?') => format!("/{rest}"),
        _ => rest.to_owned(),
    })
}

/// Dot segments removed from the path, and the whole checked for length
/// and characters.
fn normalise(target: &str) -> Option<String> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut out = remove_dot_segments(path);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    // `//x` would name the host `x` wherever the target is read as a
    // reference (a `Link` field): never one.
    let fits = out.len() <= MAX_TARGET_BYTES && !out.starts_with("//");
    (fits && valid_target(&out)).then_some(out)
}

/// RFC 3986 §5.2.4 for a path that starts with `/`: `.` and `..` segments
/// removed, never climbing above the root.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            other => {
                out.push(other);
                continue;
            }
        }
        if last {
            out.push("");
        }
    }
    let mut path = String::with_capacity(path.len());
    for segment in out {
        path.push('/');
        path.push_str(segment);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// Only the characters RFC 3986 allows in a path and query, each `%`
/// starting an escape: nothing a `Link` field or a request line could be
/// broken with.
fn valid_target(target: &str) -> bool {
    let bytes = target.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        let allowed = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&b);
        if !allowed {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::same_site_target as resolve;

    const PAGE: &str = "/video/720p/index.m3u8";

    #[test]
    fn relative_references_resolve_against_the_documents_directory() {
        // RFC 3986 §5.4.1, with the base's path.
        assert_eq!(
            resolve(PAGE, "a.test", "seg1.ts").as_deref(),
            Some("/video/720p/seg1.ts")
        );
        assert_eq!(
            resolve(PAGE, "a.test", "./seg1.ts").as_deref(),
            Some("/video/720p/seg1.ts")
        );
        assert_eq!(
            resolve(PAGE, "a.test", "../480p/x.ts?t=1").as_deref(),
            Some("/video/480p/x.ts?t=1")
        );
        assert_eq!(
            resolve(PAGE, "a.test", "../../../../x").as_deref(),
            Some("/x"),
            "never above the root"
        );
        assert_eq!(resolve(PAGE, "a.test", "..").as_deref(), Some("/video/"));
        assert_eq!(
            resolve(PAGE, "a.test", "?v=2").as_deref(),
            Some("/video/720p/index.m3u8?v=2")
        );
        assert_eq!(resolve("/", "a.test", "x.css").as_deref(), Some("/x.css"));
        assert_eq!(
            resolve("", "a.test", "x.css").as_deref(),
            Some("/x.css"),
            "no base path: the root"
        );
        assert_eq!(
            resolve("/a/b", "a.test", "/c/./d/../e#frag").as_deref(),
            Some("/c/e")
        );
        assert_eq!(
            resolve("/a/b", "a.test", "  /c.css \n").as_deref(),
            Some("/c.css"),
            "HTML trims spaces"
        );
    }

    #[test]
    fn absolute_uris_count_only_on_this_host() {
        assert_eq!(
            resolve(PAGE, "a.test", "https://A.test/s/1.ts").as_deref(),
            Some("/s/1.ts")
        );
        assert_eq!(
            resolve(PAGE, "a.test", "http://a.test:80/s").as_deref(),
            Some("/s")
        );
        assert_eq!(
            resolve(PAGE, "a.test", "https://a.test:443").as_deref(),
            Some("/")
        );
        assert_eq!(
            resolve(PAGE, "a.test", "//a.test/s?q").as_deref(),
            Some("/s?q")
        );
        assert_eq!(resolve(PAGE, "a.test", "https://cdn.other/s/1.ts"), None);
        assert_eq!(
            resolve(PAGE, "a.test", "https://a.test:8443/s"),
            None,
            "another port"
        );
        assert_eq!(
            resolve(PAGE, "a.test", "http://a.test:443/s"),
            None,
            "not http's port"
        );
        assert_eq!(
            resolve(PAGE, "a.test", "//a.test:80/s"),
            None,
            "no scheme, no default port"
        );
        assert_eq!(resolve(PAGE, "a.test", "https://user@a.test/s"), None);
        assert_eq!(resolve(PAGE, "a.test", "https://a.test.evil/s"), None);
        assert_eq!(resolve(PAGE, "a.test", "https:/s"), None);
        assert_eq!(resolve(PAGE, "", "//a/s"), None, "no host, nothing matches");
        assert_eq!(
            resolve(PAGE, "a.test", "//a.test?q=1").as_deref(),
            Some("/?q=1")
        );
        assert_eq!(
            resolve(PAGE, "[::1]", "http://[::1]:80/s").as_deref(),
            Some("/s")
        );
        assert_eq!(resolve(PAGE, "[::1]", "http://[::1]x/s"), None);
    }

    #[test]
    fn other_schemes_and_unsafe_characters_are_refused() {
        for reference in [
            "data:text/css,a{}",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "mailto:a@a.test",
            "skd://key",
            "",
            "#top",
            "a b.css",
            "a\"b.css",
            "<x>.css",
            "x.css\r\nset-cookie: a=1",
            "caf\u{e9}.css",
            "%zz.css",
            "%4",
        ] {
            assert_eq!(resolve(PAGE, "a.test", reference), None, "{reference:?}");
        }
        assert_eq!(
            resolve(PAGE, "a.test", "a%20b.css").as_deref(),
            Some("/video/720p/a%20b.css")
        );
        assert_eq!(resolve(PAGE, "a.test", "/a:b@c").as_deref(), Some("/a:b@c"));
        for network_path in [
            "https://a.test//evil.test/x",
            "//a.test//evil.test",
            "/..//evil.test",
        ] {
            assert_eq!(
                resolve(PAGE, "a.test", network_path),
                None,
                "{network_path:?}"
            );
        }
    }

    #[test]
    fn targets_longer_than_the_host_takes_are_refused() {
        let long = "a".repeat(super::MAX_TARGET_BYTES);
        assert_eq!(resolve("/", "a.test", &long), None);
        let fits = "a".repeat(super::MAX_TARGET_BYTES - 1);
        assert_eq!(
            resolve("/", "a.test", &fits).map(|t| t.len()),
            Some(super::MAX_TARGET_BYTES)
        );
    }
}
