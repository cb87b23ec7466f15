//! A table keyed by host-name patterns — exact names, `*.` wildcards and a
//! default — with one lookup rule for everything matched by name: which
//! site serves a request's Host, and which certificate answers a TLS
//! client's SNI.

use std::collections::HashMap;

use crate::host_name;

/// Values by host pattern, and a default for names no pattern covers.
#[derive(Debug, Clone)]
pub struct HostTable<T> {
    exact: HashMap<String, T>,
    /// Keyed by the suffix after `*.`: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, T>,
    default: Option<T>,
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        HostTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        }
    }
}

impl<T> HostTable<T> {
    /// Map a pattern already normalized by
    /// [`crate::config::normalize_host_pattern`] (lower case, no trailing
    /// dot): `example.com` or `*.example.com`.
    pub fn insert(&mut self, pattern: &str, value: T) {
        match pattern.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(suffix.to_owned(), value),
            None => self.exact.insert(pattern.to_owned(), value),
        };
    }

    /// The value for names no pattern covers, and for no name at all.
    pub fn set_default(&mut self, value: T) {
        self.default = Some(value);
    }

    /// The value for a name in any case, with or without port or trailing
    /// dot (`None`: the client sent no name): an exact name first, then the
    /// most specific wildcard, then the default. One hash probe for the
    /// exact name plus one per label; no allocation for a name already in
    /// normal form.
    pub fn lookup(&self, name: Option<&str>) -> Option<&T> {
        let Some(name) = name.map(host_name::normalize) else {
            return self.default.as_ref();
        };
        let name = name.as_ref();
        if let Some(value) = self.exact.get(name) {
            return Some(value);
        }
        // `*.example.com` matches `a.example.com` and `a.b.example.com`;
        // walking from the left finds the most specific suffix first.
        let mut rest = name;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(value) = self.wildcard.get(suffix) {
                return Some(value);
            }
            rest = suffix;
        }
        self.default.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_most_specific_wildcard_then_default() {
        let mut table = HostTable::default();
        table.insert("example.com", "apex");
        table.insert("*.example.com", "wild");
        table.insert("*.img.example.com", "deep");
        table.set_default("fallback");
        let find = |h| table.lookup(h).copied();
        assert_eq!(find(Some("EXAMPLE.com:8080")), Some("apex"));
        assert_eq!(find(Some("www.example.com")), Some("wild"));
        assert_eq!(find(Some("a.b.example.com")), Some("wild"));
        assert_eq!(find(Some("x.img.example.com")), Some("deep"));
        assert_eq!(find(Some("example.com.")), Some("apex"));
        assert_eq!(find(Some("other.org")), Some("fallback"));
        assert_eq!(find(None), Some("fallback"));
    }

    #[test]
    fn without_a_default_an_unknown_name_finds_nothing() {
        let mut table = HostTable::default();
        table.insert("example.com", 1);
        assert!(table.lookup(Some("nope.example")).is_none());
        assert!(table.lookup(Some("[::1]:80")).is_none());
        assert!(table.lookup(None).is_none());
    }
}
