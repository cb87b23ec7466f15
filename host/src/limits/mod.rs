//! Enforcing `[limits]` on clients: request header size and count, target
//! length, body size and a per-address request rate, checked before a
//! request reaches the cache or a policy; and open connections, in all and
//! per address, counted from accept to close. The request-side limits and
//! the connection counts follow a configuration reload; the header and
//! idle timeouts and HTTP/2 streams are pingora's settings, set at start.

mod rate;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use pingora_core::services::listening::ConnectionGate;
use pingora_http::RequestHeader;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::config;
pub use rate::RateLimiter;

/// A limit a client ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_header_bytes`: 431.
    HeaderBytes,
    /// `max_headers`: 431.
    Headers,
    /// `max_uri_bytes`: 414.
    Uri,
    /// `max_body_bytes`: 413.
    Body,
    /// `requests_per_second`: 429.
    Rate,
    /// `header_timeout`: 408 (answered inside pingora).
    HeaderTimeout,
    /// `max_connections`: closed at accept.
    Connections,
    /// `max_connections_per_ip`: closed at accept.
    ConnectionsPerIp,
    /// `h2_max_resets`, and h2's own bounds on floods (resets of streams
    /// not yet accepted, CONTINUATION, …): GOAWAY(ENHANCE_YOUR_CALM) and
    /// closed (counted inside pingora).
    H2Abuse,
}

impl Limit {
    /// Every limit.
    pub const ALL: [Limit; 9] = [
        Limit::HeaderBytes,
        Limit::Headers,
        Limit::Uri,
        Limit::Body,
        Limit::Rate,
        Limit::HeaderTimeout,
        Limit::Connections,
        Limit::ConnectionsPerIp,
        Limit::H2Abuse,
    ];

