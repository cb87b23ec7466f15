//! Test a policy with plain `cargo test`, without a server.
//!
//! Built for any target but `wasm32`, the SDK answers the host imports
//! from this module instead of the proxy: the request's fields, response
//! headers, the key-value store, a clock you set, token buckets for
//! [`rate_limit`](crate::rate_limit), and the log lines, counters and
//! gauges a hook wrote, all per test thread. Call the hooks directly on
//! requests, responses and entries made here, and check their outcomes,
//! and which request fields they read ([`request_reads`]): those are what
//! the host would key a reused decision on. The prefetches a hook asked
//! for ([`prefetches`], [`prefetched`]), the body it wanted
//! ([`wanted_body`]) and the Early Hints it added ([`early_hints`]) are
//! recorded too, and a test chooses what `fetch` answers
//! ([`answer_prefetches`]).
//!
//! ```
//! use stavka_policy::testing::{self, response, RequestBuilder};
//! use stavka_policy::{Policy, ResponseDecision};
//! # struct MyPolicy;
//! # impl Policy for MyPolicy {}
//!
//! testing::reset();
//! testing::kv_put("tokens", "t");
//! let req = RequestBuilder::new("GET", "/static/a.css")
//!     .header("authorization", "Bearer t")
//!     .client_addr("192.0.2.1")
//!     .build();
//! let outcome = MyPolicy::on_response(&req, &response(200));
//! assert!(matches!(outcome.decision, ResponseDecision::Default));
//! assert!(testing::request_reads().is_empty(), "the default hook reads nothing");
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

use crate::prefetch::{MAX_EARLY_HINTS, MAX_HEADERS, MAX_TARGET_BYTES};
use crate::request::Field;
use crate::{Entry, Level, Refusal, Request, Response};

/// What the host would hold for the hook being tested.
#[derive(Default)]
struct Host {
    request_headers: HashMap<String, String>,
    response_headers: HashMap<String, String>,
    kv: HashMap<String, String>,
    now_ms: u64,
    monotonic_ns: u64,
    logs: Vec<(Level, String)>,
    counters: HashMap<String, u64>,
    gauges: HashMap<String, i64>,
    reads: Vec<String>,
    buckets: HashMap<String, Bucket>,
    prefetches: Vec<Prefetch>,
    prefetch_answer: Option<PrefetchAnswer>,
    wanted_body: Option<u32>,
    want_body_refused: bool,
    early_hints: Vec<String>,
    early_hints_refused: bool,
}

/// What a test has `fetch` answer for a valid target.
type PrefetchAnswer = Box<dyn FnMut(&str) -> Result<(), Refusal>>;

/// One `prefetch::fetch` a hook made, and what the host double answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefetch {
    /// The path and query asked for.
    pub target: String,
    /// The extra request header fields, names lower-case.
    pub headers: Vec<(String, String)>,
    /// `Ok` if it was queued.
    pub answer: Result<(), Refusal>,
}

