//! Property tests for the freshness rules over hostile response headers:
//! Cache-Control and CDN-Cache-Control (RFC 9111 §5.2, RFC 9213) with
//! invalid Structured Field syntax, huge and negative numbers, duplicates;
//! `Age`, `Date`, `Expires` and `Last-Modified` with absurd values. The
//! origin is not trusted: `decide` and the age arithmetic must never panic,
//! and a stored lifetime must stay within what the headers can say.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use pingora_cache::RespCacheable;
use pingora_http::ResponseHeader;
use proptest::prelude::*;
use stavka::cache::freshness::{
    corrected_initial_age, decide, merge_not_modified, remaining_ttl, vary_fields, FreshnessRules,
    CDN_CACHE_CONTROL,
};

/// RFC 9111 §1.2.2: delta-seconds beyond the greatest integer a cache can
/// represent mean that integer; pingora keeps `u32` seconds (and caps
/// overflow at `i32::MAX`), so no directive can ask for more than this.
const DELTA_CAP: u64 = u32::MAX as u64;

/// Expires and Last-Modified are IMF-fixdates, whose years have four
/// digits: nothing can be fresh past the year 10000.
fn latest_expiry() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(253_402_300_800)
}

/// A directive as an origin might (mis)write it.
fn directive() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("max-age"),
        Just("s-maxage"),
        Just("stale-while-revalidate"),
        Just("stale-if-error"),
        Just("no-store"),
        Just("no-cache"),
        Just("private"),
        Just("public"),
        Just("must-revalidate"),
        Just("proxy-revalidate"),
        Just("immutable"),
        Just("MAX-AGE"),
        Just("x-unknown"),
    ];
    let value = prop_oneof![
        Just(String::new()),
        any::<i64>().prop_map(|n| format!("={n}")),
        "=-?[0-9]{1,40}".prop_map(String::from),
        "=[0-9]{1,10}\\.[0-9]{1,6}".prop_map(String::from),
        "=\"[^\"]{0,12}\"?".prop_map(String::from),
        "=\\?[01a-z]".prop_map(String::from),
        "=\\([a-z\" ]{0,10}\\)?".prop_map(String::from),
        "=[\\x21-\\x7e]{0,10}".prop_map(String::from),
        "(;[a-z]{1,4}(=[0-9]{1,3})?){1,2}".prop_map(String::from),
    ];
    (name, value).prop_map(|(n, v)| format!("{n}{v}"))
}

/// A header line of directives, with odd separators now and then.
fn directives() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (
            proptest::collection::vec(directive(), 0..6),
            prop_oneof![Just(", "), Just(","), Just(" ,, "), Just(";"), Just(" ")],
        )
            .prop_map(|(ds, sep)| ds.join(sep).into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// A date field: well-formed at any second from 0 to the year 9999,
/// malformed, or garbage.
fn date() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u64..253_402_300_799)
            .prop_map(
                |s| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s)).into_bytes()
            ),
        Just(b"0".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"Thu, 01 Jan 1970 00:00:00 GMT".to_vec()),
        Just(b"Fri, 31 Dec 9999 23:59:59 GMT".to_vec()),
        "[ -~]{0,30}".prop_map(String::into_bytes),
    ]
}

/// What the response carries: zero or more lines of each field.
#[derive(Debug, Clone)]
struct Response {
    status: u16,
    fields: Vec<(&'static str, Vec<u8>)>,
}

fn response() -> impl Strategy<Value = Response> {
    let field = prop_oneof![
        4 => directives().prop_map(|v| ("cache-control", v)),
        4 => directives().prop_map(|v| (CDN_CACHE_CONTROL, v)),
        1 => date().prop_map(|v| ("date", v)),
        1 => date().prop_map(|v| ("expires", v)),
        1 => date().prop_map(|v| ("last-modified", v)),
        1 => prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            Just(u64::MAX.to_string()),
            "-?[0-9]{1,40}",
            "[ -~]{0,8}",
        ]
        .prop_map(|v| ("age", v.into_bytes())),
        1 => "[a-zA-Z*, -]{0,20}".prop_map(|v| ("vary", v.into_bytes())),
        1 => Just(("set-cookie", b"a=b".to_vec())),
        1 => Just(("authorization", b"x".to_vec())),
    ];
    (
        prop_oneof![Just(200u16), Just(206), Just(304), Just(404), 100u16..1000],
        proptest::collection::vec(field, 0..8),
    )
        .prop_map(|(status, fields)| Response { status, fields })
}

