//! Whether a response may be stored, and for how long it is fresh.
//!
//! pingora-cache supplies the Cache-Control parser and its RFC reading of each
//! directive; this module adds what a CDN cache needs on top: CDN-Cache-Control
//! precedence (RFC 9213), the corrected initial age (RFC 9111 §4.2.3), Expires
//! relative to Date (§4.2.1), opt-in heuristic freshness (§4.2.2), `Vary: *`,
//! and not storing `Set-Cookie` responses unless the origin says so.

use std::time::{Duration, SystemTime};

use http::{header, StatusCode};
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::filters::{calculate_expires_header_time, calculate_serve_stale_durations};
use pingora_cache::{CacheMeta, CacheMetaDefaults, NoCacheReason, RespCacheable};
use pingora_http::ResponseHeader;

/// The CDN-targeted field of RFC 9213: when present and valid it replaces
/// Cache-Control (and Expires) for this cache; it is passed on downstream
/// unless the site strips it.
pub const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

/// The rules that responses do not carry themselves.
#[derive(Debug, Clone, Copy)]
pub struct FreshnessRules {
    /// stale-while-revalidate when the response does not say.
    pub default_swr: Duration,
    /// stale-if-error when the response does not say.
    pub default_sie: Duration,
    /// `Some(cap)` turns on heuristic freshness: 10% of the age of
    /// `Last-Modified`, at most `cap`.
    pub heuristic_max_ttl: Option<Duration>,
}

/// Why a response was not stored, in words for logs and `Cache-Status` detail.
pub mod reason {
    use pingora_cache::NoCacheReason;
    /// `Vary: *` can never match a later request (RFC 9111 §4.1).
    pub const VARY_STAR: NoCacheReason = NoCacheReason::Custom("vary-star");
    /// Request had Authorization and the response did not allow sharing (§3.5).
    pub const AUTHORIZATION: NoCacheReason = NoCacheReason::Custom("authorization");
    /// `Set-Cookie` without `public` or `s-maxage`.
    pub const SET_COOKIE: NoCacheReason = NoCacheReason::Custom("set-cookie");
    /// A status this cache does not store (1xx, 206, 304).
    pub const STATUS: NoCacheReason = NoCacheReason::Custom("status");
    /// No explicit freshness and heuristics are off.
    pub const NO_FRESHNESS: NoCacheReason = NoCacheReason::Custom("no-freshness");
}

/// Remaining freshness in whole seconds; negative once stale.
pub fn remaining_ttl(meta: &CacheMeta, now: SystemTime) -> i64 {
    match meta.fresh_until().duration_since(now) {
        Ok(left) => left.as_secs() as i64,
        Err(past) => -(past.duration().as_secs() as i64),
    }
}

/// CDN-Cache-Control when it is a valid Structured Field dictionary whose
/// known directives have the types RFC 9111 gives them (RFC 9213 §2.1):
/// anything else is ignored as a whole, and Cache-Control decides.
fn targeted_cache_control(resp: &ResponseHeader) -> Option<CacheControl> {
    let mut lines = resp.headers.get_all(CDN_CACHE_CONTROL).iter().peekable();
    lines.peek()?;
    let mut joined = Vec::new();
    for line in lines {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(line.as_bytes());
    }
    let dictionary = sfv::Parser::parse_dictionary(&joined).ok()?;
    if dictionary.is_empty() || !dictionary.iter().all(|(k, v)| well_typed(k, v)) {
        return None;
    }
    CacheControl::from_resp_headers_named(CDN_CACHE_CONTROL, resp)
}