    /// The `limit` label and the `Cache-Status` detail.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::HeaderBytes => "header-too-large",
            Limit::Headers => "too-many-headers",
            Limit::Uri => "uri-too-long",
            Limit::Body => "body-too-large",
            Limit::Rate => "rate-limited",
            Limit::HeaderTimeout => "header-timeout",
            Limit::Connections => "too-many-connections",
            Limit::ConnectionsPerIp => "too-many-connections-per-ip",
            Limit::H2Abuse => "h2-abuse",
        }
    }

    /// The status a request over it gets (0: the connection is closed
    /// before there is a request to answer).
    pub fn status(self) -> u16 {
        match self {
            Limit::HeaderBytes | Limit::Headers => 431,
            Limit::Uri => 414,
            Limit::Body => 413,
            Limit::Rate => 429,
            Limit::HeaderTimeout => 408,
            Limit::Connections | Limit::ConnectionsPerIp | Limit::H2Abuse => 0,
        }
    }

    /// What was exceeded, for the response body.
    pub fn explain(self) -> &'static str {
        match self {
            Limit::HeaderBytes => "the request's header fields are too large",
            Limit::Headers => "the request has too many header fields",
            Limit::Uri => "the request target is too long",
            Limit::Body => "the request body is too large",
            Limit::Rate => "too many requests from this address; retry later",
            Limit::HeaderTimeout => "the request header did not arrive in time",
            Limit::Connections => "too many open connections",
            Limit::ConnectionsPerIp => "too many open connections from this address",
            Limit::H2Abuse => "an HTTP/2 flood: too many streams reset, or frames",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The limits in force and their counters; also pingora's connection gate.
pub struct Limits {
    settings: ArcSwap<config::Limits>,
    rate: RateLimiter,
    limited: [IntCounter; Limit::ALL.len()],
    connections: Arc<Connections>,
}

/// Open client connections, in all and by address.
struct Connections {
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    gauge: IntGauge,
}

/// Held for as long as a connection is open.
struct Ticket {
    connections: Arc<Connections>,
    ip: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let c = &self.connections;
        c.open.fetch_sub(1, Ordering::Relaxed);
        c.gauge.dec();
        if let Some(ip) = self.ip {
            let mut by_ip = c.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
    }
}

impl Limits {
    /// Enforce `settings`, counting in `registry`.
    pub fn new(settings: &config::Limits, registry: &Registry) -> Arc<Limits> {
        let limited = IntCounterVec::new(
            Opts::new(
                "stavka_limited_total",
                "Requests and connections refused by a [limits] limit, by limit: header-too-large and too-many-headers (431), uri-too-long (414), body-too-large (413), rate-limited (429), header-timeout (408), too-many-connections and too-many-connections-per-ip (closed at accept).",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let gauge = IntGauge::new(
            "stavka_client_connections",
            "Client connections open now, on every listener.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(limited.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(gauge.clone()))
            .expect("unique metric");
        Arc::new(Limits {
            settings: ArcSwap::from_pointee(settings.clone()),
            rate: RateLimiter::default(),
            limited: Limit::ALL.map(|l| limited.with_label_values(&[l.as_str()])),
            connections: Arc::new(Connections {
                open: AtomicUsize::new(0),
                by_ip: Mutex::default(),
                gauge,
            }),
        })
    }

    /// Enforce `settings` from now on (a configuration reload).
    pub fn reconfigure(&self, settings: &config::Limits) {
        self.settings.store(Arc::new(settings.clone()));
    }

    /// Count one refusal.
    pub fn count(&self, limit: Limit) {
        self.limited[limit.index()].inc();
    }

    /// Bring the counts of the limits pingora enforces itself (header
    /// timeouts, HTTP/2 floods) up to pingora's, for scrapes.
    pub fn sync_pingora_counts(&self) {
        use pingora_core::protocols::http::{v1, v2};
        crate::metrics::advance(
            &self.limited[Limit::HeaderTimeout.index()],
            v1::server::HttpSession::header_timeouts(),
        );
        crate::metrics::advance(&self.limited[Limit::H2Abuse.index()], v2::server::floods());
    }

    /// The first limit `req` from `client` runs into, if any: its header,
    /// its target, its declared body, then the address's request rate (so
    /// a refused request spends no token).
    pub fn check_request(&self, req: &RequestHeader, client: Option<IpAddr>) -> Result<(), Limit> {
        let s = self.settings.load();
        if req.headers.len() > s.max_headers {
            return Err(Limit::Headers);
        }
        // As on the wire: name, ": ", value, CRLF.
        let bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if bytes as u64 > s.max_header_bytes.as_u64() {
            return Err(Limit::HeaderBytes);
        }
        let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if target as u64 > s.max_uri_bytes.as_u64() {
            return Err(Limit::Uri);
        }
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > s.max_body_bytes.as_u64()) {
            return Err(Limit::Body);
        }
        if let (Some(ip), true) = (client, s.requests_per_second > 0.0) {
            if !self
                .rate
                .allow(&ip, s.requests_per_second, s.burst, Instant::now())
            {
                return Err(Limit::Rate);
            }
        }
        Ok(())
    }

    /// Whether a request body that has reached `total` bytes is over the
    /// limit.
    pub fn body_over(&self, total: u64) -> bool {
        total > self.settings.load().max_body_bytes.as_u64()
    }
}

impl ConnectionGate for Limits {
    fn admit(&self, peer: Option<std::net::SocketAddr>) -> Option<Box<dyn Send + Sync>> {
        let s = self.settings.load();
        let c = &self.connections;
        if c.open.fetch_add(1, Ordering::Relaxed) >= s.max_connections {
            c.open.fetch_sub(1, Ordering::Relaxed);
            self.count(Limit::Connections);
            return None;
        }
        let ip = peer.map(|p| p.ip());
        if let Some(ip) = ip {
            let mut by_ip = c.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = by_ip.entry(ip).or_insert(0);
            if *n >= s.max_connections_per_ip {
                drop(by_ip);
                c.open.fetch_sub(1, Ordering::Relaxed);
                self.count(Limit::ConnectionsPerIp);
                return None;
            }
            *n += 1;
        }
        c.gauge.inc();
        Some(Box::new(Ticket {
            connections: c.clone(),
            ip,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(text: &str) -> Arc<Limits> {
        let config = config::Config::from_toml(text).unwrap();
        Limits::new(&config.limits, &Registry::new())
    }

    #[test]
    fn each_request_limit_answers_its_own_status() {
        let limits = limits("[limits]\nmax_headers = 3\nmax_header_bytes = 64\nmax_uri_bytes = 16\nmax_body_bytes = 10\n");
        let mut req = RequestHeader::build("GET", b"/short", None).unwrap();
        assert_eq!(limits.check_request(&req, None), Ok(()));
        req.insert_header("a", "x".repeat(80)).unwrap();
        assert_eq!(limits.check_request(&req, None), Err(Limit::HeaderBytes));
        let mut req = RequestHeader::build("GET", b"/short", None).unwrap();
        for name in ["a", "b", "c", "d"] {
            req.insert_header(name, "1").unwrap();
        }
        assert_eq!(limits.check_request(&req, None), Err(Limit::Headers));
        let req = RequestHeader::build("GET", b"/a-target-longer-than-sixteen", None).unwrap();
        assert_eq!(limits.check_request(&req, None), Err(Limit::Uri));
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        req.insert_header("content-length", "11").unwrap();
        assert_eq!(limits.check_request(&req, None), Err(Limit::Body));
        assert!(limits.body_over(11) && !limits.body_over(10));
        let statuses: Vec<u16> = Limit::ALL.iter().map(|l| l.status()).collect();
        assert_eq!(statuses, [431, 431, 414, 413, 429, 408, 0, 0, 0]);
    }

    #[test]
    fn connections_are_counted_until_their_ticket_drops() {
        let limits = limits("[limits]\nmax_connections = 3\nmax_connections_per_ip = 2\n");
        let a: std::net::SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: std::net::SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let first = limits.admit(Some(a)).expect("first");
        let second = limits.admit(Some(a)).expect("second");
        assert!(limits.admit(Some(a)).is_none(), "a third from one address");
        let other = limits.admit(Some(b)).expect("another address");
        assert!(limits.admit(Some(b)).is_none(), "a fourth in all");
        drop(first);
        assert!(limits.admit(Some(a)).is_some(), "room again");
        drop((second, other));
        assert!(limits.connections.by_ip.lock().unwrap().len() <= 1);
    }
}
