//! `[site.prefetch]`: how much a site's policy may warm its cache ahead of
//! requests (`prefetch.fetch` in `stavka:policy` 0.2.1), and the bounds
//! that keep prefetching from hurting real requests.

use bytesize::ByteSize;
use serde::Deserialize;

/// The longest queue a site may configure.
pub const MAX_QUEUE: usize = 65_536;
/// The most prefetches of one site in flight at once a site may configure.
pub const MAX_CONCURRENCY: usize = 64;
/// The deepest chain of prefetches a site may allow.
pub const MAX_DEPTH: u8 = 4;

/// Header fields a prefetch may never set: they would change how the
/// request is framed or routed, or smuggle a client's identity or
/// credentials into a fetch no client made.
const FORBIDDEN_HEADERS: [&str; 12] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "cookie",
    "authorization",
    "cdn-loop",
];

/// One site's prefetch settings; prefetching is off for a site without
/// the table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prefetch {
    /// Prefetches waiting, per site. A module's `fetch` past it is refused
    /// (`queue-full`). Default 256.
    pub queue: usize,
    /// Prefetches of the site fetched at once. Prefetches run only in
    /// these slots, so real requests never wait behind more than this
    /// many. Default 4.
    pub concurrency: usize,
    /// Prefetches queued per second (a token bucket holding one second's
    /// worth): past it `fetch` is refused (`over-budget`). Default 50.
    pub rate: u32,
    /// Bytes fetched by prefetches per second (a token bucket holding one
    /// second's worth): while spent, `fetch` is refused (`over-budget`).
    /// Default `8MiB`.
    pub bytes_per_second: ByteSize,
    /// How deep prefetches may chain: a prefetched response's own hooks
    /// may prefetch while the chain is shorter than this. `0` stops them
    /// at once; a real request's hooks can always prefetch. Default 1.
    pub max_depth: u8,
    /// Header fields a module may set on a prefetch (lower-case names).
    /// Default `["accept", "accept-encoding", "accept-language"]`.
    pub headers: Vec<String>,
}

impl Default for Prefetch {
    fn default() -> Self {
        Prefetch {
            queue: 256,
            concurrency: 4,
            rate: 50,
            bytes_per_second: ByteSize::mib(8),
            max_depth: 1,
            headers: ["accept", "accept-encoding", "accept-language"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Prefetch {
    /// Report problems with the values to `err(field, message)`, each
    /// field under `prefetch.`.
    pub fn check(&self, err: &mut dyn FnMut(String, String)) {
        if !(1..=MAX_QUEUE).contains(&self.queue) {
            err(
                "prefetch.queue".into(),
                format!("{} is outside 1..={MAX_QUEUE}", self.queue),
            );
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            err(
                "prefetch.concurrency".into(),
                format!("{} is outside 1..={MAX_CONCURRENCY}", self.concurrency),
            );
        }
        if self.rate == 0 {
            err(
                "prefetch.rate".into(),
                "must be at least 1 (remove [prefetch] to turn prefetching off)".into(),
            );
        }
        if self.bytes_per_second.as_u64() == 0 {
            err(
                "prefetch.bytes_per_second".into(),
                "must be more than 0".into(),
            );
        }
        if self.max_depth > MAX_DEPTH {
            err(
                "prefetch.max_depth".into(),
                format!("{} is more than {MAX_DEPTH}", self.max_depth),
            );
        }
        for (i, name) in self.headers.iter().enumerate() {
            let field = format!("prefetch.headers[{i}]");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || name.bytes().any(|b| b.is_ascii_uppercase())
            {
                err(field, format!("{name:?} is not a lower-case header name"));
            } else if FORBIDDEN_HEADERS.contains(&name.as_str()) || name.starts_with("x-stavka-") {
                err(field, format!("{name:?} may not be set by a prefetch"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(p: &Prefetch) -> Vec<String> {
        let mut out = Vec::new();
        p.check(&mut |field, _| out.push(field));
        out
    }

    #[test]
    fn the_defaults_are_valid_and_each_bad_value_names_its_field() {
        assert!(problems(&Prefetch::default()).is_empty());
        let bad = Prefetch {
            queue: 0,
            concurrency: 1000,
            rate: 0,
            bytes_per_second: ByteSize::b(0),
            max_depth: 9,
            headers: vec!["Accept".into(), "cookie".into(), "x-stavka-prefetch".into()],
        };
        assert_eq!(
            problems(&bad),
            [
                "prefetch.queue",
                "prefetch.concurrency",
                "prefetch.rate",
                "prefetch.bytes_per_second",
                "prefetch.max_depth",
                "prefetch.headers[0]",
                "prefetch.headers[1]",
                "prefetch.headers[2]",
            ]
        );
    }
}