/// Whether a targeted directive's value has its RFC 9111 type: delta-seconds
/// are non-negative integers, flags are bare (true), `no-cache` and `private`
/// are bare or a list of field names; unknown directives may be anything.
fn well_typed(name: &str, value: &sfv::ListEntry) -> bool {
    use sfv::{BareItem, ListEntry};
    let item = match value {
        ListEntry::Item(item) => Some(&item.bare_item),
        ListEntry::InnerList(_) => None,
    };
    match name {
        "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error" => {
            matches!(item, Some(BareItem::Integer(n)) if *n >= 0)
        }
        "must-revalidate" | "proxy-revalidate" | "no-store" | "public" | "no-transform"
        | "immutable" | "must-understand" => matches!(item, Some(BareItem::Boolean(true))),
        "no-cache" | "private" => match value {
            ListEntry::Item(item) => matches!(item.bare_item, BareItem::Boolean(true)),
            ListEntry::InnerList(list) => list
                .items
                .iter()
                .all(|i| matches!(i.bare_item, BareItem::String(_) | BareItem::Token(_))),
        },
        _ => true,
    }
}

/// The response's age when it reached us (RFC 9111 §4.2.3), from the
/// origin's `Age` and `Date` and the time the request was sent.
pub fn corrected_initial_age(
    resp: &ResponseHeader,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = resp
        .headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| delta_seconds(v.trim()))
        .map(Duration::from_secs)
        .unwrap_or_default();
    let apparent_age = date_header(resp)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or_default();
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    apparent_age.max(age_value.saturating_add(response_delay))
}

/// A delta-seconds value (RFC 9111 §1.2.2); one too large to represent is
/// 2^31, as that section requires, rather than an error that would read as
/// an age of zero.
fn delta_seconds(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().map_or(OVERFLOW, |n| n.min(OVERFLOW)))
}

/// The largest delta-seconds RFC 9111 §1.2.2 asks a cache to handle:
/// 2^31 seconds, about 68 years.
const OVERFLOW: u64 = 1 << 31;

/// Decide whether `resp` may be stored and build its [`CacheMeta`].
///
/// `initial_age` backdates the entry so that `Age` on later hits and the
/// remaining freshness both count the time the response spent upstream.
pub fn decide(
    resp: &ResponseHeader,
    authorization_present: bool,
    initial_age: Duration,
    rules: &FreshnessRules,
    now: SystemTime,
) -> RespCacheable {
    use RespCacheable::Uncacheable;

    if resp.status.is_informational()
        || resp.status == StatusCode::PARTIAL_CONTENT
        || resp.status == StatusCode::NOT_MODIFIED
    {
        return Uncacheable(reason::STATUS);
    }
    if vary_fields(resp).any(|f| f == "*") {
        return Uncacheable(reason::VARY_STAR);
    }
    // RFC 9213 §2.1: a valid CDN-Cache-Control replaces Cache-Control here.
    let cdn_cc = targeted_cache_control(resp);
    let targeted = cdn_cc.is_some();
    let cc = cdn_cc.or_else(|| CacheControl::from_resp_headers(resp));

    if authorization_present
        && !cc
            .as_ref()
            .is_some_and(|cc| cc.allow_caching_authorized_req())
    {
        return Uncacheable(reason::AUTHORIZATION);
    }
    if cc
        .as_ref()
        .is_some_and(|cc| cc.is_cacheable() == Cacheable::No)
    {
        return Uncacheable(NoCacheReason::OriginNotCache);
    }
    if resp.headers.contains_key(header::SET_COOKIE)
        && !cc
            .as_ref()
            .is_some_and(|cc| cc.public() || cc.s_maxage().ok().flatten().is_some())
    {
        return Uncacheable(reason::SET_COOKIE);
    }

    let lifetime = cc
        .as_ref()
        .and_then(|cc| cc.fresh_duration())
        .or_else(|| (!targeted).then(|| expires_lifetime(resp, now)).flatten())
        .or_else(|| heuristic_lifetime(resp, rules.heuristic_max_ttl?, now));
    let Some(lifetime) = lifetime else {
        return Uncacheable(reason::NO_FRESHNESS);
    };

    // Age and freshness count from when the response was generated, not from
    // when it reached us (§4.2.3). That goes in the epoch override rather than
    // in `created`, which pingora compares against the primary entry's
    // provenance to tombstone Vary variants and must stay our own clock.
    let epoch = now.checked_sub(initial_age).unwrap_or(now);
    // RFC 9111 §4.2.4: `no-cache` forbids serving stale unless the response
    // itself allows it, so it gets no default windows (pingora's reading of
    // the directives already zeroes them for must-revalidate and the like).
    let defaults = if cc.as_ref().is_some_and(|cc| cc.no_cache()) {
        CacheMetaDefaults::new(|_| None, 0, 0)
    } else {
        CacheMetaDefaults::new(
            |_| None,
            saturating_secs(rules.default_swr),
            saturating_secs(rules.default_sie),
        )
    };
    let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &defaults);
    let mut stored = resp.clone();
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut stored);
    }
    RespCacheable::Cacheable(stored_entry(stored, epoch, lifetime, (swr, sie), now))
}