/// A token bucket, as the host keeps one per `rate_limit` key.
struct Bucket {
    tokens: f64,
    at_ns: u64,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

fn with<T>(f: impl FnOnce(&mut Host) -> T) -> T {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Forget everything set or recorded on this thread.
pub fn reset() {
    with(|h| *h = Host::default());
}

/// A request header field every test request on this thread has unless
/// it sets that field itself ([`RequestBuilder::header`]).
pub fn set_request_header(name: &str, value: &str) {
    with(|h| {
        h.request_headers
            .insert(name.to_ascii_lowercase(), value.to_owned())
    });
}

/// A response (or cached entry) header field the hook reads.
pub fn set_response_header(name: &str, value: &str) {
    with(|h| {
        h.response_headers
            .insert(name.to_ascii_lowercase(), value.to_owned())
    });
}

/// A value in the module's key-value store (`kv`).
pub fn kv_put(key: &str, value: &str) {
    with(|h| h.kv.insert(key.to_owned(), value.to_owned()));
}

/// What `now_ms` answers; `monotonic_ns` follows it.
pub fn set_now_ms(ms: u64) {
    with(|h| {
        h.now_ms = ms;
        h.monotonic_ns = ms * 1_000_000;
    });
}

/// Move both clocks `ms` forward: token buckets refill by what that earns.
pub fn advance_ms(ms: u64) {
    with(|h| {
        h.now_ms += ms;
        h.monotonic_ns += ms * 1_000_000;
    });
}

/// The request fields the hooks asked the host for on this thread, in
/// order: `method`, `scheme`, `host`, `path`, `query`, `client-addr`, and
/// `header:NAME`. The SDK asks at most once per field per request, and
/// only for what a hook reads; a decision the host reuses is keyed by
/// exactly these. [`reset`] (or [`clear_request_reads`]) starts over.
pub fn request_reads() -> Vec<String> {
    with(|h| h.reads.clone())
}

/// Forget the request fields read so far ([`request_reads`]).
pub fn clear_request_reads() {
    with(|h| h.reads.clear());
}

/// The lines the hooks logged, in order.
pub fn logs() -> Vec<(Level, String)> {
    with(|h| h.logs.clone())
}

/// A counter's total.
pub fn counter_value(name: &str) -> u64 {
    with(|h| h.counters.get(name).copied().unwrap_or(0))
}

/// A gauge's last value.
pub fn gauge_value(name: &str) -> Option<i64> {
    with(|h| h.gauges.get(name).copied())
}

/// Every `prefetch::fetch` the hooks made on this thread, in order, refused
/// ones included.
pub fn prefetches() -> Vec<Prefetch> {
    with(|h| h.prefetches.clone())
}

/// The targets of the prefetches that were queued, in order.
pub fn prefetched() -> Vec<String> {
    with(|h| {
        h.prefetches
            .iter()
            .filter(|p| p.answer.is_ok())
            .map(|p| p.target.clone())
            .collect()
    })
}

/// Have `fetch` answer with `answer` for each later prefetch of a valid
/// target (a path that starts with one `/`, fits in 8 KiB, has no
/// fragment, spaces, controls or non-ASCII, and at most 16 header fields:
/// the double refuses the others as the host does). By
/// default every valid prefetch is queued; `|_| Err(Refusal::QueueFull)`
/// plays a full queue, and a closure that counts can refuse from the
/// n-th on.
pub fn answer_prefetches(answer: impl FnMut(&str) -> Result<(), Refusal> + 'static) {
    with(|h| h.prefetch_answer = Some(Box::new(answer)));
}

/// The most bytes the last `prefetch::want_body` asked for (after the
/// SDK's clamp to 1 MiB), if a hook asked.
pub fn wanted_body() -> Option<u32> {
    with(|h| h.wanted_body)
}

/// The links `prefetch::early_hint` added, in order.
pub fn early_hints() -> Vec<String> {
    with(|h| h.early_hints.clone())
}

/// Have `want_body` and `early_hint` answer `false` (as in a hook where
/// the host does not offer them), or `true` again.
pub fn refuse_body_and_hints(refuse: bool) {
    with(|h| {
        h.want_body_refused = refuse;
        h.early_hints_refused = refuse;
    });
}

/// Forget the prefetches, the wanted body and the Early Hints recorded so
/// far, as for a new request (the 16-link limit counts from here); what
/// `fetch` answers stays.
pub fn clear_prefetches() {
    with(|h| {
        h.prefetches.clear();
        h.wanted_body = None;
        h.early_hints.clear();
    });
}

/// A request as the host would pass it: `target` is the path and query,
/// the scheme `http`, the host `localhost`, no header fields (but those of
/// [`set_request_header`]) and no client address. [`RequestBuilder`]
/// makes any other.
pub fn request(method: &str, target: &str) -> Request<'static> {
    RequestBuilder::new(method, target).build()
}

/// A test request's fields, answered through the host double so that
/// reading one is recorded as the host would see it.
pub(crate) struct Fields {
    method: String,
    scheme: String,
    host: String,
    path: String,
    query: Option<String>,
    client_addr: Option<String>,
    headers: Vec<(String, String)>,
}

/// Makes a [`Request`] for a test, field by field.
///
/// ```
/// use stavka_policy::testing::RequestBuilder;
///
/// let req = RequestBuilder::new("GET", "/a?x=1")
///     .scheme("https")
///     .host("example.com")
///     .header("Cookie", "session=abc")
///     .client_addr("192.0.2.1")
///     .build();
/// assert_eq!(req.query_param("x"), Some("1"));
/// assert_eq!(req.cookie("session").as_deref(), Some("abc"));
/// ```
pub struct RequestBuilder {
    fields: Fields,
}

impl RequestBuilder {
    /// A request for `target` (the path and query), otherwise as
    /// [`request`] makes it.
    pub fn new(method: &str, target: &str) -> RequestBuilder {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (target.to_owned(), None),
        };
        RequestBuilder {
            fields: Fields {
                method: method.to_owned(),
                scheme: "http".to_owned(),
                host: "localhost".to_owned(),
                path,
                query,
                client_addr: None,
                headers: Vec::new(),
            },
        }
    }

