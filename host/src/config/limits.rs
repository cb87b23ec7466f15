//! `[limits]`: what one client may ask of the proxy, so nothing it sends
//! can exhaust memory, file descriptors or the origin. Each limit answers
//! with its own status and is counted in `stavka_limited_total{limit}`.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// Limits on clients.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The request's header fields, names and values together. Beyond:
    /// `431` (RFC 6585 §5). Default `32KiB` (pingora refuses more than
    /// 1 MiB or 256 fields before stavka sees them, with 400).
    pub max_header_bytes: ByteSize,
    /// Header fields in a request. Beyond: `431`. Default 100.
    pub max_headers: usize,
    /// The request target. Beyond: `414` (RFC 9110 §15.5.15). Default `8KiB`.
    pub max_uri_bytes: ByteSize,
    /// A request body (POST, PUT, …), by Content-Length or as it streams.
    /// Beyond: `413` (RFC 9110 §15.5.14). Default `64MiB`.
    pub max_body_bytes: ByteSize,
    /// An HTTP/1 request header must be whole within this long of its first
    /// byte (slowloris); past it: `408` and the connection closes. Default
    /// `10s`. Needs a restart to change.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long an idle HTTP/1 connection waits for its next request.
    /// Default `60s`. Needs a restart to change.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open client connections on all listeners; more are closed at accept.
    /// Default 10000.
    pub max_connections: usize,
    /// Open connections from one client address; more are closed at
    /// accept. Default 256.
    pub max_connections_per_ip: usize,
    /// Requests per second from one client address (a token bucket); 0
    /// turns the limit off. Beyond: `429` with `Retry-After`. Default 0.
    pub requests_per_second: f64,
    /// Requests one client address may make at once above that rate.
    /// Default 100.
    pub burst: u32,
    /// Concurrent streams on one HTTP/2 connection (RFC 9113 §5.1.2).
    /// Default 100. Needs a restart to change.
    pub h2_max_streams: u32,
    /// Streams one HTTP/2 connection may reset before their answer: this
    /// many at once, refilled at a tenth of it per second. Past it the
    /// connection gets `GOAWAY(ENHANCE_YOUR_CALM)` and closes (rapid reset,
    /// CVE-2023-44487). Default 200. Needs a restart to change.
    pub h2_max_resets: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: ByteSize::kib(32),
            max_headers: 100,
            max_uri_bytes: ByteSize::kib(8),
            max_body_bytes: ByteSize::mib(64),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            requests_per_second: 0.0,
            burst: 100,
            h2_max_streams: 100,
            h2_max_resets: 200,
        }
    }
}

impl Limits {
    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = super::zero_durations(&[
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
        ]);
        let positive = [
            ("max_headers", self.max_headers as u64),
            ("max_header_bytes", self.max_header_bytes.as_u64()),
            ("max_uri_bytes", self.max_uri_bytes.as_u64()),
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            ("h2_max_streams", u64::from(self.h2_max_streams)),
            ("h2_max_resets", u64::from(self.h2_max_resets)),
            ("burst", u64::from(self.burst)),
        ];
        for (field, value) in positive {
            if value == 0 {
                out.push((field, "must be greater than 0".to_owned()));
            }
        }
        if !(self.requests_per_second >= 0.0 && self.requests_per_second.is_finite()) {
            out.push((
                "requests_per_second",
                "must be 0 (off) or a positive number".to_owned(),
            ));
        }
        if self.max_connections_per_ip > self.max_connections {
            out.push((
                "max_connections_per_ip",
                format!("must not exceed max_connections ({})", self.max_connections),
            ));
        }
        out
    }
}