/// The metadata of a response being stored: fresh for `lifetime` counted
/// from `epoch` (a zero lifetime is stale at once, so every use
/// revalidates), with the stale-while-revalidate and stale-if-error windows
/// `stale`. The origin's `Age` is dropped: the epoch already counts it, and
/// a stored copy must not add it twice.
pub fn stored_entry(
    mut header: ResponseHeader,
    epoch: SystemTime,
    lifetime: Duration,
    stale: (u32, u32),
    now: SystemTime,
) -> CacheMeta {
    header.remove_header(&header::AGE);
    let fresh_until = if lifetime.is_zero() {
        epoch - Duration::from_secs(1)
    } else {
        epoch + lifetime
    };
    let mut meta = CacheMeta::new(fresh_until, now, stale.0, stale.1, header);
    if epoch != now {
        meta.set_epoch_override(epoch);
    }
    meta
}

/// RFC 9111 §3.2 / §4.3.4: a 304 updates every stored header field it
/// carries, except those the stored body depends on and hop-by-hop fields.
/// (pingora merges only a fixed handful.) `Vary` is kept: a changed Vary
/// arrives with a full response, not a 304.
pub fn merge_not_modified(stored: &mut ResponseHeader, not_modified: &http::HeaderMap) {
    const KEEP: [&str; 13] = [
        "content-length",
        "content-encoding",
        "content-range",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "vary",
        "age",
    ];
    for name in not_modified.keys() {
        if KEEP.contains(&name.as_str()) {
            continue;
        }
        stored.remove_header(name);
        for value in not_modified.get_all(name) {
            // The name and value came from a parsed header: they are valid.
            let _ = stored.append_header(name.clone(), value.clone());
        }
    }
}

/// The field names a response varies on, lower-cased.
pub fn vary_fields(resp: &ResponseHeader) -> impl Iterator<Item = String> + '_ {
    resp.headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty())
}

/// RFC 9110 §6.6.1: a response that arrives without a valid `Date` gets
/// the time it was `received`, so that a stored copy says when it was
/// fetched (a hit keeps this `Date`, the one the origin sent when it sent
/// one) and the age computed downstream from `Date` stays right.
pub fn stamp_date(resp: &mut ResponseHeader, received: SystemTime) {
    if date_header(resp).is_none() {
        // An HTTP-date is always a valid field value.
        let _ = resp.insert_header(header::DATE, httpdate::fmt_http_date(received));
    }
}

fn date_header(resp: &ResponseHeader) -> Option<SystemTime> {
    let date = resp.headers.get(header::DATE)?.to_str().ok()?;
    httpdate::parse_http_date(date).ok()
}

/// RFC 9111 §4.2.1: Expires minus Date; an invalid Expires is already stale.
fn expires_lifetime(resp: &ResponseHeader, now: SystemTime) -> Option<Duration> {
    let expires = calculate_expires_header_time(resp)?;
    let date = date_header(resp).unwrap_or(now);
    // An Expires far from Date (year 9999 against 1970) is capped like a
    // delta-seconds value, so no entry is fresh for longer than 2^31 s.
    let lifetime = expires.duration_since(date).unwrap_or_default();
    Some(lifetime.min(Duration::from_secs(OVERFLOW)))
}