    /// The method.
    pub fn method(mut self, method: &str) -> RequestBuilder {
        self.fields.method = method.to_owned();
        self
    }

    /// The scheme (`http` or `https`).
    pub fn scheme(mut self, scheme: &str) -> RequestBuilder {
        self.fields.scheme = scheme.to_owned();
        self
    }

    /// The Host; kept lower-case, as the host passes it.
    pub fn host(mut self, host: &str) -> RequestBuilder {
        self.fields.host = host.to_ascii_lowercase();
        self
    }

    /// The path, percent-encoded.
    pub fn path(mut self, path: &str) -> RequestBuilder {
        self.fields.path = path.to_owned();
        self
    }

    /// The query string without `?`, or `None` for a request without one.
    pub fn query(mut self, query: Option<&str>) -> RequestBuilder {
        self.fields.query = query.map(str::to_owned);
        self
    }

    /// Add a header field; a field added twice has its values joined with
    /// ", ", as the host joins the lines of one field.
    pub fn header(mut self, name: &str, value: &str) -> RequestBuilder {
        let name = name.to_ascii_lowercase();
        match self.fields.headers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            None => self.fields.headers.push((name, value.to_owned())),
        }
        self
    }

    /// The client's IP address.
    pub fn client_addr(mut self, addr: &str) -> RequestBuilder {
        self.fields.client_addr = Some(addr.to_owned());
        self
    }

    /// The request, as a hook gets it.
    pub fn build(self) -> Request<'static> {
        Request::from_test(self.fields)
    }
}

/// Answer a test request's field as the host would, and record the read.
pub(crate) fn read(fields: &Fields, field: Field) -> Option<String> {
    let (read, value) = match field {
        Field::Method => ("method".to_owned(), Some(fields.method.clone())),
        Field::Scheme => ("scheme".to_owned(), Some(fields.scheme.clone())),
        Field::Host => ("host".to_owned(), Some(fields.host.clone())),
        Field::Path => ("path".to_owned(), Some(fields.path.clone())),
        Field::Query => ("query".to_owned(), fields.query.clone()),
        Field::ClientAddr => ("client-addr".to_owned(), fields.client_addr.clone()),
        Field::Header(name) => {
            let name = name.to_ascii_lowercase();
            let own = fields.headers.iter().find(|(n, _)| *n == name);
            let value = match own {
                Some((_, value)) => Some(value.clone()),
                None => with(|h| h.request_headers.get(&name).cloned()),
            };
            (format!("header:{name}"), value)
        }
    };
    with(|h| h.reads.push(read));
    value
}

/// An origin response with `status`.
pub fn response(status: u16) -> Response {
    Response { status }
}

