//! Invalidation after unsafe methods (RFC 9111 §4.4): a successful POST, PUT,
//! DELETE, … removes the cached responses of its target URI and of same-host
//! `Location` / `Content-Location` targets.

use http::{header, Method};
use pingora_http::{RequestHeader, ResponseHeader};

use super::key::{primary, target};
use super::store::CacheStore;
use crate::host_name;

/// RFC 9110 §9.2.1: the methods that change state on the origin.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Remove the entries `req` (answered with `resp`) may have changed on
/// `host` within `site`; returns how many were removed.
pub async fn after_unsafe(
    store: &'static CacheStore,
    site: &str,
    host: &str,
    req: &RequestHeader,
    resp: &ResponseHeader,
) -> usize {
    let mut targets = vec![target(&req.uri).to_owned()];
    for field in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(uri) = resp.headers.get(&field).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(uri) = uri.parse::<http::Uri>() else {
            continue;
        };
        let same_host = uri.host().is_none_or(|h| host_name::normalize(h) == host);
        if same_host && uri.path().starts_with('/') {
            targets.push(target(&uri).to_owned());
        }
    }
    let mut removed = 0;
    for target in targets {
        removed += store.invalidate(&primary(site, host, &target)).await;
    }
    removed
}