/// RFC 9110 §15.1: the statuses that are heuristically cacheable.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// RFC 9111 §4.2.2: a fraction (10%) of the time since Last-Modified.
fn heuristic_lifetime(resp: &ResponseHeader, cap: Duration, now: SystemTime) -> Option<Duration> {
    if !heuristically_cacheable(resp.status) {
        return None;
    }
    let last_modified = resp.headers.get(header::LAST_MODIFIED)?.to_str().ok()?;
    let last_modified = httpdate::parse_http_date(last_modified).ok()?;
    let since = date_header(resp)
        .unwrap_or(now)
        .duration_since(last_modified)
        .ok()?;
    Some((since / 10).min(cap))
}

fn saturating_secs(d: Duration) -> u32 {
    d.as_secs().try_into().unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_DEFAULTS: FreshnessRules = FreshnessRules {
        default_swr: Duration::ZERO,
        default_sie: Duration::ZERO,
        heuristic_max_ttl: None,
    };

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn ttl(r: &ResponseHeader, auth: bool, rules: &FreshnessRules) -> Result<u64, &'static str> {
        let now = SystemTime::now();
        match decide(r, auth, Duration::ZERO, rules, now) {
            RespCacheable::Cacheable(meta) => Ok(meta
                .fresh_until()
                .duration_since(now)
                .map_or(0, |d| d.as_secs())),
            RespCacheable::Uncacheable(why) => Err(why.as_str()),
        }
    }

    #[test]
    fn rfc9111_s_maxage_wins_over_max_age() {
        let r = resp(200, &[("cache-control", "max-age=10, s-maxage=100")]);
        assert_eq!(ttl(&r, false, &NO_DEFAULTS), Ok(100));
    }

    #[test]
    fn rfc9213_cdn_cache_control_takes_precedence() {
        let r = resp(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
        );
        assert_eq!(ttl(&r, false, &NO_DEFAULTS), Ok(60));
        let r = resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
        );
        assert!(ttl(&r, false, &NO_DEFAULTS).is_err());
    }

    #[test]
    fn rfc9111_no_store_private_and_missing_freshness_are_not_stored() {
        for cc in ["no-store", "private", "private, max-age=60"] {
            assert!(
                ttl(&resp(200, &[("cache-control", cc)]), false, &NO_DEFAULTS).is_err(),
                "{cc}"
            );
        }
        assert_eq!(
            ttl(&resp(200, &[]), false, &NO_DEFAULTS),
            Err("no-freshness")
        );
    }

    #[test]
    fn rfc9111_no_cache_is_stored_but_stale() {
        let now = SystemTime::now();
        let r = resp(200, &[("cache-control", "no-cache")]);
        let RespCacheable::Cacheable(meta) = decide(&r, false, Duration::ZERO, &NO_DEFAULTS, now)
        else {
            panic!("no-cache responses may be stored");
        };
        assert!(!meta.is_fresh(now));
    }

    #[test]
    fn rfc9111_s3_5_authorization_needs_explicit_permission() {
        let r = resp(200, &[("cache-control", "max-age=60")]);
        assert_eq!(ttl(&r, true, &NO_DEFAULTS), Err("authorization"));
        for cc in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            assert!(
                ttl(&resp(200, &[("cache-control", cc)]), true, &NO_DEFAULTS).is_ok(),
                "{cc}"
            );
        }
    }

    #[test]
    fn rfc9111_expires_is_relative_to_date() {
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now - Duration::from_secs(3600));
        let expires =
            httpdate::fmt_http_date(now - Duration::from_secs(3600) + Duration::from_secs(120));
        let r = resp(200, &[("date", &date), ("expires", &expires)]);
        let got = ttl(&r, false, &NO_DEFAULTS).unwrap();
        assert!((118..=120).contains(&got), "{got}");
        let r = resp(200, &[("expires", "not a date")]);
        assert_eq!(ttl(&r, false, &NO_DEFAULTS), Ok(0));
    }

    #[test]
    fn rfc9111_heuristics_only_when_configured() {
        let lm = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(1000));
        let r = resp(200, &[("last-modified", &lm)]);
        assert!(ttl(&r, false, &NO_DEFAULTS).is_err());
        let rules = FreshnessRules {
            heuristic_max_ttl: Some(Duration::from_secs(60)),
            ..NO_DEFAULTS
        };
        assert_eq!(ttl(&r, false, &rules), Ok(60));
        let rules = FreshnessRules {
            heuristic_max_ttl: Some(Duration::from_secs(3600)),
            ..NO_DEFAULTS
        };
        assert!((99..=100).contains(&ttl(&r, false, &rules).unwrap()));
    }

    #[test]
    fn rfc9111_vary_star_and_set_cookie() {
        let r = resp(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept, *")],
        );
        assert_eq!(ttl(&r, false, &NO_DEFAULTS), Err("vary-star"));
        let r = resp(
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
        );
        assert_eq!(ttl(&r, false, &NO_DEFAULTS), Err("set-cookie"));
        let r = resp(
            200,
            &[
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "a=b"),
            ],
        );
        assert_eq!(ttl(&r, false, &NO_DEFAULTS), Ok(60));
    }

    #[test]
    fn rfc9111_4_2_3_initial_age_backdates_the_entry() {
        let now = SystemTime::now();
        let r = resp(200, &[("cache-control", "max-age=100"), ("age", "30")]);
        let age = corrected_initial_age(&r, now - Duration::from_secs(2), now);
        assert_eq!(age, Duration::from_secs(32));
        let RespCacheable::Cacheable(meta) = decide(&r, false, age, &NO_DEFAULTS, now) else {
            panic!()
        };
        assert_eq!(
            meta.fresh_until().duration_since(now).unwrap().as_secs(),
            68
        );
        assert_eq!(
            meta.created(),
            now,
            "created stays our clock: Vary tombstones compare it"
        );
        assert!(meta.headers().get("age").is_none());
    }

    #[test]
    fn rfc9111_4_3_4_not_modified_updates_stored_fields() {
        let mut stored = resp(
            200,
            &[
                ("content-type", "text/plain"),
                ("content-length", "5"),
                ("x-a", "old"),
                ("etag", "\"1\""),
            ],
        );
        let fresh = resp(
            304,
            &[
                ("x-a", "new"),
                ("x-b", "added"),
                ("content-length", "0"),
                ("etag", "\"1\""),
            ],
        );
        merge_not_modified(&mut stored, &fresh.headers);
        assert_eq!(stored.headers["x-a"], "new");
        assert_eq!(stored.headers["x-b"], "added");
        assert_eq!(stored.headers["content-length"], "5");
        assert_eq!(stored.headers["content-type"], "text/plain");
        assert_eq!(stored.headers.get_all("etag").iter().count(), 1);
    }

    #[test]
    fn rfc5861_windows_from_response_or_defaults() {
        let now = SystemTime::now();
        let rules = FreshnessRules {
            default_sie: Duration::from_secs(300),
            ..NO_DEFAULTS
        };
        let r = resp(
            200,
            &[("cache-control", "max-age=1, stale-while-revalidate=30")],
        );
        let RespCacheable::Cacheable(meta) = decide(&r, false, Duration::ZERO, &rules, now) else {
            panic!()
        };
        assert_eq!(meta.stale_while_revalidate_sec(), 30);
        assert_eq!(meta.stale_if_error_sec(), 300);
        let r = resp(
            200,
            &[(
                "cache-control",
                "max-age=1, must-revalidate, stale-if-error=30",
            )],
        );
        let RespCacheable::Cacheable(meta) = decide(&r, false, Duration::ZERO, &rules, now) else {
            panic!()
        };
        assert_eq!(
            meta.stale_if_error_sec(),
            0,
            "must-revalidate forbids serving stale"
        );
    }
}
