//! Test a policy with plain `cargo test`, without a server.
//!
//! Built for any target but `wasm32`, the SDK answers the host imports
//! from this module instead of the proxy: request and response headers,
//! the key-value store, a clock you set, and the log lines, counters and
//! gauges a hook wrote, all per test thread. Call the hooks directly on
//! requests, responses and entries made here, and check their outcomes.
//!
//! ```
//! use stavka_policy::testing::{self, request, response};
//! use stavka_policy::{Policy, ResponseDecision};
//! # struct MyPolicy;
//! # impl Policy for MyPolicy {}
//!
//! testing::reset();
//! testing::set_request_header("authorization", "Bearer t");
//! testing::kv_put("tokens", "t");
//! let outcome = MyPolicy::on_response(&request("GET", "/static/a.css"), &response(200));
//! assert!(matches!(outcome.decision, ResponseDecision::Default));
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

use crate::{Entry, Level, Request, Response};

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

/// A request header field the hook reads (`Request::header`).
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

/// A request as the host would pass it: `target` is the path and query,
/// the host `localhost`, no client address.
pub fn request(method: &str, target: &str) -> Request {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    Request {
        method: method.to_owned(),
        scheme: "http".to_owned(),
        host: "localhost".to_owned(),
        path,
        query,
        client_addr: None,
    }
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
    use super::with;
    use crate::Level;

    pub fn request_header(name: &str) -> Option<String> {
        with(|h| h.request_headers.get(&name.to_ascii_lowercase()).cloned())
    }

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
}
