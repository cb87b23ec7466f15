//! The access log: one line per finished request, in the configured format,
//! for the sampled fraction of requests and every failed one.
//!
//! `text` and `json` lines are `tracing` events (target [`TARGET`]) among
//! the process's own lines on stderr; `combined` lines are written alone on
//! stdout, whole, so a log tool reads the stream as it is.

mod combined;
mod sample;

use std::io::Write;
use std::time::{Duration, SystemTime};

use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_error::Error;
use pingora_http::RequestHeader;

use crate::cache::outcome::Outcome;
use crate::cache::status::{CacheStatus, Detail};
use crate::config::{AccessFormat, Log};
use sample::Sample;

/// The `tracing` target of access lines, so `RUST_LOG` and the subscriber
/// can tell them from the process's own lines.
pub const TARGET: &str = "stavka::access";

/// What is known about a request when it finishes: everything any format
/// writes, borrowed, so a request that is not sampled costs no formatting.
pub struct Entry<'a> {
    /// The request as the client sent it.
    pub request: &'a RequestHeader,
    /// The client's address, when the connection has one.
    pub client: Option<&'a SocketAddr>,
    /// The client's address as a trusted edge gave it
    /// (`tier.client_header`), when it did: the connection is the edge's.
    pub forwarded_for: Option<std::net::IpAddr>,
    /// The site that served it, `-` for none.
    pub site: &'a str,
    /// The host the cache keyed it by, `-` for none.
    pub host: &'a str,
    /// The response status sent, 0 when none was.
    pub status: u16,
    /// What the cache did, when it was asked.
    pub cache_status: Option<&'a CacheStatus>,
    /// The metrics' name for what the cache did.
    pub outcome: Outcome,
    /// Response body bytes sent.
    pub bytes: usize,
    /// From the request's arrival to its end.
    pub elapsed: Duration,
    /// Time to the origin's response header, when the origin was asked.
    pub origin_ttfb: Option<Duration>,
    /// The error that ended the request, if one did.
    pub error: Option<&'a Error>,
}

impl Entry<'_> {
    /// Whether something went wrong that an operator must see whatever the
    /// sampling: a server error sent, a request ended by an error, or a
    /// stale response standing in for a failed origin.
    fn failed(&self) -> bool {
        self.error.is_some()
            || self.status >= 500
            || self.cache_status.is_some_and(|s| {
                s.detail == Some(Detail::StaleIfError) || s.fwd_status.is_some_and(|f| f >= 500)
            })
    }
}

/// Writes access lines: the format, the sampling and this cache's name
/// (the first member of every `Cache-Status` written).
#[derive(Debug)]
pub struct AccessLog {
    format: AccessFormat,
    sample: Sample,
    cache_name: String,
}

impl AccessLog {
    /// The access log `log` configures, or `None` when it is off.
    pub fn new(log: &Log, cache_name: String) -> Option<AccessLog> {
        log.access_log.then(|| AccessLog {
            format: log.access_format(),
            sample: Sample::new(log.access_sample),
            cache_name,
        })
    }

    /// Write `entry`'s line, if it is sampled or failed.
    pub fn record(&self, entry: &Entry<'_>) {
        if !self.sample.admits(entry.failed()) {
            return;
        }
        match self.format {
            AccessFormat::Text | AccessFormat::Json => self.trace(entry),
            AccessFormat::Combined => {
                let line = combined::line(entry, &self.cache_name, SystemTime::now());
                // One write under stdout's lock: lines never interleave. A
                // closed stdout loses lines rather than failing requests.
                let _ = std::io::stdout().lock().write_all(&line);
            }
        }
    }

    /// The line as a `tracing` event; the subscriber formats it.
    fn trace(&self, entry: &Entry<'_>) {
        let req = entry.request;
        let cache_status = entry
            .cache_status
            .map(|s| s.render(&self.cache_name))
            .unwrap_or_default();
        tracing::info!(
            target: TARGET,
            client = %entry.client.map(|a| a.to_string()).unwrap_or_default(),
            forwarded_for = entry.forwarded_for.map(tracing::field::display),
            site = entry.site,
            method = %req.method,
            host = entry.host,
            path = crate::cache::key::target(&req.uri),
            status = entry.status,
            cache = %cache_status,
            outcome = entry.outcome.as_str(),
            bytes = entry.bytes,
            duration_ms = entry.elapsed.as_secs_f64() * 1000.0,
            origin_ms = entry.origin_ttfb.map(|d| d.as_secs_f64() * 1000.0),
            error = entry.error.map(|e| e.to_string()),
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use pingora_error::ErrorType;

    use super::*;

    fn entry<'a>(request: &'a RequestHeader, status: u16) -> Entry<'a> {
        Entry {
            request,
            client: None,
            forwarded_for: None,
            site: "-",
            host: "-",
            status,
            cache_status: None,
            outcome: Outcome::Miss,
            bytes: 0,
            elapsed: Duration::ZERO,
            origin_ttfb: None,
            error: None,
        }
    }

    #[test]
    fn failures_are_server_errors_errors_and_stale_for_a_failed_origin() {
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        assert!(!entry(&req, 200).failed());
        assert!(!entry(&req, 404).failed());
        assert!(entry(&req, 502).failed());
        let error = Error::new(ErrorType::ConnectRefused);
        let ended = Entry {
            error: Some(&error),
            ..entry(&req, 200)
        };
        assert!(ended.failed());
        let stale = CacheStatus {
            detail: Some(Detail::StaleIfError),
            ..CacheStatus::default()
        };
        let served_stale = Entry {
            cache_status: Some(&stale),
            ..entry(&req, 200)
        };
        assert!(served_stale.failed());
        let origin_500 = CacheStatus {
            fwd_status: Some(500),
            ..CacheStatus::default()
        };
        let passed_on = Entry {
            cache_status: Some(&origin_500),
            ..entry(&req, 200)
        };
        assert!(passed_on.failed());
    }

    #[test]
    fn off_is_none() {
        let log = Log {
            access_log: false,
            ..Log::default()
        };
        assert!(AccessLog::new(&log, "stavka".into()).is_none());
        assert!(AccessLog::new(&Log::default(), "stavka".into()).is_some());
    }
}
