//! Cache keys and Vary variance.
//!
//! A primary key is the site, the lower-cased host and the path with query,
//! separated by NUL: `site \0 host \0 target`. Site names (checked by the
//! configuration) and Host values (visible ASCII) cannot contain NUL and
//! the target comes last, so no two different triples give the same bytes
//! (pingora hashes exactly the bytes it is given) — and, unlike a
//! length-prefixed framing, every URL under a path is a byte prefix, which
//! purging by prefix relies on. GET and HEAD share a key.

use http::HeaderMap;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::{CacheKey, CacheMeta, VarianceBuilder};

use super::freshness::vary_fields;

const SEPARATOR: u8 = 0;

/// The path and query of `uri`, as a cache key's target (`/` when absent).
pub fn target(uri: &http::Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

/// The primary key bytes of `path_and_query` on `host` within `site`, or
/// of everything under it when `path_and_query` is a prefix.
pub fn primary(site: &str, host: &str, path_and_query: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + site.len() + host.len() + path_and_query.len());
    out.extend_from_slice(site.as_bytes());
    out.push(SEPARATOR);
    out.extend_from_slice(host.as_bytes());
    out.push(SEPARATOR);
    out.extend_from_slice(path_and_query.as_bytes());
    out
}

/// The key for `path_and_query` on `host`, within `site`.
pub fn cache_key(site: &str, host: &str, path_and_query: &str) -> CacheKey {
    hashed_once(primary(site, host, path_and_query), site)
}

/// A key whose primary hash is computed here, once: pingora's
/// `primary_bin` hashes the primary key (BLAKE2b) at every call, and a
/// request calls it several times (the lock, the lookup, the eviction
/// manager, the store's commit and catalog record), which was about 2% of
/// a fill's CPU. The hash kept is the one pingora computes, so nothing
/// stored under a key changes.
fn hashed_once(primary: Vec<u8>, site: &str) -> CacheKey {
    let mut key = CacheKey::new(primary, site);
    let hash = key.primary_bin();
    key.set_primary_bin_override(hash);
    key
}

/// What follows an object's primary key in the keys of its slice
/// records. It begins with NUL, which no target contains, so no URL's key
/// is another's slice key.
const SLICE: &[u8] = b"\0slice";

/// The byte prefix every slice record of `primary` shares: its identity
/// record's key is exactly this, block `i`'s is [`slice_block`].
pub fn slice_prefix(primary: &[u8]) -> Vec<u8> {
    [primary, SLICE].concat()
}

/// The key of the record that says what sliced `primary` is (validator,
/// length, block size, response header).
pub fn slice_identity(primary: &[u8], site: &str) -> CacheKey {
    hashed_once(slice_prefix(primary), site)
}

/// The key of block `index` of sliced `primary`.
pub fn slice_block(primary: &[u8], site: &str, index: u64) -> CacheKey {
    let mut key = slice_prefix(primary);
    key.push(SEPARATOR);
    key.extend_from_slice(index.to_string().as_bytes());
    hashed_once(key, site)
}

/// The block index a slice record key of `primary` names; `None` for its
/// record or a key of anything else.
pub fn slice_block_index(primary: &[u8], key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(slice_prefix(primary).as_slice())?;
    std::str::from_utf8(rest.strip_prefix(&[SEPARATOR])?)
        .ok()?
        .parse()
        .ok()
}

