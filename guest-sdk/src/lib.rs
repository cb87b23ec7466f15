//! Write stavka cache policies in Rust.
//!
//! A policy is a type implementing [`Policy`], exported with
//! [`export_policy!`] and built for `wasm32-wasip2`. Implement only the hooks
//! you need: the others keep what HTTP caching would do anyway. Name the
//! ones you implement in [`Policy::HOOKS`] and the host will not call the
//! rest (the example below implements all three, the default).
//!
//! ```no_run
//! use stavka_policy::{export_policy, hours, Entry, HitDecision, Policy, Request,
//!     RequestOutcome, Response, ResponseOutcome, Synthetic};
//!
//! struct Docs;
//!
//! impl Policy for Docs {
//!     fn on_request(req: &Request) -> RequestOutcome {
//!         if req.path().starts_with("/admin") {
//!             return RequestOutcome::respond(Synthetic::text(403, "forbidden\n"));
//!         }
//!         // Tracking parameters do not change the page: keep them out of the key.
//!         let key = req.normalized_path_and_query(&["utm_*", "fbclid"]);
//!         RequestOutcome::lookup_key(key)
//!     }
//!
//!     fn on_response(req: &Request, resp: &Response) -> ResponseOutcome {
//!         if resp.status == 200 && stavka_policy::path_matches("/static/**", req.path()) {
//!             return ResponseOutcome::store(hours(24)).tag("static");
//!         }
//!         ResponseOutcome::default()
//!     }
//!
//!     fn on_hit(_req: &Request, entry: &Entry) -> HitDecision {
//!         if entry.tags.iter().any(|t| t == "embargoed") {
//!             return HitDecision::Respond(Synthetic::text(451, "unavailable\n"));
//!         }
//!         HitDecision::Serve
//!     }
//! }
//!
//! export_policy!(Docs);
//! ```
//!
//! # Reading the request
//!
//! A hook gets the [`Request`] as a handle and reads its fields through
//! methods (`req.path()`, `req.query()`, `req.header("cookie")`, ...). The
//! SDK asks the host for a field the first time the hook reads it and
//! keeps the answer for the rest of the call; a field never read is never
//! asked for. The host records which fields a decision read: when a call
//! used nothing but request fields (no clock, randomness, key-value store,
//! counter, gauge, log line or [`rate_limit`]), its decision depends on
//! those fields alone, and the host may give the same decision to a later
//! request that agrees on all of them without calling the module. So read
//! only what the decision depends on: a policy that reads the client
//! address it then ignores gets a decision per client. (The host cannot
//! see state an instance keeps in its own memory between calls; its
//! documentation says which modules it reuses decisions for.)
//!
//! # Instances and state
//!
//! The module's sidecar file chooses the lifetime. A *per-request* module
//! gets a fresh instance for every request: nothing carries over. A
//! *long-lived* module's instances are kept in a pool and reused, and
//! [`Policy::init`] runs once per instance; state in `static`s (a
//! `thread_local!` `RefCell`, say) survives between the requests that
//! instance serves. Instances do not share memory: state that every instance
//! must see belongs in the host key-value store ([`kv`]), and a limit that
//! must hold across instances in the host's token buckets ([`rate_limit`]).
//!
//! Every hook runs under a deadline (a few milliseconds) and a memory cap;
//! a hook that exceeds them is stopped and the module's failure mode
//! decides the request.
//!
//! # Prefetching
//!
//! A policy that knows what the client will ask for next can have the host
//! fetch it into the cache first ([`prefetch`], 0.2.1): the next segments
//! of a video, the stylesheets of a page. What runs where:
//!
//! - [`prefetch::fetch`] (and [`prefetch::fetch_with_headers`]) queue a
//!   path and query on the request's site. The host fetches it in the
//!   background, at the lowest priority, through the normal cache path:
//!   the same hooks of this module run for it, and it collapses with a
//!   real request for the same object, so the origin sees one request.
//! - [`prefetch::want_body`], in [`Policy::on_response`], asks for the
//!   response's body (up to 1 MiB). Once it has arrived in full, and after
//!   the client has been answered, the host calls [`Policy::on_body`] with
//!   it, where only [`prefetch::fetch`] takes effect: parse a playlist or a
//!   page there and fetch what it names. A module that never calls
//!   `want_body` never has `on_body` called.
//! - [`prefetch::early_hint`], in [`Policy::on_request`], adds a `Link` to a
//!   103 Early Hints response the client gets before the origin is asked.
//! - [`prefetch::same_site_target`] turns a URI found in a document into a
//!   target `fetch` takes, or `None` for another host or scheme.
//!
//! A hook call that uses any of them does something besides deciding, so
//! the host never reuses its decision for another request (see *Reading
//! the request*): keep prefetching to the requests that need it. The
//! budgets are the host's, not the module's: the site's `[site.prefetch]`
//! settings (without them every prefetch is refused) bound the queue, the concurrency, the prefetches and bytes a
//! second, and how deep prefetching may chain; a refused prefetch comes
//! back as a [`Refusal`] (log it with [`Refusal::as_str`]) and is counted
//! by the host as well. `on_body` may run on another instance than the
//! `on_response` that asked for the body, as any two hooks may: state
//! learnt from a body is only as wide as that instance, so a policy that
//! must work with several instances needs a way that keeps no state too.
//! Unit tests see every prefetch, body request and hint a hook made
//! through [`testing`].