/// A cached entry with `status`, `ttl_seconds` of freshness left (negative
/// once stale) and `tags`.
pub fn entry(status: u16, ttl_seconds: i64, tags: &[&str]) -> Entry {
    Entry {
        status,
        age_seconds: 0,
        ttl_seconds,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

/// The host imports, answered from this thread's state.
pub(crate) mod host {
    use super::{with, Bucket};
    use crate::Level;

    pub fn response_header(name: &str) -> Option<String> {
        with(|h| h.response_headers.get(&name.to_ascii_lowercase()).cloned())
    }

    pub fn log(level: Level, message: &str) {
        with(|h| h.logs.push((level, message.to_owned())));
    }

    pub fn kv_get(key: &str) -> Option<String> {
        with(|h| h.kv.get(key).cloned())
    }

    pub fn counter_add(name: &str, delta: u64) {
        with(|h| *h.counters.entry(name.to_owned()).or_default() += delta);
    }

    pub fn gauge_set(name: &str, value: i64) {
        with(|h| h.gauges.insert(name.to_owned(), value));
    }

    pub fn wall_clock_ms() -> u64 {
        with(|h| h.now_ms)
    }

    pub fn monotonic_ns() -> u64 {
        with(|h| h.monotonic_ns)
    }

    /// The host's token bucket, on the double's monotonic clock: full at
    /// first use, refilled at the rate of the latest call (nothing for a
    /// negative or non-finite one), capped at the latest burst.
    pub fn rate_limit(key: &str, per_second: f64, burst: u32) -> bool {
        let per_second = if per_second.is_finite() {
            per_second.max(0.0)
        } else {
            0.0
        };
        let burst = f64::from(burst);
        with(|h| {
            let now = h.monotonic_ns;
            let bucket = h.buckets.entry(key.to_owned()).or_insert(Bucket {
                tokens: burst,
                at_ns: now,
            });
            let earned = now.saturating_sub(bucket.at_ns) as f64 / 1e9 * per_second;
            bucket.tokens = (bucket.tokens + earned).min(burst);
            bucket.at_ns = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                true
            } else {
                false
            }
        })
    }
}

/// The prefetch imports, answered and recorded on this thread.
pub(crate) mod prefetch {
    use super::{with, Prefetch, MAX_EARLY_HINTS, MAX_HEADERS, MAX_TARGET_BYTES};
    use crate::Refusal;

    pub fn fetch(target: &str, headers: &[(String, String)]) -> Result<(), Refusal> {
        let invalid = !target.starts_with('/')
            || target.starts_with("//")
            || target.len() > MAX_TARGET_BYTES
            || target.contains('#')
            || !target.bytes().all(|b| b.is_ascii_graphic());
        let answer = if invalid {
            Err(Refusal::InvalidTarget)
        } else if headers.len() > MAX_HEADERS {
            Err(Refusal::HeaderNotAllowed)
        } else {
            // Called without the double borrowed, so the test's closure may
            // use the double itself.
            match with(|h| h.prefetch_answer.take()) {
                Some(mut answer) => {
                    let result = answer(target);
                    with(|h| {
                        h.prefetch_answer.get_or_insert(answer);
                    });
                    result
                }
                None => Ok(()),
            }
        };
        with(|h| {
            h.prefetches.push(Prefetch {
                target: target.to_owned(),
                headers: headers.to_vec(),
                answer,
            })
        });
        answer
    }

    pub fn want_body(max_bytes: u32) -> bool {
        with(|h| {
            if h.want_body_refused || max_bytes == 0 {
                return false;
            }
            h.wanted_body = Some(max_bytes);
            true
        })
    }

    /// Refuses, as the host does, a link that does not start with `<` or
    /// that a field value cannot carry (RFC 9110 §5.5: visible ASCII,
    /// spaces and tabs only), and links past the 16th.
    pub fn early_hint(link: &str) -> bool {
        with(|h| {
            let unfit = !link.trim_start().starts_with('<')
                || !link
                    .bytes()
                    .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
            if h.early_hints_refused || unfit || h.early_hints.len() >= MAX_EARLY_HINTS {
                return false;
            }
            h.early_hints.push(link.to_owned());
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{counter, prefetch, rate_limit, RequestDecision, RequestOutcome};

    #[test]
    fn a_field_is_asked_for_once_and_only_when_read() {
        reset();
        let req = RequestBuilder::new("GET", "/a?b=2&a=1")
            .header("X-Device", "phone")
            .client_addr("192.0.2.1")
            .build();
        assert!(request_reads().is_empty(), "building reads nothing");
        assert_eq!(req.path(), "/a");
        assert_eq!(req.path(), "/a");
        assert_eq!(req.query_param("a"), Some("1"));
        let outcome = RequestOutcome::lookup_normalized(&req, &[]);
        let RequestDecision::Lookup(lookup) = outcome.decision else {
            panic!("a lookup");
        };
        assert_eq!(lookup.cache_key.as_deref(), Some("/a?a=1&b=2"));
        assert_eq!(req.header("x-device").as_deref(), Some("phone"));
        assert_eq!(req.header("X-DEVICE").as_deref(), Some("phone"));
        assert_eq!(req.header("accept"), None);
        assert_eq!(req.header("accept"), None);
        assert_eq!(
            request_reads(),
            ["path", "query", "header:x-device", "header:accept"]
        );
        let debug = format!("{req:?}");
        assert!(!debug.contains("192.0.2.1"), "{debug}");
        assert_eq!(req.client_addr(), Some("192.0.2.1"));
        assert_eq!(req.method(), "GET");
        assert_eq!((req.scheme(), req.host()), ("http", "localhost"));
        assert_eq!(request_reads().len(), 8);
    }

    #[test]
    fn builder_fields_and_thread_headers() {
        reset();
        set_request_header("cookie", "a=1; b=2");
        let plain = request("POST", "/x");
        assert_eq!(plain.cookie("b").as_deref(), Some("2"));
        assert_eq!(plain.query(), None);
        let own = RequestBuilder::new("GET", "/")
            .method("PUT")
            .scheme("https")
            .host("Example.COM")
            .path("/p")
            .query(Some("q=1"))
            .header("cookie", "a=9")
            .header("accept", "text/html")
            .header("accept", "*/*")
            .build();
        assert_eq!(own.cookie("a").as_deref(), Some("9"), "its own field wins");
        assert_eq!(own.cookie("b"), None);
        assert_eq!(own.header("accept").as_deref(), Some("text/html, */*"));
        assert_eq!(
            (
                own.method(),
                own.scheme(),
                own.host(),
                own.path(),
                own.query()
            ),
            ("PUT", "https", "example.com", "/p", Some("q=1"))
        );
        assert_eq!(own.client_addr(), None);
        clear_request_reads();
        assert!(request_reads().is_empty());
    }

    #[test]
    fn rate_limit_is_a_token_bucket_on_the_test_clock() {
        reset();
        let allowed = (0..10).filter(|_| rate_limit("k", 2.0, 3)).count();
        assert_eq!(allowed, 3, "created full: the burst");
        assert!(rate_limit("other", 2.0, 3), "keys are apart");
        advance_ms(499);
        assert!(!rate_limit("k", 2.0, 3));
        advance_ms(1);
        assert!(rate_limit("k", 2.0, 3), "one token each half second");
        assert!(!rate_limit("k", 2.0, 3));
        advance_ms(60_000);
        assert_eq!((0..10).filter(|_| rate_limit("k", 2.0, 3)).count(), 3);
        assert!(!rate_limit("never", f64::NAN, 0), "no burst, no token");
        assert!(rate_limit("once", f64::INFINITY, 1));
        advance_ms(1_000);
        assert!(
            !rate_limit("once", f64::INFINITY, 1),
            "no finite rate refills nothing"
        );
        reset();
        assert!(rate_limit("k", 2.0, 1), "reset starts full");
    }

    #[test]
    fn prefetches_are_recorded_with_what_the_host_answered() {
        reset();
        assert_eq!(prefetch::fetch("/next.ts"), Ok(()));
        assert_eq!(
            prefetch::fetch_with_headers("/a.css", &[("Accept-Encoding", "br")]),
            Ok(())
        );
        assert_eq!(prefetch::fetch("next.ts"), Err(Refusal::InvalidTarget));
        for bad in ["//other.test/x", "/a#b", "/a b", "/caf\u{e9}", ""] {
            assert_eq!(prefetch::fetch(bad), Err(Refusal::InvalidTarget), "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(prefetch::fetch(&long), Err(Refusal::InvalidTarget));
        let many = [("x-a", "1"); 17];
        assert_eq!(
            prefetch::fetch_with_headers("/b", &many),
            Err(Refusal::HeaderNotAllowed)
        );
        assert_eq!(prefetched(), ["/next.ts", "/a.css"]);
        let all = prefetches();
        assert_eq!(all.len(), 10);
        assert_eq!(
            all[1].headers,
            [("accept-encoding".to_owned(), "br".to_owned())]
        );
        assert_eq!(all[2].answer, Err(Refusal::InvalidTarget));

        let mut queued = 0;
        answer_prefetches(move |target| {
            assert!(target.starts_with('/'));
            queued += 1;
            if queued > 2 {
                Err(Refusal::QueueFull)
            } else {
                // The closure may use the double.
                counter("answered", 1);
                Ok(())
            }
        });
        clear_prefetches();
        let answers: Vec<_> = (0..4).map(|i| prefetch::fetch(&format!("/{i}"))).collect();
        assert_eq!(
            answers,
            [
                Ok(()),
                Ok(()),
                Err(Refusal::QueueFull),
                Err(Refusal::QueueFull)
            ]
        );
        assert_eq!(prefetched(), ["/0", "/1"]);
        assert_eq!(counter_value("answered"), 2);
        clear_prefetches();
        answer_prefetches(|target| match target {
            "/dup" => Err(Refusal::Duplicate),
            "/full" => Err(Refusal::QueueFull),
            _ => Ok(()),
        });
        let queued = prefetch::fetch_all(["/a", "/dup", "bad", "/b", "/full", "/never"]);
        assert_eq!(
            queued, 2,
            "one target's refusal goes on, a full queue stops"
        );
        assert_eq!(prefetches().len(), 5, "nothing asked after the full queue");
        assert_eq!(Refusal::QueueFull.as_str(), "queue-full");
        reset();
        assert_eq!(prefetch::fetch("/x"), Ok(()), "reset queues again");
    }

    #[test]
    fn body_requests_and_early_hints_are_recorded() {
        reset();
        assert_eq!(wanted_body(), None);
        assert!(!prefetch::want_body(0), "nothing to hand over");
        assert!(prefetch::want_body(4096));
        assert_eq!(wanted_body(), Some(4096));
        assert!(prefetch::want_body(u32::MAX));
        assert_eq!(
            wanted_body(),
            Some(prefetch::MAX_BODY_BYTES),
            "clamped to 1 MiB"
        );
        assert!(prefetch::early_hint("</a.css>; rel=preload; as=style"));
        assert!(!prefetch::early_hint("</a.css>\r\nset-cookie: x=1"));
        assert!(!prefetch::early_hint(""));
        assert!(
            !prefetch::early_hint("/a.css; rel=preload"),
            "a link starts with <"
        );
        assert!(!prefetch::early_hint("</caf\u{e9}.css>; rel=preload"));
        for i in 1..MAX_EARLY_HINTS {
            assert!(prefetch::early_hint(&format!("</{i}>; rel=preload")));
        }
        assert!(!prefetch::early_hint("</17>; rel=preload"), "16 at most");
        assert_eq!(early_hints().len(), MAX_EARLY_HINTS);
        assert_eq!(early_hints()[0], "</a.css>; rel=preload; as=style");
        clear_prefetches();
        assert!(early_hints().is_empty());
        assert_eq!(wanted_body(), None);
        refuse_body_and_hints(true);
        assert!(!prefetch::want_body(1));
        assert!(!prefetch::early_hint("</a>; rel=preload"));
        assert_eq!((wanted_body(), early_hints().len()), (None, 0));
        refuse_body_and_hints(false);
        assert!(prefetch::want_body(1));
    }
}