/// A primary key taken apart again: site, host and target.
pub fn parts(primary: &[u8]) -> Option<(&str, &str, &str)> {
    let text = std::str::from_utf8(primary).ok()?;
    let mut parts = text.splitn(3, char::from(SEPARATOR));
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// The variance of a request against a stored response's `Vary`
/// (RFC 9111 §4.1) plus any `extra` values a policy varies on: the listed
/// request fields' values in a canonical order. `None` when nothing varies.
pub fn variance(meta: &CacheMeta, request: &HeaderMap, extra: &[String]) -> Option<HashBinary> {
    let mut fields: Vec<String> = vary_fields(meta.response_header()).collect();
    if fields.is_empty() && extra.is_empty() {
        return None;
    }
    fields.sort_unstable();
    fields.dedup();
    let mut builder = VarianceBuilder::new();
    for field in &fields {
        // All lines of a field, joined as one list value, whitespace-normalised.
        let value = request
            .get_all(field.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        builder.add_owned_name_value(field.clone(), value.into_bytes());
    }
    for (i, value) in extra.iter().enumerate() {
        // Named so they can never collide with a header field name.
        builder.add_owned_name_value(format!("policy:{i}"), value.clone().into_bytes());
    }
    builder.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::ResponseHeader;
    use std::time::SystemTime;

    #[test]
    fn framing_keeps_parts_apart_and_paths_prefix() {
        let a = cache_key("s", "ab", "/c").combined();
        let b = cache_key("s", "a", "b/c").combined();
        assert_ne!(a, b);
        let key = primary("s", "h", "/img/a.png?x=1");
        assert!(key.starts_with(&primary("s", "h", "/img/")));
        assert!(!key.starts_with(&primary("s", "h2", "")));
        assert_eq!(parts(&key), Some(("s", "h", "/img/a.png?x=1")));
        assert_eq!(
            cache_key("s", "h", "/x").combined(),
            cache_key("s", "h", "/x").combined()
        );
    }

    /// The hash kept with a key is pingora's own: objects stored by
    /// earlier versions, and other nodes' shared-tier entries, still match.
    #[test]
    fn a_key_keeps_the_hash_pingora_computes() {
        let computed = |primary: Vec<u8>| CacheKey::new(primary, "s").primary_bin();
        let url = primary("s", "h", "/a?b");
        assert_eq!(
            cache_key("s", "h", "/a?b").primary_bin(),
            computed(url.clone())
        );
        assert_eq!(
            slice_identity(&url, "s").primary_bin(),
            computed(slice_prefix(&url))
        );
        let block = slice_block(&url, "s", 3);
        let bytes = block.primary_key_str().unwrap().as_bytes().to_vec();
        assert_eq!(block.primary_bin(), computed(bytes));
        let mut varied = cache_key("s", "h", "/a?b");
        varied.set_variance_key([7; 16]);
        let mut fresh = CacheKey::new(url, "s");
        fresh.set_variance_key([7; 16]);
        assert_eq!(varied.combined_bin(), fresh.combined_bin());
    }

    #[test]
    fn slice_keys_extend_the_url_key_and_name_their_block() {
        let url = primary("s", "h", "/v");
        let block = slice_block(&url, "s", 12)
            .primary_key_str()
            .map(str::to_owned);
        let block = block.expect("a text key").into_bytes();
        assert!(block.starts_with(&url));
        assert_eq!(slice_block_index(&url, &block), Some(12));
        assert_eq!(slice_block_index(&url, &slice_prefix(&url)), None);
        assert_eq!(slice_block_index(&primary("s", "h", "/w"), &block), None);
    }

    fn meta_with_vary(vary: &str) -> CacheMeta {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header("vary", vary).unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now, now, 0, 0, r)
    }

    #[test]
    fn variance_follows_listed_fields_only() {
        let meta = meta_with_vary("Accept-Encoding");
        let mut gzip = HeaderMap::new();
        gzip.insert("accept-encoding", "gzip".parse().unwrap());
        gzip.insert("user-agent", "a".parse().unwrap());
        let mut gzip2 = HeaderMap::new();
        gzip2.insert("accept-encoding", " gzip".parse().unwrap());
        gzip2.insert("user-agent", "b".parse().unwrap());
        let mut br = HeaderMap::new();
        br.insert("accept-encoding", "br".parse().unwrap());
        assert_eq!(variance(&meta, &gzip, &[]), variance(&meta, &gzip2, &[]));
        assert_ne!(variance(&meta, &gzip, &[]), variance(&meta, &br, &[]));
        let plain = CacheMeta::new(
            SystemTime::now(),
            SystemTime::now(),
            0,
            0,
            ResponseHeader::build(200, None).unwrap(),
        );
        assert!(variance(&plain, &gzip, &[]).is_none());
        let mobile = variance(&plain, &gzip, &["mobile".into()]);
        assert!(mobile.is_some());
        assert_ne!(mobile, variance(&plain, &gzip, &["desktop".into()]));
    }
}