// The generated code names this crate by its absolute path, as guests do.
extern crate self as stavka_policy;

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        // The crate's own copy of `wit/policy.wit`, so it can be packaged
        // (host/tests/wit_copy.rs keeps the two identical).
        path: "wit",
        world: "stavka:policy/policy",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "::stavka_policy::bindings",
        runtime_path: "::stavka_policy::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::exports::stavka::policy::hooks::HookSet;
pub use bindings::exports::stavka::policy::slicing::{SliceDecision, SliceSettings};
#[cfg(target_arch = "wasm32")]
use bindings::stavka::policy::host;
#[cfg(not(target_arch = "wasm32"))]
use testing::host;

pub mod prefetch;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub use bindings::stavka::policy::host::Level;
pub use bindings::stavka::policy::types::{
    Entry, HeaderEdits, HitDecision, Lookup, RequestDecision, RequestOutcome, Response,
    ResponseDecision, ResponseOutcome, Store, Synthetic,
};
pub use prefetch::Refusal;
pub use request::Request;

mod request;
mod target;

/// A cache policy. Every hook has a default that leaves the decision to
/// HTTP caching, so implement only the ones you need, and name them in
/// [`Policy::HOOKS`] so the host does not call the others.
pub trait Policy {
    /// The hooks this policy implements, [`HookSet::INIT`] included if it
    /// implements [`Policy::init`]. The module exports every hook whatever
    /// this says; the host calls only these, so a hook left at its default
    /// costs nothing (each call is a trip into the guest). Default: all
    /// four.
    const HOOKS: HookSet = HookSet::all();

    /// Runs once per instance of a long-lived module, with the `[init]`
    /// table of its sidecar file, if [`Policy::HOOKS`] names
    /// [`HookSet::INIT`]. An error rejects this module version and the
    /// previous one keeps serving.
    fn init(_config: &[(String, String)]) -> Result<(), String> {
        Ok(())
    }

    /// Before the cache is consulted: look up (maybe under another key),
    /// bypass the cache, or answer directly.
    fn on_request(_req: &Request) -> RequestOutcome {
        RequestOutcome::lookup()
    }

    /// When the origin's response header arrives, before it is stored.
    fn on_response(_req: &Request, _resp: &Response) -> ResponseOutcome {
        ResponseOutcome::default()
    }

    /// When a cached entry, fresh or stale, is found for the request.
    fn on_hit(_req: &Request, _entry: &Entry) -> HitDecision {
        HitDecision::Serve
    }

    /// Whether [`Policy::on_slice`] is implemented; the host calls it only
    /// if so. Default: `false`.
    const SLICES: bool = false;

    /// For a request that could be served from the blocks of a large object
    /// (a range, or an object already held in blocks): whether to, with
    /// what block size and read-ahead. Set [`Policy::SLICES`] too.
    fn on_slice(_req: &Request) -> SliceDecision {
        SliceDecision::Default
    }

    /// With the body of a response this module asked for with
    /// [`prefetch::want_body`] in [`Policy::on_response`], once it has
    /// arrived in full; the client has already been answered, and only
    /// [`prefetch::fetch`] takes effect. `req` and `resp` are the request
    /// and response of that `on_response`. No hook-set flag: the host calls
    /// it only when asked to, so a policy that never wants a body pays
    /// nothing for it.
    fn on_body(_req: &Request, _resp: &Response, _body: &[u8]) {}
}

