//! Warming the cache with what comes next, and 103 Early Hints (0.2.1).
//!
//! A policy that knows the application names what to fetch before the
//! client asks for it: a player's next segments, a page's stylesheets. The
//! host fetches each target in the background through the normal cache
//! path (the same key rules, the same policy hooks, the same collapsing),
//! so a prefetch and a real request for one object make one origin
//! request, and stores what is cacheable.
//!
//! | call | where it works | what it does |
//! |---|---|---|
//! | [`fetch`], [`fetch_with_headers`] | `on_request`, `on_response`, `on_hit`, `on_body` | queue a same-site target for the background |
//! | [`want_body`] | `on_response` | have the host call [`Policy::on_body`](crate::Policy::on_body) with this response's body |
//! | [`early_hint`] | `on_request` | add a `Link` to the 103 sent before the origin is asked |
//!
//! Elsewhere (in `init`, or [`early_hint`] outside `on_request`), and on a
//! site without a `[site.prefetch]` table, the calls are refused
//! ([`Refusal::NotHere`], `false`). The budgets are the host's: the site's
//! `[site.prefetch]` settings bound the queue, the concurrency, the
//! prefetches and bytes a second, and how deep a prefetch's own hooks may
//! prefetch again ([`Refusal::TooDeep`]); a policy cannot raise them, and
//! every prefetch and refusal is counted on the host's side too
//! (`stavka_prefetch_total{module,outcome}`).
//!
//! A hook call that uses any of these has an effect besides its decision,
//! so the host never reuses that decision for another request: a call
//! that may prefetch is a call into the module for every request.

#[cfg(target_arch = "wasm32")]
use crate::bindings::stavka::policy::prefetch as host;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::prefetch as host;

pub use crate::bindings::stavka::policy::prefetch::Refusal;

/// The longest body [`want_body`] can ask for (1 MiB): the host hands
/// over no more.
pub const MAX_BODY_BYTES: u32 = 1 << 20;

/// The longest target the host queues (8 KiB).
pub const MAX_TARGET_BYTES: usize = 8 * 1024;

/// The most extra header fields one prefetch may carry.
pub const MAX_HEADERS: usize = 16;

/// The most Early Hints links one request may collect.
pub const MAX_EARLY_HINTS: usize = 16;

/// Queue `target` (a path with an optional `?query`, on this request's
/// site) to be fetched into the cache in the background. `Ok` means
/// queued, not fetched: the fetch may still find the object cached and
/// fresh, or fail, and nothing of it reaches this request.
pub fn fetch(target: &str) -> Result<(), Refusal> {
    host::fetch(target, &[])
}

/// [`fetch`] with extra request header fields (names from the site's
/// `[site.prefetch]` allow-list, at most [`MAX_HEADERS`]): an `Accept-Encoding`
/// or a device class the cached entry varies on, so the prefetch warms the
/// variant the clients will ask for.
pub fn fetch_with_headers(target: &str, headers: &[(&str, &str)]) -> Result<(), Refusal> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), (*value).to_owned()))
        .collect();
    host::fetch(target, &headers)
}

/// [`fetch`] each target in order, and how many were queued. A refusal
/// that every later target would get as well ([`Refusal::refuses_the_rest`]:
/// a full queue, a spent budget, a hook or a depth where prefetching is
/// not allowed) ends the loop, so a policy asks the host no more than it
/// must; a refusal of one target (a duplicate, an invalid target) does not.
pub fn fetch_all<S: AsRef<str>>(targets: impl IntoIterator<Item = S>) -> usize {
    let mut queued = 0;
    for target in targets {
        match fetch(target.as_ref()) {
            Ok(()) => queued += 1,
            Err(refusal) if refusal.refuses_the_rest() => break,
            Err(_) => {}
        }
    }
    queued
}

/// In `on_response`: ask for this response's body, up to `max_bytes`
/// (clamped to [`MAX_BODY_BYTES`]). Once it has arrived in full the host
/// calls [`Policy::on_body`](crate::Policy::on_body) with it, in the
/// background; a longer body is not handed over. `false` when not
/// available here, or for 0 bytes.
pub fn want_body(max_bytes: u32) -> bool {
    host::want_body(max_bytes.min(MAX_BODY_BYTES))
}

/// In `on_request`: add `link`, a `Link` field value such as
/// `</app.css>; rel=preload; as=style`, to a 103 Early Hints response
/// (RFC 8297) sent to the client before the origin is asked, if it is (a
/// fresh hit sends none). At most [`MAX_EARLY_HINTS`] per request; a link
/// must start with `<` and be a valid field value (visible ASCII, spaces
/// and tabs). `false` when not available here or refused.
pub fn early_hint(link: &str) -> bool {
    host::early_hint(link)
}

/// Resolve `reference` (a URI found in a playlist or a page) against
/// `base_path`, the path of the document it was found in, into a target
/// on this site that [`fetch`] accepts; `None` for anything that is not.
///
/// - A relative reference (`seg1.ts`, `../css/a.css`) and an absolute
///   path (`/a.css`) are resolved as RFC 3986 §5.2 says, dot segments
///   removed, never above the root.
/// - An absolute URI (`https://host/x`) or a network-path reference
///   (`//host/x`) counts only if its host is `host` (the request's, lower
///   case, without port) with no port or the scheme's default one; any
///   other scheme (`data:`, `javascript:`, `mailto:`) is `None`.
/// - The fragment is dropped; the query is kept.
/// - The result must be at most [`MAX_TARGET_BYTES`], must not start with
///   `//` (read as a reference, it would name another host), and must
///   consist of characters a request target may carry (RFC 3986 §2, `%`
///   escapes included): a reference with spaces, quotes, angle brackets,
///   controls or non-ASCII is `None` rather than guessed at, so a target
///   is always safe to put in a `Link` field too.
pub fn same_site_target(base_path: &str, host: &str, reference: &str) -> Option<String> {
    crate::target::same_site_target(base_path, host, reference)
}

impl Refusal {
    /// The name the WIT gives it (`queue-full`), for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::InvalidTarget => "invalid-target",
            Refusal::HeaderNotAllowed => "header-not-allowed",
            Refusal::NotHere => "not-here",
            Refusal::QueueFull => "queue-full",
            Refusal::OverBudget => "over-budget",
            Refusal::Duplicate => "duplicate",
            Refusal::Cached => "cached",
            Refusal::TooDeep => "too-deep",
        }
    }

    /// Whether every later prefetch of the same hook call would be refused
    /// too: the queue is full, a budget is spent, or prefetching is not
    /// allowed in this hook or at this depth. A duplicate, a target still
    /// fresh in the cache, an invalid target or a header outside the
    /// allow-list concern that one target.
    pub fn refuses_the_rest(self) -> bool {
        match self {
            Refusal::NotHere | Refusal::QueueFull | Refusal::OverBudget | Refusal::TooDeep => true,
            Refusal::InvalidTarget
            | Refusal::HeaderNotAllowed
            | Refusal::Duplicate
            | Refusal::Cached => false,
        }
    }
}