impl Response {
    /// The header as pingora would hand it over; values that are not valid
    /// header bytes could not have been parsed from the wire, so they are
    /// left out.
    fn header(&self) -> ResponseHeader {
        let mut resp = ResponseHeader::build(self.status, None).unwrap();
        for (name, value) in &self.fields {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                resp.append_header(*name, value).unwrap();
            }
        }
        resp
    }
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        (0u64..1_000_000).prop_map(Duration::from_secs),
        any::<u64>().prop_map(Duration::from_secs),
        Just(Duration::MAX),
    ]
}

fn rules() -> impl Strategy<Value = FreshnessRules> {
    (duration(), duration(), proptest::option::of(duration())).prop_map(
        |(default_swr, default_sie, heuristic_max_ttl)| FreshnessRules {
            default_swr,
            default_sie,
            heuristic_max_ttl,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    /// `decide` answers for any response and any rules; what it stores is
    /// never fresh beyond what the headers could say (2^31 s from a
    /// directive, an IMF-fixdate from Expires, the heuristic cap), carries
    /// no `Age`, and statuses it never stores stay unstored.
    #[test]
    fn decide_is_total_and_bounded(
        r in response(),
        auth in any::<bool>(),
        initial_age in duration(),
        rules in rules(),
    ) {
        let resp = r.header();
        let now = SystemTime::now();
        let decision = decide(&resp, auth, initial_age, &rules, now);
        let _ = vary_fields(&resp).count();
        if let RespCacheable::Cacheable(meta) = decision {
            prop_assert!(
                !matches!(r.status, 100..=199 | 206 | 304),
                "status {} stored", r.status
            );
            let cap = now + Duration::from_secs(DELTA_CAP);
            let heuristic = rules.heuristic_max_ttl.and_then(|c| now.checked_add(c));
            let bound = [Some(cap), Some(latest_expiry()), heuristic]
                .into_iter()
                .flatten()
                .max()
                .unwrap();
            prop_assert!(
                meta.fresh_until() <= bound,
                "fresh until {:?}, beyond {:?}", meta.fresh_until(), bound
            );
            let _ = remaining_ttl(&meta, now);
            let _ = meta.age();
            prop_assert!(meta.headers().get("age").is_none());
        }
    }

    /// A `max-age` of any size, even past u64, is capped rather than
    /// overflowing (RFC 9111 §1.2.2).
    #[test]
    fn huge_max_age_is_capped(digits in "[1-9][0-9]{0,60}") {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("cache-control", format!("max-age={digits}")).unwrap();
        let now = SystemTime::now();
        let rules = FreshnessRules {
            default_swr: Duration::ZERO,
            default_sie: Duration::ZERO,
            heuristic_max_ttl: None,
        };
        match decide(&resp, false, Duration::ZERO, &rules, now) {
            RespCacheable::Cacheable(meta) => {
                let ttl = remaining_ttl(&meta, now);
                prop_assert!(ttl > 0 && ttl as u64 <= DELTA_CAP, "ttl {}", ttl);
            }
            RespCacheable::Uncacheable(why) => prop_assert!(false, "not stored: {:?}", why),
        }
    }

    /// The corrected initial age (RFC 9111 §4.2.3) answers for any `Age`
    /// and `Date` and any clock order, without overflowing.
    #[test]
    fn corrected_initial_age_is_total(
        r in response(),
        request_secs in any::<u32>(),
        delay_secs in prop_oneof![Just(0u32), Just(1), any::<u32>()],
    ) {
        let resp = r.header();
        let request_time = UNIX_EPOCH + Duration::from_secs(request_secs.into());
        let response_time = request_time + Duration::from_secs(delay_secs.into());
        let _ = corrected_initial_age(&resp, request_time, response_time);
        let _ = corrected_initial_age(&resp, response_time, request_time);
    }

    /// An `Age` too large for any integer type is 2^31 seconds (RFC 9111
    /// §1.2.2), not an unparsable value read as zero: the response is old.
    #[test]
    fn huge_age_is_capped_not_ignored(digits in "[1-9][0-9]{10,60}") {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("age", digits).unwrap();
        let now = SystemTime::now();
        let age = corrected_initial_age(&resp, now, now + Duration::from_secs(1));
        prop_assert_eq!(age, Duration::from_secs((1 << 31) + 1));
    }

    /// A 304's fields merge into any stored header without panicking.
    #[test]
    fn merge_not_modified_is_total(stored in response(), update in response()) {
        let mut stored = stored.header();
        let update = update.header();
        merge_not_modified(&mut stored, &update.headers);
        for (name, _) in update.headers.iter() {
            let _ = HeaderName::from_bytes(name.as_str().as_bytes()).unwrap();
        }
    }
}