/// Export a [`Policy`] implementation as the module's hooks.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[doc(hidden)]
        pub struct __StavkaPolicyExport;

        impl $crate::bindings::exports::stavka::policy::lifecycle::Guest for __StavkaPolicyExport {
            fn init(config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                <$policy as $crate::Policy>::init(&config)
            }
        }
        impl $crate::bindings::exports::stavka::policy::hooks::Guest for __StavkaPolicyExport {
            fn implemented() -> $crate::HookSet {
                <$policy as $crate::Policy>::HOOKS
            }
        }
        impl $crate::bindings::exports::stavka::policy::on_request::Guest for __StavkaPolicyExport {
            fn decide(req: &$crate::bindings::stavka::policy::incoming::Request) -> $crate::RequestOutcome {
                <$policy as $crate::Policy>::on_request(&$crate::Request::__from_host(req))
            }
        }
        impl $crate::bindings::exports::stavka::policy::on_response::Guest for __StavkaPolicyExport {
            fn decide(req: &$crate::bindings::stavka::policy::incoming::Request, resp: $crate::Response) -> $crate::ResponseOutcome {
                <$policy as $crate::Policy>::on_response(&$crate::Request::__from_host(req), &resp)
            }
        }
        impl $crate::bindings::exports::stavka::policy::on_hit::Guest for __StavkaPolicyExport {
            fn decide(req: &$crate::bindings::stavka::policy::incoming::Request, found: $crate::Entry) -> $crate::HitDecision {
                <$policy as $crate::Policy>::on_hit(&$crate::Request::__from_host(req), &found)
            }
        }
        impl $crate::bindings::exports::stavka::policy::slicing::Guest for __StavkaPolicyExport {
            fn decide(req: &$crate::bindings::stavka::policy::incoming::Request) -> $crate::SliceDecision {
                <$policy as $crate::Policy>::on_slice(&$crate::Request::__from_host(req))
            }
            fn implemented() -> bool {
                <$policy as $crate::Policy>::SLICES
            }
        }
        impl $crate::bindings::exports::stavka::policy::on_body::Guest for __StavkaPolicyExport {
            fn received(req: &$crate::bindings::stavka::policy::incoming::Request, resp: $crate::Response, body: ::std::vec::Vec<u8>) {
                <$policy as $crate::Policy>::on_body(&$crate::Request::__from_host(req), &resp, &body)
            }
        }
        $crate::bindings::__export_world!(__StavkaPolicyExport with_types_in $crate::bindings);
    };
}

/// Sort a query string's parameters and remove those matching `drop`
/// (exact names, or prefixes written `prefix*`).
pub fn normalize_query(query: &str, drop: &[&str]) -> String {
    let dropped = |name: &str| {
        drop.iter().any(|d| match d.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *d,
        })
    };
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !dropped(p.split('=').next().unwrap_or(p)))
        .collect();
    params.sort_unstable();
    params.join("&")
}

/// Match a path against a pattern where `*` matches within one segment and
/// `**` matches any number of segments: `/static/**`, `/img/*.png`.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    fn segments(pattern: &[&str], path: &[&str]) -> bool {
        match (pattern.first(), path.first()) {
            (None, None) => true,
            (Some(&"**"), _) => {
                segments(&pattern[1..], path) || (!path.is_empty() && segments(pattern, &path[1..]))
            }
            (Some(p), Some(s)) => {
                segment(p.as_bytes(), s.as_bytes()) && segments(&pattern[1..], &path[1..])
            }
            _ => false,
        }
    }
    fn segment(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => segment(&p[1..], s) || (!s.is_empty() && segment(p, &s[1..])),
            (Some(a), Some(b)) => a == b && segment(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    segments(&pattern, &path)
}

/// A number from the `[init]` table, for [`Policy::init`]: `value` parsed
/// and checked against `range`, or an error naming `key` that rejects the
/// module version (so a typo in a sidecar never runs with a surprise).
///
/// ```
/// let n: u32 = stavka_policy::init_number("segments", "3", 1..=16).unwrap();
/// assert_eq!(n, 3);
/// assert!(stavka_policy::init_number::<u32>("segments", "99", 1..=16).is_err());
/// ```
pub fn init_number<T>(key: &str, value: &str, range: RangeInclusive<T>) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    match value.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "{key}: {value:?} is not a number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// Seconds, for TTLs and stale windows.
pub const fn secs(n: u32) -> u32 {
    n
}
/// Minutes, in seconds.
pub const fn minutes(n: u32) -> u32 {
    n * 60
}
/// Hours, in seconds.
pub const fn hours(n: u32) -> u32 {
    n * 3600
}
/// Days, in seconds.
pub const fn days(n: u32) -> u32 {
    n * 86400
}

impl Synthetic {
    /// An empty response with this status.
    pub fn new(status: u16) -> Synthetic {
        Synthetic {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: &str) -> Synthetic {
        Synthetic::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body)
    }

    /// A redirect (301, 302, 307, 308) to `location`.
    pub fn redirect(status: u16, location: &str) -> Synthetic {
        Synthetic::new(status).header("location", location)
    }

    /// Add a header field.
    pub fn header(mut self, name: &str, value: &str) -> Synthetic {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Synthetic {
        self.body = body.into();
        self
    }
}

impl HeaderEdits {
    /// No edits.
    pub fn none() -> HeaderEdits {
        HeaderEdits {
            set: Vec::new(),
            remove: Vec::new(),
        }
    }
}

impl RequestOutcome {
    /// Use the cache with the request's own key.
    pub fn lookup() -> RequestOutcome {
        RequestOutcome::with(RequestDecision::Lookup(Lookup {
            cache_key: None,
            variance: Vec::new(),
        }))
    }

    /// Use the cache, keyed by `key` instead of the request's path and query.
    /// A key that starts with `/` is a path and query, and the origin is
    /// asked for exactly that: what the key leaves out never reaches the
    /// origin, so it cannot shape the shared entry (cache-key parameter
    /// cloaking). Any other key is only a key.
    pub fn lookup_key(key: impl Into<String>) -> RequestOutcome {
        RequestOutcome::with(RequestDecision::Lookup(Lookup {
            cache_key: Some(key.into()),
            variance: Vec::new(),
        }))
    }

    /// Use the cache keyed by the request's normalised path and query
    /// ([`Request::normalized_path_and_query`]) and ask the origin for the
    /// same: the one call for dropping tracking parameters safely.
    pub fn lookup_normalized(req: &Request, drop: &[&str]) -> RequestOutcome {
        RequestOutcome::lookup_key(req.normalized_path_and_query(drop))
    }

    /// Proxy without the cache.
    pub fn bypass() -> RequestOutcome {
        RequestOutcome::with(RequestDecision::Bypass)
    }

    /// Answer with `response`.
    pub fn respond(response: Synthetic) -> RequestOutcome {
        RequestOutcome::with(RequestDecision::Respond(response))
    }

    fn with(decision: RequestDecision) -> RequestOutcome {
        RequestOutcome {
            decision,
            origin_request: HeaderEdits::none(),
        }
    }

    /// Also vary the cached entry on `value` (for a lookup).
    pub fn vary_on(mut self, value: impl Into<String>) -> RequestOutcome {
        if let RequestDecision::Lookup(lookup) = &mut self.decision {
            lookup.variance.push(value.into());
        }
        self
    }

    /// Set a header on the request sent to the origin.
    pub fn set_origin_header(mut self, name: &str, value: &str) -> RequestOutcome {
        self.origin_request
            .set
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Remove a header from the request sent to the origin.
    pub fn remove_origin_header(mut self, name: &str) -> RequestOutcome {
        self.origin_request.remove.push(name.to_ascii_lowercase());
        self
    }
}

impl Default for ResponseOutcome {
    /// Let RFC 9111 decide.
    fn default() -> ResponseOutcome {
        ResponseOutcome {
            decision: ResponseDecision::Default,
            headers: HeaderEdits::none(),
        }
    }
}

impl ResponseOutcome {
    /// Store for `ttl_seconds` whatever the response headers say.
    pub fn store(ttl_seconds: u32) -> ResponseOutcome {
        ResponseOutcome {
            decision: ResponseDecision::Store(Store {
                ttl_seconds,
                stale_while_revalidate_seconds: 0,
                stale_if_error_seconds: 0,
                tags: Vec::new(),
            }),
            headers: HeaderEdits::none(),
        }
    }

    /// Do not store.
    pub fn no_store() -> ResponseOutcome {
        ResponseOutcome {
            decision: ResponseDecision::NoStore,
            headers: HeaderEdits::none(),
        }
    }

    /// Serve stale for this long while revalidating (with [`Self::store`]).
    pub fn stale_while_revalidate(mut self, seconds: u32) -> ResponseOutcome {
        if let ResponseDecision::Store(s) = &mut self.decision {
            s.stale_while_revalidate_seconds = seconds;
        }
        self
    }

    /// Serve stale for this long when the origin fails (with [`Self::store`]).
    pub fn stale_if_error(mut self, seconds: u32) -> ResponseOutcome {
        if let ResponseDecision::Store(s) = &mut self.decision {
            s.stale_if_error_seconds = seconds;
        }
        self
    }

    /// Add a surrogate tag (with [`Self::store`]).
    pub fn tag(mut self, tag: &str) -> ResponseOutcome {
        if let ResponseDecision::Store(s) = &mut self.decision {
            s.tags.push(tag.to_owned());
        }
        self
    }

    /// Set a response header field (stored and sent).
    pub fn set_header(mut self, name: &str, value: &str) -> ResponseOutcome {
        self.headers
            .set
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Remove a response header field (before it is stored and sent).
    pub fn remove_header(mut self, name: &str) -> ResponseOutcome {
        self.headers.remove.push(name.to_ascii_lowercase());
        self
    }
}

impl Response {
    /// A header field of the origin's response.
    pub fn header(&self, name: &str) -> Option<String> {
        host::response_header(name)
    }
}

impl Entry {
    /// A header field of the cached entry.
    pub fn header(&self, name: &str) -> Option<String> {
        host::response_header(name)
    }
}

/// Write a line to the host log, attributed to this module.
pub fn log(level: Level, message: &str) {
    host::log(level, message)
}

/// A value from the module's key-value store.
pub fn kv(key: &str) -> Option<String> {
    host::kv_get(key)
}

/// Add to a counter exported in the host's metrics.
pub fn counter(name: &str, delta: u64) {
    host::counter_add(name, delta)
}

/// Set a gauge exported in the host's metrics.
pub fn gauge(name: &str, value: i64) {
    host::gauge_set(name, value)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    host::wall_clock_ms()
}

/// Monotonic nanoseconds, for measuring intervals.
pub fn monotonic_ns() -> u64 {
    host::monotonic_ns()
}

/// Take one token from the host's token bucket `key`: `true` if there was
/// one, `false` if the bucket is empty (the caller is over its limit).
///
/// The bucket holds up to `burst` tokens, refills at `per_second` tokens a
/// second (a rate that is negative or not finite refills nothing), and is
/// created full the first time `key` is used. It lives in the host, shared
/// by every instance of the module on every thread, so the limit is the
/// module's whatever the pool size; instance state (a `thread_local!`
/// count) would give each pooled instance a budget of its own. Each call
/// may pass another rate and burst for its key; the latest apply. Buckets
/// belong to one module version (a reload starts them full) and the host
/// keeps at most 65,536 of them, dropping the least recently used, which
/// come back full.
///
/// ```no_run
/// # use stavka_policy::{rate_limit, Request, RequestOutcome, Synthetic};
/// fn on_request(req: &Request) -> RequestOutcome {
///     // 10 requests a second per client, bursts of 20.
///     let client = req.client_addr().unwrap_or("unknown");
///     if !rate_limit(client, 10.0, 20) {
///         return RequestOutcome::respond(Synthetic::text(429, "slow down\n"));
///     }
///     RequestOutcome::lookup()
/// }
/// ```
pub fn rate_limit(key: &str, per_second: f64, burst: u32) -> bool {
    host::rate_limit(key, per_second, burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(path_matches("/static/**", "/static/a/b.css"));
        assert!(path_matches("/static/**", "/static"));
        assert!(path_matches("/img/*.png", "/img/cat.png"));
        assert!(!path_matches("/img/*.png", "/img/a/cat.png"));
        assert!(!path_matches("/api/*", "/apix/1"));
    }

    #[test]
    fn query_normalisation() {
        assert_eq!(
            normalize_query("b=2&utm_source=x&a=1&fbclid=z", &["utm_*", "fbclid"]),
            "a=1&b=2"
        );
        assert_eq!(normalize_query("", &[]), "");
    }
}
